//! A job's change decided and landed: offered first to a node that takes AI developer jobs (or
//! run here when none takes it in time); its change decided by the repository's rules or by
//! people (the approval engine) — on the control plane, whoever ran it —; merged, rejected,
//! cleaned up, or reverted when asked.

use std::time::Duration;

use bus::store::CommandMeta;
use chrono::Utc;
use cqrs_es::EventStore;
use domain::ai_dev::{AiDevCommand, AiDevJob, ChangeFacts, JobStatus, auto_decide};
use domain::approval::{Facts, policy_for};
use events::access::Role;
use events::ai_dev::{ChangeProposed, JobRequested};
use events::approval::{ApprovalPolicy, ApprovalSubject, Outcome, Preview, PreviewFormat};
use tokio_util::sync::CancellationToken;

use crate::job::{Run, first_line};
use crate::{Known, RepoConfig, Worker};

impl Worker {
    /// Offers the job to a node that takes AI developer jobs, if one is registered, and waits
    /// for it to be taken. Whether it runs here: no node to offer it to, or (claimed, saying
    /// why) the node did not take it in time; not when a node took it or it was cancelled.
    pub(crate) async fn offer(
        &self,
        id: &str,
        known: &Known,
        state: &AiDevJob,
        cancel: &CancellationToken,
    ) -> bool {
        let wait = crate::secs(self.config.remote_wait_secs);
        let (node, until) = match (&state.offered_to, state.offered_until) {
            (Some(node), Some(until)) => (node.clone(), until), // offered before a restart
            _ => {
                let Some(node) = (if wait.is_zero() {
                    None
                } else {
                    self.node_for_jobs().await
                }) else {
                    return true;
                };
                let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                if !self
                    .record(
                        id,
                        known,
                        AiDevCommand::Offer {
                            node: node.clone(),
                            until,
                        },
                    )
                    .await
                {
                    return false;
                }
                let offer = crate::Offer {
                    job_id: id.to_owned(),
                    repo: state
                        .requested
                        .as_ref()
                        .map(|r| r.repo.clone())
                        .unwrap_or_default(),
                    correlation_id: known.correlation_id,
                };
                let payload = serde_json::to_vec(&offer).unwrap_or_default();
                let subject = events::subjects::ai_dev_work(&node);
                if let Err(err) = self
                    .bus
                    .publish_raw(subject, format!("ai-dev-{id}"), Vec::new(), payload.into())
                    .await
                {
                    tracing::warn!(job = id, node, error = %err, "the job could not be offered; it runs here when its offer runs out");
                }
                tracing::info!(job = id, node, "an AI developer job offered to a node");
                (node, until)
            }
        };
        loop {
            let now = Utc::now();
            if now >= until {
                break;
            }
            let left = (until - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_millis(200));
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(left) => {}
            }
            let Some(current) = self.load(id, known).await else {
                return false;
            };
            if current.runs_on.is_some() || current.status != Some(JobStatus::Requested) {
                return false;
            }
            if cancel.is_cancelled() {
                self.record(id, known, AiDevCommand::Cancel).await;
                return false;
            }
        }
        let fallback = format!(
            "node {node} did not take it within {}s; it runs here",
            self.config.remote_wait_secs
        );
        let claim = AiDevCommand::Claim {
            runs_on: "local".to_owned(),
            fallback: Some(fallback),
        };
        if self.record(id, known, claim).await {
            tracing::info!(
                job = id,
                node,
                "no node took the AI developer job in time: it runs here"
            );
        }
        self.load(id, known).await.is_some_and(|current| {
            current.runs_on.as_deref() == Some("local")
                && current.status == Some(JobStatus::Requested)
        })
    }

    /// The registered node that takes AI developer jobs with the most GPU memory, if any.
    pub(crate) async fn node_for_jobs(&self) -> Option<String> {
        let ids = match self
            .bus
            .aggregate_ids(<domain::node::Node as cqrs_es::Aggregate>::TYPE)
            .await
        {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %err, "the nodes could not be listed: the job runs here");
                return None;
            }
        };
        let mut best: Option<(u64, String)> = None;
        for id in ids {
            let Ok(node) = self.node_state.load_aggregate(&id).await else {
                continue;
            };
            let node = node.state();
            let Some(inventory) = node
                .inventory
                .as_ref()
                .filter(|_| node.registered && node.online)
            else {
                continue;
            };
            if !inventory
                .capabilities
                .iter()
                .any(|c| c == events::node::AI_DEV)
            {
                continue;
            }
            let vram = inventory
                .gpus
                .iter()
                .map(|g| g.memory_total_bytes)
                .max()
                .unwrap_or(0);
            if best.as_ref().is_none_or(|(most, _)| vram > *most) {
                best = Some((vram, id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Decides the change of a job that ran on a node (its runner merges or cleans up as the
    /// decision says).
    pub(crate) async fn decide_elsewhere(
        &self,
        id: &str,
        known: &Known,
        cancel: CancellationToken,
    ) {
        let Some(state) = self.load(id, known).await else {
            return;
        };
        let (Some(requested), Some(started), Some(change)) = (
            state.requested.clone(),
            state.started.clone(),
            state.proposed.clone(),
        ) else {
            return;
        };
        let Some(repo) = self.config.repo(&requested.repo).cloned() else {
            let error = format!("there is no configured repository {}", requested.repo);
            self.fail(id, known, "repository", error).await;
            return;
        };
        let run = Run {
            id,
            known,
            requested,
            repo,
            started,
            worktree: self.worktree(id),
        };
        self.decide(&run, &change, &state, cancel).await;
    }

    /// Decides a proposed change: a rule of the repository, else an approval (asked once, then
    /// waited for); merged or rejected accordingly.
    pub(crate) async fn decide(
        &self,
        run: &Run<'_>,
        change: &ChangeProposed,
        state: &AiDevJob,
        cancel: CancellationToken,
    ) {
        let (id, known) = (run.id, run.known);
        // Its runner merges, cleans up: here when it ran here.
        let here = run.started.runs_on == self.place.runner();
        let approval_id = match &state.approval_id {
            Some(approval_id) => approval_id.clone(),
            None => {
                let denied = match crate::guard::denied_among(&run.repo.deny, &change.files) {
                    Ok(denied) => denied,
                    Err(error) => {
                        self.fail(id, known, "deny_list", error).await;
                        return;
                    }
                };
                let facts = ChangeFacts {
                    files: change.files.clone(),
                    lines: change.lines_added + change.lines_removed,
                    build_green: true, // proposed only after a green build
                    denied,
                };
                let decision = auto_decide(&run.repo.auto_approve, &facts);
                self.record(
                    id,
                    known,
                    AiDevCommand::Decide {
                        auto_rule: decision.rule.map(str::to_owned),
                        reason: decision.reason.clone(),
                    },
                )
                .await;
                if decision.rule.is_some() {
                    if here {
                        self.merge(run, change).await;
                    }
                    return;
                }
                // The change as its runner proposed it (bounded): the runner's repository may be
                // on another machine.
                let diff = change.diff.clone();
                let policy = policy_for(
                    &self.rules,
                    &Facts {
                        kind: "ai_dev".to_owned(),
                        node_tags: Vec::new(),
                        gpu_minutes: None,
                    },
                    Utc::now(),
                )
                .unwrap_or_else(|| ApprovalPolicy {
                    role: Role::Operator,
                    approvals: 1,
                    expires_at: Utc::now() + chrono::Duration::days(7),
                    // The author is the model: whoever asked for the job may review its change.
                    requester_may_approve: true,
                    rule: None,
                });
                let summary = format!(
                    "AI developer change to {} ({}, {} files, +{} -{}): {}",
                    run.requested.repo,
                    run.started.branch,
                    change.files.len(),
                    change.lines_added,
                    change.lines_removed,
                    first_line(&change.summary)
                );
                let meta = CommandMeta {
                    actor: known.actor.clone(),
                    ..self.meta(known)
                };
                match sagas::approvals::request_approval(
                    &self.approvals,
                    ApprovalSubject {
                        kind: "ai_dev".to_owned(),
                        id: id.to_owned(),
                    },
                    summary,
                    Preview::new(PreviewFormat::Diff, diff),
                    policy,
                    meta,
                )
                .await
                {
                    Ok(approval_id) => {
                        self.record(
                            id,
                            known,
                            AiDevCommand::AskApproval {
                                approval_id: approval_id.clone(),
                            },
                        )
                        .await;
                        approval_id
                    }
                    Err(err) => {
                        let error = format!("the approval could not be asked for: {err}");
                        self.fail(id, known, "approval", error).await;
                        return;
                    }
                }
            }
        };
        let approval = tokio::select! {
            () = cancel.cancelled() => {
                self.record(id, known, AiDevCommand::Cancel).await;
                if here {
                    self.clean_up(run, false).await;
                }
                return;
            }
            approval = sagas::approvals::decided(&self.bus, &self.approval_state, &approval_id) => approval,
        };
        match approval.outcome {
            Some(Outcome::Granted) => {
                let approved = AiDevCommand::Approve {
                    approval_id: approval_id.clone(),
                };
                if self.record(id, known, approved).await && here {
                    self.merge(run, change).await;
                }
            }
            outcome => {
                let by = approval
                    .decisions
                    .iter()
                    .map(|d| domain::approval::actor_name(&d.by))
                    .collect::<Vec<_>>()
                    .join(", ");
                let reason = match outcome {
                    Some(Outcome::Expired) => format!("approval {approval_id} expired"),
                    _ => format!("approval {approval_id} refused by {by}"),
                };
                let delete = run.repo.delete_rejected_branches;
                self.record(
                    id,
                    known,
                    AiDevCommand::Reject {
                        reason,
                        branch_deleted: delete,
                    },
                )
                .await;
                if here {
                    self.clean_up(run, delete).await;
                }
            }
        }
    }

    pub(crate) async fn merge(&self, run: &Run<'_>, change: &ChangeProposed) {
        let (repo_path, base, commit, job) = (
            run.repo.path.clone(),
            run.requested.base.clone(),
            change.commit.clone(),
            run.id.to_owned(),
        );
        let merged = tokio::task::spawn_blocking(move || {
            crate::git::merge(&repo_path, &base, &commit, &job)
        })
        .await
        .unwrap_or_else(|err| Err(err.to_string()));
        match merged {
            Ok((commit, fast_forward)) => {
                tracing::info!(job = run.id, %commit, fast_forward, "an AI developer change merged");
                self.record(
                    run.id,
                    run.known,
                    AiDevCommand::Merge {
                        commit,
                        fast_forward,
                    },
                )
                .await;
                self.clean_up(run, false).await;
            }
            Err(error) => {
                self.fail(run.id, run.known, "merge", error).await;
            }
        }
    }

    pub(crate) async fn roll_back(
        &self,
        id: &str,
        known: &Known,
        requested: &JobRequested,
        repo: &RepoConfig,
        state: &AiDevJob,
    ) {
        let Some(merged) = state.merged_commit.clone() else {
            return;
        };
        let (repo_path, base, job) = (repo.path.clone(), requested.base.clone(), id.to_owned());
        let reverted = tokio::task::spawn_blocking(move || {
            crate::git::revert(&repo_path, &base, &merged, &job)
        })
        .await
        .unwrap_or_else(|err| Err(err.to_string()));
        let command = match reverted {
            Ok(revert_commit) => AiDevCommand::RollBack { revert_commit },
            Err(error) => AiDevCommand::FailRollback { error },
        };
        self.record(id, known, command).await;
    }

    /// Removes the job's worktree (the branch stays unless `delete_branch`) and its memory.
    pub(crate) async fn clean_up(&self, run: &Run<'_>, delete_branch: bool) {
        let (repo_path, name) = (run.repo.path.clone(), run.id.to_owned());
        let branch = delete_branch.then(|| run.started.branch.clone());
        let cleaned = tokio::task::spawn_blocking(move || {
            crate::git::clean_up(&repo_path, &name, branch.as_deref())
        })
        .await
        .unwrap_or_else(|err| Err(err.to_string()));
        if let Err(err) = cleaned {
            tracing::warn!(job = run.id, error = %err, "the job's worktree was not removed");
        }
        if let Some(kv) = &self.kv {
            let _ = kv
                .set(
                    &format!("nebula:ai-dev:{}:memory", run.id),
                    "",
                    Duration::from_secs(1),
                )
                .await;
        }
    }
}
