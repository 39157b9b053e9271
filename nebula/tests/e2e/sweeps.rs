//! Artifact sweeps end to end: a dry run names the files no read model references and nobody
//! wrote for the retention period (leaving a render job's output, a video project's music and a
//! fresh upload), deletes nothing; collecting deletes them with their job links, each recorded,
//! and keeps one stored again since the plan.

use crate::common;

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;

use common::{TOKEN, call};

/// Uploads a distinct small PNG as a studio input: its SHA-256.
async fn upload(base: &str, shade: u8) -> String {
    common::upload_png(base, artifacts::png::encode_rgb(1, 1, &[shade, 0, 0], &[])).await
}

/// Makes the stored file look last written `days` ago.
fn age(store: &artifacts::ArtifactStore, sha: &str, days: u64) {
    std::fs::File::options()
        .write(true)
        .open(store.content_path(sha).unwrap())
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

/// `POST {url}/{id}/collect` as `token`.
async fn collect(url: &str, id: &str, token: &str) -> (StatusCode, Value) {
    call(
        Method::POST,
        format!("{url}/{id}/collect"),
        token,
        &json!({}),
    )
    .await
}

/// The files a sweep's plan names, in its order.
fn candidates(plan: &Value) -> Vec<&str> {
    plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sha256"].as_str().unwrap())
        .collect()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_sweep_plans_first_then_collects_only_what_nothing_references(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let studio = common::RENDERING_STUDIO;
    let running = nebula::start(&config, studio).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let store = artifacts::ArtifactStore::open(&config.artifacts_dir).unwrap();

    // A render job's output, a video project's music, an unused upload, a fresh upload, and
    // an output whose job the read models never saw (linked under its job's directory).
    let (_, output) = common::render_one(&base).await;
    let music = upload(&base, 10).await;
    let (status, project) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        TOKEN,
        &json!({"title": "Tide", "script": "The sea.", "music": music}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{project}");
    let unused = upload(&base, 20).await;
    let fresh = upload(&base, 30).await;
    let (orphan, _) = store.put(b"an output nobody recorded").await.unwrap();
    let link = store
        .link_job("ghost-job", 0, &orphan, "png")
        .await
        .unwrap();
    for (sha, days) in [(&output, 40), (&music, 40), (&unused, 20), (&orphan, 30)] {
        age(&store, sha, days);
    }

    // Only an admin plans; a bad ask is refused with its reason.
    let viewer = common::create_token(&base, "grafana", "viewer").await;
    let url = format!("{base}/api/artifacts/sweeps");
    let (status, _) = call(Method::POST, url.clone(), &viewer, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        json!({"retention_days": 0.001}),
        json!({"retention_days": -1}),
        json!({"keep": 1}),
    ] {
        let (status, answer) = call(Method::POST, url.clone(), TOKEN, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }

    // The dry run: the two unreferenced old files, oldest first; nothing deleted.
    let (status, plan) = call(Method::POST, url.clone(), TOKEN, &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["status"], "planned");
    assert_eq!(plan["retention_secs"], 7 * 86_400);
    let named = candidates(&plan);
    assert_eq!(named, [orphan.as_str(), unused.as_str()], "{plan}");
    assert_eq!(plan["candidates"][0]["outcome"], "pending");
    // Referenced: the output and the music at least (the project's own scenes may have
    // rendered meanwhile); young: the fresh upload at least.
    assert!(plan["referenced"].as_u64() >= Some(2), "{plan}");
    assert!(plan["young"].as_u64() >= Some(1), "{plan}");
    assert_eq!(
        plan["candidate_bytes"],
        25 + std::fs::metadata(store.content_path(&unused).unwrap())
            .unwrap()
            .len()
    );
    for sha in [&output, &music, &unused, &fresh, &orphan] {
        assert!(
            store.content_path(sha).unwrap().exists(),
            "a dry run deletes nothing"
        );
    }

    // Someone uploads the unused picture again before the sweep is collected.
    assert_eq!(upload(&base, 20).await, unused);
    let (status, _) = collect(&url, &id, &viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, swept) = collect(&url, &id, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{swept}");
    assert_eq!(swept["status"], "finished");
    assert_eq!(
        (swept["collected"].as_u64(), swept["kept"].as_u64()),
        (Some(1), Some(1)),
        "{swept}"
    );
    assert_eq!(swept["collected_bytes"], 25);
    assert_eq!(swept["candidates"][0]["outcome"], "collected");
    assert_eq!(swept["candidates"][0]["links"], 1);
    assert_eq!(swept["candidates"][1]["outcome"], "kept");
    assert_eq!(swept["candidates"][1]["why"], "stored again since the plan");
    assert!(!store.content_path(&orphan).unwrap().exists());
    assert!(
        !link.exists() && !link.parent().unwrap().exists(),
        "its job link went too"
    );
    for sha in [&output, &music, &unused, &fresh] {
        assert!(store.content_path(sha).unwrap().exists(), "{sha} stays");
    }
    let (status, _) = call(
        Method::GET,
        format!("{base}/api/render/artifacts/{output}"),
        TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Once is enough; each step is on the log with who asked.
    let (status, again) = collect(&url, &id, TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let recorded = common::envelopes(&running.bus, "artifact_sweep", &id).await;
    let types: Vec<&str> = recorded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "artifact_sweep.planned",
            "artifact_sweep.collected",
            "artifact_sweep.kept",
            "artifact_sweep.finished"
        ]
    );
    assert!(
        recorded
            .iter()
            .all(|e| e.actor == events::Actor::User("admin".into()))
    );
    // The collection is one action: its records share a correlation.
    assert!(
        recorded[1..]
            .iter()
            .all(|e| e.correlation_id == recorded[1].correlation_id)
    );

    // Viewers see the sweeps; an unknown one is a 404.
    let (status, listed) = call(Method::GET, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["sweeps"][0]["id"], id.as_str());
    assert_eq!(listed["sweeps"][0]["collected"], 1);
    assert!(listed["sweeps"][0].get("candidates").is_none());
    assert_eq!(listed["retention_days"], 7.0);
    for unknown in ["0192f0c0-0000-7000-8000-000000000000", "../etc"] {
        let (status, _) = call(
            Method::GET,
            format!("{url}/{unknown}"),
            &viewer,
            &Value::Null,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    }
    let metrics = common::get_text(&common::http(), format!("{base}/metrics")).await;
    assert!(
        metrics.contains("nebula_artifacts_collected_total 1"),
        "{metrics}"
    );

    // The Storage room: what is stored, the sweep done above; a new one planned, looked at and
    // deleted from the page.
    let (another, _) = store.put(b"another output nobody recorded").await.unwrap();
    age(&store, &another, 60);
    let browser = testkit::webdriver::Browser::start().await;
    crate::dashboard_access::sign_in(&browser, &format!("{base}/#token={TOKEN}"), "admin · admin")
        .await;
    crate::dashboard::open_room(&browser, "storage").await;
    let shown = testkit::wait_until("the storage room filled", testkit::DEFAULT_WAIT, || async {
        let shown = browser
            .eval(&format!(
                "const rows = [...document.querySelectorAll('#storage-rows tr')].map((r) => r.cells[0].textContent);
                 const done = document.querySelector('#sweeps li[data-sweep=\"{id}\"]');
                 if (!rows.includes('artifact store') || !done) return null;
                 return [rows.includes('event log'), done.dataset.status, done.querySelector('.sweep-summary').textContent,
                         document.querySelector('#sweep-schedule').textContent];"
            ))
            .await;
        shown.is_array().then_some(shown)
    })
    .await;
    assert_eq!(shown[0], true, "{shown}");
    assert_eq!(shown[1], "finished", "{shown}");
    assert!(
        shown[2]
            .as_str()
            .unwrap()
            .starts_with("deleted 1 file (25 B), 1 kept"),
        "{shown}"
    );
    assert!(
        shown[3]
            .as_str()
            .unwrap()
            .starts_with("Sweeps run when an admin plans one"),
        "{shown}"
    );
    browser
        .eval("document.querySelector('#sweep-days').value = '7'; document.querySelector('#sweep-plan').click(); return null;")
        .await;
    let planned = testkit::wait_until("a sweep planned from the page", testkit::DEFAULT_WAIT, || async {
        let planned = browser
            .eval(&format!(
                "const first = document.querySelector('#sweeps li[data-sweep]');
                 if (!first || first.dataset.sweep === '{id}') return null;
                 const files = [...first.querySelectorAll('.sweep-candidate')].map((c) => c.title);
                 return files.length ? [first.dataset.sweep, files, first.querySelector('button[data-action=collect]').textContent] : null;"
            ))
            .await;
        planned.is_array().then_some(planned)
    })
    .await;
    assert_eq!(planned[1], json!([another]), "{planned}");
    assert_eq!(planned[2], "Delete 1 file (30 B)", "{planned}");
    assert!(
        store.content_path(&another).unwrap().exists(),
        "planning deletes nothing"
    );
    let second = planned[0].as_str().unwrap().to_owned();
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(
        std::env::temp_dir().join("nebula-storage-planned.png"),
        &png,
    );
    browser
        .eval("window.confirm = () => true; document.querySelector('#sweeps li[data-sweep] button[data-action=collect]').click(); return null;")
        .await;
    testkit::wait_until("the sweep deleted from the page", testkit::DEFAULT_WAIT, || async {
        let status = browser
            .eval(&format!("const li = document.querySelector('#sweeps li[data-sweep=\"{second}\"]'); return li ? li.dataset.status : null;"))
            .await;
        (status == "finished").then_some(())
    })
    .await;
    assert!(!store.content_path(&another).unwrap().exists());
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-storage.png"), &png);
    running.shutdown().await;
}

/// A finished render job deleted from the Studio's gallery (asked twice) leaves the read
/// models — its job, its share link — with `render.job_deleted` naming its output, and the next
/// sweep collects that output; a job not finished, a viewer and a job already gone are refused.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_deleted_render_job_leaves_its_output_to_the_next_sweep(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let running = nebula::start(&config, common::RENDERING_STUDIO)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let store = artifacts::ArtifactStore::open(&config.artifacts_dir).unwrap();
    let (job, output) = common::render_one(&base).await;
    let (status, shared) = call(
        Method::POST,
        format!("{base}/api/render/jobs/{job}/shares"),
        TOKEN,
        &json!({"sha256": output}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    let token = shared["token"].as_str().unwrap().to_owned();

    let job_url = format!("{base}/api/render/jobs/{job}");
    let viewer = common::create_token(&base, "grafana", "viewer").await;
    let (status, _) = call(Method::DELETE, job_url.clone(), &viewer, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/render/queue/pause"),
        TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, waiting) = call(
        Method::POST,
        format!("{base}/api/render/jobs"),
        TOKEN,
        &json!({"mode": "txt2img", "params": {"prompt": "later", "steps": 2, "width": 64, "height": 64}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    let waiting = waiting["job_id"].as_str().unwrap();
    let (status, refused) = call(
        Method::DELETE,
        format!("{base}/api/render/jobs/{waiting}"),
        TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only a finished job")),
        "{refused}"
    );

    // Deleted from the gallery: the first click asks, the second deletes.
    let browser = testkit::webdriver::Browser::start().await;
    crate::dashboard_access::sign_in(&browser, &format!("{base}/#token={TOKEN}"), "admin · admin")
        .await;
    crate::dashboard::open_room(&browser, "studio").await;
    let button = format!(
        "document.querySelector('#studio-gallery figure[data-job-id=\"{job}\"] button[data-action=delete]')"
    );
    testkit::wait_until("the job's tile", testkit::DEFAULT_WAIT, || async {
        let found = browser.eval(&format!("return !!{button};")).await;
        (found == Value::Bool(true)).then_some(())
    })
    .await;
    let asked = browser
        .eval(&format!(
            "const b = {button}; b.click(); return b.textContent;"
        ))
        .await;
    assert_eq!(asked, "confirm delete");
    browser
        .eval(&format!("{button}.scrollIntoView(); return null;"))
        .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-studio-confirm.png"), &png);
    assert_eq!(
        call(Method::GET, job_url.clone(), TOKEN, &Value::Null)
            .await
            .0,
        StatusCode::OK,
        "one click deletes nothing"
    );
    browser
        .eval(&format!("{button}.click(); return null;"))
        .await;
    testkit::wait_until("the tile gone", testkit::DEFAULT_WAIT, || async {
        let gone = browser
            .eval(&format!(
                "return !document.querySelector('#studio-gallery figure[data-job-id=\"{job}\"]');"
            ))
            .await;
        (gone == Value::Bool(true)).then_some(())
    })
    .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-studio-deleted.png"), &png);

    let (status, _) = call(Method::GET, job_url.clone(), TOKEN, &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(Method::DELETE, job_url.clone(), TOKEN, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted once");
    let shared = common::http()
        .get(format!("{base}/share/{token}.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(shared.status(), StatusCode::NOT_FOUND, "its link closed");
    let recorded = common::envelopes(&running.bus, "render_job", &job).await;
    let deleted = recorded.last().unwrap();
    assert_eq!(deleted.event_type, "render.job_deleted");
    assert_eq!(deleted.data["outputs"], json!([output]));
    assert_eq!(deleted.actor, events::Actor::User("admin".into()));

    // The next sweep collects its output.
    age(&store, &output, 40);
    let url = format!("{base}/api/artifacts/sweeps");
    let (status, plan) = call(Method::POST, url.clone(), TOKEN, &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let named = candidates(&plan);
    assert!(named.contains(&output.as_str()), "{plan}");
    let id = plan["id"].as_str().unwrap();
    let (status, swept) = collect(&url, &id, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{swept}");
    assert!(!store.content_path(&output).unwrap().exists());
    running.shutdown().await;
}

/// `config` with a sweep planned and collected every second.
fn sweeping_every_second(mut config: nebula::Config) -> nebula::Config {
    config.gateway.artifact_sweep_every_hours = 1.0 / 3600.0;
    config.gateway.artifact_sweep_collect = true;
    config
}

/// With `artifact_sweep_every_hours` a sweep is planned on its own and, with
/// `artifact_sweep_collect`, collected: an old file nothing references goes, recorded by the
/// `artifact-sweeper`; a turn with nothing to delete records nothing.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_scheduled_sweep_plans_and_collects_on_its_own(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = sweeping_every_second(common::config(&nats, &pool, state.path()));
    let store = artifacts::ArtifactStore::open(&config.artifacts_dir).unwrap();
    let (orphan, _) = store.put(b"an output nobody recorded").await.unwrap();
    age(&store, &orphan, 30);
    let (fresh, _) = store.put(b"written just now").await.unwrap();
    let running = nebula::start(&config, common::RENDERING_STUDIO)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let url = format!("{base}/api/artifacts/sweeps");
    let listed = testkit::wait_until(
        "a sweep collected on its own",
        testkit::DEFAULT_WAIT,
        || async {
            let (_, listed) = call(Method::GET, url.clone(), TOKEN, &Value::Null).await;
            (listed["sweeps"][0]["status"] == "finished").then_some(listed)
        },
    )
    .await;
    assert_eq!(listed["sweeps"][0]["collected"], 1, "{listed}");
    assert_eq!(
        listed["schedule"],
        json!({"every_hours": 1.0 / 3600.0, "collect": true, "render_job_retention_days": null})
    );
    assert!(!store.content_path(&orphan).unwrap().exists());
    assert!(store.content_path(&fresh).unwrap().exists(), "young: kept");
    let id = listed["sweeps"][0]["id"].as_str().unwrap();
    let recorded = common::envelopes(&running.bus, "artifact_sweep", id).await;
    assert!(
        recorded
            .iter()
            .all(|e| e.actor == events::Actor::Service("artifact-sweeper".into())),
        "{recorded:?}"
    );
    // Later turns find nothing to delete: none is recorded (each turn is counted).
    testkit::wait_until(
        "two turns with nothing to delete",
        testkit::DEFAULT_WAIT,
        || async {
            let metrics = common::get_text(&common::http(), format!("{base}/metrics")).await;
            metrics
                .lines()
                .find(|l| l.starts_with("nebula_artifact_sweep_turns_total{outcome=\"nothing\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|turns| *turns >= 2.0)
        },
    )
    .await;
    let (_, listed) = call(Method::GET, url.clone(), TOKEN, &Value::Null).await;
    assert_eq!(listed["sweeps"].as_array().unwrap().len(), 1, "{listed}");
    running.shutdown().await;
}

/// With `render_job_retention_days`, the sweeper deletes the finished render jobs that ended
/// longer ago and that nobody shared, and their outputs go with its next collection; a shared
/// job stays, its output with it.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_sweeper_deletes_old_unshared_render_jobs_and_collects_their_outputs(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = sweeping_every_second(common::config(&nats, &pool, state.path()));
    // Long enough to share the kept job first on a loaded machine.
    config.gateway.render_job_retention_days = 8.0 / 86_400.0;
    let running = nebula::start(&config, common::RENDERING_STUDIO)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let store = artifacts::ArtifactStore::open(&config.artifacts_dir).unwrap();
    let (kept, kept_output) = common::render_seeded(&base, 11).await;
    let (status, shared) = call(
        Method::POST,
        format!("{base}/api/render/jobs/{kept}/shares"),
        TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    let (old, old_output) = common::render_seeded(&base, 12).await;
    assert_ne!(kept_output, old_output);
    for sha in [&kept_output, &old_output] {
        age(&store, sha, 30);
    }
    testkit::wait_until(
        "the old job deleted and its output collected",
        Duration::from_secs(60),
        || async {
            let gone = !store.content_path(&old_output).unwrap().exists();
            gone.then_some(())
        },
    )
    .await;
    let (status, _) = call(
        Method::GET,
        format!("{base}/api/render/jobs/{old}"),
        TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let deleted = common::envelopes(&running.bus, "render_job", &old).await;
    let deleted = deleted.last().unwrap();
    assert_eq!(deleted.event_type, "render.job_deleted");
    assert_eq!(
        deleted.actor,
        events::Actor::Service("artifact-sweeper".into())
    );
    assert!(
        deleted.data["reason"]
            .as_str()
            .is_some_and(|r| r.contains("render_job_retention_days")),
        "{deleted:?}"
    );
    let (status, _) = call(
        Method::GET,
        format!("{base}/api/render/jobs/{kept}"),
        TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "shared: kept");
    assert!(store.content_path(&kept_output).unwrap().exists());
    running.shutdown().await;
}
