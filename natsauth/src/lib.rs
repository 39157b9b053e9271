//! Who may do what on NATS. One nkey user per role — the control plane, each node's agent and
//! render worker, the chat bots, the Stream Bot — each allowed only the subjects it needs, and
//! the nats-server `authorization` block that says so (`nebula nats config`).
//!
//! Only the control plane may publish to the event log (`nebula.events.>`) or touch stream
//! configuration. A node publishes telemetry under its own node id, takes work only from its
//! own durable consumer, and asks the control plane's aggregates to decide its commands on
//! `nebula.cmd.<its node id>.<aggregate type>` (request/reply). The chat bots and the Stream
//! Bot run their own aggregates, so they may append to those aggregates' subjects and no other.
//! Every user gets replies on an inbox of its own (`_INBOX_<its public key>`), so no user can
//! read another's answers.

use std::io;
use std::path::{Path, PathBuf};

use events::DomainEvent;
use events::subjects::{self as subject, jetstream_api as api};

/// A role that connects to NATS, with the node it speaks for where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The gateway, projector, render dispatcher and command relay.
    Control,
    /// A node's agent: registration and heartbeats.
    Agent(events::NodeId),
    /// A node's render worker and its ComfyUI supervisor.
    Worker(events::NodeId),
    /// The Discord and Twitch bots.
    Chat,
    /// The Stream Bot.
    Posting,
}

/// The subjects a user may publish to and subscribe to (everything else is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Whether it may answer the requests it receives (on the asker's reply subject, once).
    pub responses: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Io(String),
    #[error("{path} is not an nkey user seed: {reason}")]
    BadSeed { path: PathBuf, reason: String },
    #[error("node id {0:?} cannot name a NATS user (letters, digits, '-' and '_' only)")]
    BadNode(String),
}

impl Identity {
    /// Every role of a system whose GPU nodes are `nodes`.
    pub fn all(nodes: &[events::NodeId]) -> Vec<Identity> {
        let mut all = vec![Identity::Control, Identity::Chat, Identity::Posting];
        for node in nodes {
            all.push(Identity::Agent(node.clone()));
            all.push(Identity::Worker(node.clone()));
        }
        all
    }

    /// Its user name, also the name of its seed file (`<user>.nk`).
    pub fn user(&self) -> String {
        match self {
            Identity::Control => "control".to_owned(),
            Identity::Agent(node) => format!("agent-{node}"),
            Identity::Worker(node) => format!("worker-{node}"),
            Identity::Chat => "chat".to_owned(),
            Identity::Posting => "posting".to_owned(),
        }
    }

    /// What it does, for the comment above its entry.
    pub fn describe(&self) -> String {
        match self {
            Identity::Control => {
                "the control plane: gateway, projector, render dispatcher, command relay".to_owned()
            }
            Identity::Agent(node) => format!("the agent of node {node}"),
            Identity::Worker(node) => format!("the render worker of node {node}"),
            Identity::Chat => "the chat bots (Discord, Twitch)".to_owned(),
            Identity::Posting => "the Stream Bot".to_owned(),
        }
    }

