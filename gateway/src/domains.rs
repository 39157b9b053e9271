//! Domains: a host name served through Caddy (to an app of the Deploy Center, or an upstream),
//! its DNS record kept at Cloudflare. Admins add, change and remove them; the domains part
//! applies each and records how it went, which is the status answered here.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::AggregateError;
use domain::web::{WebDomainCommand, WebDomainError};
use events::web::{DnsRecord, DomainAdded, DomainTarget, domain_id, validate_host};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

/// `GET /api/domains`: every domain with the state of its route and DNS record.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let domains = sagas::domains::list_domains(&state.bus)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "domains": domains })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainBody {
    host: String,
    /// An app of the Deploy Center, with `port`…
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    /// … or an upstream `host:port`.
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    dns: Option<DnsRecord>,
}

/// `POST /api/domains {"host", "app"+"port" | "upstream", "dns"?}` (admin): added, or changed
/// when the host has one already.
pub(crate) async fn add(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<DomainBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asked = body(payload)?;
    let target = match (asked.app, asked.port, asked.upstream) {
        (Some(app), Some(port), None) => {
            if sagas::deploys::load_app(&state.app_state, &app)
                .await
                .map_err(unavailable)?
                .is_none()
            {
                return Err(ApiError::BadRequest(format!("there is no app {app}")));
            }
            DomainTarget::App { app, port }
        }
        (None, None, Some(address)) => DomainTarget::Upstream { address },
        _ => {
            return Err(ApiError::BadRequest(
                "a domain goes to an app (\"app\" and \"port\") or to an \"upstream\"".to_owned(),
            ));
        }
    };
    let added = DomainAdded {
        host: asked.host,
        target,
        dns: asked.dns,
    };
    domain::web::validate_domain(&added).map_err(ApiError::BadRequest)?;
    let id = domain_id(&added.host);
    let host = added.host.clone();
    execute(
        &state.domain_commands,
        &id,
        WebDomainCommand::Add(added),
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(WebDomainError::Invalid(message)) => {
            ApiError::BadRequest(message)
        }
        other => unavailable(other),
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "host": host }))))
}

/// `DELETE /api/domains/{host}` (admin): its route and DNS record removed.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(host): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_host(&host).map_err(|_| ApiError::NotFound(format!("no domain {host}")))?;
    execute(
        &state.domain_commands,
        &domain_id(&host),
        WebDomainCommand::Remove,
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(WebDomainError::NotFound) => {
            ApiError::NotFound(format!("no domain {host}"))
        }
        other => unavailable(other),
    })?;
    Ok(StatusCode::ACCEPTED)
}
