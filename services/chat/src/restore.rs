//! Chat's counts read back from the log. Redis runs without persistence: after it restarts,
//! every cooldown still running, each channel's use of its quota window and each user's last
//! job are rebuilt from the `chat_command` events of the last day, so a Redis restart neither
//! lets a flood through nor forgets what `cancel` cancels.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bus::store::JetStreamStore;
use bus::{Bus, BusError, ReadFrom, StreamName};
use chrono::{DateTime, Utc};
use cqrs_es::EventStore;
use domain::chat::ChatSettings;
use events::chat::{ChatCommandEvent, CommandReceived, Platform, settings_id};
use futures::StreamExt;

use crate::limits::{LAST_JOB_TTL, Restored};

/// How far back the log is read: the longest cooldown, quota window and last-job memory.
const LOOK_BACK: Duration = Duration::from_secs(86_400);

/// A job a chat command started, and when.
struct Start {
    scope: String,
    user: String,
    job_id: String,
    at: DateTime<Utc>,
}

/// The counts of `platform` as the log has them at `now`.
pub(crate) async fn from_log(
    bus: &Bus,
    settings: &JetStreamStore<ChatSettings>,
    platform: Platform,
    now: DateTime<Utc>,
) -> Result<Restored, BusError> {
    let since = now - chrono::Duration::from_std(LOOK_BACK).unwrap_or_default();
    let mut log = bus
        .read(
            StreamName::Events,
            ReadFrom::Time(since),
            Some(events::subjects::events_of_type("chat_command")),
        )
        .await?;
    let mut left = log.backlog();
    let mut received: HashMap<String, CommandReceived> = HashMap::new();
    let mut starts = Vec::new();
    while left > 0 {
        let Some(message) = log.next().await else {
            break;
        };
        left -= 1;
        let Ok(commit) = message?.decode_commit() else {
            continue; // not ours to judge: the projections dead-letter what they cannot read
        };
        for envelope in commit {
            match envelope.decode::<ChatCommandEvent>() {
                Ok(ChatCommandEvent::Received(command)) if command.platform == platform => {
                    received.insert(envelope.aggregate_id, command);
                }
                Ok(ChatCommandEvent::JobStarted(started)) => {
                    if let Some(command) = received.get(&envelope.aggregate_id) {
                        starts.push(Start {
                            scope: command.scope.clone(),
                            user: command.user_id.clone(),
                            job_id: started.job_id,
                            at: envelope.occurred_at,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    let mut by_scope: BTreeMap<&str, Vec<&Start>> = BTreeMap::new();
    for start in &starts {
        by_scope.entry(&start.scope).or_default().push(start);
    }
    let mut restored = Restored::default();
    let remaining = |until: DateTime<Utc>| (until - now).to_std().ok().filter(|d| !d.is_zero());
    for (scope, starts) in by_scope {
        let rules = settings
            .load_aggregate(&settings_id(platform, scope))
            .await
            .map_err(|err| BusError::msg(bus::BusErrorKind::Other, err.to_string()))?
            .state()
            .current();
        let mut last_by_user: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for start in &starts {
            let last = last_by_user.entry(&start.user).or_insert(start.at);
            *last = (*last).max(start.at);
        }
        let cooldown = chrono::Duration::seconds(i64::from(rules.cooldown_secs));
        for (user, at) in last_by_user {
            if let Some(left) = remaining(at + cooldown) {
                restored
                    .cooldowns
                    .push((scope.to_owned(), user.to_owned(), left));
            }
        }
        let window = chrono::Duration::seconds(i64::from(rules.quota_window_secs));
        let in_window: Vec<DateTime<Utc>> = starts
            .iter()
            .map(|s| s.at)
            .filter(|at| *at + window > now)
            .collect();
        if let Some(left) = in_window
            .iter()
            .min()
            .and_then(|first| remaining(*first + window))
        {
            let used = u32::try_from(in_window.len()).unwrap_or(u32::MAX);
            restored.quotas.push((scope.to_owned(), used, left));
        }
    }
    let mut last_jobs: BTreeMap<&str, &Start> = BTreeMap::new();
    for start in &starts {
        let entry = last_jobs.entry(&start.user).or_insert(start);
        if start.at >= entry.at {
            *entry = start;
        }
    }
    let memory = chrono::Duration::from_std(LAST_JOB_TTL).unwrap_or_default();
    for (user, start) in last_jobs {
        if let Some(left) = remaining(start.at + memory) {
            restored
                .last_jobs
                .push((user.to_owned(), start.job_id.clone(), left));
        }
    }
    Ok(restored)
}
