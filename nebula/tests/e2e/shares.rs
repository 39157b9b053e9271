//! Share links end to end: a finished output is opened to anyone by a random link an operator
//! makes (once per output), served without a token until revoked; a content hash opens
//! nothing, and an upload is never shareable.

use crate::common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

async fn share(base: &str, token: &str, job_id: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("{base}/api/render/jobs/{job_id}/shares");
    common::call(reqwest::Method::POST, url, token, &body).await
}

async fn revoke(base: &str, token: &str, job_id: &str, sha256: &str) -> StatusCode {
    common::http()
        .delete(format!("{base}/api/render/jobs/{job_id}/shares/{sha256}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn open_status(url: &str) -> StatusCode {
    common::http().get(url).send().await.unwrap().status()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_output_is_shared_by_an_unguessable_link_until_revoked(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, &pool, state.path());
    config.public_url = Some("https://nebula.example.com".into());
    let studio = common::RENDERING_STUDIO;
    let running = nebula::start(&config, studio).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let (job_id, sha256) = common::render_one(&base).await;
    let operator = common::create_token(&base, "ops", "operator").await;
    let viewer = common::create_token(&base, "grafana", "viewer").await;

    // The content hash is no capability: without a token it opens nothing, in any form.
    for file in [format!("{sha256}.png"), sha256.clone(), "x".repeat(32)] {
        assert_eq!(
            open_status(&format!("{base}/share/{file}")).await,
            StatusCode::NOT_FOUND,
            "{file}"
        );
    }

    // A viewer may look, not publish.
    let (status, _) = share(&base, &viewer, &job_id, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An operator shares the job's output: a random link under the public URL.
    let (status, shared) = share(&base, &operator, &job_id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    let token = shared["token"].as_str().unwrap().to_owned();
    assert!(domain::render::is_share_token(&token), "{shared}");
    assert_eq!(shared["sha256"], sha256.as_str());
    assert_eq!(
        shared["url"],
        format!("https://nebula.example.com/share/{token}.png")
    );
    // Sharing it again (named this time) gives the same link, and records nothing new.
    let (status, again) = share(&base, &operator, &job_id, json!({ "sha256": sha256 })).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["token"], token.as_str());
    let events = common::envelopes(&running.bus, "render_job", &job_id).await;
    let shares: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "render.job_shared")
        .collect();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].actor, events::Actor::User("ops".into()));

    // The link is the image, without a token, as soon as the read model has it.
    let link = format!("{base}/share/{token}.png");
    let response = wait_until("the share link to be served", DEFAULT_WAIT, || async {
        let response = common::http().get(&link).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), length);
    assert_eq!(render::artifacts::sha256_hex(&bytes), sha256);
    assert_eq!(
        open_status(&format!("{base}/share/{token}")).await,
        StatusCode::OK
    );
    // The job lists its share.
    let job = common::get_json(&common::http(), format!("{base}/api/render/jobs/{job_id}")).await;
    assert_eq!(job["shares"][0]["token"], token.as_str(), "{job}");
    assert_eq!(job["shares"][0]["sha256"], sha256.as_str(), "{job}");

    // What cannot be shared, and why.
    let png = render::artifacts::png::encode_rgb(2, 2, &[9; 12], &[]);
    let uploaded = &common::upload_png(&base, png).await;
    let (status, refused) = share(&base, &operator, &job_id, json!({ "sha256": uploaded })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused.to_string().contains("is not an output of this job"),
        "{refused}"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _) = share(&base, &operator, &unknown, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = share(&base, &operator, "not-a-job", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = share(&base, &operator, &job_id, json!({ "colour": "red" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Revoked: the link stops; revoking again finds nothing; a new share is a new link.
    assert_eq!(
        revoke(&base, &viewer, &job_id, &sha256).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        revoke(&base, &operator, &job_id, &sha256).await,
        StatusCode::NO_CONTENT
    );
    wait_until("the revoked link to stop", DEFAULT_WAIT, || async {
        (open_status(&link).await == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(
        revoke(&base, &operator, &job_id, &sha256).await,
        StatusCode::NOT_FOUND
    );
    let (status, renewed) = share(&base, &operator, &job_id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_ne!(renewed["token"], token.as_str());
    assert_eq!(open_status(&link).await, StatusCode::NOT_FOUND);
    running.shutdown().await;
}
