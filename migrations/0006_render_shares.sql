-- Share links: each output a job shared, by its random token (render.job_shared; a revoked
-- link's row is deleted). The gateway serves /share/<token>.png only from this table.
CREATE TABLE render_shares (
    token           text PRIMARY KEY,
    job_id          text NOT NULL,
    sha256          text NOT NULL,
    shared_by       jsonb NOT NULL,
    shared_at       timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
CREATE INDEX render_shares_job ON render_shares (job_id);

-- Which finished job made an output (a post names the output; its link is that job's share).
CREATE INDEX render_jobs_artifacts ON render_jobs USING gin (artifacts jsonb_path_ops);
