//! Domains: a host name served through Caddy to an app or an upstream, its DNS record kept at
//! Cloudflare. A [`WebDomain`] (id = [`events::web::domain_id`] of its host) is added (or
//! changed) and removed by admins; the domains part records each attempt to apply it.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::web::{DomainAdded, DomainTarget, WebDomainEvent, validate_host};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebDomainCommand {
    Add(DomainAdded),
    Remove,
    /// The route as applied (its id and dial), or why Caddy would not take it.
    RecordRoute(Result<(String, String), String>),
    /// The DNS record as applied (id, type, created/updated), or why not.
    RecordDns(Result<(String, String, String), String>),
    /// The certificate Caddy presents for it now.
    RecordCertificate(events::web::CertificateSeen),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum WebDomainError {
    #[error("no such domain")]
    NotFound,
    #[error("invalid domain: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WebDomain {
    pub added: Option<DomainAdded>,
}

impl Aggregate for WebDomain {
    const TYPE: &'static str = "web_domain";
    type Command = WebDomainCommand;
    type Event = Event<WebDomainEvent>;
    type Error = WebDomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: WebDomainCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), WebDomainError> {
        let event = match command {
            WebDomainCommand::Add(added) => {
                validate_domain(&added).map_err(WebDomainError::Invalid)?;
                WebDomainEvent::Added(added)
            }
            WebDomainCommand::Remove => {
                self.added.as_ref().ok_or(WebDomainError::NotFound)?;
                WebDomainEvent::Removed {}
            }
            WebDomainCommand::RecordRoute(result) => match result {
                Ok((route_id, dial)) => WebDomainEvent::RouteApplied { route_id, dial },
                Err(error) => WebDomainEvent::RouteFailed { error },
            },
            WebDomainCommand::RecordDns(result) => match result {
                Ok((record_id, record_type, action)) => WebDomainEvent::DnsApplied {
                    record_id,
                    record_type,
                    action,
                },
                Err(error) => WebDomainEvent::DnsFailed { error },
            },
            WebDomainCommand::RecordCertificate(seen) => {
                self.added.as_ref().ok_or(WebDomainError::NotFound)?;
                WebDomainEvent::CertificateSeen(seen)
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<WebDomainEvent>) {
        match event.0 {
            WebDomainEvent::Added(added) => self.added = Some(added),
            WebDomainEvent::Removed {} => self.added = None,
            _ => {}
        }
    }
}

/// Checks a domain: its host, its target, its DNS record's zone.
pub fn validate_domain(domain: &DomainAdded) -> Result<(), String> {
    validate_host(&domain.host)?;
    match &domain.target {
        DomainTarget::App { app, port } => {
            events::deploy::validate_app_name(app)?;
            if *port == 0 {
                return Err("the app's port must be 1-65535".to_owned());
            }
        }
        DomainTarget::Upstream { address } => {
            let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(format!("upstream {address:?} must be host:port"));
            }
        }
    }
    if let Some(dns) = &domain.dns {
        validate_host(&dns.zone).map_err(|err| format!("dns.zone: {err}"))?;
        let bare = domain.host.strip_prefix("*.").unwrap_or(&domain.host);
        if bare != dns.zone && !bare.ends_with(&format!(".{}", dns.zone)) {
            return Err(format!("{} is not in the zone {}", domain.host, dns.zone));
        }
        if dns.content.is_empty() || dns.content.contains(char::is_whitespace) {
            return Err("dns.content must be an address or a host name".to_owned());
        }
        let private = match dns.content.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback(),
            Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback(),
            Err(_) => false,
        };
        if private && dns.proxied {
            return Err("a private address cannot be proxied by Cloudflare".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use events::web::DnsRecord;

    use super::*;

    fn domain(host: &str, target: DomainTarget, dns: Option<DnsRecord>) -> DomainAdded {
        DomainAdded {
            host: host.into(),
            target,
            dns,
        }
    }

    #[test]
    fn domains_are_checked_whole() {
        let app = DomainTarget::App {
            app: "web".into(),
            port: 8080,
        };
        let dns = |zone: &str, content: &str, proxied| {
            Some(DnsRecord {
                zone: zone.into(),
                content: content.into(),
                proxied,
            })
        };
        assert!(
            validate_domain(&domain(
                "app.example.com",
                app.clone(),
                dns("example.com", "203.0.113.7", true)
            ))
            .is_ok()
        );
        assert!(validate_domain(&domain("App.example.com", app.clone(), None)).is_err());
        assert!(validate_domain(&domain("localhost", app.clone(), None)).is_err());
        assert!(
            validate_domain(&domain(
                "a.example.com",
                app.clone(),
                dns("other.com", "203.0.113.7", false)
            ))
            .unwrap_err()
            .contains("not in the zone")
        );
        assert!(
            validate_domain(&domain(
                "a.example.com",
                app.clone(),
                dns("example.com", "192.168.1.5", true)
            ))
            .unwrap_err()
            .contains("private")
        );
        let bad = DomainTarget::Upstream {
            address: "nowhere".into(),
        };
        assert!(validate_domain(&domain("a.example.com", bad, None)).is_err());
        assert_eq!(
            DnsRecord {
                zone: "z".into(),
                content: "2001:db8::1".into(),
                proxied: false
            }
            .record_type(),
            "AAAA"
        );
        assert_eq!(events::web::domain_id("*.example.com"), "star_example_com");
    }
}
