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

/// `nebula.dlq.<origin>`: where a consumer named `origin` dead-letters poison messages.
pub fn dlq(origin: &str) -> String {
    format!("{ROOT}.dlq.{origin}")
}

pub const DLQ_ALL: &str = "nebula.dlq.>";

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
        for not_ours in [
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