    /// The subjects it may use; `public_key` names its private reply inbox.
    pub fn permissions(&self, public_key: &str) -> Permissions {
        let inbox = subject::inbox_all(public_key);
        let mut publish = vec![api("INFO"), api("STREAM.INFO.*")];
        let mut subscribe = vec![inbox];
        let mut responses = false;
        match self {
            Identity::Control => {
                return Permissions {
                    publish: vec![">".to_owned()],
                    subscribe: vec![">".to_owned()],
                    responses: false,
                };
            }
            Identity::Agent(node) => {
                let node = node.as_str();
                publish.push(subject::telemetry(node, ">"));
                for aggregate in [
                    events::node::NodeEvent::AGGREGATE_TYPE,
                    events::container::ContainerCommandEvent::AGGREGATE_TYPE,
                    events::container::NodeContainersEvent::AGGREGATE_TYPE,
                    events::service::NodeServicesEvent::AGGREGATE_TYPE,
                    events::ai_dev::AiDevEvent::AGGREGATE_TYPE,
                ] {
                    publish.push(subject::command(node, aggregate));
                }
                // Its own durable consumers of its own commands and of the AI developer jobs
                // offered to it, and nothing else on WORK.
                publish.extend(own_work_consumer(
                    &subject::node_consumer(node),
                    &subject::node_work(node),
                ));
                publish.extend(own_work_consumer(
                    &subject::ai_dev_consumer(node),
                    &subject::ai_dev_work(node),
                ));
                // It follows the AI developer jobs (to carry on those it took: decisions,
                // cancellations, rollbacks).
                publish.extend(ordered_reader(&subject::events_of_type(
                    events::ai_dev::AiDevEvent::AGGREGATE_TYPE,
                )));
                // The control plane's questions to this node, answered to the asker only; and
                // its own questions to the control plane, asked under its own id only.
                subscribe.push(subject::node_queries(node));
                publish.push(subject::node_ask(node, ">"));
                // The lines of the logs a viewer follows (core NATS, never stored).
                publish.push(subject::log_follows_of(node));
                responses = true;
            }
            Identity::Worker(node) => {
                let node = node.as_str();
                publish.extend([
                    subject::telemetry(node, ">"),
                    subject::command(node, events::render::RenderJobEvent::AGGREGATE_TYPE),
                    subject::command(node, events::render::ComfyEvent::AGGREGATE_TYPE),
                ]);
                // Its own durable consumer of its own work, and nothing else on WORK.
                publish.extend(own_work_consumer(
                    &subject::render_consumer(node),
                    &subject::render_work(node),
                ));
                // It watches render jobs for cancellations (an ordered consumer of its own).
                publish.extend(ordered_reader(&subject::events_of_type(
                    events::render::RenderJobEvent::AGGREGATE_TYPE,
                )));
            }
            Identity::Chat => {
                for aggregate in [
                    events::chat::ChatCommandEvent::AGGREGATE_TYPE,
                    events::render::RenderJobEvent::AGGREGATE_TYPE,
                    events::render::RenderQueueEvent::AGGREGATE_TYPE,
                ] {
                    publish.push(subject::event(aggregate, "*"));
                }
                publish.push(subject::CHAT_WORK_ALL.to_owned());
                publish.push(api(&format!(
                    "CONSUMER.CREATE.WORK.*.{}",
                    subject::CHAT_WORK_ALL
                )));
                for platform in events::chat::Platform::ALL {
                    let consumer = format!("chat-intake-{}", platform.as_str());
                    publish.push(api(&format!("CONSUMER.INFO.WORK.{consumer}")));
                    publish.push(api(&format!("CONSUMER.MSG.NEXT.WORK.{consumer}")));
                    publish.push(subject::jetstream_acks("WORK", &consumer));
                }
                publish.extend(event_log_consumer());
                publish.extend(snapshots_of(&[
                    events::chat::ChatCommandEvent::AGGREGATE_TYPE,
                    events::render::RenderJobEvent::AGGREGATE_TYPE,
                    events::render::RenderQueueEvent::AGGREGATE_TYPE,
                ]));
                publish.extend(vault_reader());
                subscribe.push(subject::jetstream_flow_control(&vault_stream()));
            }
            Identity::Posting => {
                publish.push(subject::event(events::post::PostEvent::AGGREGATE_TYPE, "*"));
                publish.extend(snapshots_of(&[events::post::PostEvent::AGGREGATE_TYPE]));
                publish.extend(event_log_consumer());
                publish.extend(vault_reader());
                subscribe.push(subject::jetstream_flow_control(&vault_stream()));
            }
        }
        Permissions {
            publish,
            subscribe,
            responses,
        }
    }
}

