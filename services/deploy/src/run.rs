//! One deploy run, carried out: approval, stop the old release, start the new one, its check;
//! on a failure after the old release was touched, the new one is removed and the old one
//! started and checked again.

use std::fmt::Write as _;
use std::time::Duration;

use bus::store::{CommandMeta, execute};
use chrono::Utc;
use cqrs_es::EventStore;
use domain::approval::{Facts, policy_for};
use domain::container::CommandStatus;
use domain::deploy::{AppCommand, DeployCommand, DeployRun};
use events::Actor;
use events::approval::{ApprovalSubject, Outcome, Preview, PreviewFormat};
use events::container::ContainerAction;
use events::deploy::{
    BuildSource, DeployOutcome, DeployRequested, DeployStep, NODE_HOST, Release, container_name,
};
use supervise::HealthConfig;

use crate::ssh::Reach;
use crate::{Deployer, Pending, secs};

/// How a step went: what it did (a line per node and container), or why it failed.
type StepResult = Result<String, (String, String)>;

impl Deployer {
    pub(crate) fn meta(&self, run: &Pending) -> CommandMeta {
        CommandMeta {
            correlation_id: run.correlation_id,
            causation_id: Some(run.event_id),
            actor: Actor::Service("deployer".to_owned()),
        }
    }

    /// Records `command` on the run; a failure to record is logged (the next start finds the
    /// run unfinished and says so).
    async fn record(&self, run_id: &str, run: &Pending, command: DeployCommand) {
        if let Err(err) = execute(&self.runs, run_id, command, self.meta(run), 3).await {
            tracing::warn!(run_id, error = %err, "a deploy run's step was not recorded");
        }
    }

    async fn step(
        &self,
        run_id: &str,
        run: &Pending,
        step: DeployStep,
        result: StepResult,
    ) -> Result<(), String> {
        let (ok, output, error) = match result {
            Ok(output) => (true, output, None),
            Err((output, error)) => (false, output, Some(error)),
        };
        self.record(
            run_id,
            run,
            DeployCommand::FinishStep {
                step,
                ok,
                output,
                error: error.clone(),
            },
        )
        .await;
        error.map_or(Ok(()), Err)
    }

    async fn finish(
        &self,
        run_id: &str,
        run: &Pending,
        outcome: DeployOutcome,
        live_release: Option<u32>,
        error: Option<String>,
    ) {
        tracing::info!(run_id, app = %run.app, outcome = outcome.as_str(), ?live_release, error = error.as_deref().unwrap_or(""), "deploy run finished");
        self.record(
            run_id,
            run,
            DeployCommand::Finish {
                outcome,
                live_release,
                error,
            },
        )
        .await;
    }

