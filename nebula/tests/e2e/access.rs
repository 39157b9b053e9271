//! Who may do what, end to end: every protected route walked with every kind of caller, named
//! tokens issued, used, revoked and expired, websocket tickets, and the security headers.

use crate::common;

use chrono::Utc;
use common::{TOKEN, config, create_token, http};
use events::access::Role;
use nebula::Parts;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;

/// A concrete path for a route pattern: every parameter gets a value that names nothing.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{sha256}", &"0".repeat(64))
        .replace("{platform}", "twitch")
        .replace("{scope}", "nobody")
        .replace("{seq}", "999999")
        .replace("{name}", "nobody")
}

/// What a caller presents: an `Authorization` header value, or none.
struct Caller {
    label: &'static str,
    header: Option<String>,
    /// `None`: refused as unauthenticated whatever the route.
    role: Option<Role>,
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn every_route_answers_each_role_exactly(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = http();

    let viewer = create_token(&base, "grafana", "viewer").await;
    let operator = create_token(&base, "ops", "operator").await;
    let admin = create_token(&base, "root-2", "admin").await;
    let revoked = create_token(&base, "old", "admin").await;
    let response = client
        .delete(format!("{base}/api/tokens/old"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // An expired token (the API refuses a past expiry; the log does not care).
    let bus = common::bus(&nats).await;
    let commands = bus::store::commands::<domain::access::ApiToken>(bus.clone(), ());
    let expired = sagas::access::issue_token(
        &commands,
        "stale",
        Role::Admin,
        Some(Utc::now() - chrono::Duration::minutes(1)),
        bus::store::CommandMeta::new(events::Actor::User("test".into())),
    )
    .await
    .unwrap();

    let bearer = |token: &str| Some(format!("Bearer {token}"));
    let callers = [
        Caller {
            label: "no header",
            header: None,
            role: None,
        },
        Caller {
            label: "basic auth",
            header: Some("Basic dXNlcjpwYXNz".into()),
            role: None,
        },
        Caller {
            label: "empty bearer",
            header: Some("Bearer ".into()),
            role: None,
        },
        Caller {
            label: "garbage",
            header: bearer("nbt_grafana_zzz"),
            role: None,
        },
        Caller {
            label: "another token's name",
            header: bearer(&viewer.replace("nbt_grafana_", "nbt_ops_")),
            role: None,
        },
        Caller {
            label: "revoked",
            header: bearer(&revoked),
            role: None,
        },
        Caller {
            label: "expired",
            header: bearer(&expired),
            role: None,
        },
        Caller {
            label: "viewer",
            header: bearer(&viewer),
            role: Some(Role::Viewer),
        },
        Caller {
            label: "operator",
            header: bearer(&operator),
            role: Some(Role::Operator),
        },
        Caller {
            label: "named admin",
            header: bearer(&admin),
            role: Some(Role::Admin),
        },
        Caller {
            label: "bootstrap admin",
            header: bearer(TOKEN),
            role: Some(Role::Admin),
        },
    ];

    let endpoints = gateway::endpoints();
    assert!(endpoints.len() >= 30, "{} routes", endpoints.len());
    let mut checked = 0;
    for endpoint in &endpoints {
        let path = concrete(endpoint.path);
        for caller in &callers {
            let mut request = client.request(endpoint.method.clone(), format!("{base}{path}"));
            if let Some(header) = &caller.header {
                request = request.header("authorization", header);
            }
            if endpoint.method != reqwest::Method::GET && endpoint.method != reqwest::Method::DELETE
            {
                // Malformed on purpose: a permitted call stops at its body, changing nothing.
                request = request.header("content-type", "application/json").body("{");
            }
            let status = request.send().await.unwrap().status();
            let what = format!(
                "{} {} as {} (needs {})",
                endpoint.method, endpoint.path, caller.label, endpoint.role
            );
            match caller.role {
                None => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
                Some(role) if !role.allows(endpoint.role) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}")
                }
                Some(_) => {
                    assert!(
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && !status.is_server_error(),
                        "{what}: {status}"
                    );
                    let listing = endpoint.method == reqwest::Method::GET
                        && !endpoint.path.contains('{')
                        && endpoint.path != "/ws";
                    if listing {
                        assert_eq!(status, StatusCode::OK, "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * callers.len());

    // A forbidden answer says what was needed.
    let response = client
        .post(format!("{base}/api/render/queue/pause"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the operator role; grafana is a viewer"),
        "{body}"
    );

    // Every command is recorded under the token's name.
    let response = client
        .post(format!("{base}/api/render/queue/pause"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let queue = common::envelopes(&bus, "render_queue", domain::render::QUEUE_ID).await;
    let paused = queue.last().unwrap();
    assert_eq!(paused.event_type, "render.queue_paused");
    assert_eq!(paused.actor, events::Actor::User("ops".into()));
    assert_eq!(paused.data["reason"], "paused by ops");

    // Who am I.
    let me: Value = client
        .get(format!("{base}/api/whoami"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, json!({ "name": "ops", "role": "operator" }));

    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn tokens_are_shown_once_revoked_at_once_and_never_listed(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let addr = running.gateway_addr.unwrap();
    let base = format!("http://{addr}");
    let client = http();

    let token = create_token(&base, "grafana", "viewer").await;
    assert!(token.starts_with("nbt_grafana_") && token.len() == "nbt_grafana_".len() + 64);
    let whoami = |token: String| {
        let client = client.clone();
        let url = format!("{base}/api/whoami");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(whoami(token.clone()).await, StatusCode::OK);

    // The same name cannot be issued twice; bad requests say why.
    for (body, status) in [
        (
            json!({"name": "grafana", "role": "viewer"}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"name": "Grafana", "role": "viewer"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "role": "root"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "admin", "role": "admin"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_in_days": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "role": "viewer", "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (json!([1, 2]), StatusCode::BAD_REQUEST),
    ] {
        let response = client
            .post(format!("{base}/api/tokens"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // The listing names, never shows.
    let expiring = create_token(&base, "ci", "operator").await;
    let response = client
        .post(format!("{base}/api/tokens"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "weekly", "role": "viewer", "expires_in_days": 7}))
        .send()
        .await
        .unwrap();
    let weekly: Value = response.json().await.unwrap();
    let listing = client
        .get(format!("{base}/api/tokens"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [&token, &expiring, weekly["token"].as_str().unwrap()] {
        assert!(!listing.contains(&secret["nbt_".len()..]), "{listing}");
    }
    assert!(!listing.contains("sha256"), "{listing}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let names: Vec<&str> = listing["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "grafana", "weekly"]);
    let grafana = &listing["tokens"][1];
    assert_eq!(grafana["status"], "active");
    assert_eq!(grafana["issued_by"], json!({"kind": "user", "id": "admin"}));
    assert!(listing["tokens"][2]["expires_at"].is_string());

    // Revoked: refused at once, shown as revoked, and the name can be issued again.
    let response = client
        .delete(format!("{base}/api/tokens/grafana"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(whoami(token.clone()).await, StatusCode::UNAUTHORIZED);
    let response = client
        .delete(format!("{base}/api/tokens/grafana"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let again = create_token(&base, "grafana", "viewer").await;
    assert_ne!(again, token);
    assert_eq!(whoami(again).await, StatusCode::OK);
    assert_eq!(whoami(token).await, StatusCode::UNAUTHORIZED);

    // Websocket tickets: one socket each, and the token never goes in the address.
    let ticket = |token: String| {
        let client = client.clone();
        let url = format!("{base}/api/ws-ticket");
        async move {
            let body: Value = client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["expires_in_secs"], 30);
            body["ticket"].as_str().unwrap().to_owned()
        }
    };
    let viewer = create_token(&base, "screen", "viewer").await;
    let one = ticket(viewer.clone()).await;
    let (_socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?ticket={one}").as_str())
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for refused in [
        format!("ws://{addr}/ws?ticket={one}"),
        format!("ws://{addr}/ws?ticket=nope"),
        format!("ws://{addr}/ws?token={TOKEN}"),
        format!("ws://{addr}/ws"),
    ] {
        match tokio_tungstenite::connect_async(refused.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{refused}")
            }
            other => panic!("{refused}: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    assert!(common::ws_with(addr, "", &viewer).await.is_ok());

    // A socket lives no longer than its token: revoked, it is closed at once (4001, so the
    // dashboard asks to sign in again); another viewer's socket stays open.
    let mut doomed = common::ws_with(addr, "", &viewer).await.unwrap();
    let other = create_token(&base, "wall", "viewer").await;
    let mut bystander = common::ws_with(addr, "", &other).await.unwrap();
    for socket in [&mut doomed, &mut bystander] {
        wait_for_frame(socket, |frame| frame["type"] == "snapshot").await;
    }
    let response = client
        .delete(format!("{base}/api/tokens/screen"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let close = closed(&mut doomed).await;
    assert_eq!(u16::from(close.code), gateway::CLOSE_TOKEN_ENDED);
    assert!(close.reason.contains("token revoked"), "{}", close.reason);
    // The bystander still gets the feed (the next event after the revocation).
    create_token(&base, "later", "viewer").await;
    wait_for_frame(&mut bystander, |frame| {
        frame.to_string().contains("api_token.issued") && frame.to_string().contains("later")
    })
    .await;

    // One that expires: closed when it does.
    let bus = common::bus(&nats).await;
    let commands = bus::store::commands::<domain::access::ApiToken>(bus.clone(), ());
    let brief = sagas::access::issue_token(
        &commands,
        "brief",
        Role::Viewer,
        Some(Utc::now() + chrono::Duration::seconds(2)),
        bus::store::CommandMeta::new(events::Actor::User("test".into())),
    )
    .await
    .unwrap();
    let mut expiring = common::ws_with(addr, "", &brief).await.unwrap();
    let close = closed(&mut expiring).await;
    assert_eq!(u16::from(close.code), gateway::CLOSE_TOKEN_ENDED);
    assert!(close.reason.contains("token expired"), "{}", close.reason);

    running.shutdown().await;
}

/// The close frame the server ends `socket` with (within 10 s).
async fn closed(socket: &mut common::Ws) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(err) => panic!("no close frame: {err}"),
            }
        }
        None
    })
    .await
    .expect("the socket was not closed")
    .expect("closed without a close frame")
}

/// Reads `socket` until a text frame satisfies `wanted` (within 10 s).
async fn wait_for_frame(socket: &mut common::Ws, wanted: impl Fn(&Value) -> bool) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if wanted(&frame) {
                        return;
                    }
                }
                Ok(Message::Close(close)) => panic!("closed: {close:?}"),
                Ok(_) => {}
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await
    .expect("the frame never came");
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn pages_and_answers_carry_security_headers(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    for (path, token) in [
        ("/", None),
        ("/health", None),
        ("/api/nodes", Some(TOKEN)),
        ("/api/nodes", None),
    ] {
        let mut request = http().get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    running.shutdown().await;
}

/// Every body-taking route fed malformed, mistyped, oversized and deeply nested bodies: each
/// gets a clear 4xx with an error code and message, never a 5xx or a dropped connection.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn every_json_body_refuses_bad_input_clearly(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = http();
    let nested = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let big = format!("{{\"value\": \"{}\"}}", "x".repeat(300 * 1024));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", b"{".to_vec()),
        ("an array", b"[1, 2]".to_vec()),
        ("null", b"null".to_vec()),
        ("a string", b"\"x\"".to_vec()),
        ("an unknown field", b"{\"no_such_field_here\": 1}".to_vec()),
        ("wrong types", b"{\"name\": 1, \"role\": [], \"mode\": {}, \"value\": 5, \"priority\": \"high\", \"text\": false}".to_vec()),
        ("a huge number", b"{\"priority\": 1e999999}".to_vec()),
        ("deep nesting", nested.into_bytes()),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80]),
        ("too big", big.into_bytes()),
    ];
    let bodiless = [
        "/api/render/queue/resume",
        "/api/ws-ticket",
        "/api/dlq/{seq}/replay",
    ];
    let mut checked = 0;
    for endpoint in gateway::endpoints() {
        let takes_body = matches!(
            endpoint.method,
            reqwest::Method::POST | reqwest::Method::PUT
        );
        if !takes_body || bodiless.contains(&endpoint.path) {
            continue;
        }
        let path = concrete(endpoint.path);
        for (label, body) in &bodies {
            let response = client
                .request(endpoint.method.clone(), format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|err| panic!("{} {path} with {label}: {err}", endpoint.method));
            let status = response.status();
            let what = format!(
                "{} {} with {label}: {status}",
                endpoint.method, endpoint.path
            );
            assert!(status.is_client_error(), "{what}");
            let answer: Value = response
                .json()
                .await
                .unwrap_or_else(|_| panic!("{what}: not JSON"));
            assert!(answer["error"]["code"].is_string(), "{what}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}: {answer}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9 * bodies.len(), "{checked}");
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    running.shutdown().await;
}
