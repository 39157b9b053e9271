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
}
