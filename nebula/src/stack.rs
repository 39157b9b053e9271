//! Composing the parts into one process: a table of every part and how it starts. `nebula up`
//! runs all of them; `nebula gateway`, `nebula agent`, … one each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::Bus;
use futures::StreamExt;
use futures::future::BoxFuture;
use gateway::{AdminToken, AgentView};
use service::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;

/// A part of the system that a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Keeps the Postgres read models up to date.
    Projector,
    /// REST, the websocket feed and the dashboard.
    Gateway,
    /// This node's agent: hardware, registration, heartbeats, its own endpoints.
    Agent,
    /// Places queued render jobs on nodes (one per system), routes container commands to the
    /// nodes that carry them out (and expires what nobody takes), runs commands on hosts over
    /// SSH and reads their metrics, carries out deploy runs (and expires approvals), and relays the nodes' commands
    /// to the control plane's aggregates (`bus::remote`).
    Dispatcher,
    /// This node's render worker (and its ComfyUI supervisor, when configured).
    RenderWorker,
    /// The chat bots that are configured (Twitch when `chat.twitch.channels` is set, Discord
    /// when `chat.discord.token` is).
    Chat,
    /// The Stream Bot, when a `post.*.token` is set.
    Posting,
}

impl Part {
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Part::Projector => "projector",
            Part::Gateway => "gateway",
            Part::Agent => "agent",
            Part::Dispatcher => "render dispatcher",
            Part::RenderWorker => "render worker",
            Part::Chat => "chat",
            Part::Posting => "Stream Bot",
        }
    }

    /// Whether it belongs to the control plane, which alone provisions the streams.
    const fn is_control_plane(self) -> bool {
        matches!(self, Part::Projector | Part::Gateway | Part::Dispatcher)
    }
}

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts(u8);

impl Parts {
    pub const NONE: Parts = Parts(0);
    pub const ALL: Parts = Parts::of(&[
        Part::Projector,
        Part::Gateway,
        Part::Agent,
        Part::Dispatcher,
        Part::RenderWorker,
        Part::Chat,
        Part::Posting,
    ]);
    pub const GATEWAY: Parts = Parts::of(&[Part::Gateway]);
    pub const PROJECTOR: Parts = Parts::of(&[Part::Projector]);
    pub const AGENT: Parts = Parts::of(&[Part::Agent]);
    pub const DISPATCHER: Parts = Parts::of(&[Part::Dispatcher]);
    pub const RENDER_WORKER: Parts = Parts::of(&[Part::RenderWorker]);
    pub const CHAT: Parts = Parts::of(&[Part::Chat]);
    pub const POSTING: Parts = Parts::of(&[Part::Posting]);

    pub const fn of(parts: &[Part]) -> Parts {
        let mut bits = 0;
        let mut i = 0;
        while i < parts.len() {
            bits |= parts[i].bit();
            i += 1;
        }
        Parts(bits)
    }

    pub const fn with(self, part: Part) -> Parts {
        Parts(self.0 | part.bit())
    }

    pub const fn contains(self, part: Part) -> bool {
        self.0 & part.bit() != 0
    }

    fn any_of_the_control_plane(self) -> bool {
        PARTS
            .iter()
            .any(|(part, _)| part.is_control_plane() && self.contains(*part))
    }
}

/// What a part hands back once it runs.
#[derive(Default)]
struct Started {
    gateway: Option<gateway::Gateway>,
    agent_addr: Option<SocketAddr>,
}

type Start = fn(Context, Config) -> BoxFuture<'static, anyhow::Result<Started>>;

/// Every part, in the order a process starts them: the gateway before the parts whose share
/// links point at it.
const PARTS: [(Part, Start); 7] = [
    (Part::Projector, |ctx, config| {
        Box::pin(projector(ctx, config))
    }),
    (Part::Gateway, |ctx, config| Box::pin(gateway(ctx, config))),
    (Part::Agent, |ctx, config| Box::pin(agent(ctx, config))),
    (Part::Dispatcher, |ctx, config| {
        Box::pin(dispatcher(ctx, config))
    }),
    (Part::RenderWorker, |ctx, config| {
        Box::pin(render_worker(ctx, config))
    }),
    (Part::Chat, |ctx, config| {
        Box::pin(with_secrets(ctx, config, "chat.", start_chat))
    }),
    (Part::Posting, |ctx, config| {
        Box::pin(with_secrets(ctx, config, "post.", start_posting))
    }),
];

