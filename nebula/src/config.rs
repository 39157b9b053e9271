//! One configuration for the binary: defaults ← optional TOML file ← environment. It only
//! composes: each part's section is that part's own `Config`, with its defaults and its
//! `validate()`; what the parts share (the site) sits at the top.
//!
//! Environment: any key as `NEBULA_<KEY>` with `__` for nesting (`NEBULA_AGENT__NODE_ID=gpu-1`,
//! `NEBULA_PROJECTOR__BATCH_SIZE=1000`), and the names in [`ALIASES`] (`NATS_URL`,
//! `NEBULA_HTTP_ADDR`, …).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Deserializer};

pub use common::{Dsn, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// NATS: one server, or a cluster's seeds separated by commas (never with credentials).
    pub nats_url: String,
    /// Who this process is to NATS: `[nats]` nkey_file / creds_file, tls_ca, tls_cert, tls_key.
    pub nats: bus::NatsAuth,
    /// Replicas of every JetStream stream (1 on one server; 3 on a production cluster).
    pub stream_replicas: usize,
    /// The most bytes the event log may hold (0: no limit of its own). Full, a write is refused
    /// and nothing stored is touched; raise it (and the server's store) to go on.
    pub events_max_bytes: i64,
    /// Postgres, for the read models (its password never prints).
    pub database_url: Dsn,
    /// Redis, for chat limits and the AI developer's job memory.
    pub redis_url: Dsn,
    /// Local state (the generated admin token, refreshed platform tokens).
    pub state_dir: PathBuf,
    /// The artifact store, shared by the gateway and the render workers on this host.
    pub artifacts_dir: PathBuf,
    /// Base of the share links chat replies and posts carry (`<public_url>/share/<token>.png`);
    /// the gateway's own address when unset.
    pub public_url: Option<String>,
    /// Most render jobs queued at once (the next submission gets a 429).
    pub render_queue_cap: usize,
    /// The secrets vault's key file (`<state_dir>/vault.key` when unset); `NEBULA_VAULT_KEY`
    /// (64 hex digits) wins over it.
    pub vault_key_file: Option<PathBuf>,
    pub gateway: gateway::Config,
    pub projector: projections::projector::Config,
    pub agent: agent::Config,
    pub render: render::Config,
    pub chat: ChatConfig,
    /// The Stream Bot's destinations (Twitch Helix, YouTube, Kick).
    pub post: posting::Config,
    /// Routing container commands to nodes, and expiring what nobody takes.
    pub fleet: fleet::Config,
    /// Hosts over SSH: metrics and remote commands (run with the dispatcher).
    pub hosts: hosts::Config,
    /// The Deploy Center's executor (run with the dispatcher).
    pub deploy: deploy::Config,
    /// When something needs people's approval (`[[approvals.rules]]`).
    pub approvals: deploy::ApprovalsConfig,
    /// Domains served through Caddy, their DNS at Cloudflare (run with the dispatcher).
    pub domains: deploy::DomainsConfig,
    /// The AI developer: its model, the repositories it may change, its budgets (run with the
    /// dispatcher).
    pub ai_dev: aidev::Config,
    /// Script to video: where projects go, how many at once, the speech engines (run with the
    /// dispatcher).
    pub video: video::Config,
}

/// `[chat]`: what every bot shares, and each platform's own section.
#[derive(Debug, Clone, Default)]
pub struct ChatConfig {
    pub shared: chat::Config,
    /// Runs when `channels` is set.
    pub twitch: twitch::Config,
    /// Runs when `token` is set.
    pub discord: discord::Config,
}

impl<'de> Deserialize<'de> for ChatConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        fn section<T: Default + serde::de::DeserializeOwned, E: Error>(
            table: &mut toml::Table,
            name: &str,
        ) -> Result<T, E> {
            match table.remove(name) {
                Some(value) => value
                    .try_into()
                    .map_err(|err| E::custom(format!("in chat.{name}: {err}"))),
                None => Ok(T::default()),
            }
        }
        let twitch = section(&mut table, "twitch")?;
        let discord = section(&mut table, "discord")?;
        let shared = toml::Value::Table(table)
            .try_into()
            .map_err(|err| D::Error::custom(format!("in chat: {err}")))?;
        Ok(Self {
            shared,
            twitch,
            discord,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4322".to_owned(),
            nats: bus::NatsAuth::default(),
            stream_replicas: 1,
            events_max_bytes: bus::DEFAULT_EVENTS_MAX_BYTES,
            database_url: "postgres://nebula:nebula@127.0.0.1:5432/nebula".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            state_dir: PathBuf::from(".nebula"),
            artifacts_dir: PathBuf::from(".nebula/artifacts"),
            public_url: None,
            render_queue_cap: 100,
            vault_key_file: None,
            gateway: gateway::Config::default(),
            projector: projections::projector::Config::default(),
            agent: agent::Config::default(),
            render: render::Config::default(),
            chat: ChatConfig::default(),
            post: posting::Config::default(),
            fleet: fleet::Config::default(),
            hosts: hosts::Config::default(),
            deploy: deploy::Config::default(),
            approvals: deploy::ApprovalsConfig::default(),
            domains: deploy::DomainsConfig::default(),
            ai_dev: aidev::Config::default(),
            video: video::Config::default(),
        }
    }
}