/// One durable consumer on WORK, filtered to `work`: created, read, acked, dead-lettered.
fn own_work_consumer(consumer: &str, work: &str) -> Vec<String> {
    vec![
        subject::dlq(consumer),
        api(&format!("CONSUMER.CREATE.WORK.{consumer}.{work}")),
        api(&format!("CONSUMER.INFO.WORK.{consumer}")),
        api(&format!("CONSUMER.MSG.NEXT.WORK.{consumer}")),
        subject::jetstream_acks("WORK", consumer),
    ]
}

/// Reading `filter` of the event log from an ordered consumer (no acks, no durable state).
fn ordered_reader(filter: &str) -> Vec<String> {
    vec![
        api(&format!("CONSUMER.CREATE.EVENTS.*.{filter}")),
        api("CONSUMER.MSG.NEXT.EVENTS.*"),
        api("CONSUMER.INFO.EVENTS.*"),
    ]
}

/// Deciding commands on its own aggregates (direct gets of their subjects) and following the
/// event log with durable consumers, acked, dead-lettering what it cannot take.
fn event_log_consumer() -> Vec<String> {
    vec![
        api("DIRECT.GET.EVENTS.>"),
        api("DIRECT.GET.EVENTS"),
        api("STREAM.MSG.GET.EVENTS"),
        api("CONSUMER.CREATE.EVENTS.>"),
        api("CONSUMER.INFO.EVENTS.*"),
        api("CONSUMER.MSG.NEXT.EVENTS.*"),
        "$JS.ACK.EVENTS.>".to_owned(),
        subject::DLQ_ALL.to_owned(),
    ]
}

/// Reading any aggregate's snapshot (as it may read any aggregate's events), and keeping the
/// snapshots of the aggregates it decides on (and no others').
fn snapshots_of(aggregate_types: &[&str]) -> Vec<String> {
    let bucket = subject::SNAPSHOT_BUCKET;
    let stream = format!("KV_{bucket}");
    let mut out = vec![
        api(&format!("DIRECT.GET.{stream}")),
        api(&format!("DIRECT.GET.{stream}.>")),
        api(&format!("STREAM.MSG.GET.{stream}")),
    ];
    for aggregate in aggregate_types {
        out.push(format!("$KV.{bucket}.{aggregate}.*"));
    }
    out
}

fn vault_stream() -> String {
    format!("KV_{}", subject::VAULT_BUCKET)
}

/// Reading the vault's sealed values and watching them change (never writing them).
fn vault_reader() -> Vec<String> {
    let stream = vault_stream();
    vec![
        api(&format!("DIRECT.GET.{stream}.>")),
        api(&format!("DIRECT.GET.{stream}")),
        api(&format!("STREAM.MSG.GET.{stream}")),
        api(&format!("CONSUMER.CREATE.{stream}")),
        api(&format!("CONSUMER.CREATE.{stream}.>")),
        api(&format!("CONSUMER.INFO.{stream}.*")),
    ]
}

/// One user's credentials: its seed, in a file only its owner may read.
#[derive(Debug, Clone)]
pub struct Credential {
    pub identity: Identity,
    pub public_key: String,
    pub seed_file: PathBuf,
}

/// The credentials of every role, kept in one folder (`<user>.nk`, mode 0600).
#[derive(Debug, Clone)]
pub struct Accounts {
    pub dir: PathBuf,
    pub credentials: Vec<Credential>,
}

