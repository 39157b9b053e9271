//! The node agent's own HTTP endpoints (`/health`, `/metrics`, `/services`, `/gpu`). The agent
//! library supplies the data through [`AgentView`]; serving it lives here so that axum stays in
//! this crate.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What an agent exposes about itself.
pub trait AgentView: Send + Sync + 'static {
    /// `(healthy, details)`.
    fn health(&self) -> (bool, Value);
    fn metrics(&self) -> String;
    fn services(&self) -> Value;
    fn gpu(&self) -> Value;
}

pub fn agent_router(view: Arc<dyn AgentView>) -> Router {
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

/// Serves the agent endpoints on `addr` until `cancel` fires; returns the bound address.
pub async fn serve_agent(
    addr: SocketAddr,
    view: Arc<dyn AgentView>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = agent_router(view);
    tracker.spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %err, "agent http server failed");
        }
    });
    Ok(local)
}