/// `NEBULA_` names that are not configuration keys: the file to read, and the vault's key
/// (read by the vault itself, never kept in the configuration).
pub const NOT_CONFIGURATION: &[&str] = &["NEBULA_CONFIG", vault::KEY_ENV];

/// Other names for keys: the usual environment variables, and keys that moved. The first is the
/// environment variable or the old dotted key, the second where it goes.
pub const ALIASES: &[(&str, &str)] = &[
    ("NATS_URL", "nats_url"),
    ("NATS_NKEY_FILE", "nats.nkey_file"),
    ("NATS_CREDS_FILE", "nats.creds_file"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("NEBULA_HTTP_ADDR", "gateway.http_addr"),
    ("NEBULA_ADMIN_TOKEN", "gateway.admin_token"),
    ("NEBULA_AGENT_HTTP_ADDR", "agent.http_addr"),
    ("NEBULA_DOCKER_HOST", "agent.docker_host"),
    ("http_addr", "gateway.http_addr"),
    ("admin_token", "gateway.admin_token"),
    ("agent_http_addr", "agent.http_addr"),
    ("render.artifacts_dir", "artifacts_dir"),
    ("render.queue_cap", "render_queue_cap"),
    ("chat.public_url", "public_url"),
];

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
            for (old, new) in ALIASES {
                if let Some(value) = remove(&mut table, &old.split('.').collect::<Vec<_>>()) {
                    insert_value(&mut table, &new.split('.').collect::<Vec<_>>(), value);
                }
            }
        }
        for (name, value) in env {
            let key = match name.strip_prefix("NEBULA_") {
                _ if NOT_CONFIGURATION.contains(&name.as_str()) => continue,
                _ if ALIASES.iter().any(|(alias, _)| *alias == name) => name,
                Some(rest) if !rest.is_empty() => rest.to_ascii_lowercase().replace("__", "."),
                _ => continue,
            };
            let key = ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map_or(key.as_str(), |(_, new)| new);
            insert(&mut table, &key.split('.').collect::<Vec<_>>(), &value);
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
                common::redact_url(&self.nats_url)
            ));
        }
        if self.nats_url.contains('@') {
            problems.push(
                "nats_url carries credentials; put them in a file instead (nats.nkey_file, \
                 which `nebula nats config` writes, or nats.creds_file)"
                    .to_owned(),
            );
        }
        if self.nats.nkey_file.is_some() && self.nats.creds_file.is_some() {
            problems.push("nats.nkey_file and nats.creds_file are both set; choose one".to_owned());
        }
        if self.nats.tls_cert.is_some() != self.nats.tls_key.is_some() {
            problems.push("nats.tls_cert and nats.tls_key go together".to_owned());
        }
        let database_url = self.database_url.expose();
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            problems.push("database_url must be a postgres:// url".to_owned());
        }
        let redis_url = self.redis_url.expose();
        if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
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
        if self.events_max_bytes < 0 {
            problems.push(format!(
                "events_max_bytes must be 0 (no limit) or more, got {}",
                self.events_max_bytes
            ));
        }
        if !(1..=10_000).contains(&self.render_queue_cap) {
            problems.push(format!(
                "render_queue_cap must be 1..=10000, got {}",
                self.render_queue_cap
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!("public_url must be an http(s) url, got {url:?}"));
        }
        let sections = [
            ("gateway", self.gateway.validate()),
            ("projector", self.projector.validate()),
            ("agent", self.agent.validate()),
            ("render", self.render.validate()),
            ("chat", self.chat.shared.validate()),
            ("chat.twitch", self.chat.twitch.validate()),
            ("chat.discord", self.chat.discord.validate()),
            ("post", self.post.validate()),
            ("fleet", self.fleet.validate()),
            ("hosts", self.hosts.validate()),
            ("deploy", self.deploy.validate()),
            ("approvals", self.approvals.validate()),
            ("domains", self.domains.validate()),
            ("ai_dev", self.ai_dev.validate()),
            ("video", self.video.validate()),
        ];
        for (section, found) in sections {
            problems.extend(found.into_iter().map(|p| format!("{section}.{p}")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn bus_config(&self) -> bus::BusConfig {
        bus::BusConfig {
            url: self.nats_url.clone(),
            auth: self.nats.clone(),
            stream_replicas: self.stream_replicas,
            events_max_bytes: self.events_max_bytes,
            ..Default::default()
        }
    }

    /// This machine's node id: `agent.node_id`, else the host name.
    pub fn node_id(&self) -> events::NodeId {
        match self.agent.node_id.as_deref().map(str::parse) {
            Some(Ok(id)) => id,
            // Refused by `validate`; only reachable for a configuration built in code.
            _ => agent::default_node_id(&agent::host_name()),
        }
    }

    /// What every part shares; `gateway_addr` is where this process's gateway listens, when it
    /// runs one (the default public URL).
    pub fn site(&self, gateway_addr: Option<SocketAddr>) -> service::Site {
        let public_url = self.public_url.clone().unwrap_or_else(|| {
            format!("http://{}", gateway_addr.unwrap_or(self.gateway.http_addr))
        });
        service::Site {
            node_id: self.node_id(),
            database_url: self.database_url.expose().to_owned(),
            redis_url: self.redis_url.expose().to_owned(),
            state_dir: self.state_dir.clone(),
            artifacts_dir: self.artifacts_dir.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            render_queue_cap: self.render_queue_cap,
            vault_key_file: self
                .vault_key_file
                .clone()
                .unwrap_or_else(|| self.state_dir.join("vault.key")),
        }
    }

    /// Every value that may be written `secret:NAME` (a token, a client secret), by key.
    pub fn secret_fields(&mut self) -> Vec<(&'static str, &mut Option<Secret>)> {
        let post = &mut self.post;
        vec![
            ("gateway.admin_token", &mut self.gateway.admin_token),
            ("chat.twitch.token", &mut self.chat.twitch.token),
            ("chat.discord.token", &mut self.chat.discord.token),
            ("post.twitch.token", &mut post.twitch.token),
            ("post.twitch.refresh_token", &mut post.twitch.refresh_token),
            ("post.twitch.client_secret", &mut post.twitch.client_secret),
            ("post.youtube.token", &mut post.youtube.token),
            (
                "post.youtube.refresh_token",
                &mut post.youtube.refresh_token,
            ),
            (
                "post.youtube.client_secret",
                &mut post.youtube.client_secret,
            ),
            ("post.kick.token", &mut post.kick.token),
            ("post.kick.refresh_token", &mut post.kick.refresh_token),
            ("post.kick.client_secret", &mut post.kick.client_secret),
        ]
    }

    /// The vault secrets the configuration names (`secret:NAME`), by key.
    pub fn secret_references(&self) -> Vec<(&'static str, String)> {
        self.clone()
            .secret_fields()
            .into_iter()
            .filter_map(|(key, value)| {
                let name = vault::reference(value.as_ref()?)?;
                Some((key, name.to_owned()))
            })
            .collect()
    }

    /// This configuration with every `secret:NAME` replaced by the vault's current value; a
    /// name the vault does not hold is an error naming the key.
    pub async fn resolve_secrets(&self, vault: &vault::Vault) -> anyhow::Result<Config> {
        let mut resolved = self.clone();
        for (key, value) in resolved.secret_fields() {
            let Some(name) = value.as_ref().and_then(vault::reference).map(str::to_owned) else {
                continue;
            };
            let revealed = vault
                .get(&name)
                .await
                .with_context(|| format!("{key} names secret:{name}"))?
                .with_context(|| {
                    format!("{key} names secret:{name}, which the vault does not hold (nebula secrets set {name})")
                })?;
            *value = Some(revealed.value);
        }
        Ok(resolved)
    }
}

/// Takes the value at `path` out of `table`.
fn remove(table: &mut toml::Table, path: &[&str]) -> Option<toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut current = table;
    for part in parents {
        current = current.get_mut(*part)?.as_table_mut()?;
    }
    current.remove(*last)
}

/// Sets `path` in `table` to `raw`, typed as an integer, float or boolean when it parses as one.
fn insert(table: &mut toml::Table, path: &[&str], raw: &str) {
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
    insert_value(table, path, value);
}

fn insert_value(table: &mut toml::Table, path: &[&str], value: toml::Value) {
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
    fn the_vault_key_in_the_environment_is_not_a_configuration_key() {
        let config = Config::load_from(
            None,
            env(&[
                (vault::KEY_ENV, &"ab".repeat(32)),
                ("NEBULA_DOCKER_HOST", ""),
            ]),
        )
        .unwrap();
        assert_eq!(config.agent.docker_host, "");
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
        assert!(config.post.enabled());
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
    fn nats_credentials_are_files_never_part_of_the_url() {
        let config = Config::load_from(
            None,
            env(&[
                ("NATS_NKEY_FILE", "/etc/nebula/nats/control.nk"),
                ("NEBULA_NATS__TLS_CA", "/etc/nebula/nats/ca.pem"),
            ]),
        )
        .unwrap();
        let bus = config.bus_config();
        assert_eq!(
            bus.auth.nkey_file.as_deref(),
            Some(Path::new("/etc/nebula/nats/control.nk"))
        );
        assert_eq!(
            bus.auth.tls_ca.as_deref(),
            Some(Path::new("/etc/nebula/nats/ca.pem"))
        );
        let err = Config::load_from(
            None,
            env(&[("NATS_URL", "nats://control:hunter2@10.0.0.1:4222")]),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("nats_url carries credentials"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = Config::load_from(
            None,
            env(&[
                ("NATS_NKEY_FILE", "/a.nk"),
                ("NATS_CREDS_FILE", "/b.creds"),
                ("NEBULA_NATS__TLS_CERT", "/c.pem"),
            ]),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("choose one") && text.contains("go together"),
            "{text}"
        );
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
        assert_eq!(config.redis_url.expose(), "redis://filehost:6379");
        assert_eq!(config.projector.batch_size, 9);
        assert_eq!(config.agent.node_id.as_deref(), Some("gpu-1"));
        assert_eq!(config.gateway.http_addr.to_string(), "127.0.0.1:8080");
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
                ("NEBULA_RENDER__WORKER__SLOTS", "0"),
                ("NEBULA_GATEWAY__WS_CLIENT_BUFFER", "1"),
                ("NEBULA_POST__MAX_ATTEMPTS", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for problem in [
            "nats_url must start with",
            "stream_replicas must be",
            "projector.batch_size must be",
            "agent.node_id \"a.b\" is invalid",
            "render.worker.slots must be",
            "gateway.ws_client_buffer must be",
            "post.max_attempts must be",
        ] {
            assert!(err.contains(problem), "{problem:?} missing from {err}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::load_from(
            None,
            env(&[("NEBULA_ADMIN_TOKEN", "super-secret-token-value")]),
        )
        .unwrap();
        assert_eq!(
            config.gateway.admin_token.as_ref().unwrap().expose(),
            "super-secret-token-value"
        );
        assert!(!format!("{config:?}").contains("super-secret"));
    }

    #[test]
    fn moved_keys_and_usual_variables_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nebula.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\n[render]\nqueue_cap = 7\nbackend = \"comfyui\"\n",
        )
        .unwrap();
        let config = Config::load_from(
            Some(&file),
            env(&[
                ("NEBULA_RENDER__ARTIFACTS_DIR", "/srv/artifacts"),
                ("NEBULA_AGENT_HTTP_ADDR", "127.0.0.1:9001"),
                ("NEBULA_CHAT__PUBLIC_URL", "https://nebula.example.com/"),
            ]),
        )
        .unwrap();
        assert_eq!(config.gateway.http_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(config.render_queue_cap, 7);
        assert_eq!(config.render.backend, render::BackendKind::Comfyui);
        assert_eq!(config.artifacts_dir, PathBuf::from("/srv/artifacts"));
        assert_eq!(config.agent.http_addr.to_string(), "127.0.0.1:9001");
        assert_eq!(config.site(None).public_url, "https://nebula.example.com");
        let err = Config::load_from(None, env(&[("NEBULA_RENDER__BACKEND", "gpu")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown variant `gpu`"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::load_from(None, env(&[("NEBULA_HTTP_ADRR", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("http_adrr"), "{err:#}");
    }
}
