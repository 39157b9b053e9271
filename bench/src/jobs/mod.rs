//! What the bench and the fault runs load the log with: generic job lifecycles, and their read
//! model. Private to the bench (no product part has generic jobs); the table is created here.

mod aggregate;
mod events;
mod projection;

pub use aggregate::{Job, JobCommand, JobError};
pub use events::{JobCompleted, JobEvent, JobProgressed, JobRequested, JobStarted, JobStatus};
pub use projection::Jobs;

/// The `jobs` table, made by the bench in its own database (and `jobs__rebuild` is not needed).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS jobs (
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
)";
