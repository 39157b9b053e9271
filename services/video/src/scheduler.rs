//! The schedules: a fold of the `video_schedule` events, resumed at every start (they live in
//! the log). At each due instant a schedule fires: a place in the video queue, the firing
//! recorded with its project's id, then the project asked for from the template — so a crash
//! between the two finds the firing and asks for the same project again, never a second one.
//! Instants slept through are skipped or caught up once; a firing while the schedule's last
//! project is busy is skipped when it says so; each recorded with its reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use chrono::{DateTime, Utc};
use cqrs_es::EventStore;
use domain::schedule::{Schedule, ScheduleCommand, ScheduleState, SkipReason};
use events::video::{ProjectRequested, ScheduleDefined, ScheduleEvent};
use events::{Actor, DomainEvent};
use tokio_util::sync::CancellationToken;

/// The longest the scheduler sleeps without looking again (a clock that jumped, a schedule
/// that never matches).
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

struct Known {
    defined: ScheduleDefined,
    schedule: Schedule,
    /// When it was defined: it counts from here until it fires.
    since: DateTime<Utc>,
}

/// The fold's checkpoint: each schedule's definition and since when.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    schedules: BTreeMap<String, (ScheduleDefined, DateTime<Utc>)>,
}

const FOLD: &str = "video-scheduler";
/// Bump when [`Saved`]'s shape changes: an older checkpoint is then ignored.
const FOLD_FORMAT: u32 = 1;
/// A checkpoint is saved, once caught up, when this long (or 1,000 events) has passed.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Known {
    fn new(defined: ScheduleDefined, since: DateTime<Utc>) -> Result<Known, String> {
        let schedule = Schedule::parse(&defined.cron, &defined.time_zone)?;
        Ok(Known {
            defined,
            schedule,
            since,
        })
    }
}

pub(crate) struct Scheduler {
    pub(crate) bus: Bus,
    pub(crate) schedules: Commands<ScheduleState>,
    pub(crate) schedule_state: JetStreamStore<ScheduleState>,
    pub(crate) projects: Commands<domain::video::VideoProject>,
    pub(crate) project_state: JetStreamStore<domain::video::VideoProject>,
    pub(crate) queue: Commands<domain::video::VideoQueue>,
    pub(crate) queue_cap: usize,
}

