//! Domains as every way in shows them: each one's ask and the last outcome of applying its
//! route and DNS record, read from its events.

use bus::{Bus, BusError};
use chrono::{DateTime, Utc};
use events::DomainEvent;
use events::web::{CertificateSeen, DomainAdded, WebDomainEvent};
use serde::Serialize;

/// The last attempt at one half of a domain (its route, its DNS record).
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// `pending` (asked, not tried yet), `applied` or `failed`.
    pub state: &'static str,
    /// The route's dial, or the record's `type id (created|updated)`.
    pub detail: Option<String>,
    pub error: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

impl Applied {
    fn pending() -> Applied {
        Applied {
            state: "pending",
            detail: None,
            error: None,
            at: None,
        }
    }
}

/// A certificate as seen, and when.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateView {
    #[serde(flatten)]
    pub seen: CertificateSeen,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    #[serde(flatten)]
    pub domain: DomainAdded,
    pub route: Applied,
    /// `None` without a DNS record to keep.
    pub dns_record: Option<Applied>,
    /// What Caddy presented for the host when last looked at (`None`: never looked at — TLS
    /// off, or not served yet).
    pub certificate: Option<CertificateView>,
    pub added_by: events::Actor,
    pub added_at: DateTime<Utc>,
}

/// The domain with aggregate id `id`, or `None` (never added, or removed).
pub async fn domain_view(bus: &Bus, id: &str) -> Result<Option<DomainView>, BusError> {
    let mut view: Option<DomainView> = None;
    for envelope in bus
        .aggregate_events(WebDomainEvent::AGGREGATE_TYPE, id)
        .await?
    {
        let Ok(event) = envelope.decode::<WebDomainEvent>() else {
            continue;
        };
        let at = Some(envelope.occurred_at);
        match event {
            WebDomainEvent::Added(added) => {
                view = Some(DomainView {
                    dns_record: added.dns.as_ref().map(|_| Applied::pending()),
                    domain: added,
                    route: Applied::pending(),
                    certificate: view.as_ref().and_then(|v| v.certificate.clone()),
                    added_by: envelope.actor.clone(),
                    added_at: envelope.occurred_at,
                });
            }
            WebDomainEvent::Removed {} => view = None,
            WebDomainEvent::RouteApplied { dial, .. } => {
                if let Some(view) = view.as_mut() {
                    view.route = Applied {
                        state: "applied",
                        detail: Some(dial),
                        error: None,
                        at,
                    };
                }
            }
            WebDomainEvent::RouteFailed { error } => {
                if let Some(view) = view.as_mut() {
                    view.route = Applied {
                        state: "failed",
                        detail: None,
                        error: Some(error),
                        at,
                    };
                }
            }
            WebDomainEvent::DnsApplied {
                record_id,
                record_type,
                action,
            } => {
                if let Some(view) = view.as_mut() {
                    view.dns_record = Some(Applied {
                        state: "applied",
                        detail: Some(format!("{record_type} {record_id} ({action})")),
                        error: None,
                        at,
                    });
                }
            }
            WebDomainEvent::CertificateSeen(seen) => {
                if let Some(view) = view.as_mut() {
                    view.certificate = Some(CertificateView {
                        seen,
                        at: envelope.occurred_at,
                    });
                }
            }
            WebDomainEvent::DnsFailed { error } => {
                if let Some(view) = view.as_mut() {
                    view.dns_record = Some(Applied {
                        state: "failed",
                        detail: None,
                        error: Some(error),
                        at,
                    });
                }
            }
        }
    }
    Ok(view)
}

/// Every domain there is, by host.
pub async fn list_domains(bus: &Bus) -> Result<Vec<DomainView>, BusError> {
    let mut domains = Vec::new();
    for id in bus.aggregate_ids(WebDomainEvent::AGGREGATE_TYPE).await? {
        if let Some(view) = domain_view(bus, &id).await? {
            domains.push(view);
        }
    }
    domains.sort_by(|a, b| a.domain.host.cmp(&b.domain.host));
    Ok(domains)
}
