//! Approvals as every way in uses them: asking (the deploy center, the AI developer, costly
//! jobs), deciding (the gateway's REST), waiting for the outcome, and recording the expiry of
//! those nobody decided in time.

use std::time::Duration;

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use chrono::Utc;
use cqrs_es::AggregateError;
use domain::approval::{Approval, ApprovalCommand, ApprovalError};
use events::Actor;
use events::access::Role;
use events::approval::{ApprovalPolicy, ApprovalRequested, ApprovalSubject, Decision, Preview};

/// Asks for an approval of `subject` under `policy`; its id. The actor of `meta` is the one
/// who asked (and, unless the policy allows it, may not approve it).
pub async fn request_approval(
    commands: &Commands<Approval>,
    subject: ApprovalSubject,
    summary: String,
    preview: Preview,
    policy: ApprovalPolicy,
    meta: CommandMeta,
) -> Result<String, AggregateError<ApprovalError>> {
    let approval_id = uuid::Uuid::now_v7().to_string();
    let requested = ApprovalRequested {
        subject,
        summary,
        preview,
        policy,
        requested_by: meta.actor.clone(),
    };
    execute(
        commands,
        &approval_id,
        ApprovalCommand::Request(requested),
        meta,
        3,
    )
    .await?;
    Ok(approval_id)
}

/// `by` (with `role`) approves or rejects. A decision refused because the deadline passed
/// records the expiry first (so the log says so) and is then refused.
pub async fn decide(
    commands: &Commands<Approval>,
    approval_id: &str,
    decision: Decision,
    role: Role,
    comment: String,
    meta: CommandMeta,
) -> Result<(), AggregateError<ApprovalError>> {
    let command = ApprovalCommand::Decide {
        decision,
        by: meta.actor.clone(),
        role,
        comment,
        now: Utc::now(),
    };
    match execute(commands, approval_id, command, meta.clone(), 3).await {
        Err(AggregateError::UserError(ApprovalError::Expired(at))) => {
            expire(commands, approval_id).await?;
            Err(AggregateError::UserError(ApprovalError::Expired(at)))
        }
        other => other,
    }
}

/// Records that `approval_id`'s deadline passed (already closed or not yet due: nothing).
pub async fn expire(
    commands: &Commands<Approval>,
    approval_id: &str,
) -> Result<(), AggregateError<ApprovalError>> {
    let meta = CommandMeta::new(Actor::Service("approvals".to_owned()));
    let command = ApprovalCommand::Expire { now: Utc::now() };
    match execute(commands, approval_id, command, meta, 3).await {
        Ok(())
        | Err(AggregateError::UserError(ApprovalError::Closed(_) | ApprovalError::NotExpired(_))) => {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// The approval once it has an outcome, or as it stands when `wait` has passed.
/// The approval once it is decided (granted, refused or expired), followed on its own subject;
/// an event store that is away is retried with backoff, never given up on.
pub async fn decided(bus: &Bus, state: &JetStreamStore<Approval>, approval_id: &str) -> Approval {
    let mut backoff = common::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match wait_outcome(bus, state, approval_id, Duration::from_secs(60)).await {
            Ok(approval) if approval.outcome.is_some() => return approval,
            Ok(_) => backoff.reset(),
            Err(err) => {
                tracing::warn!(approval_id, error = %err, "waiting for an approval; trying again");
                backoff.sleep().await;
            }
        }
    }
}

pub async fn wait_outcome(
    bus: &Bus,
    state: &JetStreamStore<Approval>,
    approval_id: &str,
    wait: Duration,
) -> Result<Approval, AggregateError<ApprovalError>> {
    crate::follow::until_final(bus, state, approval_id, wait, |approval| {
        approval.outcome.is_some()
    })
    .await
}
