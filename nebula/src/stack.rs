//! Composing the services into one process: `nebula up` runs all of them, `nebula gateway`,
//! `nebula projector` and `nebula agent` one each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bus::{Bus, ServiceContext};
use gateway::{AdminToken, AgentView};
use projections::runner::{Runner, RunnerConfig};
use projections::{PgPool, ReadModels};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;

/// Which services to run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub gateway: bool,
    pub projector: bool,
    pub agent: bool,
    /// Places queued render jobs on nodes (one per system).
    pub dispatcher: bool,
    /// This node's render worker (and its ComfyUI supervisor, when configured).
    pub render_worker: bool,
    /// The chat bots that are configured (Twitch when `chat.twitch.channels` is set, Discord
    /// when `chat.discord.token` is), and the Stream Bot (when a `post.*.token` is).
    pub chat: bool,
}

impl Parts {
    pub const NONE: Parts = Parts {
        gateway: false,
        projector: false,
        agent: false,
        dispatcher: false,
        render_worker: false,
        chat: false,
    };
    pub const ALL: Parts = Parts {
        gateway: true,
        projector: true,
        agent: true,
        dispatcher: true,
        render_worker: true,
        chat: true,
    };
    pub const GATEWAY: Parts = Parts {
        gateway: true,
        ..Parts::NONE
    };
    pub const PROJECTOR: Parts = Parts {
        projector: true,
        ..Parts::NONE
    };
    pub const AGENT: Parts = Parts {
        agent: true,
        ..Parts::NONE
    };
    pub const DISPATCHER: Parts = Parts {
        dispatcher: true,
        ..Parts::NONE
    };
    pub const RENDER_WORKER: Parts = Parts {
        render_worker: true,
        ..Parts::NONE
    };
    pub const CHAT: Parts = Parts {
        chat: true,
        ..Parts::NONE
    };
}

/// A running composition. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    pub gateway_addr: Option<SocketAddr>,
    pub agent_addr: Option<SocketAddr>,
    pub token: Option<AdminToken>,
    pub bus: Bus,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Resolves when the shutdown token fires (from a signal or a failed service).
    pub async fn stopped(&self) {
        self.cancel.cancelled().await;
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every service and waits (bounded) for their tasks to drain.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10s");
        }
    }
}

struct AgentEndpoints(agent::AgentStatus);

impl AgentView for AgentEndpoints {
    fn health(&self) -> (bool, serde_json::Value) {
        self.0.health()
    }
    fn metrics(&self) -> String {
        self.0.metrics()
    }
    fn services(&self) -> serde_json::Value {
        self.0.services()
    }
    fn gpu(&self) -> serde_json::Value {
        self.0.gpu()
    }
}

/// Connects to Postgres and applies pending migrations.
pub(crate) async fn database(config: &Config, connections: u32) -> anyhow::Result<PgPool> {
    let pool = projections::connect(&config.database_url, connections)
        .await
        .with_context(|| {
            format!(
                "failed to connect to postgres at {}",
                redact(&config.database_url)
            )
        })?;
    projections::migrate(&pool)
        .await
        .context("failed to migrate the database")?;
    Ok(pool)
}

/// Hides the password of a URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Loads the admin token: `admin_token` from config/env if set, else the one stored under
/// `state_dir` (generated on first run).
pub(crate) fn admin_token(config: &Config) -> anyhow::Result<(AdminToken, bool)> {
    if let Some(token) = &config.admin_token {
        anyhow::ensure!(
            token.expose().len() >= 16,
            "NEBULA_ADMIN_TOKEN must be at least 16 characters"
        );
        return Ok((AdminToken::new(token.expose()), false));
    }
    gateway::load_or_create_token(&config.state_dir).with_context(|| {
        format!(
            "failed to read or create the admin token under {}",
            config.state_dir.display()
        )
    })
}

/// Starts `parts` of the system. Every long-running task is tracked and stops on the token; if
/// starting fails halfway, what was already started is stopped again.
pub async fn start(config: &Config, parts: Parts) -> anyhow::Result<Running> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    match start_parts(config, parts, cancel.clone(), tracker.clone()).await {
        Ok(running) => Ok(running),
        Err(err) => {
            cancel.cancel();
            tracker.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
            Err(err)
        }
    }
}

