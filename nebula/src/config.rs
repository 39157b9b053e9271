//! One configuration for the binary: defaults ← optional TOML file ← environment.
//!
//! Environment: `NATS_URL`, `DATABASE_URL`, `REDIS_URL`, `NEBULA_HTTP_ADDR`, and any other key as
//! `NEBULA_<KEY>` with `__` for nesting (`NEBULA_AGENT__NODE_ID=gpu-1`,
//! `NEBULA_PROJECTOR__BATCH_SIZE=1000`). `NEBULA_ADMIN_TOKEN` overrides the stored admin token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    /// Replicas of every JetStream stream (1 on one server; 3 on a production cluster).
    pub stream_replicas: usize,
    pub database_url: String,
    pub redis_url: String,
    pub http_addr: SocketAddr,
    /// Where the agent's own endpoints listen (`/health`, `/metrics`, `/services`, `/gpu`).
    pub agent_http_addr: SocketAddr,
    /// Local state (the generated admin token).
    pub state_dir: PathBuf,
    /// Overrides the generated admin token (`NEBULA_ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    pub projector: ProjectorConfig,
    pub agent: agent::Config,
    pub gateway: GatewayTuning,
    pub render: RenderConfig,
    pub chat: ChatConfig,
    /// The Stream Bot's destinations (Twitch Helix, YouTube, Kick).
    pub post: posting::PostConfig,
}

/// Chat triggers: what every bot shares, and each platform's connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Base of the share links chat replies carry (`<public_url>/share/<sha256>.png`); the
    /// gateway's own address when unset.
    pub public_url: Option<String>,
    /// Attempts a chat-started render job gets.
    pub max_attempts: u32,
    /// Prefix of the Redis keys for cooldowns, quotas and reply tokens.
    pub redis_prefix: String,
    /// Runs when `channels` is set.
    pub twitch: twitch::TwitchConfig,
    /// Runs when `token` is set.
    pub discord: discord::DiscordConfig,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            max_attempts: 3,
            redis_prefix: "nebula:chat".to_owned(),
            twitch: twitch::TwitchConfig::default(),
            discord: discord::DiscordConfig::default(),
        }
    }
}

/// The Creative Studio: where artifacts live, the queue's cap, placement, and this node's
/// render worker (`nebula worker render`, and inside `nebula up`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    pub artifacts_dir: PathBuf,
    pub queue_cap: usize,
    /// `"simulated"` (a labelled stand-in that draws real PNGs from prompt and seed, for
    /// machines without a GPU) or `"comfyui"` (a real ComfyUI server at `comfyui_url`).
    pub backend: String,
    pub comfyui_url: String,
    /// The worker's node id; the agent's when absent.
    pub node_id: Option<String>,
    pub simulated_vram_mib: u64,
    pub simulated_step_ms: u64,
    pub dispatcher: render::DispatcherConfig,
    pub worker: render::WorkerConfig,
    /// Supervise a local ComfyUI process (start, health-check, restart) when set.
    pub supervise: Option<render::supervisor::SupervisorConfig>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            artifacts_dir: PathBuf::from(".nebula/artifacts"),
            queue_cap: 100,
            backend: "simulated".to_owned(),
            comfyui_url: "http://127.0.0.1:8188".to_owned(),
            node_id: None,
            simulated_vram_mib: 8192,
            simulated_step_ms: 120,
            dispatcher: render::DispatcherConfig::default(),
            worker: render::WorkerConfig::default(),
            supervise: None,
        }
    }
}

pub use common::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    pub batch_size: usize,
    pub max_attempts: u32,
    /// Which projections to run (all when empty).
    pub only: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayTuning {
    pub ws_client_buffer: usize,
    pub snapshot_events: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4322".to_owned(),
            stream_replicas: 1,
            database_url: "postgres://nebula:nebula@127.0.0.1:5432/nebula".to_owned(),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            agent_http_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            state_dir: PathBuf::from(".nebula"),
            admin_token: None,
            projector: ProjectorConfig::default(),
            agent: agent::Config::default(),
            gateway: GatewayTuning::default(),
            render: RenderConfig::default(),
            chat: ChatConfig::default(),
            post: posting::PostConfig::default(),
        }
    }
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        let runner = projections::runner::RunnerConfig::default();
        Self {
            batch_size: runner.batch_size,
            max_attempts: runner.max_attempts,
            only: Vec::new(),
        }
    }
}

impl Default for GatewayTuning {
    fn default() -> Self {
        let gateway = gateway::GatewayConfig::default();
        Self {
            ws_client_buffer: gateway.ws_client_buffer,
            snapshot_events: gateway.snapshot_events,
        }
    }
}

