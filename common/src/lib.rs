//! Small things every crate above `events` shares and none of which is NATS, Postgres or HTTP:
//! [`Secret`] (a configuration value that never prints), the Prometheus [`metrics::Registry`],
//! and one [`Backoff`] for every retry loop.

mod backoff;
pub mod metrics;
mod secret;

pub use backoff::Backoff;
pub use secret::{Dsn, Secret};

/// `scheme://user:password@host/…` with the password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact_url("postgres://nebula:secret@db:5432/nebula"),
            "postgres://nebula:****@db:5432/nebula"
        );
        assert_eq!(
            super::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