async fn start_parts(
    config: &Config,
    parts: Parts,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<Running> {
    let bus = Bus::connect(config.bus_config())
        .await
        .with_context(|| format!("failed to connect to nats at {}", config.nats_url))?;
    let pool = if parts.gateway || parts.projector {
        Some(database(config, 8).await?)
    } else {
        None
    };
    let mut running = Running {
        gateway_addr: None,
        agent_addr: None,
        token: None,
        bus: bus.clone(),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
    };

    if let (true, Some(pool)) = (parts.projector, &pool) {
        let runner_config = RunnerConfig {
            batch_size: config.projector.batch_size,
            max_attempts: config.projector.max_attempts,
            ..RunnerConfig::default()
        };
        for projection in projections::all() {
            if !config.projector.only.is_empty()
                && !config.projector.only.iter().any(|n| n == projection.name())
            {
                continue;
            }
            let name = projection.name();
            let runner = Runner::new(pool.clone(), bus.clone(), projection, runner_config.clone());
            let cancel = cancel.clone();
            tracker.spawn(async move {
                if let Err(err) = runner.run(cancel.clone()).await {
                    tracing::error!(
                        projection = name,
                        error = format!("{err:#}"),
                        "projection stopped"
                    );
                    cancel.cancel();
                }
            });
        }
    }

    if let (true, Some(pool)) = (parts.gateway, &pool) {
        let (token, _) = admin_token(config)?;
        let gateway_config = gateway::GatewayConfig {
            http_addr: config.http_addr,
            redis_url: config.redis_url.clone(),
            ws_client_buffer: config.gateway.ws_client_buffer,
            snapshot_events: config.gateway.snapshot_events,
            artifacts_dir: config.render.artifacts_dir.clone(),
            render_queue_cap: config.render.queue_cap,
        };
        let served = gateway::serve(
            gateway_config,
            ReadModels::new(pool.clone()),
            bus.clone(),
            token.clone(),
            &tracker,
            cancel.clone(),
        )
        .await?;
        running.gateway_addr = Some(served.local_addr);
        running.token = Some(token);
    }

    if parts.agent {
        let ctx = ServiceContext {
            bus: bus.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        };
        let mut service =
            agent::build(config.agent.clone(), ctx).context("failed to build the agent")?;
        let addr = gateway::serve_agent(
            config.agent_http_addr,
            Arc::new(AgentEndpoints(service.status())),
            &tracker,
            cancel.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "failed to listen on {} for the agent endpoints",
                config.agent_http_addr
            )
        })?;
        if config.agent.advertise_url.is_none() {
            service.set_advertise_url(format!("http://{addr}"));
        }
        running.agent_addr = Some(addr);
        let cancel_on_error = cancel.clone();
        tracker.spawn(async move {
            if let Err(err) = service.run().await {
                tracing::error!(error = format!("{err:#}"), "agent stopped");
                cancel_on_error.cancel();
            }
        });
    }
    if parts.dispatcher {
        let dispatcher = render::Dispatcher::new(bus.clone(), config.render.dispatcher.clone());
        spawn_part(
            &tracker,
            &cancel,
            "render dispatcher",
            dispatcher.run(cancel.clone()),
        );
    }

    if parts.render_worker {
        start_render_worker(config, &bus, &cancel, &tracker).await?;
    }
    if parts.chat {
        start_chat(config, &running, &cancel, &tracker).await?;
    }
    Ok(running)
}

/// The render backend the configuration asks for.
fn render_backend(config: &Config) -> anyhow::Result<Arc<dyn render::Backend>> {
    Ok(match config.render.backend.as_str() {
        "comfyui" => Arc::new(
            render::comfyui::ComfyUi::new(&config.render.comfyui_url)
                .map_err(|err| anyhow::anyhow!("render.comfyui_url: {err}"))?,
        ),
        _ => {
            tracing::warn!(
                "render backend: SIMULATED GPU (no model runs; images are drawn from prompt and seed). \
                 Set render.backend = \"comfyui\" to use a real ComfyUI server."
            );
            Arc::new(render::simulated::SimulatedGpu {
                vram_total_mib: config.render.simulated_vram_mib,
                step_time: Duration::from_millis(config.render.simulated_step_ms),
            })
        }
    })
}

