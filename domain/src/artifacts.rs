//! The artifact sweep aggregate: one per garbage collection of the artifact store. Its plan is
//! the dry run; each candidate is then collected or kept once, and the sweep finishes when none
//! is left. A sweep cut short (the gateway stopped mid-way) is finished by asking again: only
//! the candidates not yet decided are touched.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::artifacts::{
    ArtifactCollected, ArtifactKept, ArtifactSweepEvent, SweepCandidate, SweepFinished,
    SweepPlanned,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum SweepCommand {
    /// Record the dry run.
    Plan(SweepPlanned),
    /// A candidate was deleted.
    RecordCollected(ArtifactCollected),
    /// A candidate was left, and why.
    RecordKept(ArtifactKept),
    /// Every candidate is decided: record the totals.
    Finish,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("no such sweep")]
    NotFound,
    #[error("this sweep is already planned")]
    AlreadyPlanned,
    #[error("{0} is not one of this sweep's candidates")]
    NotACandidate(String),
    #[error("{0} was already collected or kept by this sweep")]
    AlreadyDecided(String),
    #[error("{0} candidates are not decided yet")]
    Undecided(usize),
    #[error("this sweep is finished")]
    Finished,
}

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    Collected { links: u32 },
    Kept { why: String },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ArtifactSweep {
    pub plan: Option<SweepPlanned>,
    /// Each decided candidate, by hash.
    pub decided: BTreeMap<String, Decision>,
    pub finished: Option<SweepFinished>,
}

impl ArtifactSweep {
    /// The candidates neither collected nor kept yet.
    pub fn pending(&self) -> Vec<&SweepCandidate> {
        self.plan
            .iter()
            .flat_map(|plan| &plan.candidates)
            .filter(|c| !self.decided.contains_key(&c.sha256))
            .collect()
    }

    /// `planned`, `collecting` (some decided) or `finished`.
    pub fn status(&self) -> &'static str {
        match (&self.finished, self.decided.is_empty()) {
            (Some(_), _) => "finished",
            (None, true) => "planned",
            (None, false) => "collecting",
        }
    }

    /// Collected files and their bytes so far.
    pub fn collected(&self) -> (u64, u64) {
        let sizes: BTreeMap<&str, u64> = self
            .plan
            .iter()
            .flat_map(|plan| &plan.candidates)
            .map(|c| (c.sha256.as_str(), c.bytes))
            .collect();
        self.decided
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Collected { .. }))
            .fold((0, 0), |(files, bytes), (sha, _)| {
                (
                    files + 1,
                    bytes + sizes.get(sha.as_str()).copied().unwrap_or(0),
                )
            })
    }

    fn decidable(&self, sha256: &str) -> Result<(), SweepError> {
        let plan = self.plan.as_ref().ok_or(SweepError::NotFound)?;
        if self.finished.is_some() {
            return Err(SweepError::Finished);
        }
        if !plan.candidates.iter().any(|c| c.sha256 == sha256) {
            return Err(SweepError::NotACandidate(sha256.to_owned()));
        }
        if self.decided.contains_key(sha256) {
            return Err(SweepError::AlreadyDecided(sha256.to_owned()));
        }
        Ok(())
    }
}