impl Scheduler {
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let (saved, mut log) = self
            .bus
            .open_fold::<Saved>(
                FOLD,
                FOLD_FORMAT,
                vec![events::subjects::events_of_type(
                    ScheduleEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        let mut known: BTreeMap<String, Known> = BTreeMap::new();
        for (name, (defined, since)) in saved.schedules {
            match Known::new(defined, since) {
                Ok(schedule) => {
                    known.insert(name, schedule);
                }
                Err(err) => {
                    tracing::warn!(schedule = name, error = %err, "a checkpointed schedule cannot be read")
                }
            }
        }
        // Caught up and no message waiting: the schedules are as the log has them.
        let mut settled = false;
        loop {
            if log.due() {
                let saved = Saved {
                    schedules: known
                        .iter()
                        .map(|(name, k)| (name.clone(), (k.defined.clone(), k.since)))
                        .collect(),
                };
                log.save(&saved).await;
            }
            let wake = if settled {
                self.tick(&known).await
            } else {
                None
            };
            let sleep = wake
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or(if settled {
                    MAX_SLEEP
                } else {
                    std::time::Duration::ZERO
                })
                .min(MAX_SLEEP);
            // A checkpoint is due: wake to save it, however far the next firing is.
            let sleep = if log.unsaved() {
                sleep.min(SAVE_EVERY)
            } else {
                sleep
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(sleep), if settled => {}
                message = log.next() => {
                    let message = message?;
                    settled = log.settled(message.as_ref());
                    let Some(message) = message else { continue };
                    for envelope in message.decode_commit().unwrap_or_default() {
                        match envelope.decode::<ScheduleEvent>() {
                            Ok(ScheduleEvent::Defined(defined)) => match Known::new(defined, envelope.occurred_at) {
                                Ok(schedule) => {
                                    known.insert(envelope.aggregate_id.clone(), schedule);
                                }
                                Err(err) => tracing::warn!(schedule = envelope.aggregate_id, error = %err, "a schedule on the log cannot be read"),
                            },
                            Ok(ScheduleEvent::Removed {}) => {
                                known.remove(&envelope.aggregate_id);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// Fires what is due now; the next instant to wake at.
    async fn tick(&self, known: &BTreeMap<String, Known>) -> Option<DateTime<Utc>> {
        let mut wake: Option<DateTime<Utc>> = None;
        for (name, schedule) in known {
            if !schedule.defined.enabled {
                continue;
            }
            let state = match self.schedule_state.load_aggregate(name).await {
                Ok(loaded) => loaded.state().clone(),
                Err(err) => {
                    tracing::warn!(schedule = name, error = %err, "a schedule could not be read");
                    continue;
                }
            };
            let busy = self.busy(name, &schedule.defined, &state).await;
            let last = state.last.unwrap_or(schedule.since).max(schedule.since);
            let now = Utc::now();
            let due = schedule.schedule.due(
                last,
                now,
                schedule.defined.missed,
                schedule.defined.overlap,
                busy,
            );
            for reason in [SkipReason::Missed, SkipReason::Busy] {
                let instants: Vec<DateTime<Utc>> = due
                    .skipped
                    .iter()
                    .filter(|s| s.reason == reason)
                    .map(|s| s.at)
                    .collect();
                if let Some(at) = instants.last().copied()
                    && due.fire.is_none_or(|fire| at < fire)
                {
                    let why = match reason {
                        SkipReason::Missed => "missed (the scheduler was not running)",
                        SkipReason::Busy => "busy (the last project has not ended)",
                    };
                    self.record(
                        name,
                        ScheduleCommand::Skip {
                            at,
                            count: instants.len() as u32,
                            reason: why.to_owned(),
                        },
                    )
                    .await;
                }
            }
            if let Some(at) = due.fire {
                self.fire(name, &schedule.defined, &state, at).await;
            }
            if let Some(next) = due.next {
                wake = Some(wake.map_or(next, |w| w.min(next)));
            }
        }
        wake
    }

    /// Whether the schedule's last project is still being made (asked for again when its
    /// firing was recorded but the project was not).
    async fn busy(&self, name: &str, defined: &ScheduleDefined, state: &ScheduleState) -> bool {
        let Some(project_id) = &state.last_project else {
            return false;
        };
        match self.project_state.load_aggregate(project_id).await {
            Ok(loaded) => match loaded.state().status {
                Some(status) => !status.is_final(),
                None => {
                    // Fired, then stopped before the project was asked for: ask now.
                    let n = state.fired.saturating_sub(1);
                    if let Some(requested) = self.requested(defined, n).await {
                        self.request(name, project_id, requested).await;
                    }
                    true
                }
            },
            Err(_) => true,
        }
    }

    /// The template's `n`th project (0-based).
    async fn requested(&self, defined: &ScheduleDefined, n: u32) -> Option<ProjectRequested> {
        let template = &defined.template;
        // The scripts in turn; without any, the topics in turn (the worker has the LLM write each).
        let turn = |list: &[String]| list.get(n as usize % list.len().max(1)).cloned();
        let (script, topic) = match turn(&template.scripts) {
            Some(script) => (Some(script), None),
            None => (None, Some(turn(&template.topics)?)),
        };
        let persona = match &template.persona {
            None => None,
            Some(name) => Some(
                sagas::video::persona_view(&self.bus, name)
                    .await
                    .ok()??
                    .persona,
            ),
        };
        Some(ProjectRequested {
            title: template.title.replace("{n}", &(n + 1).to_string()),
            script,
            topic,
            persona,
            format: template.format,
            visuals: template.visuals,
            target_secs: template.target_secs,
            music: None,
            priority: template.priority,
            post: template.post.clone(),
        })
    }

    async fn fire(
        &self,
        name: &str,
        defined: &ScheduleDefined,
        state: &ScheduleState,
        at: DateTime<Utc>,
    ) {
        let Some(requested) = self.requested(defined, state.fired).await else {
            let reason = format!(
                "its persona {:?} is not there",
                defined.template.persona.as_deref().unwrap_or_default()
            );
            self.record(
                name,
                ScheduleCommand::Skip {
                    at,
                    count: 1,
                    reason,
                },
            )
            .await;
            return;
        };
        let project_id = uuid::Uuid::now_v7().to_string();
        let admit = domain::video::VideoQueueCommand::Admit {
            project_id: project_id.clone(),
            cap: self.queue_cap,
        };
        if let Err(err) = execute(
            &self.queue,
            events::video::VIDEO_QUEUE_ID,
            admit,
            self.meta(),
            10,
        )
        .await
        {
            self.record(
                name,
                ScheduleCommand::Skip {
                    at,
                    count: 1,
                    reason: format!("no place: {err}"),
                },
            )
            .await;
            return;
        }
        if !self
            .record(
                name,
                ScheduleCommand::Fire {
                    at,
                    project_id: project_id.clone(),
                },
            )
            .await
        {
            let _ = sagas::video::release(&self.queue, &project_id, self.meta()).await;
            return;
        }
        tracing::info!(schedule = name, %at, project = project_id, "a schedule fired");
        self.request(name, &project_id, requested).await;
    }

    async fn request(&self, name: &str, project_id: &str, requested: ProjectRequested) {
        let asked = sagas::video::request_project_as(
            &self.queue,
            &self.projects,
            self.queue_cap,
            project_id,
            requested,
            self.meta(),
        )
        .await;
        if let Err(err) = asked {
            tracing::warn!(schedule = name, project = project_id, error = ?err, "a scheduled project was not asked for");
        }
    }

    fn meta(&self) -> CommandMeta {
        CommandMeta::new(Actor::Service("scheduler".to_owned()))
    }

    async fn record(&self, name: &str, command: ScheduleCommand) -> bool {
        match execute(&self.schedules, name, command, self.meta(), 3).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(schedule = name, error = %err, "a schedule's firing was not recorded");
                false
            }
        }
    }
}
