//! The one failure policy, on a real bus: a failed or panicking loop starts again, a fatal
//! error stops the process, and a task that cannot restart stops it too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bus::{Bus, BusConfig};
use common::Backoff;
use service::{Context, Site};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

async fn context(server: &NatsServer) -> Context {
    let bus = Bus::connect(BusConfig {
        url: server.url(),
        auth: bus::NatsAuth::nkey(server.control_seed()),
        ..Default::default()
    })
    .await
    .unwrap();
    let site = Site {
        node_id: "test-node".parse().unwrap(),
        database_url: "postgres://unused".into(),
        redis_url: "redis://unused".into(),
        state_dir: std::env::temp_dir(),
        artifacts_dir: std::env::temp_dir(),
        public_url: "http://127.0.0.1:1".into(),
        render_queue_cap: 1,
        vault_key_file: std::env::temp_dir().join("unused-vault.key"),
    };
    let mut ctx = Context::new(bus, site);
    ctx.restart = Backoff::new(Duration::from_millis(10), Duration::from_millis(20));
    ctx
}

#[tokio::test]
async fn failed_and_panicking_loops_start_again_until_they_finish() {
    let server = NatsServer::start();
    let ctx = context(&server).await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    ctx.spawn("flaky", move |_| {
        let run = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match run {
                0 => anyhow::bail!("the first run fails"),
                1 => panic!("the second run panics"),
                _ => Ok(()),
            }
        }
    });
    wait_until("the third run", DEFAULT_WAIT, || async {
        (runs.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    ctx.tracker.close();
    ctx.tracker.wait().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "an Ok run is not started again"
    );
    assert_eq!(
        ctx.metrics()
            .get("nebula_part_restarts_total", &[("part", "flaky")]),
        2.0
    );
    assert!(
        !ctx.cancel.is_cancelled(),
        "a restartable failure never stops the process"
    );
}

#[tokio::test]
async fn a_fatal_error_stops_the_process_and_is_not_retried() {
    let server = NatsServer::start();
    let ctx = context(&server).await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    ctx.spawn("refused", move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err(service::fatal("the credential was refused")) }
    });
    tokio::time::timeout(DEFAULT_WAIT, ctx.cancel.cancelled())
        .await
        .expect("a fatal error stops the process");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(service::is_fatal(&service::fatal("x").context("wrapped")));
}

#[tokio::test]
async fn a_task_that_cannot_restart_stops_the_process_when_it_fails() {
    let server = NatsServer::start();
    let ctx = context(&server).await;
    ctx.spawn_once("listener", async {
        anyhow::bail!("its connection is gone")
    });
    tokio::time::timeout(DEFAULT_WAIT, ctx.cancel.cancelled())
        .await
        .expect("the failed one-shot task stops the process");
}

#[tokio::test]
async fn a_child_stops_alone_but_its_fatal_error_stops_the_process() {
    let server = NatsServer::start();
    let ctx = context(&server).await;
    let child = ctx.child();
    let stopped = Arc::new(AtomicU32::new(0));
    let counter = stopped.clone();
    child.spawn("restartable", move |cancel| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            cancel.cancelled().await;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    wait_until("the child's loop to run", DEFAULT_WAIT, || async {
        (stopped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    child.stop().await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        2,
        "the child's loop saw its stop"
    );
    assert!(
        !ctx.cancel.is_cancelled(),
        "stopping a child leaves the process running"
    );

    let again = ctx.child();
    again.spawn("refused", |_| async {
        Err(service::fatal("the token was refused"))
    });
    wait_until("the process to stop", DEFAULT_WAIT, || async {
        ctx.cancel.is_cancelled().then_some(())
    })
    .await;
}
