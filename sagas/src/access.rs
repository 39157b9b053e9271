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

const PREFIX: &str = "nbt_";
/// The name the bootstrap admin token acts as; no named token may take it.
pub const BOOTSTRAP_NAME: &str = "admin";
/// The longest expiry a token may be given, in days.
pub const MAX_EXPIRY_DAYS: u32 = 3650;

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
        let well_formed = common::is_sha256(secret) && validate_name("token", name).is_ok();
        well_formed.then_some(TokenText { name, full: text })
    }

    pub fn sha256(&self) -> String {
        common::sha256_hex(self.full.as_bytes())
    }
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

/// A fresh token for `name`: `nbt_<name>_<32 random bytes in hex>`.
fn generate(name: &str) -> Result<String, TokenError> {
    let random = common::random_hex(32)
        .map_err(|err| TokenError::Unavailable(format!("no randomness: {err}")))?;
    Ok(format!("{PREFIX}{name}_{random}"))
}

/// When a new token stops working: at `at`, or `days` from `now`, or never; one of them at most,
/// in the future, at most [`MAX_EXPIRY_DAYS`] away.
pub fn expiry(
    at: Option<DateTime<Utc>>,
    days: Option<u32>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, TokenError> {
    let invalid = |why: &str| Err(TokenError::Invalid(why.to_owned()));
    match (at, days) {
        (Some(_), Some(_)) => invalid("give expires_at or expires_in_days, not both"),
        (Some(at), None) if at <= now => invalid("expires_at is in the past"),
        (Some(at), None) => Ok(Some(at)),
        (None, Some(days)) if !(1..=MAX_EXPIRY_DAYS).contains(&days) => {
            invalid("expires_in_days must be 1..=3650")
        }
        (None, Some(days)) => Ok(Some(now + chrono::Duration::days(i64::from(days)))),
        (None, None) => Ok(None),
    }
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
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    /// The name's aggregate said no (already issued, or nothing to revoke).
    #[error(transparent)]
    Refused(ApiTokenError),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
}

fn token_error(err: AggregateError<ApiTokenError>) -> TokenError {
    match err {
        AggregateError::UserError(refused) => TokenError::Refused(refused),
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
    if name == BOOTSTRAP_NAME {
        return Err(TokenError::Invalid(format!(
            "{name:?} is the bootstrap admin token's name; choose another"
        )));
    }
    let text = generate(name)?;
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
    validate_name("token", name).map_err(|_| TokenError::Refused(ApiTokenError::NotFound))?;
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
    let mut record: Option<TokenRecord> = None;
    for envelope in bus
        .aggregate_events(ApiTokenEvent::AGGREGATE_TYPE, name)
        .await?
    {
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
    Ok(record)
}

/// Every token name's latest issue, by name.
pub async fn list_tokens(bus: &Bus) -> Result<Vec<TokenRecord>, bus::BusError> {
    let mut out = Vec::new();
    for name in bus.aggregate_ids(ApiTokenEvent::AGGREGATE_TYPE).await? {
        if let Some(record) = load_token(bus, &name).await? {
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
    fn expiries_are_in_the_future_and_one_at_most() {
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        assert_eq!(expiry(None, None, now).unwrap(), None);
        assert_eq!(expiry(Some(later), None, now).unwrap(), Some(later));
        assert_eq!(
            expiry(None, Some(7), now).unwrap(),
            Some(now + chrono::Duration::days(7))
        );
        for (at, days) in [
            (Some(later), Some(1)),
            (Some(now), None),
            (None, Some(0)),
            (None, Some(MAX_EXPIRY_DAYS + 1)),
        ] {
            assert!(
                matches!(expiry(at, days, now), Err(TokenError::Invalid(_))),
                "{at:?} {days:?}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }
}
