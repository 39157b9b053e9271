//! The dashboard: the files of `dashboard/` compiled into the binary, served from one table.
//! `/` is its `index.html`; everything else is `/assets/<path in dashboard/>`. The page shell
//! holds no data; every byte of state it shows comes from the authenticated API and websocket.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// Every file of `dashboard/` but its tests (which run under Node, not in the page).
#[derive(rust_embed::Embed)]
#[folder = "../dashboard/"]
#[exclude = "tests/*"]
#[exclude = "package.json"]
struct Dashboard;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

fn serve(path: &str) -> Response {
    match Dashboard::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, content_type(file.metadata.mimetype())),
                (header::CACHE_CONTROL, "no-cache".to_owned()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    }
}

/// The file's type; text is UTF-8.
fn content_type(mime: &str) -> String {
    if mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("json") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}
