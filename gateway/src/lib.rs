//! The HTTP face of Nebula: REST over the read models, the live websocket feed, the embedded
//! dashboard, health and metrics. The only crate that imports axum.

mod access;
mod agent_http;
mod ai_dev;
mod api;
mod approvals;
mod apps;
mod assets;
mod chat;
mod containers;
mod dlq;
mod domains;
mod error;
mod health;
mod hooks;
mod hosts;
mod hub;
mod log_follow;
mod market;
mod node_services;
mod posts;
mod render;
mod routes;
mod secrets;
mod setup;
mod shares;
mod sweeps;
mod tokens;
mod video;
mod ws;

pub use ws::{CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_ENDED};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bus::Bus;
use common::Secret;
use projections::ReadModels;
use serde::Deserialize;
use service::{Context, Site};

pub use access::{AdminToken, Principal, RECHECK_AFTER, TICKET_TTL, load_or_create_token};
pub use agent_http::{AgentView, serve_agent};
pub use error::ApiError;
pub use hub::Hub;
pub use routes::{Endpoint, endpoints};

/// The gateway's own settings (`[gateway]`); what it shares with other parts (Postgres, Redis,
/// the artifact store, the render queue's cap, the state directory) comes from the [`Site`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API and dashboard listen (`NEBULA_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// The admin token (`NEBULA_ADMIN_TOKEN`); generated into `<state_dir>/admin-token` when
    /// absent.
    pub admin_token: Option<Secret>,
    /// Frames buffered per websocket client before it is disconnected as too slow.
    pub ws_client_buffer: usize,
    /// Recent events included in a websocket snapshot.
    pub snapshot_events: i64,
    /// Requests handled at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Longest a request may take to be answered (reading its body included): slow uploads
    /// are cut off with 408.
    pub request_timeout_secs: f64,
    /// Largest message a websocket client may send.
    pub ws_max_message_bytes: usize,
    /// The most of a followed container log one viewer is sent a second.
    pub log_follow_bytes_per_sec: u64,
    /// How long a container command may wait for its node's agent to take it before it
    /// expires (and is never run).
    pub container_command_timeout_secs: f64,
    /// An artifact no read model references is collected by a sweep once nobody has written
    /// it for this long (a sweep may ask for another, an hour at least).
    pub artifact_retention_days: f64,
    /// Plan an artifact sweep on its own this often (0: only when someone asks); a plan with
    /// nothing to delete is not recorded.
    pub artifact_sweep_every_hours: f64,
    /// Collect each scheduled plan at once (else it waits in the Storage room for an admin).
    pub artifact_sweep_collect: bool,
    /// With scheduled sweeps: a finished render job without a share link is deleted this long
    /// after it ended (`render.job_deleted`, by the sweeper), so its outputs can be collected
    /// (0: kept until someone deletes it).
    pub render_job_retention_days: f64,
    /// Marketplace catalogs beside the built-in one: URLs answering
    /// `{"templates": {"<id>": <template>}}` (read when the marketplace is listed).
    pub marketplace_catalogs: Vec<String>,
    /// The NATS address other nodes reach, as the wizard's join command names it (the
    /// process's own `nats_url` when empty).
    pub join_nats_url: String,
    /// The AI developer's repositories (name, base branch): filled in from `[ai_dev]` by the
    /// binary, not configured here.
    #[serde(skip)]
    pub ai_dev_repos: Vec<(String, String)>,
    /// The most video projects waiting or running at once (`[video]` max_waiting + max_running,
    /// filled in by the process that runs the gateway).
    #[serde(skip)]
    pub video_queue_cap: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            ws_client_buffer: 4096,
            snapshot_events: 50,
            max_concurrent_requests: 256,
            request_timeout_secs: 60.0,
            ws_max_message_bytes: 64 * 1024,
            log_follow_bytes_per_sec: 256 * 1024,
            container_command_timeout_secs: 60.0,
            artifact_retention_days: 7.0,
            artifact_sweep_every_hours: 0.0,
            artifact_sweep_collect: false,
            render_job_retention_days: 0.0,
            marketplace_catalogs: Vec::new(),
            join_nats_url: String::new(),
            ai_dev_repos: Vec::new(),
            video_queue_cap: 102,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for url in &self.marketplace_catalogs {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                problems.push(format!(
                    "marketplace_catalogs: {url:?} is not an http(s) URL"
                ));
            }
        }
        if self.ws_client_buffer < 16 {
            problems.push("ws_client_buffer must be at least 16".to_owned());
        }
        if !(1..=1000).contains(&self.snapshot_events) {
            problems.push(format!(
                "snapshot_events must be 1..=1000, got {}",
                self.snapshot_events
            ));
        }
        if !(1..=100_000).contains(&self.max_concurrent_requests) {
            problems.push(format!(
                "max_concurrent_requests must be 1..=100000, got {}",
                self.max_concurrent_requests
            ));
        }
        if !(self.request_timeout_secs.is_finite()
            && (1.0..=3600.0).contains(&self.request_timeout_secs))
        {
            problems.push(format!(
                "request_timeout_secs must be 1..=3600, got {}",
                self.request_timeout_secs
            ));
        }
        if !(1024..=1 << 30).contains(&self.log_follow_bytes_per_sec) {
            problems.push(format!(
                "log_follow_bytes_per_sec must be 1024..=1073741824, got {}",
                self.log_follow_bytes_per_sec
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.ws_max_message_bytes) {
            problems.push(format!(
                "ws_max_message_bytes must be 1024..=16777216, got {}",
                self.ws_max_message_bytes
            ));
        }
        if !(self.container_command_timeout_secs.is_finite()
            && (1.0..=86_400.0).contains(&self.container_command_timeout_secs))
        {
            problems.push(format!(
                "container_command_timeout_secs must be 1..=86400, got {}",
                self.container_command_timeout_secs
            ));
        }
        if !(self.artifact_retention_days.is_finite()
            && (1.0 / 24.0..=3650.0).contains(&self.artifact_retention_days))
        {
            problems.push(format!(
                "artifact_retention_days must be from 0.0417 (an hour) to 3650, got {}",
                self.artifact_retention_days
            ));
        }
        let keep = self.render_job_retention_days;
        if !(keep == 0.0 || (keep.is_finite() && (1.0 / 86_400.0..=36_500.0).contains(&keep))) {
            problems.push(format!(
                "render_job_retention_days must be 0 (kept) or from 0.0000116 (a second) to 36500, got {keep}"
            ));
        }
        let every = self.artifact_sweep_every_hours;
        if !(every == 0.0 || (every.is_finite() && (1.0 / 3600.0..=8760.0).contains(&every))) {
            problems.push(format!(
                "artifact_sweep_every_hours must be 0 (only when asked) or from 0.00028 (a second) to 8760, got {every}"
            ));
        }
        if let Some(token) = &self.admin_token
            && vault::reference(token).is_none()
            && token.expose().len() < 16
        {
            problems.push("admin_token must be at least 16 characters".to_owned());
        }
        problems
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub(crate) read: ReadModels,
    pub(crate) bus: Bus,
    pub(crate) hub: Hub,
    pub(crate) access: Arc<access::Access>,
    pub(crate) api_tokens: Arc<bus::store::Commands<domain::access::ApiToken>>,
    pub(crate) vault: Arc<vault::Vault>,
    pub(crate) redis: Arc<kv::Probe>,
    pub(crate) render_jobs: Arc<bus::store::Commands<domain::render::RenderJob>>,
    pub(crate) render_state: Arc<bus::store::JetStreamStore<domain::render::RenderJob>>,
    pub(crate) render_queue: Arc<bus::store::Commands<domain::render::RenderQueue>>,
    pub(crate) chat_settings: Arc<bus::store::Commands<domain::chat::ChatSettings>>,
    pub(crate) posts: Arc<bus::store::Commands<domain::post::Post>>,
    pub(crate) container_commands: Arc<bus::store::Commands<domain::container::ContainerCommand>>,
    pub(crate) container_state:
        Arc<bus::store::JetStreamStore<domain::container::ContainerCommand>>,
    pub(crate) host_commands: Arc<bus::store::Commands<domain::host::Host>>,
    pub(crate) app_commands: Arc<bus::store::Commands<domain::deploy::App>>,
    pub(crate) app_state: Arc<bus::store::JetStreamStore<domain::deploy::App>>,
    pub(crate) run_commands: Arc<bus::store::Commands<domain::deploy::DeployRun>>,
    pub(crate) ai_jobs: Arc<bus::store::Commands<domain::ai_dev::AiDevJob>>,
    pub(crate) ai_job_state: Arc<bus::store::JetStreamStore<domain::ai_dev::AiDevJob>>,
    pub(crate) personas: Arc<bus::store::Commands<domain::video::PersonaState>>,
    pub(crate) persona_state: Arc<bus::store::JetStreamStore<domain::video::PersonaState>>,
    pub(crate) video_projects: Arc<bus::store::Commands<domain::video::VideoProject>>,
    pub(crate) video_queue: Arc<bus::store::Commands<domain::video::VideoQueue>>,
    pub(crate) schedules: Arc<bus::store::Commands<domain::schedule::ScheduleState>>,
    pub(crate) schedule_state: Arc<bus::store::JetStreamStore<domain::schedule::ScheduleState>>,
    pub(crate) video_project_state: Arc<bus::store::JetStreamStore<domain::video::VideoProject>>,
    pub(crate) run_state: Arc<bus::store::JetStreamStore<domain::deploy::DeployRun>>,
    pub(crate) setup_commands: Arc<bus::store::Commands<domain::setup::Setup>>,
    pub(crate) setup_state: Arc<bus::store::JetStreamStore<domain::setup::Setup>>,
    pub(crate) domain_commands: Arc<bus::store::Commands<domain::web::WebDomain>>,
    pub(crate) tag_commands: Arc<bus::store::Commands<domain::node::NodeTags>>,
    pub(crate) tag_state: Arc<bus::store::JetStreamStore<domain::node::NodeTags>>,
    pub(crate) approval_commands: Arc<bus::store::Commands<domain::approval::Approval>>,
    pub(crate) approval_state: Arc<bus::store::JetStreamStore<domain::approval::Approval>>,
    pub(crate) host_state: Arc<bus::store::JetStreamStore<domain::host::Host>>,
    pub(crate) exec_commands: Arc<bus::store::Commands<domain::host::HostExec>>,
    pub(crate) exec_state: Arc<bus::store::JetStreamStore<domain::host::HostExec>>,
    pub(crate) dead_letters: Arc<bus::store::Commands<domain::dlq::DeadLetter>>,
    pub(crate) sweeps: Arc<bus::store::Commands<domain::artifacts::ArtifactSweep>>,
    pub(crate) sweep_state: Arc<bus::store::JetStreamStore<domain::artifacts::ArtifactSweep>>,
    /// One artifact sweep (plan or collection) at a time.
    pub(crate) sweep_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) post_state: Arc<bus::store::JetStreamStore<domain::post::Post>>,
    pub(crate) artifacts: artifacts::ArtifactStore,
    pub(crate) config: Arc<Config>,
    pub(crate) site: Arc<Site>,
}

