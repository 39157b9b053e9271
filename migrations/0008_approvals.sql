-- Approvals (the `approval` aggregate): what waits for people to say yes, its policy, every
-- decision with who made it, and the outcome. `state` is pending until the outcome is recorded;
-- a pending approval past `expires_at` is shown as expired by the readers.
CREATE TABLE approvals (
    approval_id     text PRIMARY KEY,
    subject_kind    text NOT NULL,
    subject_id      text NOT NULL,
    summary         text NOT NULL,
    preview         jsonb NOT NULL,
    policy          jsonb NOT NULL,
    expires_at      timestamptz NOT NULL,
    requested_by    jsonb NOT NULL,
    decisions       jsonb NOT NULL DEFAULT '[]',
    state           text NOT NULL,
    reason          text,
    correlation_id  uuid NOT NULL,
    requested_at    timestamptz NOT NULL,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
CREATE INDEX approvals_open ON approvals (requested_at) WHERE state = 'pending';
CREATE INDEX approvals_subject ON approvals (subject_kind, subject_id);
