//! SSH sessions (russh): one pooled connection per host, the host key checked against the
//! pinned one before anything is sent, and commands run on their own channel with a deadline,
//! their output handed on as it comes. Every failure is one of [`ExecFailure`]'s reasons.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::host::{ExecFailure, HostKey, HostRegistered, OutputStream};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, Sig, client};

/// A failure with its reason, and the host key seen when it was a key mismatch or the first
/// contact.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub reason: ExecFailure,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(reason: ExecFailure, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What a connection attempt needs: where, who, the key, and the key the host must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub name: String,
    pub registered: HostRegistered,
    pub pinned: Option<HostKey>,
    /// The vault version of the private key, so a rotated key makes a new connection.
    pub key_version: u64,
}

/// Checks the server's key and remembers what it presented.
struct Checker {
    pinned: Option<HostKey>,
    seen: Arc<Mutex<Option<HostKey>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false); // host certificates are not trusted here
        };
        let seen = HostKey {
            algorithm: key.algorithm().as_str().to_owned(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        };
        let accepted = self
            .pinned
            .as_ref()
            .is_none_or(|pinned| pinned.fingerprint == seen.fingerprint);
        *self.seen.lock().expect("the seen-key lock") = Some(seen);
        Ok(accepted)
    }
}

/// An open, logged-in connection and the key the host presented.
pub(crate) struct Session {
    handle: client::Handle<Checker>,
    target: Target,
    pub host_key: HostKey,
}

/// What a connection attempt ended with.
pub(crate) enum Connected {
    Ok(Arc<Session>),
    /// The host presented another key than the pinned one.
    Mismatch {
        presented: HostKey,
        failure: Failure,
    },
    Failed(Failure),
}

/// One connection per host, reused while it is open and the host's settings are unchanged.
#[derive(Default)]
pub(crate) struct Pool {
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
}

impl Pool {
    /// The pooled session for `target`, or a new one (`private_key`: OpenSSH text).
    pub(crate) async fn session(
        &self,
        target: &Target,
        private_key: &str,
        connect_timeout: Duration,
    ) -> Connected {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&target.name)
            && !session.handle.is_closed()
            && session.serves(target)
        {
            return Connected::Ok(session.clone());
        }
        if let Some(old) = sessions.remove(&target.name) {
            let _ = old
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        let connected = connect(target, private_key, connect_timeout).await;
        if let Connected::Ok(session) = &connected {
            sessions.insert(target.name.clone(), session.clone());
        }
        connected
    }

    /// Forgets a host's session (after it broke, or the host was removed).
    pub(crate) async fn forget(&self, name: &str) {
        self.sessions.lock().await.remove(name);
    }
}