async fn projector(ctx: Context, config: Config) -> anyhow::Result<Started> {
    projections::projector::start(&ctx, config.projector).await?;
    Ok(Started::default())
}

async fn gateway(ctx: Context, config: Config) -> anyhow::Result<Started> {
    let mut gateway_config = config.gateway;
    if gateway_config.join_nats_url.is_empty() {
        gateway_config.join_nats_url = config.nats_url.clone();
    }
    gateway_config.ai_dev_repos = config
        .ai_dev
        .repos
        .iter()
        .map(|repo| (repo.name.clone(), repo.base.clone()))
        .collect();
    gateway_config.video_queue_cap = config.video.queue_cap();
    let gateway = gateway::start(&ctx, gateway_config).await?;
    Ok(Started {
        gateway: Some(gateway),
        ..Started::default()
    })
}

/// The agent's endpoints are bound first, so its registration can say where they are.
async fn agent(ctx: Context, config: Config) -> anyhow::Result<Started> {
    let mut agent_config = config.agent;
    if config.ai_dev.node_runner {
        // This node takes the AI developer jobs the control plane offers it.
        agent_config
            .capabilities
            .push(events::node::AI_DEV.to_owned());
        let vram_mib = largest_gpu_mib(agent_config.disable_gpu_detection).await;
        let kv = ai_dev_memory(&ctx).await;
        aidev::start_on_node(&ctx, config.ai_dev, ctx.site.node_id.as_str(), vram_mib, kv);
    }
    let addr = agent_config.http_addr;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("failed to listen on {addr} for the agent endpoints"))?;
    let addr = listener.local_addr()?;
    agent_config
        .advertise_url
        .get_or_insert_with(|| format!("http://{addr}"));
    let status = agent::start(&ctx, agent_config)?;
    gateway::serve_agent(&ctx, listener, Arc::new(AgentEndpoints(status)))?;
    tracing::info!(%addr, "agent endpoints listening");
    Ok(Started {
        agent_addr: Some(addr),
        ..Started::default()
    })
}

/// The dispatcher, the container command router, the SSH side of hosts, the deployer, the AI
/// developer, and the relays through which the nodes'
/// agents, render workers and ComfyUI supervisors have their commands decided (they may not
/// write the event log themselves).
async fn dispatcher(ctx: Context, config: Config) -> anyhow::Result<Started> {
    render::dispatcher::start(&ctx, config.render.dispatcher);
    fleet::start(&ctx, config.fleet);
    hosts::start(&ctx, config.hosts);
    let ai_rules = config.approvals.rules.clone();
    deploy::start(&ctx, config.deploy, config.approvals, config.domains);
    let kv = ai_dev_memory(&ctx).await;
    aidev::start(&ctx, config.ai_dev, ai_rules, kv);
    video::start(&ctx, config.video)?;
    relay::<domain::ai_dev::AiDevJob>(&ctx, "relay-ai-dev-job", domain::ai_dev::job_node_may);
    relay::<domain::node::Node>(&ctx, "relay-node", domain::node::node_may);
    relay::<domain::container::ContainerCommand>(
        &ctx,
        "relay-container-command",
        domain::container::command_node_may,
    );
    relay::<domain::container::NodeContainers>(
        &ctx,
        "relay-node-containers",
        domain::container::containers_node_may,
    );
    relay::<domain::service::NodeServices>(
        &ctx,
        "relay-node-services",
        domain::service::services_node_may,
    );
    relay::<domain::render::RenderJob>(&ctx, "relay-render-job", domain::render::job_node_may);
    relay::<domain::render::ComfyInstance>(&ctx, "relay-comfyui", domain::render::comfy_node_may);
    Ok(Started::default())
}

/// The AI developer's memory lives in Redis; without it a job still runs, but a restart
/// cannot resume it (and says so).
async fn ai_dev_memory(ctx: &Context) -> Option<kv::Kv> {
    match kv::Kv::connect(&ctx.site.redis_url).await {
        Ok(kv) => Some(kv),
        Err(err) => {
            tracing::warn!(error = %err, redis = %common::redact_url(&ctx.site.redis_url), "Redis is unreachable: AI developer jobs will not survive a restart");
            None
        }
    }
}

