//! Named API tokens and vault secrets: which name is issued (and with which role), which secret
//! version is current. A name is issued once until it is revoked; a secret's versions only
//! go up, so a rotation can always be told from the value before it.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::access::{ApiTokenEvent, Role, SecretEvent, TokenIssued};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum ApiTokenCommand {
    Issue {
        role: Role,
        token_sha256: String,
        expires_at: Option<DateTime<Utc>>,
    },
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiTokenError {
    #[error("a token with this name is already issued; revoke it first")]
    Exists,
    #[error("no token with this name is issued")]
    NotFound,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// The token that works now, if any.
    pub current: Option<TokenIssued>,
}

impl Aggregate for ApiToken {
    const TYPE: &'static str = "api_token";
    type Command = ApiTokenCommand;
    type Event = Event<ApiTokenEvent>;
    type Error = ApiTokenError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApiTokenCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApiTokenError> {
        match command {
            ApiTokenCommand::Issue {
                role,
                token_sha256,
                expires_at,
            } => {
                if self.current.is_some() {
                    return Err(ApiTokenError::Exists);
                }
                let issued = TokenIssued {
                    role,
                    token_sha256,
                    expires_at,
                };
                sink.write(Event(ApiTokenEvent::Issued(issued)), self).await;
            }
            ApiTokenCommand::Revoke => {
                if self.current.is_none() {
                    return Err(ApiTokenError::NotFound);
                }
                sink.write(Event(ApiTokenEvent::Revoked {}), self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<ApiTokenEvent>) {
        match event.0 {
            ApiTokenEvent::Issued(issued) => self.current = Some(issued),
            ApiTokenEvent::Revoked {} => self.current = None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum SecretCommand {
    /// A new value was stored as `version` (the store keeps the value, the event the
    /// version); refused unless it is the next version.
    Set {
        version: u64,
    },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no secret with this name")]
    NotFound,
    #[error("that version was taken by another change")]
    VersionTaken,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Secret {
    /// The last version written (kept after a removal, so versions never repeat).
    pub version: u64,
    pub present: bool,
}

impl Secret {
    /// The version the next `Set` records.
    pub fn next_version(&self) -> u64 {
        self.version + 1
    }
}

impl Aggregate for Secret {
    const TYPE: &'static str = "secret";
    type Command = SecretCommand;
    type Event = Event<SecretEvent>;
    type Error = SecretError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SecretCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SecretError> {
        match command {
            SecretCommand::Set { version } => {
                if version != self.next_version() {
                    return Err(SecretError::VersionTaken);
                }
                sink.write(Event(SecretEvent::Set { version }), self).await;
            }
            SecretCommand::Remove => {
                if !self.present {
                    return Err(SecretError::NotFound);
                }
                let version = self.version;
                sink.write(Event(SecretEvent::Removed { version }), self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<SecretEvent>) {
        match event.0 {
            SecretEvent::Set { version } => {
                self.version = version;
                self.present = true;
            }
            SecretEvent::Removed { .. } => self.present = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn issued(hash: &str) -> Event<ApiTokenEvent> {
        Event(ApiTokenEvent::Issued(TokenIssued {
            role: Role::Viewer,
            token_sha256: hash.into(),
            expires_at: None,
        }))
    }

    fn issue(hash: &str) -> ApiTokenCommand {
        ApiTokenCommand::Issue {
            role: Role::Viewer,
            token_sha256: hash.into(),
            expires_at: None,
        }
    }

    #[test]
    fn a_name_is_issued_once_until_revoked() {
        TestFramework::<ApiToken>::with(())
            .given_no_previous_events()
            .when(issue("a"))
            .then_expect_events(vec![issued("a")]);
        TestFramework::<ApiToken>::with(())
            .given(vec![issued("a")])
            .when(issue("b"))
            .then_expect_error(ApiTokenError::Exists);
        TestFramework::<ApiToken>::with(())
            .given(vec![issued("a"), Event(ApiTokenEvent::Revoked {})])
            .when(issue("b"))
            .then_expect_events(vec![issued("b")]);
    }

    #[test]
    fn only_an_issued_token_is_revoked() {
        TestFramework::<ApiToken>::with(())
            .given_no_previous_events()
            .when(ApiTokenCommand::Revoke)
            .then_expect_error(ApiTokenError::NotFound);
        TestFramework::<ApiToken>::with(())
            .given(vec![issued("a"), Event(ApiTokenEvent::Revoked {})])
            .when(ApiTokenCommand::Revoke)
            .then_expect_error(ApiTokenError::NotFound);
    }

    #[test]
    fn secret_versions_only_go_up() {
        let set = |version| Event(SecretEvent::Set { version });
        TestFramework::<Secret>::with(())
            .given(vec![set(1), set(2)])
            .when(SecretCommand::Set { version: 3 })
            .then_expect_events(vec![set(3)]);
        TestFramework::<Secret>::with(())
            .given(vec![set(1), set(2)])
            .when(SecretCommand::Set { version: 2 })
            .then_expect_error(SecretError::VersionTaken);
        TestFramework::<Secret>::with(())
            .given(vec![set(1), Event(SecretEvent::Removed { version: 1 })])
            .when(SecretCommand::Set { version: 2 })
            .then_expect_events(vec![set(2)]);
        TestFramework::<Secret>::with(())
            .given(vec![set(1), Event(SecretEvent::Removed { version: 1 })])
            .when(SecretCommand::Remove)
            .then_expect_error(SecretError::NotFound);
    }
}
