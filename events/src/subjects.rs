//! Every NATS subject is built here and nowhere else.

/// Prefix of every subject the system uses.
pub const ROOT: &str = "nebula";

/// `nebula.events.<aggregate_type>.<aggregate_id>`: one subject per aggregate, which gives
/// per-aggregate optimistic concurrency.
pub fn event(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{ROOT}.events.{aggregate_type}.{aggregate_id}")
}

/// Every event subject.
pub const EVENTS_ALL: &str = "nebula.events.>";

/// Every event of one aggregate type.
pub fn events_of_type(aggregate_type: &str) -> String {
    format!("{ROOT}.events.{aggregate_type}.*")
}

/// `nebula.telemetry.<node_id>.<kind>`.
pub fn telemetry(node_id: &str, kind: &str) -> String {
    format!("{ROOT}.telemetry.{node_id}.{kind}")
}

pub const TELEMETRY_ALL: &str = "nebula.telemetry.>";

/// `nebula.work.<queue>`.
pub fn work(queue: &str) -> String {
    format!("{ROOT}.work.{queue}")
}

pub const WORK_ALL: &str = "nebula.work.>";

/// `nebula.work.render.<node_id>`: the render jobs placed on one node.
pub fn render_work(node_id: &str) -> String {
    work(&format!("render.{node_id}"))
}

/// The durable consumer through which a node's render worker takes its work (also its DLQ
/// origin): `render-<node_id>`.
pub fn render_consumer(node_id: &str) -> String {
    format!("render-{node_id}")
}

/// `nebula.work.ai_dev.<node_id>`: AI developer jobs offered to one node.
pub fn ai_dev_work(node_id: &str) -> String {
    work(&format!("ai_dev.{node_id}"))
}

/// The durable consumer through which a node takes the AI developer jobs offered to it:
/// `ai-dev-<node_id>`.
pub fn ai_dev_consumer(node_id: &str) -> String {
    format!("ai-dev-{node_id}")
}

/// `nebula.work.node.<node_id>`: commands for one node's agent (containers, …).
pub fn node_work(node_id: &str) -> String {
    work(&format!("node.{node_id}"))
}

/// The durable consumer through which a node's agent takes its commands: `node-<node_id>`.
pub fn node_consumer(node_id: &str) -> String {
    format!("node-{node_id}")
}

/// `nebula.query.<node_id>.<kind>`: a question the control plane asks one node's agent
/// (request/reply).
pub fn node_query(node_id: &str, kind: &str) -> String {
    format!("{ROOT}.query.{node_id}.{kind}")
}

/// Every question to one node (what its agent may read).
pub fn node_queries(node_id: &str) -> String {
    format!("{ROOT}.query.{node_id}.>")
}

/// `nebula.work.chat.<platform>`: what a chat listener heard, for its intake.
pub fn chat_work(platform: &str) -> String {
    work(&format!("chat.{platform}"))
}

/// Every chat platform's intake work.
pub const CHAT_WORK_ALL: &str = "nebula.work.chat.>";

/// `nebula.dlq.<origin>`: where a consumer named `origin` dead-letters poison messages.
pub fn dlq(origin: &str) -> String {
    format!("{ROOT}.dlq.{origin}")
}

pub const DLQ_ALL: &str = "nebula.dlq.>";

/// `nebula.cmd.<node_id>.<aggregate_type>`: a command a node sends to one of the control plane's
/// aggregates (request/reply). Only that node's credentials may publish under its node id, so
/// the subject says who is asking.
pub fn command(node_id: &str, aggregate_type: &str) -> String {
    format!("{ROOT}.cmd.{node_id}.{aggregate_type}")
}

/// Every node's commands to one aggregate type (what the control plane's relay serves).
pub fn commands_of_type(aggregate_type: &str) -> String {
    format!("{ROOT}.cmd.*.{aggregate_type}")
}

