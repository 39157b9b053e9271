//! `chat_commands` (every chat command: who, what, how it was decided, the job it started, the
//! reply) and `chat_settings` (per Discord guild / Twitch channel).

use bus::{StoredMessage, StreamName};
use events::chat::{ChatCommandEvent, ChatSettingsEvent, Withheld};
use events::{DomainEvent, EventEnvelope};
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyError, ApplyFuture, Projection, Target};

pub struct Chat;

impl Projection for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &["chat_commands", "chat_settings"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut applied = Applied::default();
            for crate::Stored { seq, envelope, .. } in crate::events_of(
                batch,
                crate::Reads::Aggregates(&[
                    ChatCommandEvent::AGGREGATE_TYPE,
                    ChatSettingsEvent::AGGREGATE_TYPE,
                ]),
            )? {
                let known = match envelope.aggregate_type.as_str() {
                    "chat_command" => apply_command(conn, target, &envelope, seq).await?,
                    "chat_settings" => apply_settings(conn, target, &envelope, seq).await?,
                    _ => true,
                };
                if !known {
                    applied.unknown_skipped += 1;
                }
            }
            Ok(applied)
        })
    }
}

async fn apply_command(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(event) = crate::decode_known::<ChatCommandEvent>(envelope)? else {
        return Ok(false);
    };
    let table = target.table("chat_commands");
    let id = &envelope.aggregate_id;
    let at = envelope.occurred_at;
    let update = |set: &str| {
        format!(
            "UPDATE {table} SET {set}, updated_at = $2, last_stream_seq = $3 WHERE command_id = $1"
        )
    };
    match event {
        ChatCommandEvent::Received(received) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (command_id, platform, scope, channel, user_id, user_name, \
                 command, args, status, correlation_id, received_at, updated_at, last_stream_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'received', $9, $10, $10, $11) \
                 ON CONFLICT (command_id) DO NOTHING"
            )))
            .bind(id)
            .bind(received.platform.as_str())
            .bind(&received.scope)
            .bind(&received.channel)
            .bind(&received.user_id)
            .bind(&received.user_name)
            .bind(&received.command)
            .bind(&received.args)
            .bind(envelope.correlation_id.0)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        ChatCommandEvent::Rejected(rejected) => {
            sqlx::query(sqlx::AssertSqlSafe(update(
                "status = 'rejected', reason = $4",
            )))
            .bind(id)
            .bind(at)
            .bind(seq)
            .bind(rejected.reason.as_str())
            .execute(&mut *conn)
            .await?;
        }
        ChatCommandEvent::JobStarted(started) => {
            sqlx::query(sqlx::AssertSqlSafe(update("status = 'job', job_id = $4")))
                .bind(id)
                .bind(at)
                .bind(seq)
                .bind(&started.job_id)
                .execute(&mut *conn)
                .await?;
        }
        ChatCommandEvent::Answered(_) => {
            sqlx::query(sqlx::AssertSqlSafe(update("status = 'answered'")))
                .bind(id)
                .bind(at)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
        ChatCommandEvent::ReplySent(sent) => {
            sqlx::query(sqlx::AssertSqlSafe(update(
                "reply = $4, reply_error = NULL",
            )))
            .bind(id)
            .bind(at)
            .bind(seq)
            .bind(&sent.text)
            .execute(&mut *conn)
            .await?;
        }
        ChatCommandEvent::ReplyWithheld(withheld) => {
            let note = match withheld.why {
                Withheld::Summary => "(merged into the channel's summary of refusals)",
                Withheld::Silent => "(not answered, as the channel's settings ask)",
            };
            sqlx::query(sqlx::AssertSqlSafe(update(
                "reply = $4, reply_error = NULL",
            )))
            .bind(id)
            .bind(at)
            .bind(seq)
            .bind(note)
            .execute(&mut *conn)
            .await?;
        }
        ChatCommandEvent::ReplyFailed(failed) => {
            sqlx::query(sqlx::AssertSqlSafe(update("reply_error = $4")))
                .bind(id)
                .bind(at)
                .bind(seq)
                .bind(&failed.error)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(true)
}

async fn apply_settings(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(ChatSettingsEvent::Changed(changed)) =
        crate::decode_known::<ChatSettingsEvent>(envelope)?
    else {
        return Ok(false);
    };
    let table = target.table("chat_settings");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (platform, scope, settings, updated_at, last_stream_seq) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, scope) DO UPDATE SET \
         settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at, \
         last_stream_seq = EXCLUDED.last_stream_seq"
    )))
    .bind(changed.platform.as_str())
    .bind(&changed.scope)
    .bind(Json(&changed.settings))
    .bind(envelope.occurred_at)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

impl crate::ReadModels {
    /// A server's chat settings, or `None` while it has the defaults.
    pub async fn chat_settings(
        &self,
        platform: &str,
        scope: &str,
    ) -> Result<Option<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT settings FROM chat_settings WHERE platform = $1 AND scope = $2",
        )
        .bind(platform)
        .bind(scope)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every server with settings.
    pub async fn chat_settings_all(
        &self,
    ) -> Result<Vec<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT jsonb_build_object('platform', platform, 'scope', scope, 'settings', settings, \
             'updated_at', updated_at) FROM chat_settings ORDER BY platform, scope",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Chat commands, newest first, with the render job each started (its status too);
    /// optionally one platform's or one correlation's.
    pub async fn chat_commands(
        &self,
        platform: Option<&str>,
        correlation_id: Option<uuid::Uuid>,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT to_jsonb(c) || jsonb_build_object('job_status', j.status) \
             FROM chat_commands c LEFT JOIN render_jobs j ON j.job_id = c.job_id \
             WHERE ($1::text IS NULL OR c.platform = $1) \
             AND ($2::uuid IS NULL OR c.correlation_id = $2) \
             ORDER BY c.received_at DESC, c.command_id LIMIT $3",
        )
        .bind(platform)
        .bind(correlation_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