/// The running gateway: where it listens, and the bootstrap admin token it accepts.
pub struct Gateway {
    pub local_addr: SocketAddr,
    pub token: AdminToken,
    /// Where the token is kept, when it is not from the configuration.
    pub token_file: Option<std::path::PathBuf>,
    /// Whether the token was generated by this start (and may be shown, once).
    pub token_created: bool,
}

/// Builds the router (for tests and for [`serve`]).
pub fn router(state: AppState) -> Router {
    use axum::http::{HeaderValue, StatusCode, header};
    use tower_http::set_header::SetResponseHeaderLayer;
    let (protected, roles) = routes::protected();
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), Arc::new(roles)),
        access::require,
    ));
    let timeout = std::time::Duration::from_secs_f64(state.config.request_timeout_secs);
    let concurrency = state.config.max_concurrent_requests;
    Router::new()
        .route("/health", get(health::health))
        // Share links: the random token is the capability, for one shared output.
        .route("/share/{file}", get(shares::shared))
        // Git webhooks: the body's signature under the app's secret is the capability.
        .route(
            "/api/apps/{name}/hooks/git",
            axum::routing::post(hooks::git)
                .layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_BODY)),
        )
        .merge(assets::router())
        .merge(protected)
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(concurrency))
        // Blob and data images, blob videos: the Studio and the Video room show artifacts they
        // fetched with the caller's token.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; frame-ancestors 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// Starts the live hub and serves HTTP on `config.http_addr` until the context is cancelled.
