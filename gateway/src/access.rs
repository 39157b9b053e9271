//! Who is calling, and whether they may: bearer tokens (the bootstrap admin token, or a named
//! token with a role), one-time websocket tickets, and the middleware that checks every
//! protected route against its role in [`crate::routes`].
//!
//! A named token is checked against its own aggregate's subject on the log and the answer is
//! kept for [`RECHECK_AFTER`]: a token revoked through this gateway stops at once, one revoked
//! through another gateway (or the CLI) within that time.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use bus::Bus;
use bus::store::CommandMeta;
use chrono::{DateTime, Utc};
use events::Actor;
use events::access::Role;
use sagas::access::{BOOTSTRAP_NAME, TokenText, constant_time_eq, load_token};
use serde::Serialize;

use crate::{ApiError, AppState};

/// How long a named token's check is trusted before the log is asked again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(5);
/// How long a websocket ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets and remembered token checks, at most.
const MAX_ENTRIES: usize = 10_000;

/// The bootstrap admin token: a secret that never prints.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    let token = common::random_hex(32).map_err(std::io::Error::other)?;
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

/// Who a request acts as: every command it causes is recorded under this name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// When the token stops working (a websocket opened with it is closed then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor::User(self.name.clone())
    }

    pub(crate) fn meta(&self) -> CommandMeta {
        CommandMeta::new(self.actor())
    }
}

struct Checked {
    principal: Option<Principal>,
    at: Instant,
}

/// Token checks and websocket tickets of one gateway.
pub(crate) struct Access {
    bus: Bus,
    admin: AdminToken,
    checked: Mutex<HashMap<String, Checked>>,
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Access {
    pub(crate) fn new(bus: Bus, admin: AdminToken) -> Self {
        Self {
            bus,
            admin,
            checked: Mutex::default(),
            tickets: Mutex::default(),
        }
    }

    /// The caller of a request: its bearer token, or (for a websocket, where a browser cannot
    /// set headers) a one-time `?ticket=`.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Principal, ApiError> {
        match bearer(headers)? {
            Some(token) => self.check_token(token).await,
            None if is_websocket(uri.path()) => {
                let ticket = query_param(uri, "ticket").ok_or(ApiError::Unauthorized)?;
                self.redeem_ticket(&ticket).ok_or(ApiError::Unauthorized)
            }
            None => Err(ApiError::Unauthorized),
        }
    }

    async fn check_token(&self, token: &str) -> Result<Principal, ApiError> {
        if constant_time_eq(token, self.admin.expose()) {
            return Ok(Principal {
                name: BOOTSTRAP_NAME.to_owned(),
                role: Role::Admin,
                expires_at: None,
            });
        }
        let text = TokenText::parse(token).ok_or(ApiError::Unauthorized)?;
        let sha256 = text.sha256();
        let now = Utc::now();
        {
            let checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = checked.get(&sha256)
                && entry.at.elapsed() < RECHECK_AFTER
            {
                return match &entry.principal {
                    Some(principal) if principal.expires_at.is_none_or(|at| at > now) => {
                        Ok(principal.clone())
                    }
                    _ => Err(ApiError::Unauthorized),
                };
            }
        }
        let record = load_token(&self.bus, text.name).await.map_err(|err| {
            ApiError::Unavailable(format!(
                "cannot check the token: the event log is unavailable ({err})"
            ))
        })?;
        let principal = record
            .as_ref()
            .filter(|record| record.accepts(&text, now))
            .map(|record| Principal {
                name: record.name.clone(),
                role: record.role,
                expires_at: record.expires_at,
            });
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.len() >= MAX_ENTRIES {
            checked.clear();
        }
        checked.insert(
            sha256,
            Checked {
                principal: principal.clone(),
                at: Instant::now(),
            },
        );
        principal.ok_or(ApiError::Unauthorized)
    }

