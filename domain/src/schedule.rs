//! Schedules: a cron expression read in an IANA time zone, so "02:30 every day in
//! Europe/Berlin" means 02:30 on the wall clock there, across daylight-saving changes (on the
//! spring-forward day, the first instant after the gap: 03:00; on the fall-back day, once). And
//! what a scheduler does when it wakes: fire what is due on time, and for the instants it
//! slept through, skip them or catch up once, as the schedule says; a firing while the previous
//! run is busy is skipped when the schedule says so. Pure functions of the clock they are given.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

pub use events::video::{Missed, Overlap};

/// How late a firing may be and still be on time (a scheduler's wake-up jitter).
pub const GRACE: Duration = Duration::seconds(60);

/// The most missed instants looked at after a long sleep (a every-second schedule down a week
/// is not listed whole).
const MAX_MISSED: usize = 1000;

/// A cron expression (5 fields, or 6 with leading seconds) in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// `cron` in `time_zone` (an IANA name, e.g. `Europe/Berlin`), or why it is not one.
    pub fn parse(cron: &str, time_zone: &str) -> Result<Schedule, String> {
        let zone = Tz::from_str(time_zone.trim()).map_err(|_| {
            format!("{time_zone:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)")
        })?;
        let cron = Cron::from_str(cron)
            .map_err(|err| format!("{cron:?} is not a cron expression: {err}"))?;
        Ok(Schedule { cron, zone })
    }

    /// The first instant after `after` (strictly), if the expression ever matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The next `n` instants after `after`.
    pub fn next_firings(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            out.push(next);
            at = next;
        }
        out
    }

    /// What a scheduler that last fired for `last` (or, never fired, was set up at `last`)
    /// does at `now`; `busy`: the previous run is still going.
    pub fn due(
        &self,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
        missed: Missed,
        overlap: Overlap,
        busy: bool,
    ) -> Due {
        let mut instants = Vec::new();
        let mut at = last;
        while let Some(next) = self.next_after(at).filter(|next| *next <= now) {
            if instants.len() == MAX_MISSED {
                instants.remove(0);
            }
            instants.push(next);
            at = next;
        }
        let next = self.next_after(at.max(now));
        let Some(&latest) = instants.last() else {
            return Due {
                fire: None,
                skipped: Vec::new(),
                next,
            };
        };
        let on_time = now - latest <= GRACE;
        let (mut fire, mut skipped) = match (on_time, missed) {
            (true, _) | (false, Missed::CatchUpOnce) => {
                (Some(latest), instants[..instants.len() - 1].to_vec())
            }
            (false, Missed::Skip) => (None, instants),
        };
        let mut busy_skip = None;
        if busy && overlap == Overlap::Skip {
            busy_skip = fire.take();
        }
        let mut skipped: Vec<Skipped> = skipped
            .drain(..)
            .map(|at| Skipped {
                at,
                reason: SkipReason::Missed,
            })
            .collect();
        if let Some(at) = busy_skip {
            skipped.push(Skipped {
                at,
                reason: SkipReason::Busy,
            });
        }
        Due {
            fire,
            skipped,
            next,
        }
    }
}

/// Why an instant did not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The scheduler was not running then (and the schedule skips what it missed).
    Missed,
    /// The previous run was still busy.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub at: DateTime<Utc>,
    pub reason: SkipReason,
}

/// A scheduler's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The instant to fire for now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// The instants let go, oldest first.
    pub skipped: Vec<Skipped>,
    /// When to wake next (none: the expression never matches again).
    pub next: Option<DateTime<Utc>>,
}

/// What is wrong with a schedule's definition, if anything.
pub fn validate_schedule(defined: &events::video::ScheduleDefined) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(err) = Schedule::parse(&defined.cron, &defined.time_zone) {
        problems.push(err);
    }
    let template = &defined.template;
    if template.title.trim().is_empty() || template.title.len() > 200 {
        problems.push("template.title: 1-200 bytes".to_owned());
    }
    let (scripts, topics) = (template.scripts.len(), template.topics.len());
    if scripts + topics == 0 || scripts > 100 || topics > 100 {
        problems.push(
            "template: 1-100 scripts, or 1-100 topics for the local LLM, used in turn".to_owned(),
        );
    }
    if template
        .topics
        .iter()
        .any(|t| !t.chars().any(char::is_alphanumeric) || t.len() > 500)
    {
        problems.push("template.topics: each says something, in at most 500 bytes".to_owned());
    }
    if let Some(post) = &template.post {
        problems.extend(
            crate::video::validate_post(post)
                .into_iter()
                .map(|p| format!("template.{p}")),
        );
    }
    if template
        .scripts
        .iter()
        .any(|s| !s.chars().any(char::is_alphanumeric) || s.len() > events::video::SCRIPT_MAX_BYTES)
    {
        problems.push(format!(
            "template.scripts: each says something, in at most {} bytes",
            events::video::SCRIPT_MAX_BYTES
        ));
    }
    if let Some(persona) = &template.persona
        && !crate::video::valid_persona_name(persona)
    {
        problems.push(format!(
            "template.persona {persona:?} cannot name a persona"
        ));
    }
    problems
}