impl Accounts {
    /// Reads the seed of every identity from `dir`, making the ones that are missing (existing
    /// seeds are kept, so adding a node leaves every other credential valid).
    pub fn ensure(dir: &Path, identities: &[Identity]) -> Result<Accounts, AuthError> {
        let mut credentials = Vec::new();
        for identity in identities {
            let seed_file = dir.join(format!("{}.nk", identity.user()));
            let pair = match std::fs::read_to_string(&seed_file) {
                Ok(text) => read_seed(&seed_file, &text)?,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    let pair = nkeys::KeyPair::new_user();
                    let seed = pair.seed().map_err(|err| AuthError::Io(err.to_string()))?;
                    common::write_private(&seed_file, format!("{seed}\n").as_bytes()).map_err(
                        |err| AuthError::Io(format!("cannot write {}: {err}", seed_file.display())),
                    )?;
                    pair
                }
                Err(err) => {
                    return Err(AuthError::Io(format!(
                        "cannot read {}: {err}",
                        seed_file.display()
                    )));
                }
            };
            credentials.push(Credential {
                identity: identity.clone(),
                public_key: pair.public_key(),
                seed_file,
            });
        }
        Ok(Accounts {
            dir: dir.to_path_buf(),
            credentials,
        })
    }

    /// The credentials of every role for `nodes` and of every node named before (its agent
    /// seed is in `dir`), with `dir/authorization.conf` written for them (atomically, so a
    /// server reloading never reads half a file). What `nebula nats config` and `cargo xtask`
    /// run.
    pub fn write(dir: &Path, nodes: &[events::NodeId]) -> Result<Accounts, AuthError> {
        let mut all = known_nodes(dir)?;
        for node in nodes {
            if !all.contains(node) {
                all.push(node.clone());
            }
        }
        all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let accounts = Accounts::ensure(dir, &Identity::all(&all))?;
        let path = dir.join(AUTHORIZATION_FILE);
        let partial = dir.join(format!("{AUTHORIZATION_FILE}.partial"));
        std::fs::write(&partial, accounts.authorization())
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|err| AuthError::Io(format!("cannot write {}: {err}", path.display())))?;
        Ok(accounts)
    }

    /// The seed file of `identity`.
    pub fn seed_file(&self, identity: &Identity) -> Option<&Path> {
        self.credentials
            .iter()
            .find(|c| &c.identity == identity)
            .map(|c| c.seed_file.as_path())
    }

    /// The nats-server `authorization { users = [...] }` block: an nkey user per credential
    /// with its permissions; anonymous clients are refused.
    pub fn authorization(&self) -> String {
        let mut out = String::from(
            "# Generated by `nebula nats config`: one nkey user per role, each allowed only the\n\
             # subjects it needs. Regenerate it after adding a node (the seeds already made are\n\
             # kept) and reload nats-server (`nats-server --signal reload`, or SIGHUP).\n\
             authorization {\n  users = [\n",
        );
        for credential in &self.credentials {
            let permissions = credential.identity.permissions(&credential.public_key);
            out.push_str(&format!(
                "    # {} ({})\n    {{\n      nkey: {}\n      permissions: {{\n        publish: {{ allow: {} }}\n        subscribe: {{ allow: {} }}\n{}      }}\n    }}\n",
                credential.identity.user(),
                credential.identity.describe(),
                quote(&credential.public_key),
                list(&permissions.publish),
                list(&permissions.subscribe),
                if permissions.responses {
                    "        allow_responses: true\n"
                } else {
                    ""
                },
            ));
        }
        out.push_str("  ]\n}\n");
        out
    }
}

/// The file [`Accounts::write`] leaves next to the seeds, for nats-server to `include`.
pub const AUTHORIZATION_FILE: &str = "authorization.conf";

/// The nodes whose agent seeds are already in `dir` (none when `dir` does not exist yet).
fn known_nodes(dir: &Path) -> Result<Vec<events::NodeId>, AuthError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(AuthError::Io(format!(
                "cannot read {}: {err}",
                dir.display()
            )));
        }
    };
    let mut nodes = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|err| AuthError::Io(format!("cannot read {}: {err}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(node) = name
            .strip_prefix("agent-")
            .and_then(|rest| rest.strip_suffix(".nk"))
            && let Ok(ids) = parse_nodes(node)
        {
            nodes.extend(ids);
        }
    }
    Ok(nodes)
}