    pub(crate) async fn carry_out(&self, run_id: &str, run: &Pending) {
        let state = match self.run_state.load_aggregate(run_id).await {
            Ok(loaded) => loaded.state().clone(),
            Err(err) => {
                tracing::warn!(run_id, error = %err, "a deploy run could not be loaded; it is tried at the next start");
                return;
            }
        };
        let Some(requested) = state.requested.clone() else {
            return;
        };
        if state.outcome.is_some() {
            return;
        }
        // Cut off by a restart: never carried on blindly.
        let interrupted = state
            .current
            .filter(|step| *step != DeployStep::Approval)
            .or_else(|| {
                state
                    .done
                    .iter()
                    .map(|(s, _)| *s)
                    .find(|s| *s != DeployStep::Approval)
            });
        if let Some(step) = interrupted {
            let error = format!(
                "the deployer restarted during this run (at {}): it is not carried on",
                step.as_str()
            );
            return self
                .undo(run_id, run, &requested, state.touched_old(), error)
                .await;
        }
        if !self.approved(run_id, run, &requested, &state).await {
            return;
        }
        if let Some(build) = &requested.release.build {
            self.record(run_id, run, DeployCommand::StartStep(DeployStep::Build))
                .await;
            let built = self.build(run, &requested.nodes, build).await;
            if let Err(error) = self.step(run_id, run, DeployStep::Build, built).await {
                let live = requested.previous.as_ref().map(|r| r.number);
                return self
                    .finish(run_id, run, DeployOutcome::Failed, live, Some(error))
                    .await;
            }
        }
        // From here on a failure may have left the old release stopped.
        let touched = requested.previous.is_some();
        if let Some(previous) = &requested.previous {
            self.record(run_id, run, DeployCommand::StartStep(DeployStep::StopOld))
                .await;
            let stopped = self.stop_release(run, &requested, previous).await;
            if let Err(error) = self.step(run_id, run, DeployStep::StopOld, stopped).await {
                return self.undo(run_id, run, &requested, touched, error).await;
            }
        }
        self.record(run_id, run, DeployCommand::StartStep(DeployStep::StartNew))
            .await;
        let started = self
            .start_release(run, &requested, &requested.release)
            .await;
        if let Err(error) = self.step(run_id, run, DeployStep::StartNew, started).await {
            return self.undo(run_id, run, &requested, touched, error).await;
        }
        self.record(run_id, run, DeployCommand::StartStep(DeployStep::Health))
            .await;
        let healthy = self.check(&requested.nodes, &requested.release).await;
        if let Err(error) = self.step(run_id, run, DeployStep::Health, healthy).await {
            return self.undo(run_id, run, &requested, touched, error).await;
        }
        let number = requested.release.number;
        let live = execute(
            &self.apps,
            &requested.app,
            AppCommand::MarkLive {
                release: number,
                run_id: run_id.to_owned(),
            },
            self.meta(run),
            3,
        )
        .await;
        if let Err(err) = live {
            tracing::warn!(run_id, error = %err, "the live release was not recorded");
        }
        self.finish(run_id, run, DeployOutcome::Succeeded, Some(number), None)
            .await;
    }

