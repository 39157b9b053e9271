-- Chat triggers: every chat command and what it caused, and per-server chat settings.
CREATE TABLE chat_commands (
    command_id      text PRIMARY KEY,
    platform        text NOT NULL,
    scope           text NOT NULL,
    channel         text NOT NULL,
    user_id         text NOT NULL,
    user_name       text NOT NULL,
    command         text NOT NULL,
    args            text NOT NULL,
    -- received | rejected | answered | job
    status          text NOT NULL,
    reason          text,
    job_id          text,
    reply           text,
    reply_error     text,
    correlation_id  uuid NOT NULL,
    received_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL
);
CREATE INDEX chat_commands_recent ON chat_commands (received_at DESC);
CREATE INDEX chat_commands_correlation ON chat_commands (correlation_id);

CREATE TABLE chat_settings (
    platform        text NOT NULL,
    scope           text NOT NULL,
    settings        jsonb NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_stream_seq bigint NOT NULL,
    PRIMARY KEY (platform, scope)
);
