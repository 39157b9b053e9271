//! Approvals end to end: asked for on the log (as the deploy center will), listed in the inbox,
//! decided over REST by the policy's rules (role, four eyes, one decision each, the count, the
//! deadline), each decision and outcome recorded under the decider's name, bad input refused
//! clearly, and decided in the Approvals room in Chromium.

use crate::common::{self, TOKEN, call, create_token};

use bus::store::CommandMeta;
use chrono::Utc;
use domain::approval::Approval;
use events::Actor;
use events::access::Role;
use events::approval::{ApprovalPolicy, ApprovalSubject, Preview, PreviewFormat};
use nebula::{Part, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector]);

const DIFF: &str = "--- a/app.toml\n+++ b/app.toml\n@@ -1,2 +1,2 @@\n-image = \"web:1.1\"\n+image = \"web:1.2\"\n replicas = 1\n";

fn policy(role: Role, approvals: u32, secs: i64) -> ApprovalPolicy {
    ApprovalPolicy {
        role,
        approvals,
        expires_at: Utc::now() + chrono::Duration::seconds(secs),
        requester_may_approve: false,
        rule: Some("prod".into()),
    }
}

async fn ask(bus: &bus::Bus, run: &str, policy: ApprovalPolicy) -> String {
    let commands = bus::store::commands::<Approval>(bus.clone(), ());
    sagas::approvals::request_approval(
        &commands,
        ApprovalSubject {
            kind: "deploy".into(),
            id: run.into(),
        },
        format!("deploy web 1.2 to gpu-1 ({run})"),
        Preview::new(PreviewFormat::Diff, DIFF.into()),
        policy,
        CommandMeta::new(Actor::User("alice".into())),
    )
    .await
    .unwrap()
}