impl Config {
    /// Loads from `file` (if given, or `nebula.toml` in the working directory if present) and
    /// the environment, then validates, reporting every problem at once.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Self::load_from(file, std::env::vars())
    }

    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = toml::Table::new();
        let implicit = PathBuf::from("nebula.toml");
        let path = file
            .map(Path::to_path_buf)
            .or_else(|| implicit.exists().then_some(implicit));
        if let Some(path) = &path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read config file {}", path.display()))?;
            table = text
                .parse()
                .with_context(|| format!("failed to parse config file {}", path.display()))?;
        }
        for (name, value) in env {
            let key = match name.as_str() {
                "NATS_URL" => "nats_url".to_owned(),
                "DATABASE_URL" => "database_url".to_owned(),
                "REDIS_URL" => "redis_url".to_owned(),
                "NEBULA_CONFIG" => continue,
                _ => match name.strip_prefix("NEBULA_") {
                    Some(rest) if !rest.is_empty() => rest.to_ascii_lowercase(),
                    _ => continue,
                },
            };
            insert(&mut table, &key.split("__").collect::<Vec<_>>(), &value);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (defaults ← file ← NEBULA_* environment)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if !self.nats_url.starts_with("nats://") && !self.nats_url.starts_with("tls://") {
            problems.push(format!(
                "nats_url must start with nats:// or tls://, got {:?}",
                self.nats_url
            ));
        }
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            problems.push("database_url must be a postgres:// url".to_owned());
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            problems.push(format!(
                "redis_url must start with redis://, got {:?}",
                self.redis_url
            ));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            problems.push(format!(
                "stream_replicas must be 1 to 5, got {}",
                self.stream_replicas
            ));
        }
        if self.projector.batch_size == 0 || self.projector.batch_size > 10_000 {
            problems.push(format!(
                "projector.batch_size must be 1..=10000, got {}",
                self.projector.batch_size
            ));
        }
        if self.projector.max_attempts == 0 {
            problems.push("projector.max_attempts must be at least 1".to_owned());
        }
        for name in &self.projector.only {
            if projections::by_name(name).is_none() {
                problems.push(format!("projector.only names unknown projection {name:?}"));
            }
        }
        if self.gateway.ws_client_buffer < 16 {
            problems.push("gateway.ws_client_buffer must be at least 16".to_owned());
        }
        if !["simulated", "comfyui"].contains(&self.render.backend.as_str()) {
            problems.push(format!(
                "render.backend must be \"simulated\" or \"comfyui\", got {:?}",
                self.render.backend
            ));
        }
        if !self.render.comfyui_url.starts_with("http://")
            && !self.render.comfyui_url.starts_with("https://")
        {
            problems.push(format!(
                "render.comfyui_url must be an http(s) url, got {:?}",
                self.render.comfyui_url
            ));
        }
        if !(1..=10_000).contains(&self.render.queue_cap) {
            problems.push(format!(
                "render.queue_cap must be 1..=10000, got {}",
                self.render.queue_cap
            ));
        }
        if !(1..=64).contains(&self.render.worker.slots) {
            problems.push(format!(
                "render.worker.slots must be 1..=64, got {}",
                self.render.worker.slots
            ));
        }
        if self.render.dispatcher.max_per_node == 0 {
            problems.push("render.dispatcher.max_per_node must be at least 1".to_owned());
        }
        let discord = &self.chat.discord;
        if discord
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            problems.push("chat.discord.token is empty".to_owned());
        }
        if let Some(url) = &discord.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "chat.discord.api_url must be an http(s) url, got {url:?}"
            ));
        }
        if let Some(url) = &discord.gateway_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            problems.push(format!(
                "chat.discord.gateway_url must be a ws(s) url, got {url:?}"
            ));
        }
        for (name, url) in [
            ("post.twitch.api_url", &self.post.twitch.api_url),
            ("post.youtube.api_url", &self.post.youtube.api_url),
            ("post.kick.api_url", &self.post.kick.api_url),
            ("post.twitch.token_url", &self.post.twitch.token_url),
            ("post.youtube.token_url", &self.post.youtube.token_url),
            ("post.kick.token_url", &self.post.kick.token_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("{name} must be an http(s) url, got {url:?}"));
            }
        }
        if self.post.max_attempts == 0 {
            problems.push("post.max_attempts must be at least 1".to_owned());
        }
        problems.extend(self.agent.validate());
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn bus_config(&self) -> bus::BusConfig {
        bus::BusConfig {
            url: self.nats_url.clone(),
            stream_replicas: self.stream_replicas,
            ..Default::default()
        }
    }
}

