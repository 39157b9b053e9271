//! A configuration value that never prints (tokens, passwords, client secrets).

use serde::Deserialize;

/// Read from configuration like a string; `Debug` shows `Secret(****)`, and it cannot be
/// serialized, so it cannot end up in an event, a log line or a dump of the configuration.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A connection URL (`postgres://user:password@host/db`): `Debug` and `Display` hide the
/// password, so a configuration can be printed whole.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Dsn(String);

impl Dsn {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::redact_url(&self.0))
    }
}

impl std::fmt::Display for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact_url(&self.0))
    }
}

impl From<String> for Dsn {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Dsn {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_secret_prints() {
        let dsn = Dsn::new("postgres://nebula:hunter2@db/nebula");
        assert_eq!(format!("{dsn:?}"), "\"postgres://nebula:****@db/nebula\"");
        assert_eq!(dsn.to_string(), "postgres://nebula:****@db/nebula");
        assert_eq!(dsn.expose(), "postgres://nebula:hunter2@db/nebula");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(****)");
    }
}