    /// Waits for the run's approval when the policy asks for one; false when the run was
    /// refused (and is finished).
    async fn approved(
        &self,
        run_id: &str,
        run: &Pending,
        requested: &DeployRequested,
        state: &DeployRun,
    ) -> bool {
        let mut node_tags: Vec<String> = Vec::new();
        for node in &requested.nodes {
            match self.tag_state.load_aggregate(node).await {
                Ok(loaded) => node_tags.extend(loaded.state().tags.iter().cloned()),
                Err(err) => {
                    // Unknown tags could let a deploy past a rule: refuse rather than guess.
                    let error = format!("the tags of node {node} could not be read: {err}");
                    self.finish(
                        run_id,
                        run,
                        DeployOutcome::Failed,
                        requested.previous.as_ref().map(|r| r.number),
                        Some(error),
                    )
                    .await;
                    return false;
                }
            }
        }
        let facts = Facts {
            kind: "deploy".to_owned(),
            node_tags,
            gpu_minutes: None,
        };
        let approval_id = match (
            &state.approval_id,
            policy_for(&self.rules, &facts, Utc::now()),
        ) {
            (Some(id), _) => id.clone(),
            (None, None) => return true,
            (None, Some(policy)) => {
                self.record(run_id, run, DeployCommand::StartStep(DeployStep::Approval))
                    .await;
                let summary = format!(
                    "deploy {} release {} to {}",
                    requested.app,
                    requested.release.number,
                    requested.nodes.join(", ")
                );
                let preview = preview(requested);
                // Asked in the name of whoever asked for the deploy (four eyes apply to them).
                let meta = CommandMeta {
                    actor: run.actor.clone(),
                    ..self.meta(run)
                };
                match sagas::approvals::request_approval(
                    &self.approvals,
                    ApprovalSubject {
                        kind: "deploy".to_owned(),
                        id: run_id.to_owned(),
                    },
                    summary,
                    preview,
                    policy,
                    meta,
                )
                .await
                {
                    Ok(id) => {
                        self.record(
                            run_id,
                            run,
                            DeployCommand::AskApproval {
                                approval_id: id.clone(),
                            },
                        )
                        .await;
                        id
                    }
                    Err(err) => {
                        let error = format!("the approval could not be asked for: {err}");
                        let _ = self
                            .step(
                                run_id,
                                run,
                                DeployStep::Approval,
                                Err((String::new(), error.clone())),
                            )
                            .await;
                        self.finish(run_id, run, DeployOutcome::Failed, None, Some(error))
                            .await;
                        return false;
                    }
                }
            }
        };
        // Followed on the approval's own subject (no polling).
        let approval =
            sagas::approvals::decided(&self.bus, &self.approval_state, &approval_id).await;
        let outcome = approval.outcome.unwrap_or(Outcome::Expired);
        let decided = approval
            .decisions
            .iter()
            .map(|d| {
                format!(
                    "{} by {}{}",
                    match d.decision {
                        events::approval::Decision::Approve => "approved",
                        events::approval::Decision::Reject => "rejected",
                    },
                    domain::approval::actor_name(&d.by),
                    if d.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.comment)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        if outcome == Outcome::Granted {
            let _ = self
                .step(run_id, run, DeployStep::Approval, Ok(decided))
                .await;
            return true;
        }
        let error = format!("approval {approval_id} {}", outcome.as_str());
        let _ = self
            .step(
                run_id,
                run,
                DeployStep::Approval,
                Err((decided, error.clone())),
            )
            .await;
        self.finish(
            run_id,
            run,
            DeployOutcome::Refused,
            requested.previous.as_ref().map(|r| r.number),
            Some(error),
        )
        .await;
        false
    }

    /// Builds the release's image on every node.
    async fn build(&self, run: &Pending, nodes: &[String], build: &BuildSource) -> StepResult {
        let mut output = String::new();
        for node in nodes {
            let action = ContainerAction::Build {
                image: build.image.clone(),
                repo: build.repo.clone(),
                commit: build.commit.clone(),
                dockerfile: build.dockerfile.clone(),
                command: build.command.clone(),
            };
            let wait = secs(self.config.build_timeout_secs);
            match self.container_within(run, node, action, wait).await {
                Ok(summary) => {
                    let _ = writeln!(output, "{node}: {summary}");
                }
                Err(err) => {
                    return Err((output, format!("{node}: {err}")));
                }
            }
        }
        Ok(output)
    }

    /// One container command on `node`, carried out by its agent: its summary, or its error.
    async fn container(
        &self,
        run: &Pending,
        node: &str,
        action: ContainerAction,
    ) -> Result<String, String> {
        let timeout = secs(self.config.command_timeout_secs);
        self.container_within(run, node, action, timeout).await
    }

    /// Like [`Self::container`], waiting up to `timeout` for it to finish; over SSH where the
    /// target is a host without an agent.
    async fn container_within(
        &self,
        run: &Pending,
        node: &str,
        action: ContainerAction,
        timeout: Duration,
    ) -> Result<String, String> {
        if self.places.reach(node).await?.0 == Reach::Ssh {
            let container = action.container().to_owned();
            return self
                .over_ssh(run, node, &action, timeout)
                .await
                .map(|said| match action {
                    ContainerAction::Build { .. } => said,
                    _ => format!("{container} {said}"),
                });
        }
        let requested = sagas::containers::request_container_command(
            &self.containers,
            node,
            action,
            timeout,
            self.meta(run),
        )
        .await
        .map_err(|err| format!("not recorded: {err}"))?;
        let command = sagas::containers::wait_container_command(
            &self.bus,
            &self.container_state,
            &requested.command_id,
            timeout + Duration::from_secs(5),
        )
        .await
        .map_err(|err| format!("not followed: {err}"))?;
        let outcome = command.outcome.unwrap_or_default();
        match command.status {
            Some(CommandStatus::Completed) => Ok(outcome),
            Some(CommandStatus::Failed | CommandStatus::Expired) => Err(outcome),
            _ => Err(format!("no answer from node {node} in time")),
        }
    }

    /// Stops every container of `release` on every node (one already gone is fine).
    async fn stop_release(
        &self,
        run: &Pending,
        requested: &DeployRequested,
        release: &Release,
    ) -> StepResult {
        let mut output = String::new();
        for (node, name) in placed(requested, release) {
            let action = ContainerAction::Stop {
                container: name.clone(),
                timeout_secs: 10,
            };
            match self.container(run, &node, action).await {
                Ok(_) => {
                    let _ = writeln!(output, "{node}: stopped {name}");
                }
                Err(err) if is_missing(&err) => {
                    let _ = writeln!(output, "{node}: {name} was not there");
                }
                Err(err) => {
                    return Err((output, format!("{node}: stopping {name} failed: {err}")));
                }
            }
        }
        Ok(output)
    }

    /// Creates and starts every container of `release` on every node (a leftover of the same
    /// name is removed first: a release runs exactly as it was recorded).
    async fn start_release(
        &self,
        run: &Pending,
        requested: &DeployRequested,
        release: &Release,
    ) -> StepResult {
        let mut output = String::new();
        for node in &requested.nodes {
            for container in &release.containers {
                let name = container_name(&requested.app, &container.name, release.number);
                let remove = ContainerAction::Remove {
                    container: name.clone(),
                    force: true,
                };
                if let Err(err) = self.container(run, node, remove).await
                    && !is_missing(&err)
                {
                    return Err((
                        output,
                        format!("{node}: removing the old {name} failed: {err}"),
                    ));
                }
                let mut spec = container.spec.clone();
                spec.labels
                    .insert("nebula.app".to_owned(), requested.app.clone());
                spec.labels
                    .insert("nebula.release".to_owned(), release.number.to_string());
                let create = ContainerAction::Create {
                    container: name.clone(),
                    spec: Box::new(spec),
                };
                match self.container(run, node, create).await {
                    Ok(summary) => {
                        let _ = writeln!(output, "{node}: {summary}");
                    }
                    Err(err) => {
                        return Err((output, format!("{node}: starting {name} failed: {err}")));
                    }
                }
            }
        }
        Ok(output)
    }

    /// Removes every container of `release` (a failed new release).
    async fn remove_release(
        &self,
        run: &Pending,
        requested: &DeployRequested,
        release: &Release,
        output: &mut String,
    ) {
        for (node, name) in placed(requested, release) {
            let remove = ContainerAction::Remove {
                container: name.clone(),
                force: true,
            };
            match self.container(run, &node, remove).await {
                Ok(_) => {
                    let _ = writeln!(output, "{node}: removed {name}");
                }
                Err(err) if is_missing(&err) => {}
                Err(err) => {
                    let _ = writeln!(output, "{node}: removing {name} failed: {err}");
                }
            }
        }
    }

    /// Waits until `release`'s check passes on every node (the check naming `{node_host}` is
    /// made against each node's own address), up to its timeout.
    async fn check(&self, nodes: &[String], release: &Release) -> StepResult {
        let health = &release.health;
        if health.http.is_none() && health.tcp.is_none() {
            return Ok("no check configured: started counts as healthy".to_owned());
        }
        let per_node = health
            .http
            .iter()
            .chain(&health.tcp)
            .any(|address| address.contains(NODE_HOST));
        let mut output = String::new();
        let targets: Vec<Option<&String>> = if per_node {
            nodes.iter().map(Some).collect()
        } else {
            vec![None]
        };
        for node in targets {
            let host = match node {
                Some(node) => match self.node_host(node).await {
                    Ok(host) => Some(host),
                    Err(err) => return Err((output, err)),
                },
                None => None,
            };
            let fill = |address: &String| match &host {
                Some(host) => address.replace(NODE_HOST, host),
                None => address.clone(),
            };
            let config = HealthConfig {
                http: health.http.as_ref().map(fill),
                tcp: health.tcp.as_ref().map(fill),
                timeout_secs: 3.0,
                ..HealthConfig::default()
            };
            let prefix = node.map_or_else(String::new, |node| format!("{node}: "));
            match self.check_one(&config, health.timeout_secs).await {
                Ok(line) => {
                    let _ = writeln!(output, "{prefix}{line}");
                }
                Err((line, err)) => {
                    let _ = writeln!(output, "{prefix}{line}");
                    return Err((output, format!("{prefix}{err}")));
                }
            }
        }
        Ok(output)
    }

    async fn check_one(
        &self,
        config: &HealthConfig,
        timeout_secs: u32,
    ) -> Result<String, (String, String)> {
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(u64::from(timeout_secs));
        let mut attempts = 0;
        loop {
            attempts += 1;
            match supervise::target::check(config, &self.http).await {
                Ok(()) => {
                    return Ok(format!(
                        "healthy after {:.1} s ({attempts} checks)",
                        started.elapsed().as_secs_f64()
                    ));
                }
                Err(reason) if tokio::time::Instant::now() >= deadline => {
                    return Err((
                        format!("{attempts} checks in {timeout_secs} s"),
                        format!("not healthy within {timeout_secs} s: {reason}"),
                    ));
                }
                Err(_) => tokio::time::sleep(secs(self.config.health_interval_secs)).await,
            }
        }
    }

    async fn node_host(&self, node: &str) -> Result<String, String> {
        self.places.address(node).await
    }

    /// After a failure: the new release removed, and the old one (when the run had touched it)
    /// started and checked again.
    async fn undo(
        &self,
        run_id: &str,
        run: &Pending,
        requested: &DeployRequested,
        touched_old: bool,
        error: String,
    ) {
        let mut output = String::new();
        let Some(previous) = requested.previous.as_ref().filter(|_| touched_old) else {
            // Nothing old was stopped: it runs as it did (or nothing did).
            self.remove_release(run, requested, &requested.release, &mut output)
                .await;
            let live = requested.previous.as_ref().map(|r| r.number);
            return self
                .finish(run_id, run, DeployOutcome::Failed, live, Some(error))
                .await;
        };
        self.record(run_id, run, DeployCommand::StartStep(DeployStep::Rollback))
            .await;
        self.remove_release(run, requested, &requested.release, &mut output)
            .await;
        let back = match self.start_release(run, requested, previous).await {
            Ok(started) => {
                output.push_str(&started);
                self.check(&requested.nodes, previous).await.map(|healthy| {
                    output.push_str(&healthy);
                    output.clone()
                })
            }
            Err((more, err)) => Err((more, err)),
        }
        .map_err(|(more, err)| {
            let mut all = output.clone();
            all.push_str(&more);
            (
                all,
                format!("release {} did not come back: {err}", previous.number),
            )
        });
        match self.step(run_id, run, DeployStep::Rollback, back).await {
            Ok(()) => {
                self.finish(
                    run_id,
                    run,
                    DeployOutcome::RolledBack,
                    Some(previous.number),
                    Some(error),
                )
                .await;
            }
            Err(back) => {
                self.finish(
                    run_id,
                    run,
                    DeployOutcome::Failed,
                    None,
                    Some(format!("{error}; {back}")),
                )
                .await;
            }
        }
    }
}

/// Every (node, container name) a release runs as.
fn placed(requested: &DeployRequested, release: &Release) -> Vec<(String, String)> {
    requested
        .nodes
        .iter()
        .flat_map(|node| {
            release.containers.iter().map(move |c| {
                (
                    node.clone(),
                    container_name(&requested.app, &c.name, release.number),
                )
            })
        })
        .collect()
}

/// Whether a container command failed because the container is not there.
fn is_missing(error: &str) -> bool {
    error.contains("No such container") || error.contains("(404)")
}

/// What an approver sees: what changes against the live release, as a unified diff of the
/// two releases (containers, check, nodes); the whole plan when nothing is live yet.
fn preview(requested: &DeployRequested) -> Preview {
    let shown = |release: &Release| {
        let value = serde_json::json!({
            "release": release.number,
            "spec_hash": release.spec_hash,
            "build": release.build,
            "nodes": requested.nodes,
            "containers": release.containers,
            "health": release.health,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    };
    let new = shown(&requested.release);
    match &requested.previous {
        None => Preview::new(
            PreviewFormat::Plan,
            format!("app {} (nothing live yet)\n{new}", requested.app),
        ),
        Some(previous) => Preview::new(
            PreviewFormat::Diff,
            diff(
                &format!("release {} (live)", previous.number),
                &shown(previous),
                &format!("release {}", requested.release.number),
                &new,
            ),
        ),
    }
}

/// A unified diff of two texts by line (longest common subsequence; one hunk, every line).
fn diff(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lengths[i][j]: the longest common subsequence of a[i..] and b[j..]
    let mut lengths = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i][j] = if a[i] == b[j] {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let mut out = format!(
        "--- {old_name}\n+++ {new_name}\n@@ -1,{} +1,{} @@\n",
        a.len(),
        b.len()
    );
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lengths[i + 1][j] >= lengths[i][j + 1]) {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_diff_marks_what_changed_by_line() {
        let out = super::diff("old", "a\nb\nc", "new", "a\nx\nc\nd");
        assert_eq!(
            out,
            "--- old\n+++ new\n@@ -1,3 +1,4 @@\n a\n-b\n+x\n c\n+d\n"
        );
    }
}
