//! Named API tokens: issued, listed, looked up and revoked the same way from REST and the CLI.
//!
//! A token's text is `nbt_<name>_<64 hex digits>`: 32 random bytes under the name it was issued
//! as. Only its SHA-256 is recorded (on the `api_token` aggregate named after it), so the log
//! can check a token but never give one back; the text is shown once, to whoever issued it.

use bus::Bus;
use bus::store::{CommandMeta, Commands, execute};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use domain::access::{ApiToken, ApiTokenCommand, ApiTokenError};
use events::access::{ApiTokenEvent, Role, validate_name};
use events::{Actor, DomainEvent};
use serde::Serialize;
use sha2::{Digest, Sha256};

const PREFIX: &str = "nbt_";

/// A token's text, split into the name it claims and its random part. Parsing checks the shape
/// only; whether it is valid is for [`TokenRecord::accepts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText<'a> {
    pub name: &'a str,
    full: &'a str,
}

impl<'a> TokenText<'a> {
    pub fn parse(text: &'a str) -> Option<TokenText<'a>> {
        let (name, secret) = text.strip_prefix(PREFIX)?.rsplit_once('_')?;
        let well_formed = secret.len() == 64
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && validate_name("token", name).is_ok();
        well_formed.then_some(TokenText { name, full: text })
    }

    pub fn sha256(&self) -> String {
        sha256_hex(self.full.as_bytes())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal in time independent of where the two strings first differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        diff |= usize::from(byte ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// `bytes` random bytes from the operating system, in lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh token for `name`: `nbt_<name>_<32 random bytes in hex>`.
fn generate(name: &str) -> Result<String, getrandom::Error> {
    Ok(format!("{PREFIX}{name}_{}", random_hex(32)?))
}

/// What the log says about one token name (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    pub issued_at: DateTime<Utc>,
    pub issued_by: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<Actor>,
    #[serde(skip)]
    token_sha256: String,
}

impl TokenRecord {
    /// `active`, `revoked` or `expired` at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }

    /// Whether `token` is this record's token and it still works at `now`.
    pub fn accepts(&self, token: &TokenText<'_>, now: DateTime<Utc>) -> bool {
        token.name == self.name
            && self.status(now) == "active"
            && constant_time_eq(&token.sha256(), &self.token_sha256)
    }
}

/// Why a token was not issued or revoked.
#[derive(Debug)]
pub enum TokenError {
    Invalid(String),
    Exists,
    NotFound,
    Unavailable(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Invalid(why) => f.write_str(why),
            TokenError::Exists => {
                f.write_str("a token with this name is already issued; revoke it first")
            }
            TokenError::NotFound => f.write_str("no token with this name is issued"),
            TokenError::Unavailable(why) => write!(f, "the event log is unavailable: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

fn token_error(err: AggregateError<ApiTokenError>) -> TokenError {
    match err {
        AggregateError::UserError(ApiTokenError::Exists) => TokenError::Exists,
        AggregateError::UserError(ApiTokenError::NotFound) => TokenError::NotFound,
        other => TokenError::Unavailable(other.to_string()),
    }
}

/// Issues a token named `name` with `role`, recorded under `meta`'s actor; returns its text,
/// which nothing keeps.
pub async fn issue_token(
    tokens: &Commands<ApiToken>,
    name: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    meta: CommandMeta,
) -> Result<String, TokenError> {
    validate_name("token", name).map_err(TokenError::Invalid)?;
    let text = generate(name).map_err(|err| TokenError::Unavailable(err.to_string()))?;
    let token_sha256 = TokenText::parse(&text)
        .expect("a generated token parses")
        .sha256();
    let command = ApiTokenCommand::Issue {
        role,
        token_sha256,
        expires_at,
    };
    execute(tokens, name, command, meta, 3)
        .await
        .map_err(token_error)?;
    Ok(text)
}

pub async fn revoke_token(
    tokens: &Commands<ApiToken>,
    name: &str,
    meta: CommandMeta,
) -> Result<(), TokenError> {
    validate_name("token", name).map_err(|_| TokenError::NotFound)?;
    execute(tokens, name, ApiTokenCommand::Revoke, meta, 3)
        .await
        .map_err(token_error)
}

/// The latest issue of `name`, read from its aggregate's own subject (so it is never behind a
/// revocation); `None` when it was never issued.
pub async fn load_token(bus: &Bus, name: &str) -> Result<Option<TokenRecord>, bus::BusError> {
    if validate_name("token", name).is_err() {
        return Ok(None);
    }
    let subject = events::subjects::event(ApiTokenEvent::AGGREGATE_TYPE, name);
    let mut record: Option<TokenRecord> = None;
    for message in bus.read_subject(&subject).await? {
        let Ok(envelopes) = message.decode_commit() else {
            continue;
        };
        for envelope in envelopes {
            match envelope.decode::<ApiTokenEvent>() {
                Ok(ApiTokenEvent::Issued(issued)) => {
                    record = Some(TokenRecord {
                        name: name.to_owned(),
                        role: issued.role,
                        issued_at: envelope.occurred_at,
                        issued_by: envelope.actor.clone(),
                        expires_at: issued.expires_at,
                        revoked_at: None,
                        revoked_by: None,
                        token_sha256: issued.token_sha256,
                    });
                }
                Ok(ApiTokenEvent::Revoked {}) => {
                    if let Some(record) = record.as_mut() {
                        record.revoked_at = Some(envelope.occurred_at);
                        record.revoked_by = Some(envelope.actor.clone());
                    }
                }
                Err(_) => {}
            }
        }
    }
    Ok(record)
}

/// Every token name's latest issue, by name.
pub async fn list_tokens(bus: &Bus) -> Result<Vec<TokenRecord>, bus::BusError> {
    let prefix = events::subjects::event(ApiTokenEvent::AGGREGATE_TYPE, "");
    let mut out = Vec::new();
    for subject in bus
        .event_subjects(&events::subjects::events_of_type(
            ApiTokenEvent::AGGREGATE_TYPE,
        ))
        .await?
    {
        if let Some(name) = subject.strip_prefix(&prefix)
            && let Some(record) = load_token(bus, name).await?
        {
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_to_its_name() {
        let text = generate("grafana").unwrap();
        assert!(text.starts_with("nbt_grafana_"));
        let parsed = TokenText::parse(&text).unwrap();
        assert_eq!(parsed.name, "grafana");
        assert_eq!(parsed.sha256().len(), 64);
        assert_ne!(generate("grafana").unwrap(), text, "random");
        let with_underscore = generate("ci_bot").unwrap();
        assert_eq!(TokenText::parse(&with_underscore).unwrap().name, "ci_bot");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let hex = "0".repeat(64);
        for bad in [
            String::new(),
            "nbt_".into(),
            format!("nbt__{hex}"),
            format!("nbt_Grafana_{hex}"),
            format!("nbt_grafana_{}", "0".repeat(63)),
            format!("nbt_grafana_{}", "G".repeat(64)),
            format!("xyz_grafana_{hex}"),
            format!("nbt_a.b_{hex}"),
            "test-admin-token-0123456789".into(),
        ] {
            assert!(TokenText::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_accepts_only_its_own_live_token() {
        let text = generate("grafana").unwrap();
        let other = generate("grafana").unwrap();
        let now = Utc::now();
        let mut record = TokenRecord {
            name: "grafana".into(),
            role: Role::Viewer,
            issued_at: now,
            issued_by: Actor::User("admin".into()),
            expires_at: Some(now + chrono::Duration::hours(1)),
            revoked_at: None,
            revoked_by: None,
            token_sha256: TokenText::parse(&text).unwrap().sha256(),
        };
        assert!(record.accepts(&TokenText::parse(&text).unwrap(), now));
        assert!(!record.accepts(&TokenText::parse(&other).unwrap(), now));
        assert_eq!(record.status(now + chrono::Duration::hours(2)), "expired");
        assert!(!record.accepts(
            &TokenText::parse(&text).unwrap(),
            now + chrono::Duration::hours(2)
        ));
        record.revoked_at = Some(now);
        assert_eq!(record.status(now), "revoked");
        assert!(!record.accepts(&TokenText::parse(&text).unwrap(), now));
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }
}
