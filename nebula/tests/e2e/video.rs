//! Script to video, its personas over REST: operators put (define or change) and remove them,
//! viewers read them; bad bodies are refused saying why; each put is an event under the name of
//! who made it, and an unchanged put records nothing.

use crate::common::{self, call};

use nebula::{Part, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn personas_are_put_read_and_removed_by_those_allowed(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let running = nebula::start(&config, Parts::of(&[Part::Gateway, Part::Projector])).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let operator = common::create_token(&base, "ops", "operator").await;
    let viewer = common::create_token(&base, "watcher", "viewer").await;
    let url = format!("{base}/api/video/personas/nova");
    let nova = json!({
        "description": "a synthwave host",
        "style_prompt": "neon portrait of Nova, pink hair",
        "negative_prompt": "blurry",
        "lora": {"name": "nova-v2.safetensors", "strength": 0.8},
        "embeddings": ["nova-face"],
        "seed": {"policy": "fixed", "seed": 4242},
        "voice": "espeak-ng:en-us",
    });

    // A viewer may read, not put.
    let (status, _) = call(Method::PUT, url.clone(), &viewer, &nova).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = call(Method::PUT, url.clone(), &operator, &nova).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["name"], "nova");
    assert_eq!(answer["seed"], json!({"policy": "fixed", "seed": 4242}));
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["updated_by"]["id"], "ops");
    // The same again: nothing new on the log.
    let (status, answer) = call(Method::PUT, url.clone(), &operator, &nova).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["version"], 1);
    // Changed by the admin.
    let mut changed = nova.clone();
    changed["seed"] = json!({"policy": "per_scene", "base": 100});
    let (status, answer) = call(Method::PUT, url.clone(), common::TOKEN, &changed).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], 2);
    let log = common::envelopes(&running.bus, "video_persona", "nova").await;
    let kinds: Vec<&str> = log.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["persona.defined", "persona.changed"]);

    // Bad bodies, each refused saying why.
    for (body, why) in [
        (json!({"voice": "say"}), "voice \"say\""),
        (json!({"name": "other"}), "the body names \"other\""),
        (json!({"colour": "pink"}), "unknown field `colour`"),
        (json!({"lora": {"name": "x", "strength": 9.0}}), "strength in -4..=4"),
        (json!([1, 2]), "expected a JSON object"),
    ] {
        let (status, answer) = call(Method::PUT, url.clone(), &operator, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{body}: {answer}");
    }
    let (status, answer) = call(Method::PUT, format!("{base}/api/video/personas/Bad%20Name"), &operator, &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Read by a viewer: one, and the list.
    let (status, one) = call(Method::GET, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["style_prompt"], "neon portrait of Nova, pink hair");
    let (_, echo) = call(
        Method::PUT,
        format!("{base}/api/video/personas/echo"),
        &operator,
        &json!({"style_prompt": "a cartoon fox"}),
    )
    .await;
    assert_eq!(echo["voice"], "espeak-ng:en-us", "the default voice");
    let (status, list) = call(Method::GET, format!("{base}/api/video/personas"), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["personas"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "nova"]);

    // Removed: gone from both, and a second removal is 404.
    let (status, _) = call(Method::DELETE, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(Method::DELETE, url.clone(), &operator, &Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(Method::GET, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(Method::DELETE, url.clone(), &operator, &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(Method::GET, format!("{base}/api/video/personas"), &viewer, &Value::Null).await;
    assert_eq!(list["personas"].as_array().unwrap().len(), 1);
    running.shutdown().await;
}
