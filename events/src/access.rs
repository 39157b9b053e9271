//! Who may do what: named API tokens with a role each, and the versions of the secrets in the
//! vault. Neither kind of event carries a secret: a token is recorded by the SHA-256 of its
//! random value (which cannot be turned back into the token), a secret by its name and version
//! only (the encrypted value lives in the vault's own store).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// What a caller may do. Each role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every read, the live feed and the metrics.
    Viewer,
    /// Also: submit, cancel and reorder jobs, posts, start/stop/restart containers.
    Operator,
    /// Also: settings, tokens, secrets, dead-letter replay, deploy and approval decisions.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a caller with this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == raw)
            .ok_or_else(|| format!("unknown role {raw:?}: expected viewer, operator or admin"))
    }
}

/// A token was issued under the aggregate's name (the name is the aggregate id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub role: Role,
    /// Lower-case hex SHA-256 of the whole token.
    pub token_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApiTokenEvent {
    #[serde(rename = "api_token.issued")]
    Issued(TokenIssued),
    /// The token stops working at once; the name may be issued again.
    #[serde(rename = "api_token.revoked")]
    Revoked {},
}

impl DomainEvent for ApiTokenEvent {
    const AGGREGATE_TYPE: &'static str = "api_token";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["api_token.issued", "api_token.revoked"];

    fn event_type(&self) -> &'static str {
        match self {
            ApiTokenEvent::Issued(_) => "api_token.issued",
            ApiTokenEvent::Revoked {} => "api_token.revoked",
        }
    }
}

/// A vault secret's versions (the name is the aggregate id). The value is never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SecretEvent {
    /// A new value was stored as `version` (1 for the first).
    #[serde(rename = "secret.set")]
    Set { version: u64 },
    /// The secret was deleted; it was at `version`.
    #[serde(rename = "secret.removed")]
    Removed { version: u64 },
}

impl DomainEvent for SecretEvent {
    const AGGREGATE_TYPE: &'static str = "secret";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["secret.set", "secret.removed"];

    fn event_type(&self) -> &'static str {
        match self {
            SecretEvent::Set { .. } => "secret.set",
            SecretEvent::Removed { .. } => "secret.removed",
        }
    }
}

/// A token or secret name: 1 to 64 of `[a-z0-9_-]`, starting with a letter or digit (it is a
/// subject token, a file-friendly name and part of a token's text).
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{kind} name must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit, got {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn wire_names_are_stable() {
        let issued = ApiTokenEvent::Issued(TokenIssued {
            role: Role::Viewer,
            token_sha256: "ab".repeat(32),
            expires_at: None,
        });
        let json = serde_json::to_value(&issued).unwrap();
        assert_eq!(json["type"], "api_token.issued");
        assert_eq!(json["data"]["role"], "viewer");
        assert_eq!(
            serde_json::to_value(ApiTokenEvent::Revoked {}).unwrap()["type"],
            "api_token.revoked"
        );
        let set = serde_json::to_value(SecretEvent::Set { version: 2 }).unwrap();
        assert_eq!(
            set,
            serde_json::json!({"type": "secret.set", "data": {"version": 2}})
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["grafana", "ci-bot", "discord_token", "a", "0day"] {
            assert!(validate_name("token", good).is_ok(), "{good}");
        }
        for bad in ["", "Grafana", "-x", "a.b", "a b", &"x".repeat(65), "ü"] {
            assert!(validate_name("token", bad).is_err(), "{bad:?}");
        }
    }
}
