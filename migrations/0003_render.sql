-- The Creative Studio: render jobs, the queue switch, supervised ComfyUI processes.
CREATE TABLE render_jobs (
    job_id          text PRIMARY KEY,
    mode            text NOT NULL,
    status          text NOT NULL,
    priority        integer NOT NULL,
    params          jsonb NOT NULL,
    trigger         jsonb NOT NULL,
    vram_mib        bigint NOT NULL,
    max_attempts    integer NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    node_id         text,
    backend         text,
    progress_value  integer,
    progress_max    integer,
    artifacts       jsonb,
    provenance      jsonb,
    error           text,
    retryable       boolean,
    correlation_id  uuid NOT NULL,
    -- Stream sequence of the submission: FIFO order within a priority.
    submitted_seq   bigint NOT NULL,
    requested_at    timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
CREATE INDEX render_jobs_queue ON render_jobs (status, priority DESC, submitted_seq);
CREATE INDEX render_jobs_finished ON render_jobs (finished_at);

CREATE TABLE render_queue (
    queue_id        text PRIMARY KEY,
    paused          boolean NOT NULL,
    reason          text,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);

CREATE TABLE comfyui_instances (
    node_id         text PRIMARY KEY,
    state           text NOT NULL,
    pid             integer,
    restarts        integer NOT NULL,
    vram_mode       text NOT NULL,
    reason          text NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
