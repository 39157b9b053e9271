//! Approvals nobody decided in time are recorded as expired (`approval.closed`, outcome
//! `expired`): a fold of the approval events (the open ones and their deadlines, from its
//! checkpoint at each start), checked every second.

use std::collections::HashMap;
use std::time::Duration;

use bus::Bus;
use bus::store::commands;
use chrono::{DateTime, Utc};
use events::DomainEvent;
use events::approval::ApprovalEvent;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(bus: Bus, cancel: CancellationToken) -> anyhow::Result<()> {
    let approvals = commands::<domain::approval::Approval>(bus.clone(), ());
    let (mut open, mut log) = bus
        .open_fold::<HashMap<String, DateTime<Utc>>>(
            "approval-expiry",
            1,
            vec![events::subjects::events_of_type(
                ApprovalEvent::AGGREGATE_TYPE,
            )],
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            message = log.next() => {
                let Some(message) = message? else { continue };
                for envelope in message.decode_commit().unwrap_or_default() {
                    match envelope.decode::<ApprovalEvent>() {
                        Ok(ApprovalEvent::Requested(requested)) => {
                            open.insert(envelope.aggregate_id.clone(), requested.policy.expires_at);
                        }
                        Ok(ApprovalEvent::Closed { .. }) => {
                            open.remove(&envelope.aggregate_id);
                        }
                        _ => {}
                    }
                }
                log.save(&open).await;
            }
            _ = tick.tick() => {
                log.save(&open).await;
                let now = Utc::now();
                let due: Vec<String> = open
                    .iter()
                    .filter(|(_, expires_at)| **expires_at <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    match sagas::approvals::expire(&approvals, &id).await {
                        // its closing event arrives on the log and takes it off the list
                        Ok(()) => {}
                        Err(err) => tracing::warn!(approval_id = %id, error = %err, "an expiry was not recorded yet"),
                    }
                }
            }
        }
    }
}