/// Sets `path` in `table` to `raw`, typed as an integer, float or boolean when it parses as one.
fn insert(table: &mut toml::Table, path: &[&str], raw: &str) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
    let value = if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = raw.parse::<f64>() {
        toml::Value::Float(f)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Some(array) = raw
        .starts_with('[')
        .then(|| format!("v = {raw}").parse::<toml::Table>().ok())
        .flatten()
        .and_then(|mut t| t.remove("v"))
    {
        // `NEBULA_CHAT__TWITCH__CHANNELS='["a", "b"]'`
        array
    } else {
        toml::Value::String(raw.to_owned())
    };
    current.insert((*last).to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn chat_channels_come_as_a_list_or_separated_by_commas() {
        for raw in ["chan_a, #chan_b", r##"["chan_a", "#chan_b"]"##] {
            let config =
                Config::load_from(None, env(&[("NEBULA_CHAT__TWITCH__CHANNELS", raw)])).unwrap();
            assert_eq!(config.chat.twitch.channels, ["chan_a", "#chan_b"], "{raw}");
        }
        let config =
            Config::load_from(None, env(&[("NEBULA_CHAT__TWITCH__TOKEN", "very-secret")])).unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
    }

    #[test]
    fn stream_bot_ids_come_as_numbers_or_text_and_tokens_are_redacted() {
        let config = Config::load_from(
            None,
            env(&[
                ("NEBULA_POST__TWITCH__BROADCASTER_ID", "141981764"),
                ("NEBULA_POST__TWITCH__TOKEN", "helix-secret"),
                ("NEBULA_POST__KICK__BROADCASTER_USER_ID", "668"),
                ("NEBULA_POST__YOUTUBE__TOKEN", "ya29.secret"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.post.twitch.broadcaster_id.as_deref(),
            Some("141981764")
        );
        assert_eq!(config.post.kick.broadcaster_user_id, Some(668));
        assert!(config.post.any());
        let debug = format!("{config:?}");
        assert!(!debug.contains("helix-secret") && !debug.contains("ya29.secret"));
    }

    #[test]
    fn the_discord_bot_token_is_redacted_and_its_endpoints_checked() {
        let config = Config::load_from(
            None,
            env(&[
                ("NEBULA_CHAT__DISCORD__TOKEN", "MTEx.very-secret"),
                ("NEBULA_CHAT__DISCORD__API_URL", "http://127.0.0.1:9999"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.chat.discord.api_url.as_deref(),
            Some("http://127.0.0.1:9999")
        );
        assert!(!format!("{config:?}").contains("very-secret"));
        let err = Config::load_from(
            None,
            env(&[("NEBULA_CHAT__DISCORD__GATEWAY_URL", "https://gateway")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("gateway_url must be a ws(s) url"));
    }

    #[test]
    fn environment_overrides_defaults_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nebula.toml");
        std::fs::write(
            &file,
            "redis_url = \"redis://filehost:6379\"\n[projector]\nbatch_size = 7\n",
        )
        .unwrap();
        let config = Config::load_from(
            Some(&file),
            env(&[
                ("NATS_URL", "nats://10.0.0.1:4222"),
                ("NEBULA_PROJECTOR__BATCH_SIZE", "9"),
                ("NEBULA_AGENT__NODE_ID", "gpu-1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(config.redis_url, "redis://filehost:6379");
        assert_eq!(config.projector.batch_size, 9);
        assert_eq!(config.agent.node_id.as_deref(), Some("gpu-1"));
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::load_from(
            None,
            env(&[
                ("NEBULA_STREAM_REPLICAS", "7"),
                ("NATS_URL", "http://x"),
                ("NEBULA_PROJECTOR__BATCH_SIZE", "0"),
                ("NEBULA_AGENT__NODE_ID", "a.b"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nats_url"), "{err}");
        assert!(err.contains("stream_replicas"), "{err}");
        assert!(err.contains("batch_size"), "{err}");
        assert!(err.contains("node_id"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::load_from(
            None,
            env(&[("NEBULA_ADMIN_TOKEN", "super-secret-token-value")]),
        )
        .unwrap();
        assert_eq!(
            config.admin_token.as_ref().unwrap().expose(),
            "super-secret-token-value"
        );
        assert!(!format!("{config:?}").contains("super-secret"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::load_from(None, env(&[("NEBULA_HTTP_ADRR", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("http_adrr"), "{err:#}");
    }
}
