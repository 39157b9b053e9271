//! REST over the read models.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

const MAX_LIMIT: i64 = 1000;

pub(crate) async fn list_nodes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes = state.read.nodes().await?;
    Ok(Json(json!({ "nodes": nodes })))
}

pub(crate) async fn get_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node_id: events::NodeId = id
        .parse()
        .map_err(|err| ApiError::BadRequest(format!("invalid node id: {err}")))?;
    match state.read.node(node_id.as_str()).await? {
        Some(node) => Ok(Json(json!(node))),
        None => Err(ApiError::NotFound(format!("no node {node_id}"))),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagsBody {
    tags: Vec<String>,
}

/// `GET /api/nodes/{id}/tags`: the tags admins gave the node (what approval rules match on).
pub(crate) async fn get_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node_id: events::NodeId = id
        .parse()
        .map_err(|err| ApiError::BadRequest(format!("invalid node id: {err}")))?;
    let tags = cqrs_es::EventStore::load_aggregate(&*state.tag_state, node_id.as_str())
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?
        .state()
        .tags
        .clone();
    Ok(Json(json!({ "node_id": node_id.as_str(), "tags": tags })))
}

/// `PUT /api/nodes/{id}/tags {"tags": ["prod", …]}` (admin): replaces them.
pub(crate) async fn put_tags(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::Principal>,
    Path(id): Path<String>,
    payload: Result<Json<TagsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = crate::error::body(payload)?;
    let node_id: events::NodeId = id
        .parse()
        .map_err(|err| ApiError::BadRequest(format!("invalid node id: {err}")))?;
    events::node::validate_tags(&body.tags).map_err(ApiError::BadRequest)?;
    bus::store::execute(
        &state.tag_commands,
        node_id.as_str(),
        domain::node::NodeTagsCommand::Set(body.tags.clone()),
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?;
    Ok(Json(
        json!({ "node_id": node_id.as_str(), "tags": body.tags }),
    ))
}

/// Refuses a query with a parameter not in `known` (a typo would otherwise be ignored).
/// The longest `?wait=` a caller may ask for.
const MAX_WAIT_SECS: f64 = 120.0;

/// `?wait=<secs>` (0..=120): how long to wait for an outcome, when asked.
pub(crate) fn wait_param(
    params: &HashMap<String, String>,
) -> Result<Option<std::time::Duration>, ApiError> {
    match params.get("wait") {
        None => Ok(None),
        Some(raw) => match raw.parse::<f64>() {
            Ok(secs) if secs.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&secs) => {
                Ok(Some(std::time::Duration::from_secs_f64(secs)))
            }
            _ => Err(ApiError::BadRequest(format!(
                "wait must be 0..={MAX_WAIT_SECS} seconds, got {raw:?}"
            ))),
        },
    }
}

pub(crate) fn known_params(
    params: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?}; expected one of {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The `limit` parameter: 1 to 1000, 100 when absent.
pub(crate) fn limit_param(params: &HashMap<String, String>) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(100),
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, got {raw:?}"
            ))),
        },
    }
}

/// `GET /api/events?aggregate_type=&aggregate_id=&type=&correlation_id=&after=&limit=`
pub(crate) async fn list_events(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const KNOWN: [&str; 7] = [
        "aggregate_type",
        "aggregate_id",
        "type",
        "correlation_id",
        "after",
        "limit",
        "since",
    ];
    known_params(&params, &KNOWN)?;
    let limit = limit_param(&params)?;
    let after = params
        .get("after")
        .or(params.get("since"))
        .map(|raw| {
            raw.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("after must be a stream sequence, got {raw:?}"))
            })
        })
        .transpose()?
        .map(|seq| i64::try_from(seq).unwrap_or(i64::MAX));
    let correlation_id = params
        .get("correlation_id")
        .map(|raw| {
            raw.parse::<uuid::Uuid>().map_err(|_| {
                ApiError::BadRequest(format!("correlation_id must be a uuid, got {raw:?}"))
            })
        })
        .transpose()?;
    let filter = projections::EventFilter {
        aggregate_type: params.get("aggregate_type").cloned(),
        aggregate_id: params.get("aggregate_id").cloned(),
        event_type: params.get("type").cloned(),
        correlation_id,
        after_seq: after,
        limit,
    };
    let events = state.read.events(&filter).await?;
    let next_after = events.last().map(|e| e.stream_seq);
    Ok(Json(json!({ "events": events, "next_after": next_after })))
}

/// Each projection's position and lag behind its stream.
pub(crate) async fn list_projections(
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let checkpoints = state.read.checkpoints().await?;
    let mut heads = HashMap::new();
    for stream in bus::StreamName::ALL {
        if let Ok(seq) = state.bus.last_seq(stream).await {
            heads.insert(stream.as_str(), seq.0);
        }
    }
    let projections: Vec<Value> = projections::all()
        .iter()
        .map(|p| {
            let position = checkpoints
                .iter()
                .find(|(n, _)| n == p.name())
                .map_or(0, |(_, s)| *s);
            let head = heads.get(p.stream().as_str()).copied();
            json!({
                "name": p.name(),
                "stream": p.stream().as_str(),
                "position": position,
                "stream_last_seq": head,
                "lag": head.map(|h| (h as i64 - position).max(0)),
            })
        })
        .collect();
    Ok(Json(json!({ "projections": projections })))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