#[derive(Debug, Clone)]
pub enum ScheduleCommand {
    Define(events::video::ScheduleDefined),
    /// Instant `at` fired as project `project_id` (each instant once, in order).
    Fire {
        at: DateTime<Utc>,
        project_id: String,
    },
    Skip {
        at: DateTime<Utc>,
        count: u32,
        reason: String,
    },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ScheduleError {
    #[error("no such schedule")]
    NotFound,
    #[error("invalid schedule: {0}")]
    Invalid(String),
    #[error("the instant {0} has fired or passed already")]
    Stale(DateTime<Utc>),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ScheduleState {
    pub defined: Option<events::video::ScheduleDefined>,
    /// The last instant fired or let go.
    pub last: Option<DateTime<Utc>>,
    pub fired: u32,
    pub last_project: Option<String>,
}

impl cqrs_es::Aggregate for ScheduleState {
    const TYPE: &'static str = "video_schedule";
    type Command = ScheduleCommand;
    type Event = crate::Event<events::video::ScheduleEvent>;
    type Error = ScheduleError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ScheduleCommand,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), ScheduleError> {
        use events::video::ScheduleEvent as E;
        let event = match command {
            ScheduleCommand::Define(defined) => {
                let problems = validate_schedule(&defined);
                if !problems.is_empty() {
                    return Err(ScheduleError::Invalid(problems.join("; ")));
                }
                if self.defined.as_ref() == Some(&defined) {
                    return Ok(());
                }
                E::Defined(defined)
            }
            ScheduleCommand::Fire { at, project_id } => {
                self.defined.as_ref().ok_or(ScheduleError::NotFound)?;
                if self.last.is_some_and(|last| at <= last) {
                    return Err(ScheduleError::Stale(at));
                }
                E::Fired { at, project_id }
            }
            ScheduleCommand::Skip { at, count, reason } => {
                self.defined.as_ref().ok_or(ScheduleError::NotFound)?;
                if self.last.is_some_and(|last| at <= last) {
                    return Err(ScheduleError::Stale(at));
                }
                E::Skipped { at, count, reason }
            }
            ScheduleCommand::Remove => {
                self.defined.as_ref().ok_or(ScheduleError::NotFound)?;
                E::Removed {}
            }
        };
        sink.write(crate::Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: crate::Event<events::video::ScheduleEvent>) {
        use events::video::ScheduleEvent as E;
        match event.0 {
            E::Defined(defined) => self.defined = Some(defined),
            E::Fired { at, project_id } => {
                self.last = Some(at);
                self.fired += 1;
                self.last_project = Some(project_id);
            }
            E::Skipped { at, .. } => self.last = Some(at),
            E::Removed {} => *self = ScheduleState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn berlin_0230() -> Schedule {
        Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap()
    }

    #[test]
    fn spring_forward_fires_at_the_first_instant_after_the_gap() {
        // 2026-03-29: at 02:00 CET the clocks go to 03:00 CEST; 02:30 never happens.
        assert_eq!(
            berlin_0230().next_firings(utc("2026-03-27T12:00:00Z"), 3),
            [
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_fires_once() {
        // 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            berlin_0230().next_firings(utc("2026-10-24T12:00:00Z"), 2),
            [
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST, the first
                utc("2026-10-26T01:30:00Z"), // 02:30 CET, the next day
            ]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_so() {
        let err = Schedule::parse("30 2 * *", "UTC").unwrap_err();
        assert!(err.contains("is not a cron expression"), "{err}");
        let err = Schedule::parse("30 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(
            err.contains("\"Mars/Olympus\" is not an IANA time zone"),
            "{err}"
        );
        assert!(
            Schedule::parse("0 30 2 * * *", "UTC").is_ok(),
            "six fields: leading seconds"
        );
    }

    #[test]
    fn an_on_time_wake_fires_and_a_long_sleep_skips_or_catches_up_once() {
        let hourly = Schedule::parse("0 * * * *", "UTC").unwrap();
        let last = utc("2026-12-07T09:00:00Z");
        // Woken 3 s after 10:00: on time.
        let due = hourly.due(
            last,
            utc("2026-12-07T10:00:03Z"),
            Missed::Skip,
            Overlap::Skip,
            false,
        );
        assert_eq!(due.fire, Some(utc("2026-12-07T10:00:00Z")));
        assert!(due.skipped.is_empty());
        assert_eq!(due.next, Some(utc("2026-12-07T11:00:00Z")));
        // Before it: nothing, and when.
        let due = hourly.due(
            last,
            utc("2026-12-07T09:59:00Z"),
            Missed::Skip,
            Overlap::Skip,
            false,
        );
        assert_eq!(
            (due.fire, due.next),
            (None, Some(utc("2026-12-07T10:00:00Z")))
        );
        // Down from 09:30 to 12:20: 10, 11 and 12 were missed.
        let now = utc("2026-12-07T12:20:00Z");
        let skip = hourly.due(last, now, Missed::Skip, Overlap::Skip, false);
        assert_eq!(skip.fire, None);
        assert_eq!(skip.skipped.len(), 3);
        assert!(skip.skipped.iter().all(|s| s.reason == SkipReason::Missed));
        assert_eq!(skip.next, Some(utc("2026-12-07T13:00:00Z")));
        let catch_up = hourly.due(last, now, Missed::CatchUpOnce, Overlap::Skip, false);
        assert_eq!(catch_up.fire, Some(utc("2026-12-07T12:00:00Z")));
        assert_eq!(
            catch_up.skipped.iter().map(|s| s.at).collect::<Vec<_>>(),
            [utc("2026-12-07T10:00:00Z"), utc("2026-12-07T11:00:00Z")]
        );
        // Down only a little past 12:00 yet more than the grace: missed too.
        let late = hourly.due(
            utc("2026-12-07T11:00:00Z"),
            utc("2026-12-07T12:05:00Z"),
            Missed::Skip,
            Overlap::Skip,
            false,
        );
        assert_eq!((late.fire, late.skipped.len()), (None, 1));
    }

    #[test]
    fn a_firing_while_the_last_run_is_busy_is_skipped_unless_overlap_is_allowed() {
        let hourly = Schedule::parse("0 * * * *", "UTC").unwrap();
        let (last, now) = (utc("2026-12-07T09:00:00Z"), utc("2026-12-07T10:00:01Z"));
        let busy = hourly.due(last, now, Missed::Skip, Overlap::Skip, true);
        assert_eq!(busy.fire, None);
        assert_eq!(
            busy.skipped,
            [Skipped {
                at: utc("2026-12-07T10:00:00Z"),
                reason: SkipReason::Busy
            }]
        );
        let allowed = hourly.due(last, now, Missed::Skip, Overlap::Allow, true);
        assert_eq!(allowed.fire, Some(utc("2026-12-07T10:00:00Z")));
    }

    proptest! {
        /// Whatever the zone, time and expression: each firing is after the one before, every
        /// instant is accounted for once (fired or skipped), and the next wake is in the future.
        #[test]
        fn every_instant_fires_or_is_skipped_once(
            minute in 0u32..60,
            hour in 0u32..24,
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
            start in 1_700_000_000i64..1_900_000_000,
            asleep_hours in 0i64..200,
            catch_up in any::<bool>(),
            busy in any::<bool>(),
        ) {
            let schedule = Schedule::parse(&format!("{minute} {hour} * * *"), zone).unwrap();
            let last = DateTime::from_timestamp(start, 0).unwrap();
            let now = last + Duration::hours(asleep_hours);
            let firings = schedule.next_firings(last, 20);
            prop_assert!(firings.windows(2).all(|w| w[0] < w[1]));
            let missed = if catch_up { Missed::CatchUpOnce } else { Missed::Skip };
            let due = schedule.due(last, now, missed, Overlap::Skip, busy);
            let between = firings.iter().filter(|at| **at > last && **at <= now).count();
            let accounted = due.skipped.len() + usize::from(due.fire.is_some());
            prop_assert_eq!(accounted, between);
            prop_assert!(due.next.is_some_and(|next| next > now));
            if busy {
                prop_assert!(due.fire.is_none());
            }
        }
    }
}
