//! `GET /api/nodes/{id}/services`: the services a node's agent supervises, as the agent says
//! they stand now (asked live), with their recent changes of state from the log (restarts,
//! hangs, give-ups); and the ComfyUI its render worker supervises (from the render read model),
//! as one more row.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use events::DomainEvent;
use events::service::{NodeServicesEvent, SERVICES_QUERY, ServiceStatus};
use serde_json::{Value, json};

use crate::containers::known_node;
use crate::{ApiError, AppState};

/// How many recent changes the answer carries.
const HISTORY: usize = 100;

pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = known_node(&state, &id).await?;
    let live: Result<Vec<ServiceStatus>, _> = state
        .bus
        .ask(
            node.as_str(),
            SERVICES_QUERY,
            &json!({}),
            Duration::from_secs(5),
        )
        .await;
    let envelopes = state
        .bus
        .aggregate_events(NodeServicesEvent::AGGREGATE_TYPE, node.as_str())
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event log is unavailable: {err}")))?;
    let history: Vec<Value> = envelopes
        .iter()
        .rev()
        .filter_map(|envelope| {
            let NodeServicesEvent::StateChanged(change) = envelope.decode().ok()?;
            let mut change = json!(change);
            change["at"] = json!(envelope.occurred_at);
            Some(change)
        })
        .take(HISTORY)
        .collect();
    let (agent, mut services) = match live {
        Ok(services) => ("answered".to_owned(), json!(services)),
        Err(err) => (format!("unavailable: {err}"), json!([])),
    };
    if let Some(comfyui) = state.read.comfyui_service(node.as_str()).await?
        && let Some(rows) = services.as_array_mut()
    {
        rows.push(comfyui);
    }
    Ok(Json(json!({
        "node_id": node.as_str(),
        "agent": agent,
        "services": services,
        "history": history,
    })))
}