/// The approval as the inbox lists it once it shows `state`.
async fn listed(base: &str, id: &str, state: &str) -> Value {
    wait_until(&format!("approval {id} {state}"), DEFAULT_WAIT, || async {
        common::get_json(&common::http(), format!("{base}/api/approvals")).await["approvals"]
            .as_array()?
            .iter()
            .find(|a| a["approval_id"] == id && a["state"] == state)
            .cloned()
    })
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn approvals_are_decided_by_their_policy(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let alice = create_token(&base, "alice", "admin").await;
    let bob = create_token(&base, "bob", "admin").await;
    let olga = create_token(&base, "olga", "operator").await;
    let vera = create_token(&base, "vera", "viewer").await;
    let carol = create_token(&base, "carol", "admin").await;
    let bus = common::bus(&nats).await;

    // Two admins must approve, not the one who asked.
    let id = ask(&bus, "run-1", policy(Role::Admin, 2, 3600)).await;
    let pending = listed(&base, &id, "pending").await;
    assert_eq!(pending["subject_kind"], "deploy");
    assert_eq!(pending["preview"]["format"], "diff");
    assert_eq!(
        pending["requested_by"],
        json!({"kind": "user", "id": "alice"})
    );
    let waiting = common::get_json(
        &common::http(),
        format!("{base}/api/approvals?state=pending"),
    )
    .await;
    assert_eq!(waiting["approvals"].as_array().unwrap().len(), 1);

    let url = |action: &str| format!("{base}/api/approvals/{id}/{action}");
    let refusals = [
        (
            &vera,
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "needs the operator role",
        ),
        (
            &olga,
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "needs the admin role; olga is operator",
        ),
        (
            &alice,
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "alice asked for this and may not approve it",
        ),
        (
            &bob,
            "approve",
            json!({"comment": 1}),
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            &bob,
            "approve",
            json!({"colour": "red"}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
    ];
    for (token, action, body, status, message) in refusals {
        let (got, answer) = call(Method::POST, url(action), token, &body).await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer.to_string().contains(message),
            "{message:?} not in {answer}"
        );
    }
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/0191e0b4-0000-7000-8000-000000000000/approve"),
        &bob,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/approvals/nope/approve"),
        &bob,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = call(
        Method::GET,
        format!("{base}/api/approvals?state=maybe"),
        TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Bob's approval is one of two; a second from him is refused.
    let (status, answer) = call(
        Method::POST,
        url("approve"),
        &bob,
        &json!({"comment": "plan looks right"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "pending");
    let (status, answer) = call(Method::POST, url("approve"), &bob, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bob already decided")
    );

    // One an operator may decide, rejected with a reason.
    let rejected = ask(&bus, "run-2", policy(Role::Operator, 1, 3600)).await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/{rejected}/reject"),
        &olga,
        &json!({"comment": "not during the stream"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "rejected");
    let row = listed(&base, &rejected, "rejected").await;
    assert_eq!(row["reason"], "rejected by olga: not during the stream");
    assert_eq!(
        row["decisions"][0]["by"],
        json!({"kind": "user", "id": "olga"})
    );

    // One nobody decided in time: listed as expired, a late decision refused and the expiry
    // recorded on the log.
    let late = ask(&bus, "run-3", policy(Role::Operator, 1, 1)).await;
    listed(&base, &late, "expired").await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/{late}/approve"),
        &olga,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let log = common::envelopes(&bus, "approval", &late).await;
    let closed = log
        .iter()
        .find(|e| e.event_type == "approval.closed")
        .expect("the expiry on the log");
    assert_eq!(closed.data["outcome"], "expired");

    // Carol approves the first in the Approvals room: the diff shown by line, her decision the
    // second of two, the approval granted.
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={carol}"),
            "carol · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "approvals").await;
        let shown = wait_until("the pending approval in the room", DEFAULT_WAIT, || async {
            let shown = browser
                .eval(&format!(
                    "const li = document.querySelector('#approvals li[data-approval=\"{id}\"]');
                     if (!li) return null;
                     const badge = document.querySelector('#nav a.nav-link[data-room=\"approvals\"] .nav-badge');
                     return {{ adds: li.querySelectorAll('.diff-add').length, dels: li.querySelectorAll('.diff-del').length,
                               decisions: li.querySelectorAll('li[data-decision]').length,
                               approve: !li.querySelector('button[data-action=approve]').disabled,
                               badge: badge ? badge.textContent : null, text: li.textContent }};"
                ))
                .await;
            shown.is_object().then_some(shown)
        })
        .await;
        assert_eq!(
            (shown["adds"].as_u64(), shown["dels"].as_u64()),
            (Some(1), Some(1)),
            "{shown}"
        );
        assert_eq!(shown["decisions"], 1, "{shown}");
        assert_eq!(shown["approve"], true, "{shown}");
        assert_eq!(shown["badge"], "1", "{shown}");
        assert!(
            shown["text"]
                .as_str()
                .unwrap()
                .contains("needs 2 admin approvals"),
            "{shown}"
        );
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-approvals.png"), &png);
        browser
            .eval(&format!(
                "const li = document.querySelector('#approvals li[data-approval=\"{id}\"]');
                 const input = li.querySelector('input[data-field=comment]');
                 input.value = 'ship it';
                 input.dispatchEvent(new Event('input', {{ bubbles: true }}));
                 li.querySelector('button[data-action=approve]').click();
                 return true;"
            ))
            .await;
        let granted = listed(&base, &id, "granted").await;
        assert_eq!(
            granted["decisions"][1]["by"],
            json!({"kind": "user", "id": "carol"})
        );
        assert_eq!(granted["decisions"][1]["comment"], "ship it");
        assert_eq!(granted["reason"], "approved by 2 of 2, last by carol");
        wait_until("the badge cleared", DEFAULT_WAIT, || async {
            let badge = browser
                .eval("const b = document.querySelector('#nav a.nav-link[data-room=\"approvals\"] .nav-badge'); return b.hidden;")
                .await;
            (badge == true).then_some(())
        })
        .await;
    }
    let outcome = sagas::approvals::wait_outcome(
        &bus,
        &bus::store::JetStreamStore::<Approval>::new(bus.clone()),
        &id,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(outcome.outcome, Some(events::approval::Outcome::Granted));
    running.shutdown().await;
}
