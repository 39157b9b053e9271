//! Bearer-token auth. One admin token for now (roles come later); generated on first run and
//! kept under the state directory, or given by `NEBULA_ADMIN_TOKEN`.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::{ApiError, AppState};

/// A secret that never prints.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn matches(&self, candidate: &str) -> bool {
        // Constant time in the token's length.
        let expected = self.0.as_bytes();
        let candidate = candidate.as_bytes();
        let mut diff = expected.len() ^ candidate.len();
        for (i, byte) in expected.iter().enumerate() {
            diff |= usize::from(byte ^ candidate.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

/// Reads `<state_dir>/admin-token`, creating it (mode 0600) with a fresh random token if absent.
/// Returns the token and whether it was created now.
pub fn load_or_create_token(state_dir: &Path) -> std::io::Result<(AdminToken, bool)> {
    let path = crate::token_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(existing) if !existing.trim().is_empty() => {
            return Ok((AdminToken::new(existing.trim()), false));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    std::fs::create_dir_all(state_dir)?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    Ok((AdminToken::new(token), true))
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    // Browsers cannot set headers on a websocket: /ws also takes `?token=`.
    let query_token = if request.uri().path() == "/ws" {
        request.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .map(|t| t.to_owned())
        })
    } else {
        None
    };
    let presented = header.map(str::to_owned).or(query_token);
    match presented {
        Some(token) if state.token.matches(&token) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}
