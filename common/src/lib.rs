//! Small things every crate above `events` shares and none of which is NATS, Postgres or HTTP:
//! [`Secret`] (a configuration value that never prints), the Prometheus [`metrics::Registry`],
//! and one [`Backoff`] for every retry loop.

mod backoff;
pub mod metrics;
mod secret;

pub use backoff::Backoff;
pub use secret::Secret;
