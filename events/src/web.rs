//! Domains (`web_domain`, one aggregate per host name; its id is the host with `.` written `_`):
//! a host name served through Caddy — to an app of the Deploy Center or to an upstream address —
//! with TLS, and optionally its DNS record kept at Cloudflare. What was asked and each attempt
//! to apply it (the route in Caddy, the DNS record) are events, so the status shown is the log's.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// Where a domain's requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DomainTarget {
    /// A port an app of the Deploy Center listens on, on its first node.
    App { app: String, port: u16 },
    /// `host:port` Caddy can reach.
    Upstream { address: String },
}

/// The DNS record kept for a domain at Cloudflare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The zone it lives in (`example.com`).
    pub zone: String,
    /// An IPv4 address (an `A` record), an IPv6 one (`AAAA`) or a host name (`CNAME`).
    pub content: String,
    /// Through Cloudflare's proxy (never for a private address).
    #[serde(default)]
    pub proxied: bool,
}

impl DnsRecord {
    /// `A`, `AAAA` or `CNAME`, from what the record points at.
    pub fn record_type(&self) -> &'static str {
        match self.content.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => "A",
            Ok(std::net::IpAddr::V6(_)) => "AAAA",
            Err(_) => "CNAME",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainAdded {
    pub host: String,
    pub target: DomainTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRecord>,
}

/// The certificate Caddy presents for a domain, as seen by a TLS handshake with its server
/// (the name asked for by SNI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSeen {
    /// `valid` (it names the host and has not expired), `expired`, `wrong_name` (it does not
    /// name the host) or `missing` (no certificate: the handshake failed, `error` says how).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<chrono::DateTime<chrono::Utc>>,
    /// The DNS names it is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum WebDomainEvent {
    /// Added or changed.
    #[serde(rename = "domain.added")]
    Added(DomainAdded),
    #[serde(rename = "domain.removed")]
    Removed {},
    /// Caddy serves it: its route (`@id`) and where it sends requests.
    #[serde(rename = "domain.route_applied")]
    RouteApplied { route_id: String, dial: String },
    /// Caddy refused the change (its old configuration keeps serving), or was unreachable.
    #[serde(rename = "domain.route_failed")]
    RouteFailed { error: String },
    #[serde(rename = "domain.dns_applied")]
    DnsApplied {
        record_id: String,
        record_type: String,
        /// `created` or `updated`.
        action: String,
    },
    #[serde(rename = "domain.dns_failed")]
    DnsFailed { error: String },
    /// What Caddy presents for the host now (looked at every reconcile while TLS is on;
    /// recorded when it changes).
    #[serde(rename = "domain.certificate_seen")]
    CertificateSeen(CertificateSeen),
}

impl DomainEvent for WebDomainEvent {
    const AGGREGATE_TYPE: &'static str = "web_domain";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "domain.added",
        "domain.removed",
        "domain.route_applied",
        "domain.route_failed",
        "domain.dns_applied",
        "domain.dns_failed",
        "domain.certificate_seen",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            WebDomainEvent::Added(_) => "domain.added",
            WebDomainEvent::Removed {} => "domain.removed",
            WebDomainEvent::RouteApplied { .. } => "domain.route_applied",
            WebDomainEvent::RouteFailed { .. } => "domain.route_failed",
            WebDomainEvent::DnsApplied { .. } => "domain.dns_applied",
            WebDomainEvent::DnsFailed { .. } => "domain.dns_failed",
            WebDomainEvent::CertificateSeen(_) => "domain.certificate_seen",
        }
    }
}

/// Whether `host` is a host name Nebula may serve: 1-253 characters, labels of 1-63 of
/// `[a-z0-9-]` not starting or ending with `-`, at least two labels; a leading `*.` for a
/// wildcard.
pub fn validate_host(host: &str) -> Result<(), String> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let labels: Vec<&str> = bare.split('.').collect();
    let valid = (1..=253).contains(&host.len())
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host name (lower-case labels of a-z, 0-9 and '-', at least two)"
        ))
    }
}

/// The aggregate id of `host`'s domain (a subject token: `.` written `_`, `*` as `star`).
pub fn domain_id(host: &str) -> String {
    host.replace('*', "star").replace('.', "_")
}

/// The Caddy route id of `host`'s domain.
pub fn route_id(host: &str) -> String {
    format!("nebula-domain-{}", domain_id(host))
}