/// This machine's largest GPU (MiB), as the agent's hardware probe finds it.
async fn largest_gpu_mib(disabled: bool) -> Option<u64> {
    if disabled {
        return None;
    }
    tokio::task::spawn_blocking(|| {
        agent::hardware::GpuBackend::detect()
            .inventory()
            .ok()
            .and_then(|gpus| gpus.iter().map(|g| g.memory_total_bytes >> 20).max())
    })
    .await
    .ok()
    .flatten()
}

/// ComfyUI's memory mode, when it is supervised and no mode is set, comes from the largest GPU
/// the agent's hardware probe finds on this machine.
async fn render_worker(ctx: Context, config: Config) -> anyhow::Result<Started> {
    let mut render = config.render;
    if let Some(supervise) = &mut render.supervise
        && supervise.vram_mode.is_none()
    {
        let vram_mib = largest_gpu_mib(false).await;
        supervise.vram_mode = Some(render::supervisor::vram_flag(vram_mib).to_owned());
    }
    render::start(&ctx, render).await?;
    Ok(Started::default())
}

/// Serves the nodes' commands to aggregates of type `A`, restarted by the context if it fails.
fn relay<A>(ctx: &Context, name: &'static str, policy: bus::remote::NodePolicy<A>)
where
    A: cqrs_es::Aggregate<Services = ()> + Clone + 'static,
    A::Command: serde::de::DeserializeOwned + Clone + Send + Sync,
    A::Error: serde::Serialize + Send + Sync,
    A::Event: events::DomainEvent,
{
    let bus = ctx.bus.clone();
    ctx.spawn(name, move |cancel| {
        let bus = bus.clone();
        async move { Ok(bus::remote::serve::<A>(bus, policy, cancel).await?) }
    });
}

type StartWith = fn(&Context, Config) -> BoxFuture<'_, anyhow::Result<()>>;

/// A part whose configuration may name vault secrets (`secret:NAME` under `prefix`): started
/// with their values; when one of those secrets changes, stopped and started again with the
/// new value.
async fn with_secrets(
    ctx: Context,
    config: Config,
    prefix: &'static str,
    start: StartWith,
) -> anyhow::Result<Started> {
    let references: Vec<String> = config
        .secret_references()
        .into_iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(_, name)| name)
        .collect();
    if references.is_empty() {
        start(&ctx, config).await?;
        return Ok(Started::default());
    }
    let vault = open_vault(&ctx).await?;
    // Watched before the first read, so no rotation falls between them.
    let mut changes = Box::pin(vault.changes().await?);
    let mut child = ctx.child();
    start(&child, config.resolve_secrets(&vault).await?).await?;
    let parent = ctx.clone();
    let part = prefix.trim_end_matches('.');
    ctx.spawn_once("secrets-watch", async move {
        let mut reopen = parent.restart.clone();
        loop {
            let next = tokio::select! {
                () = parent.cancel.cancelled() => {
                    child.stop().await;
                    return Ok(());
                }
                next = changes.next() => next,
            };
            let Some(name) = next else {
                tracing::warn!(retry_in = ?reopen.peek(), "the vault's change feed ended; reopening it");
                if !reopen.wait(&parent.cancel).await {
                    child.stop().await;
                    return Ok(());
                }
                match vault.changes().await {
                    Ok(reopened) => changes = Box::pin(reopened),
                    Err(err) => tracing::warn!(error = %err, "the vault's change feed cannot be reopened yet"),
                }
                continue;
            };
            reopen.reset();
            if !references.contains(&name) {
                continue;
            }
            tracing::info!(secret = %name, part, "a secret this part uses changed; starting it again");
            parent
                .metrics()
                .add("nebula_secret_rotations_total", &[("part", part)], 1.0);
            child.stop().await;
            child = parent.child();
            let started = match config.resolve_secrets(&vault).await {
                Ok(resolved) => start(&child, resolved).await,
                Err(err) => Err(err),
            };
            if let Err(err) = started {
                tracing::error!(error = format!("{err:#}"), part, "the part stays stopped until its secrets are fixed");
            }
        }
    });
    Ok(Started::default())
}

