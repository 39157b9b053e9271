//! One job, carried out: its branch and worktree made, the agent loop (the model's turns, each
//! tool call checked and carried out, every step recorded), bounded by steps, tokens and wall
//! time and cancellable; the build verified before anything is proposed; the change committed
//! (only the files the model wrote) and proposed; deciding and landing it is `decide`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::store::CommandMeta;
use chrono::Utc;
use cqrs_es::EventStore;
use domain::ai_dev::{AiDevCommand, AiDevJob, JobStatus};
use events::Actor;
use events::ai_dev::{
    AgentStep, BRANCH_PREFIX, BuildChecked, ChangeProposed, JobRequested, JobStarted,
    STEP_TEXT_MAX_BYTES, bounded,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::guard::Guard;
use crate::memory::Memory;
use crate::ollama::{Answer, ToolCall};
use crate::{Known, Place, RepoConfig, Worker, tools, verify};

/// How a job's loop ended.
enum Ended {
    Finished(String),
    Failed(&'static str, String),
    Cancelled,
}

/// What one job runs with.
pub(crate) struct Run<'a> {
    pub(crate) id: &'a str,
    pub(crate) known: &'a Known,
    pub(crate) requested: JobRequested,
    pub(crate) repo: RepoConfig,
    pub(crate) started: JobStarted,
    pub(crate) worktree: PathBuf,
}

impl Worker {
    pub(crate) fn meta(&self, known: &Known) -> CommandMeta {
        CommandMeta {
            correlation_id: known.correlation_id,
            causation_id: Some(known.event_id),
            actor: match &self.place {
                Place::ControlPlane => Actor::Service("ai-dev".to_owned()),
                Place::Node(node) => Actor::Node(node.clone()),
            },
        }
    }

    pub(crate) async fn record(&self, id: &str, known: &Known, command: AiDevCommand) -> bool {
        match self.jobs.execute(id, command, self.meta(known)).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(job = id, error = %err, "an AI developer job's step was not recorded");
                false
            }
        }
    }

    /// Records that the job failed at `reason` (a word: `git`, `model`, …), saying why.
    pub(crate) async fn fail(&self, id: &str, known: &Known, reason: &str, error: String) -> bool {
        let command = AiDevCommand::Fail {
            reason: reason.to_owned(),
            error,
        };
        self.record(id, known, command).await
    }

    /// The job as it is now (a node's runner, which may not read the store, works from the
    /// job as its fold knew it).
    pub(crate) async fn load(&self, id: &str, known: &Known) -> Option<AiDevJob> {
        if let Place::Node(_) = self.place {
            return Some(known.state.clone());
        }
        match self.job_state.load_aggregate(id).await {
            Ok(loaded) => Some(loaded.state().clone()),
            Err(err) => {
                tracing::warn!(job = id, error = %err, "an AI developer job could not be read");
                None
            }
        }
    }

    pub(crate) fn worktree(&self, id: &str) -> PathBuf {
        self.work_dir.join("worktrees").join(id)
    }

    /// Carries the job on from where its events say it is.
    pub(crate) async fn carry_on(
        self: &Arc<Self>,
        id: &str,
        known: &Known,
        cancel: CancellationToken,
    ) {
        let Some(state) = self.load(id, known).await else {
            return;
        };
        let Some(requested) = state.requested.clone() else {
            return;
        };
        let Some(repo) = self.config.repo(&requested.repo).cloned() else {
            if !state.status.is_some_and(JobStatus::is_final) {
                let error = format!("there is no configured repository {}", requested.repo);
                self.fail(id, known, "repository", error).await;
            }
            return;
        };
        match state.status {
            Some(JobStatus::Requested) => {
                if state.cancel_requested {
                    self.record(id, known, AiDevCommand::Cancel).await;
                    return;
                }
                if self.place == Place::ControlPlane
                    && state.runs_on.is_none()
                    && !self.offer(id, known, &state, &cancel).await
                {
                    return; // a node took it, or it was cancelled
                }
                let permit = self.slots.acquire().await;
                let Some(started) = self.start(id, known, &requested, &repo).await else {
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
                let proposed = self.work(&run, Memory::default(), &cancel).await;
                drop(permit);
                self.then_decide(&run, proposed, cancel).await;
            }
            Some(JobStatus::Running) => {
                let Some(started) = state.started.clone() else {
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
                // A restart: the memory in Redis says where the job was.
                let memory = match self.kv.as_ref() {
                    Some(kv) => Memory::load(kv, id).await,
                    None => Ok(None),
                };
                match memory {
                    Ok(Some(memory)) if run.worktree.exists() => {
                        tracing::info!(
                            job = id,
                            steps = memory.steps,
                            "resuming an AI developer job from its memory"
                        );
                        let permit = self.slots.acquire().await;
                        let proposed = self.work(&run, memory, &cancel).await;
                        drop(permit);
                        self.then_decide(&run, proposed, cancel).await;
                    }
                    Ok(_) => {
                        let error = "the worker restarted and the job's memory or worktree is gone: it is not carried on blindly".to_owned();
                        self.fail(id, known, "interrupted", error).await;
                    }
                    Err(err) => {
                        let error = format!(
                            "the worker restarted and the job's memory cannot be read: {err}"
                        );
                        self.fail(id, known, "interrupted", error).await;
                    }
                }
            }
            Some(
                status @ (JobStatus::Proposed | JobStatus::AwaitingApproval | JobStatus::Approved),
            ) => {
                if let (Some(started), Some(change)) =
                    (state.started.clone(), state.proposed.clone())
                {
                    let run = Run {
                        id,
                        known,
                        requested,
                        repo,
                        started,
                        worktree: self.worktree(id),
                    };
                    let approved = status == JobStatus::Approved
                        || (status == JobStatus::Proposed && state.auto_approved);
                    if approved {
                        self.merge(&run, &change).await;
                    } else if self.place == Place::ControlPlane {
                        self.decide(&run, &change, &state, cancel).await;
                    }
                }
            }
            Some(JobStatus::Rejected | JobStatus::Cancelled) => {
                // A node's runner cleans up after the control plane's refusal or cancellation.
                if let Some(started) = state.started.clone() {
                    let run = Run {
                        id,
                        known,
                        requested,
                        repo,
                        started,
                        worktree: self.worktree(id),
                    };
                    self.clean_up(&run, known.branch_deleted).await;
                }
            }
            Some(JobStatus::Merged) if state.rollback_requested => {
                self.roll_back(id, known, &requested, &repo, &state).await;
            }
            _ => {}
        }
    }

    /// The model chosen and checked, the branch and worktree made: `Started` recorded.
    async fn start(
        &self,
        id: &str,
        known: &Known,
        requested: &JobRequested,
        repo: &RepoConfig,
    ) -> Option<JobStarted> {
        let (model, rule) = crate::ollama::choose_model(
            requested.model.as_deref(),
            repo.model.as_deref(),
            &self.config.model,
            self.vram_mb().await,
        );
        let mut shown = self.ollama.show(&model).await;
        if let Err(failure) = &shown
            && failure.missing
            && self.config.pull_missing
        {
            tracing::info!(job = id, model, "the model is not on Ollama: pulling it");
            shown = match self.ollama.pull(&model).await {
                Ok(()) => self.ollama.show(&model).await,
                Err(failure) => Err(failure),
            };
        }
        let (provider, model, rule, facts) = match shown {
            Ok(facts) => ("ollama", model, rule, facts),
            Err(failure) => {
                let unusable = format!(
                    "model {model} ({rule}) is not usable at {}: {}",
                    self.config.ollama_url, failure.message
                );
                if self.openai.is_none() {
                    let error = format!("{unusable} (ollama pull {model})");
                    self.fail(id, known, "model", error).await;
                    return None;
                }
                // The configured fallback: an OpenAI-compatible API, its key in the vault.
                if let Err(err) = self.openai_key().await {
                    let error =
                        format!("{unusable}; the OpenAI-compatible fallback cannot be used: {err}");
                    self.fail(id, known, "model", error).await;
                    return None;
                }
                let openai = &self.config.openai;
                let rule = format!(
                    "fallback to the OpenAI-compatible API at {}: {unusable}",
                    openai.url
                );
                let facts = crate::ollama::ModelFacts {
                    tools: true,
                    context: openai.context_tokens,
                };
                ("openai", openai.model.clone(), rule, facts)
            }
        };
        let stamp = Utc::now().format("%Y%m%dT%H%M%S");
        let short = id.split('-').next().unwrap_or(id);
        let branch = format!("{BRANCH_PREFIX}{short}-{stamp}");
        let worktree = self.worktree(id);
        let (repo_path, base) = (repo.path.clone(), requested.base.clone());
        let (branch_c, worktree_c, name) = (branch.clone(), worktree.clone(), id.to_owned());
        let prepared = tokio::task::spawn_blocking(move || {
            crate::git::prepare(&repo_path, &base, &branch_c, &worktree_c, &name)
        })
        .await
        .unwrap_or_else(|err| Err(format!("git failed: {err}")));
        let base_commit = match prepared {
            Ok(commit) => commit,
            Err(error) => {
                self.fail(id, known, "git", error).await;
                return None;
            }
        };
        let started = JobStarted {
            branch,
            base_commit,
            provider: provider.to_owned(),
            model,
            model_rule: bounded(&rule, STEP_TEXT_MAX_BYTES),
            tool_mode: if facts.tools { "tools" } else { "json" }.to_owned(),
            context_tokens: facts.context,
            runs_on: self.place.runner().to_owned(),
        };
        self.record(id, known, AiDevCommand::Start(started.clone()))
            .await
            .then_some(started)
    }

    /// The GPU memory of this machine's node, when its agent reported one.
    async fn vram_mb(&self) -> Option<u64> {
        if self.vram_mb.is_some() || self.place != Place::ControlPlane {
            return self.vram_mb;
        }
        let node = self.node_state.load_aggregate(&self.node_id).await.ok()?;
        let inventory = node.state().inventory.clone()?;
        inventory
            .gpus
            .iter()
            .filter(|gpu| gpu.vendor != "simulated")
            .map(|gpu| gpu.memory_total_bytes / (1024 * 1024))
            .max()
    }

    /// The control plane decides its own job's change at once; a node's runner leaves it to the
    /// control plane.
    async fn then_decide(
        &self,
        run: &Run<'_>,
        proposed: Option<ChangeProposed>,
        cancel: CancellationToken,
    ) {
        if self.place != Place::ControlPlane {
            return;
        }
        if let Some(change) = proposed
            && let Some(state) = self.load(run.id, run.known).await
        {
            self.decide(run, &change, &state, cancel).await;
        }
    }

    /// The loop, then (finished) the change committed and proposed.
    async fn work(
        &self,
        run: &Run<'_>,
        mut memory: Memory,
        cancel: &CancellationToken,
    ) -> Option<ChangeProposed> {
        let (id, known) = (run.id, run.known);
        let guard = match Guard::new(&run.worktree, &run.repo.deny) {
            Ok(guard) => guard,
            Err(error) => {
                self.fail(id, known, "worktree", error).await;
                return None;
            }
        };
        let ended = self.agent_loop(run, &guard, &mut memory, cancel).await;
        let summary = match ended {
            Ended::Finished(summary) => summary,
            Ended::Cancelled => {
                self.record(id, known, AiDevCommand::Cancel).await;
                self.clean_up(run, false).await;
                return None;
            }
            Ended::Failed(reason, error) => {
                self.fail(id, known, reason, error).await;
                self.clean_up(run, false).await;
                return None;
            }
        };
        let message = format!(
            "{}\n\n{}\n\nNebula-Ai-Dev-Job: {id}\nModel: {} ({})\n",
            first_line(&run.requested.instruction),
            summary,
            run.started.model,
            run.started.provider
        );
        let (worktree, written) = (run.worktree.clone(), memory.written.clone());
        let committed = tokio::task::spawn_blocking(move || {
            crate::git::commit_paths(&worktree, &written, &message)
        })
        .await
        .unwrap_or_else(|err| Err(format!("git failed: {err}")));
        let committed = match committed {
            Ok(Some(committed)) => committed,
            Ok(None) => {
                let error = "the model finished without changing anything".to_owned();
                self.fail(id, known, "no_change", error).await;
                self.clean_up(run, true).await;
                return None;
            }
            Err(error) => {
                self.fail(id, known, "git", error).await;
                return None;
            }
        };
        let (repo_path, base_commit, commit) = (
            run.repo.path.clone(),
            run.started.base_commit.clone(),
            committed.commit.clone(),
        );
        let diff = tokio::task::spawn_blocking(move || {
            crate::git::diff_text(&repo_path, &base_commit, &commit)
        })
        .await
        .unwrap_or_else(|err| Err(err.to_string()))
        .unwrap_or_else(|err| format!("(the diff could not be made: {err})"));
        let change = ChangeProposed {
            diff: bounded(&diff, events::ai_dev::DIFF_MAX_BYTES),
            commit: committed.commit,
            summary: bounded(&summary, STEP_TEXT_MAX_BYTES),
            files: committed.files,
            lines_added: committed.added,
            lines_removed: committed.removed,
        };
        self.record(id, known, AiDevCommand::Propose(change.clone()))
            .await
            .then_some(change)
    }

    /// The agent loop: the model's turns until it finishes with a green build, runs out of its
    /// budget, fails, or the job is cancelled.
    async fn agent_loop(
        &self,
        run: &Run<'_>,
        guard: &Guard,
        memory: &mut Memory,
        cancel: &CancellationToken,
    ) -> Ended {
        let began = Instant::now();
        let json_mode = run.started.tool_mode == "json";
        let names = tools::names();
        let definitions = if json_mode {
            Vec::new()
        } else {
            tools::definitions()
        };
        let format = json_mode.then(|| {
            json!({"type": "object", "properties": {
                "tool": {"type": "string", "enum": names},
                "arguments": {"type": "object"},
                "said": {"type": "string"},
            }, "required": ["tool", "arguments"]})
        });
        if memory.turns.is_empty() {
            memory.turns.push(json!({"role": "user", "content": format!(
                "Carry out the task on this repository (base branch {}).", run.requested.base
            )}));
        }
        let budget = &self.config;
        loop {
            if cancel.is_cancelled() {
                return Ended::Cancelled;
            }
            if memory.steps >= budget.max_steps {
                return Ended::Failed(
                    "budget",
                    format!(
                        "the step budget ({}) ran out before the model finished",
                        budget.max_steps
                    ),
                );
            }
            if memory.tokens >= budget.max_tokens {
                return Ended::Failed(
                    "budget",
                    format!(
                        "the token budget ({}) ran out before the model finished",
                        budget.max_tokens
                    ),
                );
            }
            if began.elapsed() >= crate::secs(budget.max_wall_secs) {
                return Ended::Failed(
                    "budget",
                    format!(
                        "the time budget ({} s) ran out before the model finished",
                        budget.max_wall_secs
                    ),
                );
            }
            if let Err(error) = self.fit(run, memory, &names, json_mode).await {
                return Ended::Failed("model", error);
            }
            let system = memory.system(&run.requested.instruction, json_mode, &names);
            let prompt = memory.prompt(system);
            let answer = tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                answer = self.ask(&run.started, &prompt, &definitions, format.as_ref()) => answer,
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => return Ended::Failed("model", error),
            };
            memory.tokens += answer.prompt_tokens + answer.eval_tokens;
            if answer.done_reason == "length" {
                tracing::warn!(
                    job = run.id,
                    "the model's answer was cut at its length limit"
                );
            }
            let mut calls = answer.tool_calls.clone();
            let mut said = answer.content.clone();
            if json_mode {
                match serde_json::from_str::<Value>(&answer.content) {
                    Ok(value) if value["tool"].is_string() => {
                        calls = vec![ToolCall {
                            name: value["tool"].as_str().unwrap_or_default().to_owned(),
                            arguments: value["arguments"].clone(),
                        }];
                        said = value["said"].as_str().unwrap_or_default().to_owned();
                    }
                    _ => {}
                }
            }
            if calls.is_empty() {
                memory.steps += 1;
                memory
                    .turns
                    .push(json!({"role": "assistant", "content": answer.content}));
                let nudge =
                    "Use the tools to make the change; call run_build, then finish once it passes.";
                memory.turns.push(json!({"role": "user", "content": nudge}));
                self.step(run, memory, &answer, said, None, nudge.to_owned(), false)
                    .await;
                continue;
            }
            // The assistant's turn as the model gave it (tool calls, or its JSON).
            if json_mode {
                memory
                    .turns
                    .push(json!({"role": "assistant", "content": answer.content}));
            } else {
                memory.turns.push(json!({"role": "assistant", "content": answer.content, "tool_calls": answer.tool_calls.iter().map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}})).collect::<Vec<_>>()}));
            }
            let mut finished = None;
            for (index, call) in calls.iter().enumerate() {
                memory.steps += 1;
                let (result, refused, finish) = self.call(run, guard, memory, call, cancel).await;
                let reply = if json_mode {
                    json!({"role": "user", "content": format!("{} answered:\n{result}", call.name)})
                } else {
                    json!({"role": "tool", "tool_name": call.name, "content": result})
                };
                memory.turns.push(reply);
                let (said, answer_counts) = if index == 0 {
                    (said.clone(), Some(&answer))
                } else {
                    (String::new(), None)
                };
                self.step(
                    run,
                    memory,
                    answer_counts.unwrap_or(&Answer::default()),
                    said,
                    Some(call),
                    result,
                    refused,
                )
                .await;
                if finish.is_some() {
                    finished = finish;
                    break;
                }
                if cancel.is_cancelled() {
                    return Ended::Cancelled;
                }
            }
            if let Some(summary) = finished {
                return Ended::Finished(summary);
            }
        }
    }

    /// The OpenAI-compatible fallback's API key, from the vault.
    async fn openai_key(&self) -> Result<common::Secret, String> {
        let vault = self
            .vault
            .get_or_try_init(|| vault::Vault::open(&self.bus, &self.key_source, false))
            .await
            .map_err(|err| format!("the vault cannot be opened: {err}"))?;
        let secret = &self.config.openai.key_secret;
        vault
            .get(secret)
            .await
            .map_err(|err| format!("the vault is unavailable: {err}"))?
            .map(|revealed| revealed.value)
            .ok_or_else(|| format!("the vault has no secret {secret} (its API key)"))
    }

    /// Asks the job's model through its provider, trying a transient failure (the server
    /// away, a 5xx, a 429) twice more.
    async fn ask(
        &self,
        started: &JobStarted,
        prompt: &[Value],
        tools: &[Value],
        format: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut backoff = common::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut tries = 0;
        loop {
            tries += 1;
            let answer = match (&self.openai, started.provider.as_str()) {
                (Some(openai), "openai") => {
                    let key = self.openai_key().await?;
                    openai
                        .chat(key.expose(), &started.model, prompt, tools)
                        .await
                }
                (None, "openai") => {
                    return Err(
                        "the job runs on the OpenAI-compatible API, which is no longer configured"
                            .to_owned(),
                    );
                }
                _ => {
                    self.ollama
                        .chat(
                            &started.model,
                            prompt,
                            tools,
                            format,
                            started.context_tokens,
                        )
                        .await
                }
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(failure) if failure.transient && tries < 3 => {
                    tracing::warn!(error = %failure.message, "the model failed; trying again");
                    backoff.sleep().await;
                }
                Err(failure) => return Err(failure.message),
            }
        }
    }

    /// Compresses the memory when the prompt would pass its share of the context.
    async fn fit(
        &self,
        run: &Run<'_>,
        memory: &mut Memory,
        names: &[String],
        json_mode: bool,
    ) -> Result<(), String> {
        let limit = (run.started.context_tokens as f64 * self.config.compress_at) as u64;
        let system = memory.system(&run.requested.instruction, json_mode, names);
        let before = Memory::tokens_of(&memory.prompt(system));
        if before <= limit {
            return Ok(());
        }
        let Some(cut) = memory.cut(self.config.keep_last) else {
            return Ok(()); // nothing old enough to condense: the last turns stay whole
        };
        let transcript = memory.transcript(cut);
        let ask = vec![
            json!({"role": "system", "content": "Summarise this work log of an AI developer for its own later use: the files looked at and changed, what was learned, what failed and why, what is left. Be brief and exact; keep file names and error messages."}),
            json!({"role": "user", "content": transcript}),
        ];
        let summary = self
            .ask(&run.started, &ask, &[], None)
            .await
            .map_err(|err| format!("summarising the older turns failed: {err}"))?;
        memory.compress(cut, &bounded(&summary.content, STEP_TEXT_MAX_BYTES));
        memory.tokens += summary.prompt_tokens + summary.eval_tokens;
        let system = memory.system(&run.requested.instruction, json_mode, names);
        let after = Memory::tokens_of(&memory.prompt(system));
        self.record(
            run.id,
            run.known,
            AiDevCommand::RecordCompression {
                turns_summarised: u32::try_from(cut).unwrap_or(u32::MAX),
                tokens_before: before,
                tokens_after: after,
            },
        )
        .await;
        Ok(())
    }

    /// One tool call: its answer to the model, whether it was refused, and (for `finish` with a
    /// green build) the summary.
    async fn call(
        &self,
        run: &Run<'_>,
        guard: &Guard,
        memory: &mut Memory,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> (String, bool, Option<String>) {
        match call.name.as_str() {
            "update_plan" => match call.arguments["plan"].as_str() {
                Some(plan) => {
                    memory.plan = bounded(plan, STEP_TEXT_MAX_BYTES);
                    ("the plan is kept".to_owned(), false, None)
                }
                None => (
                    "error: the argument \"plan\" (a string) is missing".to_owned(),
                    false,
                    None,
                ),
            },
            "run_build" => {
                let build = self.verify(run, guard, cancel).await;
                if build.ok {
                    memory.green_after = Some(memory.written.len());
                }
                (build_words(&build), false, None)
            }
            "finish" => {
                let summary = call.arguments["summary"]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if summary.is_empty() {
                    return (
                        "error: finish needs a summary of the change".to_owned(),
                        false,
                        None,
                    );
                }
                // Only a green build is committed: verified again now, whatever was run before.
                let build = self.verify(run, guard, cancel).await;
                if build.ok {
                    (
                        format!("finished: {}", build_words(&build)),
                        false,
                        Some(summary),
                    )
                } else {
                    (
                        format!("not finished: the build is red. {}", build_words(&build)),
                        false,
                        None,
                    )
                }
            }
            name => {
                let done = tools::file_tool(guard, name, &call.arguments, &mut memory.written);
                (done.result, done.refused, None)
            }
        }
    }

    async fn verify(
        &self,
        run: &Run<'_>,
        guard: &Guard,
        cancel: &CancellationToken,
    ) -> BuildChecked {
        let plan = verify::detect(guard.root());
        let env = verify::Env {
            cargo_target_dir: self.work_dir.join("cargo-target").join(&run.repo.name),
        };
        let build = verify::run(
            guard.root(),
            &plan,
            &env,
            crate::secs(self.config.build_timeout_secs),
            cancel,
        )
        .await;
        self.record(run.id, run.known, AiDevCommand::RecordBuild(build.clone()))
            .await;
        build
    }

    /// Records a step and saves the memory (a restart resumes after it).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        run: &Run<'_>,
        memory: &Memory,
        answer: &Answer,
        said: String,
        call: Option<&ToolCall>,
        result: String,
        refused: bool,
    ) {
        let step = AgentStep {
            n: memory.steps,
            said: bounded(&said, STEP_TEXT_MAX_BYTES),
            tool: call.map(|c| c.name.clone()),
            arguments: call.map(|c| bounded(&c.arguments.to_string(), STEP_TEXT_MAX_BYTES)),
            result: bounded(&result, STEP_TEXT_MAX_BYTES),
            refused,
            tokens_in: answer.prompt_tokens,
            tokens_out: answer.eval_tokens,
        };
        if refused {
            tracing::warn!(job = run.id, tool = ?step.tool, arguments = ?step.arguments, "the model asked for what it may not touch: refused");
        }
        self.record(run.id, run.known, AiDevCommand::RecordStep(step))
            .await;
        if let Some(kv) = &self.kv
            && let Err(err) = memory.save(kv, run.id).await
        {
            tracing::warn!(job = run.id, error = %err, "the job's memory was not saved: a restart cannot resume it");
        }
    }
}

pub(crate) fn first_line(text: &str) -> String {
    bounded(text.lines().next().unwrap_or_default().trim(), 120)
}

/// A build's outcome as the model reads it.
fn build_words(build: &BuildChecked) -> String {
    if build.ok {
        return format!(
            "build and tests pass ({}: {}).",
            build.toolchain,
            build.commands.join(", ")
        );
    }
    let failing = if build.failing_tests.is_empty() {
        String::new()
    } else {
        format!(" Failing tests: {}.", build.failing_tests.join(", "))
    };
    format!(
        "build or tests fail ({}, exit {}).{failing}\nOutput (tail):\n{}",
        build.toolchain,
        build
            .exit_status
            .map_or_else(|| "none".to_owned(), |s| s.to_string()),
        events::ai_dev::tail(&build.output, 3000)
    )
}