/// Reads a seed file's key pair.
pub fn read_seed(path: &Path, text: &str) -> Result<nkeys::KeyPair, AuthError> {
    let bad = |reason: String| AuthError::BadSeed {
        path: path.to_path_buf(),
        reason,
    };
    let seed = text.trim();
    if !seed.starts_with("SU") {
        return Err(bad("a user seed starts with SU".to_owned()));
    }
    nkeys::KeyPair::from_seed(seed).map_err(|err| bad(err.to_string()))
}

/// The node ids `nebula nats config --nodes a,b` names.
pub fn parse_nodes(list: &str) -> Result<Vec<events::NodeId>, AuthError> {
    list.split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(|node| {
            let valid = node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            match node.parse::<events::NodeId>() {
                Ok(id) if valid => Ok(id),
                _ => Err(AuthError::BadNode(node.to_owned())),
            }
        })
        .collect()
}

fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> events::NodeId {
        id.parse().unwrap()
    }

    #[test]
    fn seeds_are_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Identity::all(&[node("gpu-a")]);
        let first = Accounts::ensure(dir.path(), &ids).unwrap();
        assert_eq!(first.credentials.len(), 5);
        for credential in &first.credentials {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&credential.seed_file)
                    .unwrap()
                    .permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", credential.seed_file.display());
            assert!(credential.public_key.starts_with('U'));
        }
        // Adding a node keeps every key already handed out.
        let more = Identity::all(&[node("gpu-a"), node("gpu-b")]);
        let second = Accounts::ensure(dir.path(), &more).unwrap();
        assert_eq!(second.credentials.len(), 7);
        for credential in &first.credentials {
            let again = second
                .credentials
                .iter()
                .find(|c| c.identity == credential.identity)
                .unwrap();
            assert_eq!(again.public_key, credential.public_key);
        }
        let text = second.authorization();
        assert_eq!(text.matches("nkey: \"U").count(), 7);
        for credential in &second.credentials {
            let seed = std::fs::read_to_string(&credential.seed_file).unwrap();
            assert!(
                !text.contains(seed.trim()),
                "no seed in the server's configuration"
            );
        }
    }

    #[test]
    fn a_node_may_speak_only_for_itself() {
        let agent = Identity::Agent(node("gpu-a")).permissions("UKEY");
        assert!(agent.publish.contains(&subject::telemetry("gpu-a", ">")));
        assert!(agent.publish.contains(&subject::command("gpu-a", "node")));
        assert_eq!(
            agent.subscribe,
            vec!["_INBOX_UKEY.>".to_owned(), subject::node_queries("gpu-a")]
        );
        assert!(agent.responses);
        let worker = Identity::Worker(node("gpu-a")).permissions("UKEY");
        for permissions in [&agent, &worker] {
            for subject in permissions.publish.iter().chain(&permissions.subscribe) {
                assert!(!subject::is_event_log(subject), "{subject}");
                assert!(!subject.contains("gpu-b"), "{subject}");
                assert!(!subject.contains("STREAM.CREATE") && !subject.contains("STREAM.UPDATE"));
                assert!(subject != ">");
            }
        }
        let own_work = format!(
            "$JS.API.CONSUMER.CREATE.WORK.render-gpu-a.{}",
            subject::render_work("gpu-a")
        );
        assert!(worker.publish.contains(&own_work));
    }

    #[test]
    fn bad_seeds_and_node_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("control.nk"), "not a seed").unwrap();
        let err = Accounts::ensure(dir.path(), &[Identity::Control]).unwrap_err();
        assert!(err.to_string().contains("not an nkey user seed"), "{err}");
        assert!(parse_nodes("gpu-a, gpu_b").is_ok());
        for bad in ["gpu.a", "gpu a", "*", ">", "gpu-a,x.y"] {
            assert!(parse_nodes(bad).is_err(), "{bad}");
        }
    }
}
