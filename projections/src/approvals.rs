//! `approvals`: every approval with its policy, decisions and outcome (the Approvals inbox).

use bus::{StoredMessage, StreamName};
use events::approval::ApprovalEvent;
use events::{DomainEvent, EventEnvelope};
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyError, ApplyFuture, Projection, Target};

pub struct Approvals;

impl Projection for Approvals {
    fn name(&self) -> &'static str {
        "approvals"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &["approvals"]
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
                crate::Reads::Aggregates(&[ApprovalEvent::AGGREGATE_TYPE]),
            )? {
                if !apply_approval(conn, target, &envelope, seq).await? {
                    applied.unknown_skipped += 1;
                }
            }
            Ok(applied)
        })
    }
}

async fn apply_approval(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(event) = crate::decode_known::<ApprovalEvent>(envelope)? else {
        return Ok(false);
    };
    let table = target.table("approvals");
    let id = &envelope.aggregate_id;
    let at = envelope.occurred_at;
    match event {
        ApprovalEvent::Requested(requested) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (approval_id, subject_kind, subject_id, summary, preview, \
                 policy, expires_at, requested_by, state, correlation_id, requested_at, \
                 updated_at, last_stream_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $10, $11) \
                 ON CONFLICT (approval_id) DO NOTHING"
            )))
            .bind(id)
            .bind(&requested.subject.kind)
            .bind(&requested.subject.id)
            .bind(&requested.summary)
            .bind(Json(&requested.preview))
            .bind(Json(&requested.policy))
            .bind(requested.policy.expires_at)
            .bind(Json(&requested.requested_by))
            .bind(envelope.correlation_id.0)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        ApprovalEvent::Decided(made) => {
            let decision = serde_json::json!([{
                "decision": made.decision,
                "by": made.by,
                "role": made.role,
                "comment": made.comment,
                "at": at,
            }]);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET decisions = decisions || $4, updated_at = $2, \
                 last_stream_seq = $3 WHERE approval_id = $1"
            )))
            .bind(id)
            .bind(at)
            .bind(seq)
            .bind(Json(decision))
            .execute(&mut *conn)
            .await?;
        }
        ApprovalEvent::Closed { outcome, reason } => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET state = $4, reason = $5, closed_at = $2, updated_at = $2, \
                 last_stream_seq = $3 WHERE approval_id = $1"
            )))
            .bind(id)
            .bind(at)
            .bind(seq)
            .bind(outcome.as_str())
            .bind(&reason)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(true)
}

/// An approval row as the API answers it: a pending one past its deadline reads `expired`.
const APPROVAL_JSON: &str = "to_jsonb(a) - 'last_stream_seq' || jsonb_build_object('state', \
     CASE WHEN a.state = 'pending' AND a.expires_at <= now() THEN 'expired' ELSE a.state END)";

impl crate::ReadModels {
    /// Approvals, newest first: every one, or those in `state` (`pending` means still
    /// decidable: not past its deadline).
    pub async fn approvals(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_JSON} FROM approvals a WHERE $1::text IS NULL \
             OR (CASE WHEN a.state = 'pending' AND a.expires_at <= now() THEN 'expired' \
             ELSE a.state END) = $1 ORDER BY a.requested_at DESC, a.approval_id DESC LIMIT $2"
        )))
        .bind(state)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// One approval, or `None`.
    pub async fn approval(
        &self,
        approval_id: &str,
    ) -> Result<Option<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_JSON} FROM approvals a WHERE approval_id = $1"
        )))
        .bind(approval_id)
        .fetch_optional(self.pool())
        .await?)
    }
}
