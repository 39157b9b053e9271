//! The domains part: every domain added, changed or removed is applied — its route in Caddy (to
//! the app's first node at the app's port, or to its upstream) and, when it has one, its DNS
//! record at Cloudflare — and each attempt is recorded on the domain (`domain.route_applied |
//! route_failed`, `domain.dns_applied | dns_failed`). The domains are a fold of their events,
//! read at a start from its checkpoint (`fold.domains`); every `reconcile_secs` the routes are looked for in Caddy and put
//! back when missing (a Caddy restarted without its config).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use cqrs_es::EventStore;
use domain::web::{WebDomain, WebDomainCommand};
use events::web::{CertificateSeen, DomainAdded, DomainTarget, WebDomainEvent, route_id};
use events::{Actor, DomainEvent};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::caddy::Caddy;
use crate::cloudflare::Cloudflare;

/// `[domains]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainsConfig {
    /// Caddy's admin API (empty: domains are not served from here).
    pub caddy_admin: String,
    /// The name of Nebula's HTTP server in Caddy's configuration.
    pub server: String,
    /// Where that server listens.
    pub listen: Vec<String>,
    /// `acme` (Caddy's automatic HTTPS), `internal` (Caddy's own CA) or `off` (plain HTTP).
    pub tls: String,
    pub cloudflare_api: String,
    /// The vault secret holding the Cloudflare API token (DNS edit on the zones).
    pub cloudflare_token_secret: String,
    pub reconcile_secs: f64,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self {
            caddy_admin: "http://127.0.0.1:2019".to_owned(),
            server: "nebula".to_owned(),
            listen: vec![":443".to_owned()],
            tls: "acme".to_owned(),
            cloudflare_api: "https://api.cloudflare.com/client/v4".to_owned(),
            cloudflare_token_secret: "cloudflare-token".to_owned(),
            reconcile_secs: 30.0,
        }
    }
}

impl DomainsConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !["acme", "internal", "off"].contains(&self.tls.as_str()) {
            problems.push(format!(
                "tls must be acme, internal or off, got {:?}",
                self.tls
            ));
        }
        for (field, url) in [
            ("caddy_admin", &self.caddy_admin),
            ("cloudflare_api", &self.cloudflare_api),
        ] {
            if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
                problems.push(format!("{field} must be an http(s) URL, got {url:?}"));
            }
        }
        if self.listen.is_empty() {
            problems.push("listen needs at least one address".to_owned());
        }
        if !(self.reconcile_secs.is_finite() && (1.0..=3600.0).contains(&self.reconcile_secs)) {
            problems.push(format!(
                "reconcile_secs must be 1..=3600, got {}",
                self.reconcile_secs
            ));
        }
        problems
    }
}

pub(crate) struct Domains {
    pub(crate) bus: Bus,
    pub(crate) commands: Commands<WebDomain>,
    pub(crate) apps: JetStreamStore<domain::deploy::App>,
    pub(crate) places: crate::ssh::Places,
    pub(crate) caddy: Caddy,
    pub(crate) cloudflare: Cloudflare,
    pub(crate) token_secret: String,
    pub(crate) key_source: vault::KeySource,
    pub(crate) vault: tokio::sync::OnceCell<vault::Vault>,
    pub(crate) reconcile: Duration,
    /// Where Caddy's server is asked for each domain's certificate (`None`: TLS is off).
    pub(crate) tls_address: Option<String>,
}

/// Folds one of a domain's events into what is known of it.
fn fold(entry: &mut Known, event: WebDomainEvent) {
    match event {
        WebDomainEvent::Added(added) => {
            entry.wanted = Some(added);
            entry.dirty = true;
        }
        WebDomainEvent::Removed {} => {
            entry.wanted = None;
            entry.dirty = true;
        }
        WebDomainEvent::RouteApplied { .. } => {
            entry.applied = entry.wanted.clone();
            entry.dirty = false;
            entry.failed = None;
        }
        WebDomainEvent::RouteFailed { error } => {
            entry.applied = entry.wanted.clone();
            entry.dirty = false;
            entry.failed = Some(error);
        }
        WebDomainEvent::CertificateSeen(seen) => entry.certificate = Some(seen),
        _ => {}
    }
}

/// One domain as the fold knows it: what is asked, and whether that was tried since.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Known {
    wanted: Option<DomainAdded>,
    /// The last one applied (what a removal or a change must undo).
    applied: Option<DomainAdded>,
    dirty: bool,
    /// The last route failure recorded (the same one again, every reconcile, is not).
    failed: Option<String>,
    /// The certificate recorded last (the same one again is not).
    certificate: Option<CertificateSeen>,
}

