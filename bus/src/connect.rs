//! Connect options: who we are to NATS (an nkey seed or a creds file), TLS, and what the
//! connection reports — above all the operations the server refuses because our credentials do
//! not allow them, which are logged and counted (`nebula_nats_permission_violations_total`)
//! rather than lost.

use std::time::Duration;

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, Event, ServerError};
use common::metrics::Registry;

use crate::{BusError, BusErrorKind, NatsAuth};

/// The authentication material, read once at start.
pub(crate) enum Identity {
    Anonymous,
    /// An nkey seed; replies come to `_INBOX_<public key>`, an inbox only this user may read.
    Nkey {
        seed: String,
        public_key: String,
    },
    Creds,
}

impl Identity {
    pub(crate) async fn load(auth: &NatsAuth) -> Result<Identity, BusError> {
        let refused = |detail: String| BusError::msg(BusErrorKind::Connect, detail);
        if auth.nkey_file.is_some() && auth.creds_file.is_some() {
            return Err(refused(
                "nats.nkey_file and nats.creds_file are both set; choose one".to_owned(),
            ));
        }
        if auth.tls_cert.is_some() != auth.tls_key.is_some() {
            return Err(refused(
                "nats.tls_cert and nats.tls_key go together: set both or neither".to_owned(),
            ));
        }
        if let Some(path) = &auth.nkey_file {
            let text = tokio::fs::read_to_string(path).await.map_err(|err| {
                refused(format!(
                    "cannot read nats.nkey_file {}: {err}",
                    path.display()
                ))
            })?;
            let pair = natsauth::read_seed(path, &text).map_err(|err| refused(err.to_string()))?;
            return Ok(Identity::Nkey {
                seed: text.trim().to_owned(),
                public_key: pair.public_key(),
            });
        }
        if let Some(path) = &auth.creds_file {
            tokio::fs::metadata(path).await.map_err(|err| {
                refused(format!(
                    "cannot read nats.creds_file {}: {err}",
                    path.display()
                ))
            })?;
            return Ok(Identity::Creds);
        }
        Ok(Identity::Anonymous)
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Identity::Anonymous => "an anonymous client (set nats.nkey_file)".to_owned(),
            Identity::Nkey { public_key, .. } => format!("the nkey user {public_key}"),
            Identity::Creds => "the user of nats.creds_file".to_owned(),
        }
    }
}

pub(crate) async fn options(
    auth: &NatsAuth,
    identity: &Identity,
    metrics: &Registry,
) -> Result<ConnectOptions, BusError> {
    let mut options = ConnectOptions::new()
        .name("nebula")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    match identity {
        Identity::Anonymous => {}
        Identity::Nkey { seed, public_key } => {
            options = options
                .nkey(seed.clone())
                .custom_inbox_prefix(events::subjects::inbox_prefix(public_key));
        }
        Identity::Creds => {
            if let Some(path) = &auth.creds_file {
                options = options.credentials_file(path).await.map_err(|err| {
                    BusError::msg(
                        BusErrorKind::Connect,
                        format!("nats.creds_file {}: {err}", path.display()),
                    )
                })?;
            }
        }
    }
    if let Some(ca) = &auth.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&auth.tls_cert, &auth.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let metrics = metrics.clone();
    Ok(options.event_callback(move |event| {
        let metrics = metrics.clone();
        async move { report(&metrics, &event) }
    }))
}

/// Whether the server refused our credentials (as opposed to not being there yet).
pub(crate) fn is_refusal(err: &ConnectError) -> bool {
    matches!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
    )
}

/// What the connection tells us, in the log and in the metrics.
fn report(metrics: &Registry, event: &Event) {
    match event {
        Event::ServerError(ServerError::Other(text))
            if text.to_ascii_lowercase().contains("permissions violation") =>
        {
            metrics.inc("nebula_nats_permission_violations_total");
            tracing::error!(
                violation = %text,
                "NATS refused an operation these credentials do not allow (nebula nats config \
                 decides what each role may do)"
            );
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {
            metrics.inc("nebula_nats_authorization_failures_total");
            tracing::error!("NATS refused our credentials");
        }
        Event::ServerError(err) => tracing::warn!(error = %err, "NATS reported an error"),
        Event::ClientError(err) => tracing::warn!(error = %err, "NATS client error"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::Connected => tracing::info!("connected to NATS"),
        Event::SlowConsumer(sid) => {
            metrics.inc("nebula_nats_slow_consumers_total");
            tracing::warn!(subscription = sid, "a NATS subscription is too slow");
        }
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}