    /// Forgets what was checked for tokens named `name` (it was just revoked here).
    pub(crate) fn forget(&self, name: &str) {
        self.checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, entry| entry.principal.as_ref().is_none_or(|p| p.name != name));
    }

    /// A ticket that opens one websocket as `principal` within [`TICKET_TTL`].
    pub(crate) fn issue_ticket(&self, principal: Principal) -> Result<String, ApiError> {
        let ticket = common::random_hex(32)
            .map_err(|err| ApiError::Internal(anyhow::anyhow!("no randomness: {err}")))?;
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.retain(|_, (_, issued)| issued.elapsed() < TICKET_TTL);
        if tickets.len() >= MAX_ENTRIES {
            return Err(ApiError::Rejected {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                message: "too many websocket tickets outstanding; try again shortly".into(),
            });
        }
        tickets.insert(ticket.clone(), (principal, Instant::now()));
        Ok(ticket)
    }

    fn redeem_ticket(&self, ticket: &str) -> Option<Principal> {
        let (principal, issued) = self
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ticket)?;
        (issued.elapsed() < TICKET_TTL).then_some(principal)
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` without the header, an error
/// for any other form of it.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(ApiError::Unauthorized);
    }
    Ok(Some(token))
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name && !value.is_empty()).then(|| value.to_owned())
    })
}

/// The role each protected route needs, by method and route pattern.
pub(crate) type RoleTable = HashMap<(Method, &'static str), Role>;

/// Authenticates the caller, checks the route's role and hands the [`Principal`] to the
/// handler. A route missing from the table needs the admin role (fail closed).
pub(crate) async fn require(
    State((state, roles)): State<(AppState, Arc<RoleTable>)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = state
        .access
        .authenticate(request.headers(), request.uri())
        .await?;
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let needed = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|path| roles.get(&(method, path.as_str())).copied())
        .unwrap_or(Role::Admin);
    if !principal.role.allows(needed) {
        return Err(ApiError::Forbidden(format!(
            "this needs the {needed} role; {} is {} {}",
            principal.name,
            if principal.role == Role::Operator {
                "an"
            } else {
                "a"
            },
            principal.role
        )));
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Whether `path` opens a websocket (the feed, a followed log), where a ticket may stand in for
/// the token.
fn is_websocket(path: &str) -> bool {
    path == "/ws" || (path.starts_with("/api/nodes/") && path.ends_with("/logs/follow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            axum::http::HeaderValue::from_bytes(value).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_takes_only_the_bearer_form() {
        assert_eq!(bearer(&HeaderMap::new()).unwrap(), None);
        assert_eq!(bearer(&headers(b"Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers(b"bearer  abc ")).unwrap(), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"abc",
            b"Bearer \xff\xfe",
        ] {
            assert!(bearer(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    /// Random header values (a small deterministic fuzzer): the parsers never panic, and what
    /// they accept is well formed.
    #[test]
    fn header_and_ticket_parsing_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"Bearer nbt_ticket=&?%_-0123456789abcdefABCDEF \t\x7f\xc3\xa9\xff";
        for _ in 0..20_000 {
            let len = (next() % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&bytes) {
                let mut map = HeaderMap::new();
                map.insert(header::AUTHORIZATION, value);
                if let Ok(Some(token)) = bearer(&map) {
                    assert!(!token.is_empty() && !token.contains(' '));
                    let _ = TokenText::parse(token);
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = TokenText::parse(&text);
            if let Ok(uri) = format!("/ws?{}", text.replace(' ', "+")).parse::<Uri>() {
                let _ = query_param(&uri, "ticket");
            }
        }
    }

    #[test]
    fn the_ticket_comes_from_the_query() {
        let uri: Uri = "/ws?since=3&ticket=abc".parse().unwrap();
        assert_eq!(query_param(&uri, "ticket").as_deref(), Some("abc"));
        assert_eq!(query_param(&"/ws?ticket=".parse().unwrap(), "ticket"), None);
        assert_eq!(
            query_param(&"/ws?xticket=a".parse().unwrap(), "ticket"),
            None
        );
    }
}