async fn start_render_worker(
    config: &Config,
    bus: &Bus,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let node_id = match (&config.render.node_id, &config.agent.node_id) {
        (Some(id), _) | (None, Some(id)) => id.clone(),
        (None, None) => {
            let hostname = agent::host_name();
            agent::default_node_id(&hostname).to_string()
        }
    };
    let _: events::NodeId = node_id
        .parse()
        .map_err(|err| anyhow::anyhow!("render.node_id {node_id:?}: {err}"))?;
    let store = render::ArtifactStore::open(&config.render.artifacts_dir).with_context(|| {
        format!(
            "failed to open the artifact store at {}",
            config.render.artifacts_dir.display()
        )
    })?;
    if let Some(supervise) = &config.render.supervise {
        // The largest GPU's memory decides ComfyUI's memory mode.
        let vram = tokio::task::spawn_blocking(|| {
            agent::hardware::GpuBackend::detect()
                .inventory()
                .ok()
                .and_then(|gpus| gpus.iter().map(|g| g.memory_total_bytes >> 20).max())
        })
        .await
        .ok()
        .flatten();
        let supervisor = render::supervisor::Supervisor::new(
            bus.clone(),
            node_id.clone(),
            config.render.comfyui_url.clone(),
            supervise.clone(),
            vram,
        )?;
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(err) = supervisor.run(cancel).await {
                tracing::error!(error = format!("{err:#}"), "comfyui supervisor stopped");
            }
        });
    }
    let worker = render::Worker::new(
        bus.clone(),
        node_id,
        render_backend(config)?,
        store,
        config.render.worker.clone(),
    );
    let cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(err) = worker.run(cancel.clone()).await {
            tracing::error!(error = format!("{err:#}"), "render worker stopped");
            cancel.cancel();
        }
    });
    Ok(())
}

/// The configured chat bots, each with its intake and its follower, and the Stream Bot when a
/// posting destination is configured.
async fn start_chat(
    config: &Config,
    running: &Running,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let chat_config = &config.chat;
    let twitch_on = !chat_config.twitch.channels.is_empty();
    let discord_on = chat_config.discord.token.is_some();
    let public_url = chat_config.public_url.clone().unwrap_or_else(|| {
        let addr = running.gateway_addr.unwrap_or(config.http_addr);
        format!("http://{addr}")
    });
    if chat_config.public_url.is_none() && (twitch_on || discord_on || config.post.any()) {
        tracing::warn!(
            %public_url,
            "chat.public_url is not set: share links in chat replies and posts point at this \
             address, which viewers elsewhere cannot open"
        );
    }
    if config.post.any() {
        let poster = posting::Poster::new(
            running.bus.clone(),
            config.post.clone(),
            public_url.clone(),
            Some(&config.state_dir),
        )?;
        spawn_part(tracker, cancel, "stream bot", poster.run(cancel.clone()));
    }
    if !twitch_on && !discord_on {
        return Ok(());
    }
    let bus = running.bus.clone();
    let limits = chat::Limits::connect(&config.redis_url, &chat_config.redis_prefix)
        .await
        .with_context(|| {
            format!(
                "failed to connect to redis at {}",
                redact(&config.redis_url)
            )
        })?;
    let artifacts =
        render::ArtifactStore::open(&config.render.artifacts_dir).with_context(|| {
            format!(
                "failed to open the artifact store at {}",
                config.render.artifacts_dir.display()
            )
        })?;
    let intake_config = chat::IntakeConfig {
        queue_cap: config.render.queue_cap,
        max_attempts: chat_config.max_attempts,
    };
    // Each platform: its listener, and its own intake and follower around its replier.
    let platform = |name: &'static str, replier: Arc<dyn chat::Replier>, progress_every: u64| {
        let intake = chat::Intake::new(
            bus.clone(),
            replier.clone(),
            limits.clone(),
            intake_config.clone(),
        );
        let follower = chat::Follower::new(
            bus.clone(),
            replier,
            limits.clone(),
            artifacts.clone(),
            chat::follower::FollowerConfig {
                progress_every: Duration::from_secs(progress_every),
                public_url: public_url.clone(),
            },
        );
        spawn_part(tracker, cancel, name, intake.run(cancel.clone()));
        spawn_part(tracker, cancel, name, follower.run(cancel.clone()));
    };
    if twitch_on {
        let twitch_config = &chat_config.twitch;
        let (replier, listener) = twitch::connect(twitch_config, bus.clone())?;
        spawn_part(tracker, cancel, "twitch", listener.run(cancel.clone()));
        platform("twitch", replier, twitch_config.progress_every_secs);
    }
    if discord_on {
        let discord_config = &chat_config.discord;
        let (replier, listener) =
            discord::connect(discord_config, bus.clone(), cancel.clone()).await?;
        spawn_part(tracker, cancel, "discord", listener.run(cancel.clone()));
        platform("discord", replier, discord_config.progress_every_secs);
    }
    Ok(())
}

/// Runs `task` on `tracker`; if it fails, logs why and stops the whole process (`cancel`).
fn spawn_part(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    name: &'static str,
    task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    let cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(err) = task.await {
            tracing::error!(error = format!("{err:#}"), "{name} stopped");
            cancel.cancel();
        }
    });
}