/// The reply inbox prefix of one NATS user (`_INBOX_<name>`): a user may subscribe to its own
/// replies only, never to another's.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Everything under an inbox prefix.
pub fn inbox_all(user: &str) -> String {
    format!("{}.>", inbox_prefix(user))
}

/// JetStream's API, as a user's permissions name it (`$JS.API.<rest>`).
pub fn jetstream_api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// Acknowledgements of one consumer's deliveries.
pub fn jetstream_acks(stream: &str, consumer: &str) -> String {
    format!("$JS.ACK.{stream}.{consumer}.>")
}

/// Flow control and heartbeats of push consumers on `stream` (KV watches).
pub fn jetstream_flow_control(stream: &str) -> String {
    format!("$JS.FC.{stream}.>")
}

/// The KV bucket the secrets vault keeps its sealed values in (its stream is `KV_<bucket>`).
/// `nebula.ask.<node_id>.<kind>`: a question one node's agent asks the control plane
/// (request/reply); a node may ask only under its own id, so the answerer knows who asks.
pub fn node_ask(node_id: &str, kind: &str) -> String {
    format!("{ROOT}.ask.{node_id}.{kind}")
}

/// Every node's questions of one kind (what the control plane answers).
pub fn node_asks_of_kind(kind: &str) -> String {
    format!("{ROOT}.ask.*.{kind}")
}

/// The node that asked, from a [`node_ask`] subject.
pub fn asking_node(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(ROOT)?.strip_prefix(".ask.")?;
    let (node, kind) = rest.split_once('.')?;
    (!node.is_empty() && !kind.is_empty() && !kind.contains('.')).then_some(node)
}

/// `nebula.logs.<node_id>.<follow_id>`: a followed container log's lines as the node's agent
/// sends them (core NATS, nothing stored), to the one gateway viewer that asked.
pub fn log_follow(node_id: &str, follow_id: &str) -> String {
    format!("{ROOT}.logs.{node_id}.{follow_id}")
}

/// Every log a node's agent may send.
pub fn log_follows_of(node_id: &str) -> String {
    format!("{ROOT}.logs.{node_id}.>")
}

pub const VAULT_BUCKET: &str = "nebula_vault";

/// The KV bucket aggregate snapshots are kept in, one key `<aggregate_type>.<aggregate_id>`
/// each (its stream is `KV_<bucket>`).
pub const SNAPSHOT_BUCKET: &str = "nebula_snapshots";

/// A subject of ours, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// `nebula.events.<aggregate_type>.<aggregate_id>`
    Event {
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    },
    /// `nebula.telemetry.<node_id>.<kind>`
    Telemetry { node_id: &'a str, kind: &'a str },
    /// `nebula.work.<queue>` (the queue may have several tokens: `render.gpu-1`)
    Work { queue: &'a str },
    /// `nebula.dlq.<origin>`
    Dlq { origin: &'a str },
    /// `nebula.cmd.<node_id>.<aggregate_type>`
    Command {
        node_id: &'a str,
        aggregate_type: &'a str,
    },
}

impl<'a> Subject<'a> {
    /// The aggregate type of an event subject.
    pub fn aggregate_type(&self) -> Option<&'a str> {
        match self {
            Subject::Event { aggregate_type, .. } => Some(aggregate_type),
            _ => None,
        }
    }
}

/// Takes `subject` apart; `None` when it is not one of ours (or not a concrete subject).
pub fn parse(subject: &str) -> Option<Subject<'_>> {
    let rest = subject.strip_prefix(ROOT)?.strip_prefix('.')?;
    let (kind, rest) = rest.split_once('.')?;
    let tokens_ok = rest
        .split('.')
        .all(|token| !token.is_empty() && token != "*" && token != ">");
    if !tokens_ok {
        return None;
    }
    match kind {
        "events" => {
            let (aggregate_type, aggregate_id) = rest.split_once('.')?;
            (!aggregate_id.contains('.')).then_some(Subject::Event {
                aggregate_type,
                aggregate_id,
            })
        }
        "telemetry" => {
            let (node_id, kind) = rest.split_once('.')?;
            (!kind.contains('.')).then_some(Subject::Telemetry { node_id, kind })
        }
        "work" => Some(Subject::Work { queue: rest }),
        "dlq" => Some(Subject::Dlq { origin: rest }),
        "cmd" => {
            let (node_id, aggregate_type) = rest.split_once('.')?;
            (!aggregate_type.contains('.')).then_some(Subject::Command {
                node_id,
                aggregate_type,
            })
        }
        _ => None,
    }
}

