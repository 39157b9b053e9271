//! The node agent's own HTTP endpoints (`/health`, `/metrics`, `/services`, `/gpu`). The agent
//! library supplies the data through [`AgentView`]; serving it lives here so that axum stays in
//! this crate.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use service::Context;

/// What an agent exposes about itself.
pub trait AgentView: Send + Sync + 'static {
    /// `(healthy, details)`.
    fn health(&self) -> (bool, Value);
    fn metrics(&self) -> String;
    fn services(&self) -> Value;
    fn gpu(&self) -> Value;
}

fn agent_router(view: Arc<dyn AgentView>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|State(view): State<Arc<dyn AgentView>>| async move {
                let (healthy, body) = view.health();
                let status = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, Json(body))
            }),
        )
        .route(
            "/metrics",
            get(|State(view): State<Arc<dyn AgentView>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    view.metrics(),
                )
                    .into_response()
            }),
        )
        .route(
            "/services",
            get(|State(view): State<Arc<dyn AgentView>>| async move { Json(view.services()) }),
        )
        .route(
            "/gpu",
            get(|State(view): State<Arc<dyn AgentView>>| async move { Json(view.gpu()) }),
        )
        .with_state(view)
}

/// Serves the agent endpoints on `listener` (bound by the caller, so the agent can announce
/// the address before anything is served) until the context is cancelled.
pub fn serve_agent(
    ctx: &Context,
    listener: std::net::TcpListener,
    view: Arc<dyn AgentView>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = agent_router(view);
    let cancel = ctx.cancel.clone();
    ctx.tracker.spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %err, "agent http server failed");
        }
    });
    Ok(())
}
