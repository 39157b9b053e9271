use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A subject token must not contain NATS wildcards, separators or whitespace.
pub fn validate_token(token: &str) -> Result<(), IdError> {
    if token.is_empty() || token.len() > 128 {
        return Err(IdError::Length(token.len()));
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(bad) => Err(IdError::Character(bad)),
        None => Ok(()),
    }
}

/// `raw` made into a subject token: its first `max_chars` characters, each one outside
/// `[A-Za-z0-9_-]` replaced by `_`.
pub fn sanitize_token(raw: &str, max_chars: usize) -> String {
    raw.chars()
        .take(max_chars)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must be 1 to 128 characters long, got {0}")]
    Length(usize),
    #[error("id may hold only ASCII letters, digits, '-' and '_', found {0:?}")]
    Character(char),
    #[error("invalid uuid: {0}")]
    Uuid(#[from] uuid::Error),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Ok(Self(Uuid::parse_str(s)?))
            }
        }
    };
}

uuid_id!(
    /// The unique id of one event; also its `Nats-Msg-Id`, which makes publishing idempotent.
    EventId
);
uuid_id!(
    /// Ties together every event caused by one trigger (a chat message, a REST call, a schedule).
    CorrelationId
);
uuid_id!(
    /// A job's aggregate id.
    JobId
);

/// A node's id: chosen by the node (its hostname by default), used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        validate_token(&value)?;
        Ok(Self(value))
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a JetStream stream (1-based; 0 means "before the first message").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct StreamSeq(pub u64);

impl fmt::Display for StreamSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rejects_subject_metacharacters() {
        assert!("gpu-box_1".parse::<NodeId>().is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "ü"] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} was accepted");
        }
        assert!(serde_json::from_str::<NodeId>("\"x.y\"").is_err());
    }
}
