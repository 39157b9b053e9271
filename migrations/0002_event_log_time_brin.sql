-- event_log rows arrive in time order, so a BRIN index answers time-range queries at a tiny
-- fraction of a B-tree's write cost (measured by `cargo xtask bench`, P1 and P4).
DROP INDEX event_log_occurred_at;
CREATE INDEX event_log_occurred_at ON event_log USING brin (occurred_at);