async fn connect(target: &Target, private_key: &str, connect_timeout: Duration) -> Connected {
    let host = &target.registered;
    let key = match russh::keys::decode_secret_key(private_key, None) {
        Ok(key) => key,
        Err(err) => {
            return Connected::Failed(Failure::new(
                ExecFailure::KeyUnavailable,
                format!(
                    "the vault secret {} is not an OpenSSH private key: {err}",
                    host.key_secret
                ),
            ));
        }
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..client::Config::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let checker = Checker {
        pinned: target.pinned.clone(),
        seen: seen.clone(),
    };
    let address = (host.address.as_str(), host.port);
    let login = async {
        let mut handle = client::connect(config, address, checker).await?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let auth = handle
            .authenticate_publickey(
                host.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await?;
        Ok::<_, russh::Error>((handle, auth))
    };
    let seen_key = || seen.lock().expect("the seen-key lock").clone();
    let at = format!("{}@{}:{}", host.user, host.address, host.port);
    match tokio::time::timeout(connect_timeout, login).await {
        Err(_) => Connected::Failed(Failure::new(
            ExecFailure::ConnectTimeout,
            format!(
                "{at} did not answer within {} s",
                connect_timeout.as_secs_f64()
            ),
        )),
        Ok(Ok((handle, auth))) => {
            if !auth.success() {
                return Connected::Failed(Failure::new(
                    ExecFailure::AuthFailed,
                    format!(
                        "{at} refused the key in vault secret {} for user {}",
                        host.key_secret, host.user
                    ),
                ));
            }
            let Some(host_key) = seen_key() else {
                return Connected::Failed(Failure::new(
                    ExecFailure::ConnectionLost,
                    format!("{at} logged in without presenting a host key"),
                ));
            };
            Connected::Ok(Arc::new(Session {
                handle,
                target: target.clone(),
                host_key,
            }))
        }
        Ok(Err(russh::Error::UnknownKey)) => match (seen_key(), &target.pinned) {
            (Some(presented), Some(pinned)) => Connected::Mismatch {
                failure: Failure::new(
                    ExecFailure::HostKeyMismatch,
                    format!(
                        "{} presented host key {} but {} is pinned: nothing was sent; an admin \
                         must accept the new key if the host was really reinstalled",
                        target.name, presented.fingerprint, pinned.fingerprint
                    ),
                ),
                presented,
            },
            _ => Connected::Failed(Failure::new(
                ExecFailure::HostKeyMismatch,
                format!("{at} presented a host certificate, which is not trusted"),
            )),
        },
        Ok(Err(russh::Error::IO(err))) => Connected::Failed(Failure::new(
            ExecFailure::Unreachable,
            format!("cannot reach {at}: {err}"),
        )),
        Ok(Err(err)) => Connected::Failed(Failure::new(
            ExecFailure::ConnectionLost,
            format!("the SSH session with {at} failed: {err}"),
        )),
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    /// The exit status; 128 + n when it was killed by signal n.
    pub exit_status: u32,
}

impl Session {
    /// Whether this session is still right for `target`: same address, user and key, and the
    /// host key it checked is the one pinned now (a pin made after it connected is its own).
    fn serves(&self, target: &Target) -> bool {
        self.target.registered == target.registered
            && self.target.key_version == target.key_version
            && target
                .pinned
                .as_ref()
                .is_none_or(|pinned| pinned.fingerprint == self.host_key.fingerprint)
    }

    /// Runs `command` on its own channel with `input` on its standard input (then its end, so
    /// a command reading it never waits); each piece of output goes to `output` as it comes.
    ///
    /// The host ends it at `timeout`: it runs under coreutils' `timeout -s KILL`, because sshd
    /// refuses the SSH `signal` request for root logins (no privilege separation after login).
    /// A moment later the channel is sent SIGKILL and closed here as well, for a host that does
    /// not answer at all.
    pub(crate) async fn run(
        &self,
        command: &str,
        input: &[u8],
        timeout: Duration,
        mut output: impl FnMut(OutputStream, &[u8]),
    ) -> Result<Finished, Failure> {
        let lost = |err: russh::Error| {
            Failure::new(
                ExecFailure::ConnectionLost,
                format!("the connection to {} broke: {err}", self.target.name),
            )
        };
        let timed_out = || {
            Failure::new(
                ExecFailure::CommandTimeout,
                format!(
                    "the command ran past its {} s timeout and was killed",
                    timeout.as_secs()
                ),
            )
        };
        let began = tokio::time::Instant::now();
        let mut channel = self.handle.channel_open_session().await.map_err(lost)?;
        channel
            .exec(true, with_deadline(command, timeout))
            .await
            .map_err(lost)?;
        if !input.is_empty() {
            channel.data(input).await.map_err(lost)?;
        }
        channel.eof().await.map_err(lost)?;
        let deadline = began + timeout + Duration::from_secs(2);
        let mut status = None;
        loop {
            let message = match tokio::time::timeout_at(deadline, channel.wait()).await {
                Err(_) => {
                    let _ = channel.signal(Sig::KILL).await;
                    let _ = channel.close().await;
                    return Err(timed_out());
                }
                Ok(None) => break,
                Ok(Some(message)) => message,
            };
            match message {
                ChannelMsg::Data { data } => output(OutputStream::Stdout, &data),
                ChannelMsg::ExtendedData { data, ext: 1 } => output(OutputStream::Stderr, &data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status = Some(128 + signal_number(&signal_name));
                }
                _ => {}
            }
        }
        match status {
            // `timeout -s KILL` ends with 128 + 9 when it killed the command.
            Some(137) if began.elapsed() >= timeout => Err(timed_out()),
            Some(exit_status) => Ok(Finished { exit_status }),
            None => Err(Failure::new(
                ExecFailure::ConnectionLost,
                format!(
                    "{} closed the channel without an exit status",
                    self.target.name
                ),
            )),
        }
    }
}

/// `command` run by `sh` under `timeout -s KILL <secs>` (quoted for the remote shell).
fn with_deadline(command: &str, timeout: Duration) -> String {
    format!(
        "exec timeout -s KILL {} sh -c '{}'",
        timeout.as_secs().max(1),
        command.replace('\'', "'\\''")
    )
}

fn signal_number(signal: &Sig) -> u32 {
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_quoted_for_the_remote_shell() {
        assert_eq!(
            with_deadline("echo 'a b'; exit 3", Duration::from_secs(5)),
            "exec timeout -s KILL 5 sh -c 'echo '\\''a b'\\''; exit 3'"
        );
    }
}
