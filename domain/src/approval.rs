//! Approvals: what waits for people to say yes, and the rules that say when it must.
//!
//! An [`Approval`] (id = a v7 uuid) is requested with its policy, collects decisions — each
//! checked against the policy: the decider's role, one decision each, the requester not
//! approving their own request unless the policy allows it, nothing after the deadline — and
//! closes once: granted when enough approved, rejected by one rejection, expired, or withdrawn
//! by the one who asked.
//!
//! [`policy_for`] turns the configured rules ([`PolicyRule`], plain data) and the facts of a
//! request ([`Facts`]) into the policy it needs, or none; it is a pure function.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::Actor;
use events::access::Role;
use events::approval::{
    ApprovalEvent, ApprovalPolicy, ApprovalRequested, Decision, DecisionMade, Outcome,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ApprovalCommand {
    Request(ApprovalRequested),
    Decide {
        decision: Decision,
        by: Actor,
        role: Role,
        comment: String,
        now: DateTime<Utc>,
    },
    /// Records that its deadline passed (refused before it has).
    Expire {
        now: DateTime<Utc>,
    },
    /// The one who asked no longer needs it.
    Withdraw {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApprovalError {
    #[error("this approval was already requested")]
    AlreadyRequested,
    #[error("no such approval")]
    NotFound,
    #[error("the approval is already {0}")]
    Closed(String),
    #[error("the approval expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the approval does not expire before {0}")]
    NotExpired(DateTime<Utc>),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} already decided")]
    AlreadyDecided(String),
    #[error("invalid approval: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub requested: Option<ApprovalRequested>,
    pub decisions: Vec<DecisionMade>,
    pub outcome: Option<Outcome>,
}

impl Approval {
    fn open(&self) -> Result<&ApprovalRequested, ApprovalError> {
        let requested = self.requested.as_ref().ok_or(ApprovalError::NotFound)?;
        match self.outcome {
            Some(outcome) => Err(ApprovalError::Closed(outcome.as_str().to_owned())),
            None => Ok(requested),
        }
    }

    fn approvals(&self) -> u32 {
        let count = self
            .decisions
            .iter()
            .filter(|d| d.decision == Decision::Approve)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// An actor as people read it: `alice`, `service deploy`, `node gpu-1`.
pub fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::User(name) => name.clone(),
        Actor::Service(name) => format!("service {name}"),
        Actor::Node(name) => format!("node {name}"),
    }
}

impl Aggregate for Approval {
    const TYPE: &'static str = "approval";
    type Command = ApprovalCommand;
    type Event = Event<ApprovalEvent>;
    type Error = ApprovalError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApprovalCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApprovalError> {
        match command {
            ApprovalCommand::Request(requested) => {
                if self.requested.is_some() {
                    return Err(ApprovalError::AlreadyRequested);
                }
                validate_request(&requested).map_err(ApprovalError::Invalid)?;
                sink.write(Event(ApprovalEvent::Requested(requested)), self)
                    .await;
            }
            ApprovalCommand::Decide {
                decision,
                by,
                role,
                comment,
                now,
            } => {
                let requested = self.open()?;
                let policy = &requested.policy;
                if now >= policy.expires_at {
                    return Err(ApprovalError::Expired(policy.expires_at));
                }
                if !role.allows(policy.role) {
                    return Err(ApprovalError::Forbidden(format!(
                        "deciding this needs the {} role; {} is {role}",
                        policy.role,
                        actor_name(&by)
                    )));
                }
                if decision == Decision::Approve
                    && by == requested.requested_by
                    && !policy.requester_may_approve
                {
                    return Err(ApprovalError::Forbidden(format!(
                        "{} asked for this and may not approve it: another person must",
                        actor_name(&by)
                    )));
                }
                if self.decisions.iter().any(|d| d.by == by) {
                    return Err(ApprovalError::AlreadyDecided(actor_name(&by)));
                }
                if comment.len() > 4096 {
                    return Err(ApprovalError::Invalid(
                        "a comment may be at most 4096 bytes".to_owned(),
                    ));
                }
                let needed = policy.approvals;
                let who = actor_name(&by);
                let made = DecisionMade {
                    decision,
                    by,
                    role,
                    comment: comment.clone(),
                };
                sink.write(Event(ApprovalEvent::Decided(made)), self).await;
                let closed = match decision {
                    Decision::Reject => Some((
                        Outcome::Rejected,
                        if comment.is_empty() {
                            format!("rejected by {who}")
                        } else {
                            format!("rejected by {who}: {comment}")
                        },
                    )),
                    Decision::Approve if self.approvals() >= needed => Some((
                        Outcome::Granted,
                        format!("approved by {needed} of {needed}, last by {who}"),
                    )),
                    Decision::Approve => None,
                };
                if let Some((outcome, reason)) = closed {
                    sink.write(Event(ApprovalEvent::Closed { outcome, reason }), self)
                        .await;
                }
            }
            ApprovalCommand::Expire { now } => {
                let expires_at = self.open()?.policy.expires_at;
                if now < expires_at {
                    return Err(ApprovalError::NotExpired(expires_at));
                }
                let reason = format!(
                    "not decided by {} ({} of {} approvals)",
                    expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    self.approvals(),
                    self.open()?.policy.approvals
                );
                sink.write(
                    Event(ApprovalEvent::Closed {
                        outcome: Outcome::Expired,
                        reason,
                    }),
                    self,
                )
                .await;
            }
            ApprovalCommand::Withdraw { reason } => {
                self.open()?;
                sink.write(
                    Event(ApprovalEvent::Closed {
                        outcome: Outcome::Withdrawn,
                        reason,
                    }),
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<ApprovalEvent>) {
        match event.0 {
            ApprovalEvent::Requested(requested) => self.requested = Some(requested),
            ApprovalEvent::Decided(made) => self.decisions.push(made),
            ApprovalEvent::Closed { outcome, .. } => self.outcome = Some(outcome),
        }
    }
}

/// Checks a request: a subject, a summary, a policy that can be met.
pub fn validate_request(requested: &ApprovalRequested) -> Result<(), String> {
    let subject = &requested.subject;
    let token = |value: &str| {
        (1..=128).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if !token(&subject.kind) || !token(&subject.id) {
        return Err(format!(
            "the subject {}/{} is not a kind and an id of 1-128 plain characters",
            subject.kind, subject.id
        ));
    }
    if requested.summary.trim().is_empty() || requested.summary.len() > 1024 {
        return Err("the summary must be 1-1024 bytes".to_owned());
    }
    if !(1..=10).contains(&requested.policy.approvals) {
        return Err("a policy needs 1 to 10 approvals".to_owned());
    }
    if requested.policy.role == Role::Viewer {
        return Err(
            "viewers may not decide approvals: the policy needs operator or admin".to_owned(),
        );
    }
    Ok(())
}

/// A rule of the approval policy (`[[approvals.rules]]`): requests of `kind` that match its
/// conditions need what it says. Conditions left out match anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub name: String,
    /// The subject kind it is for (`deploy`, `code_change`, `render`).
    pub kind: String,
    /// Matches when the request touches a node with any of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_tags: Vec<String>,
    /// Matches when the request's estimated GPU time is over this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_minutes_over: Option<f64>,
    pub role: Role,
    #[serde(default = "one")]
    pub approvals: u32,
    #[serde(default = "a_day")]
    pub expires_secs: u64,
    #[serde(default)]
    pub requester_may_approve: bool,
}

fn one() -> u32 {
    1
}

fn a_day() -> u64 {
    24 * 3600
}

impl PolicyRule {
    /// Every problem, prefixed with the rule's place (`rules[0] (prod): …`).
    pub fn validate(&self, index: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name must not be empty".to_owned());
        }
        if self.kind.trim().is_empty() {
            problems
                .push("kind must name what the rule is for (deploy, code_change, …)".to_owned());
        }
        if self.role == Role::Viewer {
            problems.push("role must be operator or admin".to_owned());
        }
        if !(1..=10).contains(&self.approvals) {
            problems.push("approvals must be 1-10".to_owned());
        }
        if !(60..=30 * 24 * 3600).contains(&self.expires_secs) {
            problems.push("expires_secs must be 60 s to 30 days".to_owned());
        }
        if self
            .gpu_minutes_over
            .is_some_and(|m| !m.is_finite() || m < 0.0)
        {
            problems.push("gpu_minutes_over must be a number of minutes".to_owned());
        }
        problems
            .into_iter()
            .map(|p| format!("rules[{index}] ({}): {p}", self.name))
            .collect()
    }

    fn matches(&self, facts: &Facts) -> bool {
        self.kind == facts.kind
            && (self.node_tags.is_empty()
                || self
                    .node_tags
                    .iter()
                    .any(|tag| facts.node_tags.contains(tag)))
            && self
                .gpu_minutes_over
                .is_none_or(|limit| facts.gpu_minutes.is_some_and(|m| m > limit))
    }
}

/// What is known of a request when its policy is chosen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub kind: String,
    /// The tags of every node it touches.
    pub node_tags: Vec<String>,
    /// Its estimated GPU time, when it has one.
    pub gpu_minutes: Option<f64>,
}

/// The policy a request with these facts needs under `rules`, or `None` when no rule asks for
/// an approval. Several matching rules combine to the strictest: the highest role, the most
/// approvals, the earliest deadline, and the requester may approve only when every rule allows.
pub fn policy_for(
    rules: &[PolicyRule],
    facts: &Facts,
    now: DateTime<Utc>,
) -> Option<ApprovalPolicy> {
    let matching: Vec<&PolicyRule> = rules.iter().filter(|rule| rule.matches(facts)).collect();
    let first = matching.first()?;
    let expires_secs = matching.iter().map(|r| r.expires_secs).min()?;
    Some(ApprovalPolicy {
        role: matching.iter().map(|r| r.role).max()?,
        approvals: matching.iter().map(|r| r.approvals).max()?,
        expires_at: now
            + chrono::Duration::seconds(i64::try_from(expires_secs).unwrap_or(i64::MAX / 2)),
        requester_may_approve: matching.iter().all(|r| r.requester_may_approve),
        rule: Some(if matching.len() == 1 {
            first.name.clone()
        } else {
            matching
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }),
    })
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use events::approval::{ApprovalSubject, Preview, PreviewFormat};

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn alice() -> Actor {
        Actor::User("alice".into())
    }

    fn bob() -> Actor {
        Actor::User("bob".into())
    }

    fn requested(approvals: u32, requester_may_approve: bool) -> Event<ApprovalEvent> {
        Event(ApprovalEvent::Requested(ApprovalRequested {
            subject: ApprovalSubject {
                kind: "deploy".into(),
                id: "run-1".into(),
            },
            summary: "deploy web 1.2 to gpu-1".into(),
            preview: Preview::new(PreviewFormat::Plan, "{}".into()),
            policy: ApprovalPolicy {
                role: Role::Admin,
                approvals,
                expires_at: at(3600),
                requester_may_approve,
                rule: Some("prod".into()),
            },
            requested_by: alice(),
        }))
    }

    fn decide(decision: Decision, by: Actor, role: Role, now: i64) -> ApprovalCommand {
        ApprovalCommand::Decide {
            decision,
            by,
            role,
            comment: String::new(),
            now: at(now),
        }
    }

    fn made(decision: Decision, by: Actor) -> Event<ApprovalEvent> {
        Event(ApprovalEvent::Decided(DecisionMade {
            decision,
            by,
            role: Role::Admin,
            comment: String::new(),
        }))
    }

    #[test]
    fn one_approval_of_one_grants_it() {
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(decide(Decision::Approve, bob(), Role::Admin, 10))
            .then_expect_events(vec![
                made(Decision::Approve, bob()),
                Event(ApprovalEvent::Closed {
                    outcome: Outcome::Granted,
                    reason: "approved by 1 of 1, last by bob".into(),
                }),
            ]);
    }

    #[test]
    fn two_needed_means_two_people_and_one_rejection_decides() {
        let carol = Actor::User("carol".into());
        TestFramework::<Approval>::with(())
            .given(vec![requested(2, true)])
            .when(decide(Decision::Approve, bob(), Role::Admin, 10))
            .then_expect_events(vec![made(Decision::Approve, bob())]);
        TestFramework::<Approval>::with(())
            .given(vec![requested(2, true), made(Decision::Approve, bob())])
            .when(decide(Decision::Approve, bob(), Role::Admin, 11))
            .then_expect_error(ApprovalError::AlreadyDecided("bob".into()));
        TestFramework::<Approval>::with(())
            .given(vec![requested(2, true), made(Decision::Approve, bob())])
            .when(decide(Decision::Approve, alice(), Role::Admin, 12))
            .then_expect_events(vec![
                made(Decision::Approve, alice()),
                Event(ApprovalEvent::Closed {
                    outcome: Outcome::Granted,
                    reason: "approved by 2 of 2, last by alice".into(),
                }),
            ]);
        TestFramework::<Approval>::with(())
            .given(vec![requested(2, true), made(Decision::Approve, bob())])
            .when(ApprovalCommand::Decide {
                decision: Decision::Reject,
                by: carol.clone(),
                role: Role::Admin,
                comment: "not on a Friday".into(),
                now: at(13),
            })
            .then_expect_events(vec![
                Event(ApprovalEvent::Decided(DecisionMade {
                    decision: Decision::Reject,
                    by: carol,
                    role: Role::Admin,
                    comment: "not on a Friday".into(),
                })),
                Event(ApprovalEvent::Closed {
                    outcome: Outcome::Rejected,
                    reason: "rejected by carol: not on a Friday".into(),
                }),
            ]);
    }

    #[test]
    fn the_policy_is_enforced() {
        // too low a role
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(decide(Decision::Approve, bob(), Role::Operator, 10))
            .then_expect_error(ApprovalError::Forbidden(
                "deciding this needs the admin role; bob is operator".into(),
            ));
        // four eyes: the requester may reject but not approve
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(decide(Decision::Approve, alice(), Role::Admin, 10))
            .then_expect_error(ApprovalError::Forbidden(
                "alice asked for this and may not approve it: another person must".into(),
            ));
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, true)])
            .when(decide(Decision::Approve, alice(), Role::Admin, 10))
            .then_expect_events(vec![
                made(Decision::Approve, alice()),
                Event(ApprovalEvent::Closed {
                    outcome: Outcome::Granted,
                    reason: "approved by 1 of 1, last by alice".into(),
                }),
            ]);
        // too late, then recorded as expired; nothing after the outcome
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(decide(Decision::Approve, bob(), Role::Admin, 3600))
            .then_expect_error(ApprovalError::Expired(at(3600)));
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(ApprovalCommand::Expire { now: at(3599) })
            .then_expect_error(ApprovalError::NotExpired(at(3600)));
        let closed = Event(ApprovalEvent::Closed {
            outcome: Outcome::Expired,
            reason: "not decided by 2027-01-15 09:00:00 UTC (0 of 1 approvals)".into(),
        });
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false)])
            .when(ApprovalCommand::Expire { now: at(3600) })
            .then_expect_events(vec![closed.clone()]);
        TestFramework::<Approval>::with(())
            .given(vec![requested(1, false), closed])
            .when(ApprovalCommand::Withdraw {
                reason: "cancelled".into(),
            })
            .then_expect_error(ApprovalError::Closed("expired".into()));
        TestFramework::<Approval>::with(())
            .given(vec![])
            .when(decide(Decision::Approve, bob(), Role::Admin, 1))
            .then_expect_error(ApprovalError::NotFound);
    }

    fn rule(name: &str, raw: &str) -> PolicyRule {
        toml::from_str(&format!("name = \"{name}\"\n{raw}")).unwrap()
    }

    #[test]
    fn rules_pick_the_strictest_policy_or_none() {
        let rules = vec![
            rule(
                "prod",
                "kind = \"deploy\"\nnode_tags = [\"prod\"]\nrole = \"admin\"\n",
            ),
            rule(
                "big-renders",
                "kind = \"render\"\ngpu_minutes_over = 10.0\nrole = \"operator\"\nrequester_may_approve = true\n",
            ),
            rule(
                "prod-pairs",
                "kind = \"deploy\"\nnode_tags = [\"prod\", \"critical\"]\nrole = \"operator\"\napprovals = 2\nexpires_secs = 600\n",
            ),
        ];
        for (index, rule) in rules.iter().enumerate() {
            assert!(
                rule.validate(index).is_empty(),
                "{:?}",
                rule.validate(index)
            );
        }
        let facts = |kind: &str, tags: &[&str], gpu: Option<f64>| Facts {
            kind: kind.into(),
            node_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            gpu_minutes: gpu,
        };
        let now = at(0);
        assert_eq!(
            policy_for(&rules, &facts("deploy", &["lab"], None), now),
            None
        );
        assert_eq!(
            policy_for(&rules, &facts("render", &[], Some(9.5)), now),
            None
        );
        assert_eq!(policy_for(&rules, &facts("render", &[], None), now), None);
        let render = policy_for(&rules, &facts("render", &["prod"], Some(12.0)), now).unwrap();
        assert_eq!(
            (render.role, render.approvals, render.requester_may_approve),
            (Role::Operator, 1, true)
        );
        assert_eq!(render.expires_at, at(24 * 3600));
        let prod = policy_for(&rules, &facts("deploy", &["prod"], None), now).unwrap();
        assert_eq!((prod.role, prod.approvals), (Role::Admin, 2));
        assert_eq!(prod.expires_at, at(600));
        assert!(!prod.requester_may_approve);
        assert_eq!(prod.rule.as_deref(), Some("prod, prod-pairs"));
        let critical = policy_for(&rules, &facts("deploy", &["critical"], None), now).unwrap();
        assert_eq!(
            (critical.role, critical.rule.as_deref()),
            (Role::Operator, Some("prod-pairs"))
        );

        let bad = rule(
            "",
            "kind = \"\"\nrole = \"viewer\"\napprovals = 0\nexpires_secs = 5\n",
        );
        assert_eq!(bad.validate(3).len(), 5, "{:?}", bad.validate(3));
        assert!(
            toml::from_str::<PolicyRule>(
                "name = \"x\"\nkind = \"deploy\"\nrole = \"admin\"\ncolour = 1\n"
            )
            .is_err()
        );
    }
}
