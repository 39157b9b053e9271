//! The HTTP face of Nebula: REST over the read models, the live websocket feed, the embedded
//! dashboard, health and metrics. The only crate that imports axum.

mod agent_http;
mod api;
mod assets;
mod auth;
mod chat;
mod commands;
mod error;
mod health;
mod hub;
mod posts;
mod render;
mod ws;

pub use ws::CLOSE_SLOW_CONSUMER;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use bus::Bus;
use projections::ReadModels;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use agent_http::{AgentView, agent_router, serve_agent};
pub use auth::{AdminToken, load_or_create_token};
pub use error::ApiError;
pub use hub::Hub;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub redis_url: String,
    /// Frames buffered per websocket client before it is disconnected as too slow.
    pub ws_client_buffer: usize,
    /// Recent events included in a websocket snapshot.
    pub snapshot_events: i64,
    /// Where render inputs and outputs are stored (shared with render workers on this host).
    pub artifacts_dir: std::path::PathBuf,
    /// Most render jobs queued at once; submissions beyond it get a 429.
    pub render_queue_cap: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            ws_client_buffer: 4096,
            snapshot_events: 50,
            artifacts_dir: std::path::PathBuf::from(".nebula/artifacts"),
            render_queue_cap: 100,
        }
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub(crate) read: ReadModels,
    pub(crate) bus: Bus,
    pub(crate) hub: Hub,
    pub(crate) token: AdminToken,
    pub(crate) redis: Arc<health::RedisProbe>,
    /// Job commands, with the aggregate cache shared by every request.
    pub(crate) jobs: Arc<bus::store::Commands<domain::job::Job>>,
    pub(crate) render_jobs: Arc<bus::store::Commands<domain::render::RenderJob>>,
    pub(crate) render_queue: Arc<bus::store::Commands<domain::render::RenderQueue>>,
    pub(crate) chat_settings: Arc<bus::store::Commands<domain::chat::ChatSettings>>,
    pub(crate) posts: Arc<bus::store::Commands<domain::post::Post>>,
    pub(crate) post_state: Arc<bus::store::JetStreamStore<domain::post::Post>>,
    pub(crate) artifacts: artifacts::ArtifactStore,
    pub(crate) config: Arc<GatewayConfig>,
}

/// The running gateway: its address and the tasks it owns.
pub struct Gateway {
    pub local_addr: SocketAddr,
}

/// Builds the router (for tests and for [`serve`]).
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/api/nodes", get(api::list_nodes))
        .route("/api/nodes/{id}", get(api::get_node))
        .route("/api/events", get(api::list_events))
        .route("/api/jobs", get(api::list_jobs).post(commands::submit_job))
        .route("/api/jobs/{id}/cancel", post(commands::cancel_job))
        .route("/api/projections", get(api::list_projections))
        .route(
            "/api/render/jobs",
            get(self::render::list).post(self::render::submit),
        )
        .route("/api/render/jobs/{id}", get(self::render::get))
        .route("/api/render/jobs/{id}/cancel", post(self::render::cancel))
        .route(
            "/api/render/jobs/{id}/priority",
            post(self::render::priority),
        )
        .route("/api/render/queue", get(self::render::queue))
        .route("/api/render/queue/pause", post(self::render::pause))
        .route("/api/render/queue/resume", post(self::render::resume))
        .route(
            "/api/render/inputs",
            post(self::render::upload_input).layer(axum::extract::DefaultBodyLimit::max(
                self::render::MAX_INPUT_BYTES,
            )),
        )
        .route(
            "/api/render/artifacts/{sha256}",
            get(self::render::artifact),
        )
        .route("/api/chat/settings", get(chat::list_settings))
        .route(
            "/api/chat/settings/{platform}/{scope}",
            get(chat::get_settings).put(chat::put_settings),
        )
        .route("/api/chat/commands", get(chat::list_commands))
        .route("/api/posts", post(posts::create))
        .route("/api/posts/{id}", get(posts::get))
        .route("/ws", get(ws::upgrade))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(health::health))
        // Share links for chat replies: the unguessable content hash is the capability.
        .route("/share/{file}", get(self::render::shared))
        .merge(assets::router())
        .merge(protected)
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

/// Starts the live hub and serves HTTP on `config.http_addr` until `cancel` fires.
pub async fn serve(
    config: GatewayConfig,
    read: ReadModels,
    bus: Bus,
    token: AdminToken,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Gateway> {
    use anyhow::Context as _;
    let hub = Hub::start(
        bus.clone(),
        config.ws_client_buffer,
        tracker,
        cancel.clone(),
    )
    .await
    .context("failed to start the live event hub")?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http_addr))?;
    let local_addr = listener.local_addr()?;
    let jobs = Arc::new(bus::store::commands(bus.clone(), ()));
    let artifacts = artifacts::ArtifactStore::open(&config.artifacts_dir).with_context(|| {
        format!(
            "failed to open the artifact store at {}",
            config.artifacts_dir.display()
        )
    })?;
    let state = AppState {
        render_jobs: Arc::new(bus::store::commands(bus.clone(), ())),
        render_queue: Arc::new(bus::store::commands(bus.clone(), ())),
        chat_settings: Arc::new(bus::store::commands(bus.clone(), ())),
        posts: Arc::new(bus::store::commands(bus.clone(), ())),
        post_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        artifacts,
        read,
        bus,
        hub,
        token,
        redis: Arc::new(health::RedisProbe::new(&config.redis_url)),
        jobs,
        config: Arc::new(config),
    };
    let app = router(state);
    // Live frames are small and latency-bound: no Nagle delay (with delayed acks it adds up to
    // 40 ms to a frame).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "failed to set TCP_NODELAY");
        }
    });
    tracker.spawn(async move {
        let shutdown = cancel.clone();
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %err, "gateway server failed");
        }
    });
    tracing::info!(addr = %local_addr, "gateway listening");
    Ok(Gateway { local_addr })
}

/// The token file under a state directory.
pub fn token_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("admin-token")
}
