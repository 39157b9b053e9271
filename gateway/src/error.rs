use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The one error type handlers return. Client mistakes are answered plainly and not logged as
/// errors; internal failures are logged once here and shown to the client generically.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Signed in, but the role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request body refused before it was read (too large, wrong content type).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Rejected { .. } => "rejected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<projections::ProjectionError> for ApiError {
    /// Postgres away (down, restarting, refusing connections, the pool waited in vain) is a 503
    /// that says so: the read models come back with it. Anything else is ours: a 500.
    fn from(err: projections::ProjectionError) -> Self {
        if err.is_database_away() {
            return ApiError::Unavailable(format!(
                "the read models' database (Postgres) is unreachable: {err:#}; the projections \
                 catch up when it is back"
            ));
        }
        ApiError::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        let status = self.status();
        let mut response = (
            status,
            Json(json!({ "error": { "code": self.code(), "message": self.to_string() } })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Turns axum's body rejections into our error shape, with the reason spelled out.
pub(crate) fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(value)| value)
        .map_err(|rejection| match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "expected a JSON body with content-type application/json".into(),
            },
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "request body is larger than 256 KiB".into(),
            },
            other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postgres_away_is_a_503_with_its_reason_and_our_own_errors_are_500s() {
        // Nobody listens on port 1: a real refusal, as when Postgres is down.
        let refused = projections::connect("postgres://nebula@127.0.0.1:1/nebula", 1)
            .await
            .unwrap_err();
        let away = ApiError::from(refused);
        assert_eq!(away.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(away.to_string().contains("Postgres"), "{away}");
        let ours = ApiError::from(projections::ProjectionError::Other("a bug".into()));
        assert_eq!(ours.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
