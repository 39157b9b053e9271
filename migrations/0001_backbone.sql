-- Read models of the event backbone. Postgres holds only read models and their checkpoints:
-- every table here can be dropped and rebuilt from the JetStream log.

-- Where each projection stands in its stream. Written in the same transaction as the
-- projection's own rows, so a crash can neither lose nor double-apply an event.
CREATE TABLE projection_checkpoints (
    name        text PRIMARY KEY,
    stream      text NOT NULL,
    last_seq    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every event, for audit, replay views and `trace`.
CREATE TABLE event_log (
    stream_seq      bigint NOT NULL,
    idx             integer NOT NULL,
    event_id        uuid NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    aggregate_seq   bigint NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  uuid NOT NULL,
    causation_id    uuid,
    actor           jsonb NOT NULL,
    schema_version  integer NOT NULL,
    data            jsonb NOT NULL,
    PRIMARY KEY (stream_seq, idx)
);
CREATE UNIQUE INDEX event_log_event_id ON event_log (event_id);
CREATE INDEX event_log_aggregate ON event_log (aggregate_type, aggregate_id, aggregate_seq);
CREATE INDEX event_log_type ON event_log (event_type, stream_seq);
CREATE INDEX event_log_occurred_at ON event_log (occurred_at);
CREATE INDEX event_log_correlation ON event_log (correlation_id, stream_seq);

-- Node inventory, from node lifecycle events.
CREATE TABLE nodes (
    node_id             text PRIMARY KEY,
    hostname            text NOT NULL,
    os                  text NOT NULL,
    kernel              text NOT NULL,
    cpu_model           text NOT NULL,
    cpu_cores           integer NOT NULL,
    memory_total_bytes  bigint NOT NULL,
    disk_total_bytes    bigint NOT NULL,
    gpus                jsonb NOT NULL,
    gpu_source          text NOT NULL,
    agent_version       text NOT NULL,
    agent_url           text,
    status              text NOT NULL,
    registered_at       timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    last_stream_seq     bigint NOT NULL
);

-- The latest heartbeat of each node (from the TELEMETRY stream; latest sample wins).
CREATE TABLE node_telemetry (
    node_id      text PRIMARY KEY,
    sampled_at   timestamptz NOT NULL,
    sample_seq   bigint NOT NULL,
    heartbeat    jsonb NOT NULL,
    received_seq bigint NOT NULL
);

-- Generic job lifecycle.
CREATE TABLE jobs (
    job_id          text PRIMARY KEY,
    kind            text NOT NULL,
    status          text NOT NULL,
    priority        integer NOT NULL,
    params          jsonb NOT NULL,
    progress_value  bigint,
    progress_max    bigint,
    worker          text,
    node_id         text,
    result          jsonb,
    error           text,
    retryable       boolean,
    correlation_id  uuid NOT NULL,
    requested_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
CREATE INDEX jobs_status ON jobs (status, priority DESC, requested_at);