impl Domains {
    pub(crate) fn new(
        bus: Bus,
        config: &DomainsConfig,
        vault_key_file: std::path::PathBuf,
    ) -> Domains {
        Domains {
            commands: bus::store::commands(bus.clone(), ()),
            apps: JetStreamStore::new(bus.clone()),
            places: crate::ssh::Places::new(&bus),
            caddy: Caddy::new(
                &config.caddy_admin,
                &config.server,
                config.listen.clone(),
                &config.tls,
            ),
            cloudflare: Cloudflare::new(&config.cloudflare_api),
            token_secret: config.cloudflare_token_secret.clone(),
            key_source: vault::KeySource::new(vault_key_file),
            vault: tokio::sync::OnceCell::new(),
            reconcile: Duration::from_secs_f64(config.reconcile_secs),
            tls_address: (config.tls != "off")
                .then(|| {
                    config
                        .listen
                        .first()
                        .map(|l| local_address(l, &config.caddy_admin))
                })
                .flatten(),
            bus,
        }
    }

    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // `folded` is the domains as their events have them, what the checkpoint keeps;
        // `known` starts as it and is changed by applying them too (a removal is recorded by
        // nobody), so a restart does what a reading of the whole log would.
        let (mut folded, mut log) = self
            .bus
            .open_fold::<BTreeMap<String, Known>>(
                "domains",
                1,
                vec![events::subjects::events_of_type(
                    WebDomainEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        let mut known = folded.clone();
        let mut caught_up = false;
        let mut tick = tokio::time::interval(self.reconcile);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = log.next() => {
                    let message = message?;
                    if let Some(message) = &message {
                        for envelope in message.decode_commit().unwrap_or_default() {
                            let Ok(event) = envelope.decode::<WebDomainEvent>() else { continue };
                            for domains in [&mut folded, &mut known] {
                                fold(domains.entry(envelope.aggregate_id.clone()).or_default(), event.clone());
                            }
                        }
                    }
                    if !log.settled(message.as_ref()) {
                        continue;
                    }
                    log.save(&folded).await;
                    caught_up = true;
                }
                _ = tick.tick() => {
                    if caught_up {
                        self.reconcile(&mut known).await;
                    }
                    continue;
                }
            }
            for (id, entry) in known.iter_mut().filter(|(_, e)| e.dirty) {
                self.apply(id, entry, true).await;
            }
        }
    }

