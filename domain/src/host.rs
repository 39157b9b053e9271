//! Hosts reached over SSH and the commands run on them.
//!
//! A [`Host`] (id = its name) is registered by an admin, pins the first host key it sees, and
//! from then on refuses any other until an admin accepts the new one; each refusal is recorded
//! once per presented key. A [`HostExec`] (id = the execution id) goes requested → started →
//! output … → completed | failed, or requested → failed when it could not start; it starts at
//! most once, so an execution interrupted by a restart is never run again.
//!
//! [`operator_may_run`] is the allowlist check: operators may run what a host's allowlist
//! names, and nothing a shell would read as more than one plain command.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::host::{
    ExecFailure, ExecRequested, HostEvent, HostExecEvent, HostKey, HostRegistered, OutputStream,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostCommand {
    Register(HostRegistered),
    Remove,
    /// The key seen on first contact; refused once a key is pinned.
    PinFirstKey(HostKey),
    /// An admin accepts the key the host presents now.
    AcceptKey(HostKey),
    /// The host presented `presented` instead of the pinned key.
    RecordMismatch(HostKey),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HostError {
    #[error("host is already registered")]
    AlreadyRegistered,
    #[error("no such host")]
    NotFound,
    #[error("a host key is already pinned ({0})")]
    AlreadyPinned(String),
    #[error("this mismatch is already recorded")]
    AlreadyRecorded,
    #[error("invalid host: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Host {
    pub registered: Option<HostRegistered>,
    pub pinned: Option<HostKey>,
    /// The last key refused since the pin last changed.
    pub last_mismatch: Option<HostKey>,
}

impl Host {
    fn require_registered(&self) -> Result<(), HostError> {
        if self.registered.is_some() {
            Ok(())
        } else {
            Err(HostError::NotFound)
        }
    }
}

impl Aggregate for Host {
    const TYPE: &'static str = "host";
    type Command = HostCommand;
    type Event = Event<HostEvent>;
    type Error = HostError;
    type Services = ();

    async fn handle(
        &mut self,
        command: HostCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), HostError> {
        let event = match command {
            HostCommand::Register(registered) => {
                if self.registered.is_some() {
                    return Err(HostError::AlreadyRegistered);
                }
                validate_registration(&registered).map_err(HostError::Invalid)?;
                HostEvent::Registered(registered)
            }
            HostCommand::Remove => {
                self.require_registered()?;
                HostEvent::Removed {}
            }
            HostCommand::PinFirstKey(key) => {
                self.require_registered()?;
                match &self.pinned {
                    // Two first contacts raced (the metrics poller and an exec): the same key,
                    // already pinned by the other; nothing to record.
                    Some(pinned) if pinned.fingerprint == key.fingerprint => return Ok(()),
                    Some(pinned) => {
                        return Err(HostError::AlreadyPinned(pinned.fingerprint.clone()));
                    }
                    None => HostEvent::KeyPinned(key),
                }
            }
            HostCommand::AcceptKey(key) => {
                self.require_registered()?;
                HostEvent::KeyPinned(key)
            }
            HostCommand::RecordMismatch(presented) => {
                self.require_registered()?;
                let Some(pinned) = self.pinned.clone() else {
                    return Err(HostError::Invalid("no key is pinned yet".to_owned()));
                };
                // Recorded once per key; and a check against a pin since replaced by the very
                // key presented (an admin accepted it meanwhile) is no mismatch.
                if self.last_mismatch.as_ref() == Some(&presented)
                    || pinned.fingerprint == presented.fingerprint
                {
                    return Err(HostError::AlreadyRecorded);
                }
                HostEvent::KeyMismatch { pinned, presented }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<HostEvent>) {
        match event.0 {
            HostEvent::Registered(registered) => self.registered = Some(registered),
            HostEvent::Removed {} => *self = Host::default(),
            HostEvent::KeyPinned(key) => {
                self.pinned = Some(key);
                self.last_mismatch = None;
            }
            HostEvent::KeyMismatch { presented, .. } => self.last_mismatch = Some(presented),
        }
    }
}

/// Checks what an admin registers: an address, a port, a user and a secret name that are
/// plainly one token each.
pub fn validate_registration(host: &HostRegistered) -> Result<(), String> {
    let token = |what: &str, value: &str| {
        if value.is_empty()
            || value.len() > 253
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            Err(format!("{what} {value:?} is not valid"))
        } else {
            Ok(())
        }
    };
    token("address", &host.address)?;
    token("user", &host.user)?;
    token("key_secret", &host.key_secret)?;
    if host.port == 0 {
        return Err("port must be 1-65535".to_owned());
    }
    for pattern in &host.allowlist {
        if pattern.trim().is_empty() || pattern.len() > 256 {
            return Err(format!("allowlist entry {pattern:?} is not valid"));
        }
    }
    Ok(())
}

/// Characters that make a shell do more than run one command with plain arguments.
const SHELL_SPECIAL: &[char] = &[
    ';', '&', '|', '$', '`', '<', '>', '(', ')', '{', '}', '\\', '\'', '"', '\n', '\r', '*', '?',
    '[', ']', '~', '#', '!',
];

/// Whether an operator may run `command` on a host with this allowlist: the command holds no
/// shell syntax and matches a pattern entirely, `*` in a pattern standing for any run of
/// characters (which, by the first rule, are plain ones).
pub fn operator_may_run(allowlist: &[String], command: &str) -> Result<(), String> {
    if let Some(special) = command.chars().find(|c| SHELL_SPECIAL.contains(c)) {
        return Err(format!(
            "operators may run plain commands only; {special:?} needs an admin"
        ));
    }
    if allowlist
        .iter()
        .any(|pattern| glob_matches(pattern.as_bytes(), command.as_bytes()))
    {
        Ok(())
    } else if allowlist.is_empty() {
        Err("this host has no allowlist: only admins may run commands on it".to_owned())
    } else {
        Err(format!(
            "{command:?} is not on this host's allowlist ({})",
            allowlist.join(", ")
        ))
    }
}

/// `*`-only glob matching, whole string.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostExecCommand {
    Request(ExecRequested),
    Start,
    Output {
        stream: OutputStream,
        text: String,
    },
    Complete {
        exit_status: u32,
        duration_ms: u64,
        output_bytes: u64,
        truncated: bool,
    },
    Fail {
        reason: ExecFailure,
        error: String,
        duration_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HostExecError {
    #[error("this execution was already requested")]
    AlreadyRequested,
    #[error("no such execution")]
    NotFound,
    #[error("the execution is {0} and cannot {1}")]
    InvalidTransition(String, String),
    #[error("invalid execution: {0}")]
    Invalid(String),
}

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Requested,
    Started,
    Completed,
    Failed,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Requested => "requested",
            ExecStatus::Started => "started",
            ExecStatus::Completed => "completed",
            ExecStatus::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, ExecStatus::Completed | ExecStatus::Failed)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HostExec {
    pub requested: Option<ExecRequested>,
    pub status: Option<ExecStatus>,
}

impl HostExec {
    fn require(&self, allowed: &[ExecStatus], action: &str) -> Result<(), HostExecError> {
        match self.status {
            None => Err(HostExecError::NotFound),
            Some(status) if allowed.contains(&status) => Ok(()),
            Some(status) => Err(HostExecError::InvalidTransition(
                status.as_str().to_owned(),
                action.to_owned(),
            )),
        }
    }
}

impl Aggregate for HostExec {
    const TYPE: &'static str = "host_exec";
    type Command = HostExecCommand;
    type Event = Event<HostExecEvent>;
    type Error = HostExecError;
    type Services = ();

    async fn handle(
        &mut self,
        command: HostExecCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), HostExecError> {
        use ExecStatus::{Requested, Started};
        let event = match command {
            HostExecCommand::Request(requested) => {
                if self.status.is_some() {
                    return Err(HostExecError::AlreadyRequested);
                }
                events::host::validate_host_name(&requested.host)
                    .map_err(HostExecError::Invalid)?;
                if requested.command.trim().is_empty() || requested.command.len() > 4096 {
                    return Err(HostExecError::Invalid(
                        "command must be 1-4096 bytes".to_owned(),
                    ));
                }
                if !(1..=86_400).contains(&requested.timeout_secs) {
                    return Err(HostExecError::Invalid(
                        "timeout_secs must be 1-86400".to_owned(),
                    ));
                }
                HostExecEvent::Requested(requested)
            }
            HostExecCommand::Start => {
                self.require(&[Requested], "start")?;
                HostExecEvent::Started {}
            }
            HostExecCommand::Output { stream, text } => {
                self.require(&[Started], "record output")?;
                HostExecEvent::Output { stream, text }
            }
            HostExecCommand::Complete {
                exit_status,
                duration_ms,
                output_bytes,
                truncated,
            } => {
                self.require(&[Started], "complete")?;
                HostExecEvent::Completed {
                    exit_status,
                    duration_ms,
                    output_bytes,
                    truncated,
                }
            }
            HostExecCommand::Fail {
                reason,
                error,
                duration_ms,
            } => {
                self.require(&[Requested, Started], "fail")?;
                HostExecEvent::Failed {
                    reason,
                    error,
                    duration_ms,
                }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<HostExecEvent>) {
        match event.0 {
            HostExecEvent::Requested(requested) => {
                self.requested = Some(requested);
                self.status = Some(ExecStatus::Requested);
            }
            HostExecEvent::Started {} => self.status = Some(ExecStatus::Started),
            HostExecEvent::Output { .. } => {}
            HostExecEvent::Completed { .. } => self.status = Some(ExecStatus::Completed),
            HostExecEvent::Failed { .. } => self.status = Some(ExecStatus::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn key(fingerprint: &str) -> HostKey {
        HostKey {
            algorithm: "ssh-ed25519".into(),
            fingerprint: fingerprint.into(),
        }
    }

    fn registered() -> Event<HostEvent> {
        Event(HostEvent::Registered(HostRegistered {
            address: "127.0.0.1".into(),
            port: 22,
            user: "nebula".into(),
            key_secret: "ssh-nas".into(),
            allowlist: vec![],
        }))
    }

    #[test]
    fn the_first_key_is_pinned_and_another_is_refused_once() {
        TestFramework::<Host>::with(())
            .given(vec![registered()])
            .when(HostCommand::PinFirstKey(key("SHA256:a")))
            .then_expect_events(vec![Event(HostEvent::KeyPinned(key("SHA256:a")))]);
        let pinned = vec![registered(), Event(HostEvent::KeyPinned(key("SHA256:a")))];
        TestFramework::<Host>::with(())
            .given(pinned.clone())
            .when(HostCommand::PinFirstKey(key("SHA256:b")))
            .then_expect_error(HostError::AlreadyPinned("SHA256:a".into()));
        // The same key pinned by a first contact that raced another: already done.
        TestFramework::<Host>::with(())
            .given(pinned.clone())
            .when(HostCommand::PinFirstKey(key("SHA256:a")))
            .then_expect_events(vec![]);
        let mut refused = pinned.clone();
        refused.push(Event(HostEvent::KeyMismatch {
            pinned: key("SHA256:a"),
            presented: key("SHA256:b"),
        }));
        TestFramework::<Host>::with(())
            .given(refused.clone())
            .when(HostCommand::RecordMismatch(key("SHA256:b")))
            .then_expect_error(HostError::AlreadyRecorded);
        TestFramework::<Host>::with(())
            .given(refused.clone())
            .when(HostCommand::AcceptKey(key("SHA256:b")))
            .then_expect_events(vec![Event(HostEvent::KeyPinned(key("SHA256:b")))]);
        // A check made against the old pin, finished after the accept: not a mismatch.
        refused.push(Event(HostEvent::KeyPinned(key("SHA256:b"))));
        TestFramework::<Host>::with(())
            .given(refused)
            .when(HostCommand::RecordMismatch(key("SHA256:b")))
            .then_expect_error(HostError::AlreadyRecorded);
    }

    #[test]
    fn registration_is_checked() {
        let mut bad = HostRegistered {
            address: "10.0.0.1; rm -rf /".into(),
            port: 22,
            user: "root".into(),
            key_secret: "k".into(),
            allowlist: vec![],
        };
        assert!(validate_registration(&bad).is_err());
        bad.address = "nas.lan".into();
        assert!(validate_registration(&bad).is_ok());
        bad.port = 0;
        assert!(validate_registration(&bad).is_err());
    }

    #[test]
    fn operators_run_only_plain_allowlisted_commands() {
        let allow = vec!["systemctl status *".to_owned(), "docker ps".to_owned()];
        assert!(operator_may_run(&allow, "systemctl status nginx").is_ok());
        assert!(operator_may_run(&allow, "docker ps").is_ok());
        assert!(operator_may_run(&allow, "docker ps -a").is_err());
        assert!(operator_may_run(&allow, "systemctl restart nginx").is_err());
        for sneaky in [
            "systemctl status x; rm -rf /",
            "systemctl status $(id)",
            "systemctl status `id`",
            "systemctl status x && id",
            "systemctl status x | sh",
            "systemctl status x\nid",
        ] {
            let err = operator_may_run(&allow, sneaky).unwrap_err();
            assert!(err.contains("needs an admin"), "{sneaky}: {err}");
        }
        assert!(operator_may_run(&[], "uptime").is_err());
    }

    #[test]
    fn an_execution_starts_once() {
        let requested = ExecRequested {
            host: "nas".into(),
            command: "uptime".into(),
            timeout_secs: 10,
            env_secrets: Default::default(),
        };
        let given = vec![
            Event(HostExecEvent::Requested(requested)),
            Event(HostExecEvent::Started {}),
        ];
        TestFramework::<HostExec>::with(())
            .given(given.clone())
            .when(HostExecCommand::Start)
            .then_expect_error(HostExecError::InvalidTransition(
                "started".into(),
                "start".into(),
            ));
        TestFramework::<HostExec>::with(())
            .given(given)
            .when(HostExecCommand::Fail {
                reason: ExecFailure::Interrupted,
                error: "restarted".into(),
                duration_ms: 0,
            })
            .then_expect_events(vec![Event(HostExecEvent::Failed {
                reason: ExecFailure::Interrupted,
                error: "restarted".into(),
                duration_ms: 0,
            })]);
    }
}