async fn open_vault(ctx: &Context) -> anyhow::Result<vault::Vault> {
    let source = vault::KeySource::new(ctx.site.vault_key_file.clone());
    vault::Vault::open(&ctx.bus, &source, false).await.context(
        "the configuration names vault secrets (secret:NAME), but the vault cannot be opened",
    )
}

fn start_chat(ctx: &Context, config: Config) -> BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        let chat = config.chat;
        let any = chat.twitch.enabled() || chat.discord.enabled();
        if !any {
            tracing::info!("no chat bot configured (chat.twitch.channels, chat.discord.token)");
        }
        warn_without_public_url(ctx, any, config.public_url.is_some());
        if chat.twitch.enabled() {
            twitch::start(ctx, chat.twitch, &chat.shared).await?;
        }
        if chat.discord.enabled() {
            discord::start(ctx, chat.discord, &chat.shared).await?;
        }
        Ok(())
    })
}

fn start_posting(ctx: &Context, config: Config) -> BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        if !config.post.enabled() {
            tracing::info!("no Stream Bot destination configured (post.*.token)");
            return Ok(());
        }
        warn_without_public_url(ctx, true, config.public_url.is_some());
        posting::start(ctx, config.post)
    })
}

fn warn_without_public_url(ctx: &Context, runs: bool, public_url_set: bool) {
    if runs && !public_url_set {
        tracing::warn!(
            public_url = %ctx.site.public_url,
            "public_url is not set: share links in chat replies and posts point at this \
             address, which viewers elsewhere cannot open"
        );
    }
}

/// The bootstrap admin token of a running gateway.
pub struct AdminAccess {
    pub token: AdminToken,
    /// Where it is kept (none when it came from the configuration).
    pub file: Option<std::path::PathBuf>,
    /// Whether this start generated it.
    pub created: bool,
}

/// A running composition. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    pub gateway_addr: Option<SocketAddr>,
    pub agent_addr: Option<SocketAddr>,
    pub admin: Option<AdminAccess>,
    pub bus: Bus,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Fires when the process shuts down (a signal, or a part that failed for good).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every part and waits (bounded) for their tasks to drain.
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

/// Starts `parts` of the system, in the order of the table. If one fails to start, what was
/// already started is stopped again.
pub async fn start(config: &Config, parts: Parts) -> anyhow::Result<Running> {
    // Only the control plane provisions the streams; every other process checks they exist.
    let bus = if parts.any_of_the_control_plane() {
        Bus::connect(config.bus_config()).await
    } else {
        Bus::connect_checked(config.bus_config()).await
    }
    .with_context(|| format!("failed to connect to nats at {}", config.nats_url))?;
    let mut ctx = Context::new(bus.clone(), config.site(None));
    let mut running = Running {
        gateway_addr: None,
        agent_addr: None,
        admin: None,
        bus,
        cancel: ctx.cancel.clone(),
        tracker: ctx.tracker.clone(),
    };
    // `secret:NAME` values are read from the vault once, here; the chat and posting parts read
    // their own, and read them again when they rotate.
    let elsewhere = config
        .secret_references()
        .iter()
        .any(|(key, _)| !key.starts_with("chat.") && !key.starts_with("post."));
    let resolved = if elsewhere {
        let vault = match open_vault(&ctx).await {
            Ok(vault) => vault,
            Err(err) => {
                running.shutdown().await;
                return Err(err);
            }
        };
        config.resolve_secrets(&vault).await?
    } else {
        config.clone()
    };
    for (part, start) in PARTS {
        if !parts.contains(part) {
            continue;
        }
        let given = if matches!(part, Part::Chat | Part::Posting) {
            config.clone()
        } else {
            resolved.clone()
        };
        let started = match start(ctx.clone(), given).await {
            Ok(started) => started,
            Err(err) => {
                running.shutdown().await;
                return Err(err.context(format!("failed to start the {}", part.name())));
            }
        };
        if let Some(gateway) = started.gateway {
            // Share links point at the address the gateway really listens on.
            ctx.site = Arc::new(config.site(Some(gateway.local_addr)));
            running.gateway_addr = Some(gateway.local_addr);
            running.admin = Some(AdminAccess {
                token: gateway.token,
                file: gateway.token_file,
                created: gateway.token_created,
            });
        }
        running.agent_addr = running.agent_addr.or(started.agent_addr);
    }
    Ok(running)
}