    /// Puts back the routes Caddy lost, and looks at each served domain's certificate.
    async fn reconcile(&self, known: &mut BTreeMap<String, Known>) {
        for (id, entry) in known.iter_mut() {
            let Some(wanted) = &entry.wanted else {
                continue;
            };
            match self.caddy.has_route(&route_id(&wanted.host)).await {
                Ok(true) => {
                    if let Some(address) = &self.tls_address {
                        let seen =
                            crate::certs::presented(address, &wanted.host, chrono::Utc::now())
                                .await;
                        if entry.certificate.as_ref() != Some(&seen) {
                            entry.certificate = Some(seen.clone());
                            self.record(id, WebDomainCommand::RecordCertificate(seen))
                                .await;
                        }
                    }
                }
                Ok(false) => {
                    if entry.failed.is_none() {
                        tracing::warn!(host = %wanted.host, "a domain's route is missing from caddy; putting it back");
                    }
                    self.apply(id, entry, false).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "caddy could not be asked for the domains' routes");
                    return;
                }
            }
        }
    }

    async fn record(&self, id: &str, command: WebDomainCommand) {
        let meta = CommandMeta::new(Actor::Service("domains".to_owned()));
        if let Err(err) = execute(&self.commands, id, command, meta, 3).await {
            tracing::warn!(domain = id, error = %err, "a domain's outcome was not recorded");
        }
    }

    /// Applies the domain's route and (with `dns`) its DNS record, recording how it went — a
    /// route failure only when it is not the one recorded last.
    async fn apply(&self, id: &str, entry: &mut Known, dns: bool) {
        entry.dirty = false;
        let previous = entry.applied.clone();
        match entry.wanted.clone() {
            None => {
                if let Some(old) = previous {
                    if let Err(err) = self.caddy.remove_route(&route_id(&old.host)).await {
                        tracing::warn!(host = %old.host, error = %err, "a removed domain's route is still in caddy");
                    }
                    let host = &old.host;
                    if let Some(dns) = &old.dns
                        && let Err(err) = self
                            .with_token(|token| async move {
                                self.cloudflare.remove(&token, host, dns).await
                            })
                            .await
                    {
                        tracing::warn!(host = %old.host, error = %err, "a removed domain's DNS record is still there");
                    }
                }
                entry.applied = None;
            }
            Some(wanted) => {
                let route = match self.dial(&wanted.target).await {
                    Ok(dial) => self
                        .caddy
                        .upsert_route(&route_id(&wanted.host), &wanted.host, &dial)
                        .await
                        .map(|()| (route_id(&wanted.host), dial)),
                    Err(err) => Err(err),
                };
                match &route {
                    Err(err) if entry.failed.as_ref() == Some(err) => {}
                    Err(err) => {
                        tracing::warn!(host = %wanted.host, error = %err, "a domain's route was not applied");
                        entry.failed = Some(err.clone());
                        self.record(id, WebDomainCommand::RecordRoute(route)).await;
                    }
                    Ok(_) => {
                        entry.failed = None;
                        self.record(id, WebDomainCommand::RecordRoute(route)).await;
                    }
                }
                if let Some(dns) = wanted.dns.as_ref().filter(|_| dns) {
                    let host = wanted.host.clone();
                    let applied = self
                        .with_token(|token| async move {
                            self.cloudflare.upsert(&token, &host, dns).await
                        })
                        .await;
                    self.record(id, WebDomainCommand::RecordDns(applied)).await;
                }
                entry.applied = Some(wanted);
            }
        }
    }

    /// Runs `f` with the Cloudflare token from the vault.
    async fn with_token<F, Fut, T>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let vault = self
            .vault
            .get_or_try_init(|| vault::Vault::open(&self.bus, &self.key_source, false))
            .await
            .map_err(|err| format!("the vault cannot be opened: {err}"))?;
        let token = vault
            .get(&self.token_secret)
            .await
            .map_err(|err| format!("the vault is unavailable: {err}"))?
            .ok_or_else(|| {
                format!(
                    "the vault has no secret {} (the Cloudflare API token)",
                    self.token_secret
                )
            })?;
        f(token.value.expose().to_owned()).await
    }

    /// Where a target's requests go: an app's first node and port, or the upstream.
    async fn dial(&self, target: &DomainTarget) -> Result<String, String> {
        match target {
            DomainTarget::Upstream { address } => Ok(address.clone()),
            DomainTarget::App { app, port } => {
                let loaded = self
                    .apps
                    .load_aggregate(app)
                    .await
                    .map_err(|err| format!("app {app} could not be read: {err}"))?;
                let node = loaded
                    .state()
                    .defined
                    .as_ref()
                    .and_then(|d| d.nodes.first().cloned())
                    .ok_or_else(|| format!("there is no app {app}"))?;
                let host = self.places.address(&node).await?;
                Ok(format!("{host}:{port}"))
            }
        }
    }
}

/// Where this machine reaches a Caddy listen address (`:443`, `0.0.0.0:8443`, `10.0.0.2:443`):
/// an address on all interfaces is reached at the admin API's host.
fn local_address(listen: &str, admin: &str) -> String {
    let listen = listen.strip_prefix("tcp/").unwrap_or(listen);
    let (host, port) = listen.rsplit_once(':').unwrap_or(("", listen));
    let port = port.split('-').next().unwrap_or(port);
    let host = match host {
        "" | "0.0.0.0" | "[::]" | "::" => {
            let rest = admin.split_once("://").map_or(admin, |(_, rest)| rest);
            let authority = rest.split('/').next().unwrap_or_default();
            match authority.rsplit_once(':') {
                Some((host, _)) if !host.is_empty() => host.to_owned(),
                _ => "127.0.0.1".to_owned(),
            }
        }
        host => host.to_owned(),
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listen_address_is_reached_where_caddy_runs() {
        let admin = "http://127.0.0.1:2019";
        assert_eq!(super::local_address(":443", admin), "127.0.0.1:443");
        assert_eq!(
            super::local_address("0.0.0.0:8443", "http://10.0.0.2:2019"),
            "10.0.0.2:8443"
        );
        assert_eq!(
            super::local_address("tcp/10.0.0.5:443", admin),
            "10.0.0.5:443"
        );
        assert_eq!(
            super::local_address("127.0.0.1:9000-9002", admin),
            "127.0.0.1:9000"
        );
    }
}