impl Aggregate for ArtifactSweep {
    const TYPE: &'static str = "artifact_sweep";
    type Command = SweepCommand;
    type Event = Event<ArtifactSweepEvent>;
    type Error = SweepError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SweepCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SweepError> {
        let event = match command {
            SweepCommand::Plan(plan) => {
                if self.plan.is_some() {
                    return Err(SweepError::AlreadyPlanned);
                }
                ArtifactSweepEvent::Planned(plan)
            }
            SweepCommand::RecordCollected(collected) => {
                self.decidable(&collected.sha256)?;
                ArtifactSweepEvent::Collected(collected)
            }
            SweepCommand::RecordKept(kept) => {
                self.decidable(&kept.sha256)?;
                ArtifactSweepEvent::Kept(kept)
            }
            SweepCommand::Finish => {
                if self.plan.is_none() {
                    return Err(SweepError::NotFound);
                }
                if self.finished.is_some() {
                    return Err(SweepError::Finished);
                }
                let pending = self.pending().len();
                if pending > 0 {
                    return Err(SweepError::Undecided(pending));
                }
                let (collected, bytes) = self.collected();
                ArtifactSweepEvent::Finished(SweepFinished {
                    collected,
                    bytes,
                    kept: self.decided.len() as u64 - collected,
                })
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<ArtifactSweepEvent>) {
        match event.0 {
            ArtifactSweepEvent::Planned(plan) => self.plan = Some(plan),
            ArtifactSweepEvent::Collected(c) => {
                self.decided
                    .insert(c.sha256, Decision::Collected { links: c.links });
            }
            ArtifactSweepEvent::Kept(k) => {
                self.decided.insert(k.sha256, Decision::Kept { why: k.why });
            }
            ArtifactSweepEvent::Finished(finished) => self.finished = Some(finished),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn plan() -> SweepPlanned {
        SweepPlanned {
            planned_at: "2026-12-07T20:00:00Z".parse().unwrap(),
            retention_secs: 7 * 86_400,
            candidates: vec![
                SweepCandidate {
                    sha256: "a".repeat(64),
                    bytes: 10,
                    age_secs: 900_000,
                },
                SweepCandidate {
                    sha256: "b".repeat(64),
                    bytes: 20,
                    age_secs: 800_000,
                },
            ],
            candidate_bytes: 30,
            more: 0,
            referenced: 4,
            young: 1,
        }
    }

    fn collected(sha: &str) -> ArtifactSweepEvent {
        ArtifactSweepEvent::Collected(ArtifactCollected {
            sha256: sha.repeat(64),
            bytes: 10,
            links: 1,
        })
    }

    fn kept(sha: &str) -> ArtifactSweepEvent {
        ArtifactSweepEvent::Kept(ArtifactKept {
            sha256: sha.repeat(64),
            why: "referenced since the plan".into(),
        })
    }

    #[test]
    fn a_plan_is_made_once_and_each_candidate_decided_once() {
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![Event(ArtifactSweepEvent::Planned(plan()))])
            .when(SweepCommand::Plan(plan()))
            .then_expect_error(SweepError::AlreadyPlanned);
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![
                Event(ArtifactSweepEvent::Planned(plan())),
                Event(collected("a")),
            ])
            .when(SweepCommand::RecordKept(ArtifactKept {
                sha256: "a".repeat(64),
                why: "x".into(),
            }))
            .then_expect_error(SweepError::AlreadyDecided("a".repeat(64)));
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![Event(ArtifactSweepEvent::Planned(plan()))])
            .when(SweepCommand::RecordCollected(ArtifactCollected {
                sha256: "c".repeat(64),
                bytes: 1,
                links: 0,
            }))
            .then_expect_error(SweepError::NotACandidate("c".repeat(64)));
        TestFramework::<ArtifactSweep>::with(())
            .given_no_previous_events()
            .when(SweepCommand::Finish)
            .then_expect_error(SweepError::NotFound);
    }

    #[test]
    fn a_sweep_finishes_with_its_totals_once_every_candidate_is_decided() {
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![
                Event(ArtifactSweepEvent::Planned(plan())),
                Event(collected("a")),
            ])
            .when(SweepCommand::Finish)
            .then_expect_error(SweepError::Undecided(1));
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![
                Event(ArtifactSweepEvent::Planned(plan())),
                Event(collected("a")),
                Event(kept("b")),
            ])
            .when(SweepCommand::Finish)
            .then_expect_events(vec![Event(ArtifactSweepEvent::Finished(SweepFinished {
                collected: 1,
                bytes: 10,
                kept: 1,
            }))]);
        let mut sweep = ArtifactSweep::default();
        sweep.apply(Event(ArtifactSweepEvent::Planned(plan())));
        assert_eq!(sweep.status(), "planned");
        assert_eq!(sweep.pending().len(), 2);
        sweep.apply(Event(collected("a")));
        assert_eq!((sweep.status(), sweep.pending().len()), ("collecting", 1));
        sweep.apply(Event(kept("b")));
        assert_eq!(sweep.collected(), (1, 10));
        sweep.apply(Event(ArtifactSweepEvent::Finished(SweepFinished {
            collected: 1,
            bytes: 10,
            kept: 1,
        })));
        assert_eq!(sweep.status(), "finished");
        TestFramework::<ArtifactSweep>::with(())
            .given(vec![
                Event(ArtifactSweepEvent::Planned(plan())),
                Event(collected("a")),
                Event(kept("b")),
                Event(ArtifactSweepEvent::Finished(SweepFinished {
                    collected: 1,
                    bytes: 10,
                    kept: 1,
                })),
            ])
            .when(SweepCommand::Finish)
            .then_expect_error(SweepError::Finished);
    }
}