/// Whether `subject` (or filter) names something of ours: `nebula.…`.
pub fn is_ours(subject: &str) -> bool {
    subject
        .strip_prefix(ROOT)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `subject` (or filter) reaches into the event log, which only `Bus::append` writes.
pub fn is_event_log(subject: &str) -> bool {
    subject
        .strip_prefix(ROOT)
        .and_then(|rest| rest.strip_prefix(".events"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_are_stable() {
        assert_eq!(super::event("node", "gpu-1"), "nebula.events.node.gpu-1");
        let asked = super::node_ask("gpu-1", "container_secrets");
        assert_eq!(asked, "nebula.ask.gpu-1.container_secrets");
        assert_eq!(super::asking_node(&asked), Some("gpu-1"));
        assert_eq!(super::asking_node("nebula.ask.gpu-1.a.b"), None);
        assert_eq!(
            super::node_asks_of_kind("container_secrets"),
            "nebula.ask.*.container_secrets"
        );
        assert_eq!(
            super::telemetry("gpu-1", "heartbeat"),
            "nebula.telemetry.gpu-1.heartbeat"
        );
        assert_eq!(super::work("render"), "nebula.work.render");
        assert_eq!(
            super::dlq("projection-nodes"),
            "nebula.dlq.projection-nodes"
        );
    }

    #[test]
    fn subjects_parse_back_into_their_parts() {
        use super::{Subject, parse};
        assert_eq!(
            parse(&super::event("render_job", "0191")),
            Some(Subject::Event {
                aggregate_type: "render_job",
                aggregate_id: "0191"
            })
        );
        assert_eq!(
            parse(&super::telemetry("gpu-1", "heartbeat")),
            Some(Subject::Telemetry {
                node_id: "gpu-1",
                kind: "heartbeat"
            })
        );
        assert_eq!(
            parse(&super::work("render.gpu-1")),
            Some(Subject::Work {
                queue: "render.gpu-1"
            })
        );
        assert_eq!(
            parse(&super::dlq("chat-intake-twitch")),
            Some(Subject::Dlq {
                origin: "chat-intake-twitch"
            })
        );
        assert_eq!(
            parse(&super::command("gpu-1", "render_job")),
            Some(Subject::Command {
                node_id: "gpu-1",
                aggregate_type: "render_job"
            })
        );
        for not_ours in [
            "nebula.cmd.gpu-1",
            "nebula.cmd.gpu-1.render_job.x",
            "nebula.cmd.*.render_job",
            "nebula",
            "nebulae.events.node.a",
            "nebula.events.node",
            "nebula.events.node.a.b",
            "nebula.events.node.*",
            super::EVENTS_ALL,
            "nebula.what.a",
            "other.events.node.a",
        ] {
            assert_eq!(parse(not_ours), None, "{not_ours}");
        }
        assert_eq!(
            parse(&super::event("node", "a")).and_then(|s| s.aggregate_type()),
            Some("node")
        );
    }

    #[test]
    fn the_event_log_is_recognised_in_subjects_and_filters() {
        for subject in ["nebula.events", "nebula.events.>", "nebula.events.node.a"] {
            assert!(super::is_event_log(subject), "{subject}");
        }
        for subject in [
            "nebula.eventsx.a",
            "nebula.work.render",
            "events.node.a",
            "nebula.dlq.x",
        ] {
            assert!(!super::is_event_log(subject), "{subject}");
        }
        assert!(super::is_ours("nebula.work.x") && !super::is_ours("nebulax.work"));
    }
}
