//! Dev-only test kit: a nats-server per test on a dynamic port with a temporary store, a bounded
//! `wait_until`, and a minimal WebDriver client for headless Chromium. Never a dependency of
//! product code.

pub mod caddy;
pub mod cloudflare;
pub mod comfyui;
pub mod discord;
pub mod docker;
mod nats;
pub mod ollama;
pub mod openai;
pub mod redis;
pub mod ssh;
pub mod stream;
pub mod twitch;
pub mod webdriver;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use nats::{NatsCluster, NatsServer};

/// The workspace root (where `nats.conf` and `.nebula/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Polls `check` until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// A free TCP port on loopback (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free port on loopback")
}

/// `DATABASE_URL` for tests, as `cargo xtask test` exports it.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://nebula:nebula@127.0.0.1:5432/nebula".to_owned())
}

/// `REDIS_URL` for tests.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` until the returned token is cancelled (a fake's `Drop`).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> tokio_util::sync::CancellationToken {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    shutdown
}