pub async fn start(ctx: &Context, config: Config) -> anyhow::Result<Gateway> {
    use anyhow::Context as _;
    let site = Arc::clone(&ctx.site);
    let (token, token_created, token_file) = match &config.admin_token {
        Some(token) => (AdminToken::new(token.expose()), false, None),
        None => {
            let (token, created) = load_or_create_token(&site.state_dir).with_context(|| {
                format!(
                    "failed to read or create the admin token under {}",
                    site.state_dir.display()
                )
            })?;
            (token, created, Some(token_path(&site.state_dir)))
        }
    };
    let pool = projections::open(&site.database_url, 8).await?;
    let vault = vault::Vault::open(
        &ctx.bus,
        &vault::KeySource::new(site.vault_key_file.clone()),
        true,
    )
    .await
    .context("failed to open the secrets vault")?;
    let artifacts = artifacts::ArtifactStore::open(&site.artifacts_dir).with_context(|| {
        format!(
            "failed to open the artifact store at {}",
            site.artifacts_dir.display()
        )
    })?;
    let hub = Hub::start(ctx, config.ws_client_buffer)
        .await
        .context("failed to start the live event hub")?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http_addr))?;
    let local_addr = listener.local_addr()?;
    // The default public URL names this gateway's configured address; with port 0 it was
    // composed before the port was chosen, and only the bound one can be opened.
    let site = match config.http_addr.port() {
        0 => Arc::new(Site {
            public_url: site
                .public_url
                .replace(&config.http_addr.to_string(), &local_addr.to_string()),
            ..(*site).clone()
        }),
        _ => site,
    };
    let bus = ctx.bus.clone();
    let state = AppState {
        render_jobs: Arc::new(bus::store::commands(bus.clone(), ())),
        render_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        render_queue: Arc::new(bus::store::commands(bus.clone(), ())),
        chat_settings: Arc::new(bus::store::commands(bus.clone(), ())),
        posts: Arc::new(bus::store::commands(bus.clone(), ())),
        container_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        container_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        host_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        app_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        app_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        run_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        ai_jobs: Arc::new(bus::store::commands(bus.clone(), ())),
        ai_job_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        personas: Arc::new(bus::store::commands(bus.clone(), ())),
        persona_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        video_projects: Arc::new(bus::store::commands(bus.clone(), ())),
        video_queue: Arc::new(bus::store::commands(bus.clone(), ())),
        schedules: Arc::new(bus::store::commands(bus.clone(), ())),
        schedule_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        video_project_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        run_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        setup_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        setup_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        domain_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        tag_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        tag_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        approval_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        approval_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        host_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        exec_commands: Arc::new(bus::store::commands(bus.clone(), ())),
        exec_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        api_tokens: Arc::new(bus::store::commands(bus.clone(), ())),
        vault: Arc::new(vault),
        access: Arc::new(access::Access::new(bus.clone(), token.clone())),
        dead_letters: Arc::new(bus::store::commands(bus.clone(), ())),
        sweeps: Arc::new(bus::store::commands(bus.clone(), ())),
        sweep_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        sweep_lock: Arc::default(),
        post_state: Arc::new(bus::store::JetStreamStore::new(bus.clone())),
        artifacts,
        read: ReadModels::new(pool),
        redis: Arc::new(kv::Probe::new(&site.redis_url)),
        bus,
        hub,
        config: Arc::new(config),
        site,
    };
    if state.config.artifact_sweep_every_hours > 0.0 {
        let every = Duration::from_secs_f64(state.config.artifact_sweep_every_hours * 3600.0);
        let (state, cancel) = (state.clone(), ctx.cancel.clone());
        ctx.tracker
            .spawn(async move { sweeps::scheduled(state, every, cancel).await });
    }
    let app = router(state);
    // Live frames are small and latency-bound: no Nagle delay (with delayed acks it adds up to
    // 40 ms to a frame).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "failed to set TCP_NODELAY");
        }
    });
    let cancel = ctx.cancel.clone();
    ctx.tracker.spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %err, "gateway server failed");
        }
    });
    tracing::info!(addr = %local_addr, "gateway listening");
    Ok(Gateway {
        local_addr,
        token,
        token_file,
        token_created,
    })
}

/// The token file under a state directory.
pub fn token_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("admin-token")
}
