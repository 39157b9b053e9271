//! Artifact sweeps over REST: garbage collection of the artifact store, a dry run first. A plan
//! names the files no read model references (no render job's inputs or outputs, no share link,
//! no video project or schedule) that nobody wrote for the retention period; collecting it
//! deletes them, each recorded, and keeps (with the reason) any that became referenced or were
//! stored again since. One sweep runs at a time; a collection cut short is finished by asking
//! again. With `[gateway] artifact_sweep_every_hours` a plan is also made on its own (by the
//! `artifact-sweeper`), and collected at once with `artifact_sweep_collect`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::{CommandMeta, execute};
use cqrs_es::{AggregateError, EventStore};
use domain::artifacts::{ArtifactSweep, Decision, SweepCommand, SweepError};
use domain::render::{RenderCommand, RenderError};
use events::DomainEvent;
use events::artifacts::{
    ArtifactCollected, ArtifactKept, ArtifactSweepEvent, MAX_CANDIDATES, SweepCandidate,
    SweepPlanned,
};
use serde::Deserialize;
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

use crate::error::body;
use crate::{ApiError, AppState, Principal};

/// The shortest retention a sweep takes: a file written within the last hour may belong to
/// work whose events the read models have not seen yet.
const MIN_RETENTION_DAYS: f64 = 1.0 / 24.0;

/// How long a sweep waits for the render read model to reach the log's head.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The newest sweeps the list shows.
const LISTED: usize = 50;

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

fn sweep_error(err: AggregateError<SweepError>) -> ApiError {
    match err {
        AggregateError::UserError(SweepError::NotFound) => {
            ApiError::NotFound("no such sweep".into())
        }
        AggregateError::UserError(SweepError::Finished) => {
            ApiError::Conflict("this sweep is finished; plan a new one".into())
        }
        AggregateError::UserError(other) => ApiError::Conflict(other.to_string()),
        other => unavailable(other),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanAsk {
    /// Files younger than this are left (`[gateway] artifact_retention_days` when absent).
    retention_days: Option<f64>,
}

/// `GET /api/artifacts/sweeps` (viewer): the newest sweeps, newest first, without their
/// candidates; the retention a new plan takes by default; and the schedule (`every_hours` null:
/// only when asked).
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut ids = state
        .bus
        .aggregate_ids(ArtifactSweepEvent::AGGREGATE_TYPE)
        .await
        .map_err(unavailable)?;
    // Ids are UUID v7: newest sorts last.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut sweeps = Vec::new();
    for id in ids.into_iter().take(LISTED) {
        let sweep = load(&state, &id).await?;
        if sweep.plan.is_some() {
            sweeps.push(view(&id, &sweep, false));
        }
    }
    let config = &state.config;
    let positive = |v: f64| (v > 0.0).then_some(v);
    Ok(Json(json!({
        "sweeps": sweeps,
        "retention_days": config.artifact_retention_days,
        "schedule": {
            "every_hours": positive(config.artifact_sweep_every_hours),
            "collect": config.artifact_sweep_collect,
            "render_job_retention_days": positive(config.render_job_retention_days)
                .filter(|_| config.artifact_sweep_every_hours > 0.0),
        },
    })))
}

/// `GET /api/artifacts/sweeps/{id}` (viewer): one sweep with each candidate and what became of
/// it.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sweep = existing(&state, &id).await?;
    Ok(Json(view(&id, &sweep, true)))
}

/// `POST /api/artifacts/sweeps {retention_days?}` (admin): the dry run. Nothing is deleted; the
/// plan is recorded and answered (201).
pub(crate) async fn plan(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<PlanAsk>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ask = body(payload)?;
    let retention_days = ask
        .retention_days
        .unwrap_or(state.config.artifact_retention_days);
    if !(retention_days.is_finite() && (MIN_RETENTION_DAYS..=3650.0).contains(&retention_days)) {
        return Err(ApiError::BadRequest(format!(
            "retention_days must be from {MIN_RETENTION_DAYS:.4} (an hour) to 3650, got {retention_days}"
        )));
    }
    let retention = Duration::from_secs_f64(retention_days * 86_400.0);
    let id = plan_sweep(&state, retention, principal.meta(), true)
        .await?
        .expect("an empty plan is recorded when asked for");
    let sweep = existing(&state, &id).await?;
    Ok((StatusCode::CREATED, Json(view(&id, &sweep, true))))
}

/// Plans a sweep of the files unreferenced and unwritten for `retention`, recorded under
/// `meta`: its id; `None` when nothing is to be deleted and `record_empty` is false.
async fn plan_sweep(
    state: &AppState,
    retention: Duration,
    meta: CommandMeta,
    record_empty: bool,
) -> Result<Option<String>, ApiError> {
    let _one_at_a_time = state.sweep_lock.lock().await;
    let referenced = references(state).await?;
    let store = state.artifacts.clone();
    let contents = tokio::task::spawn_blocking(move || store.contents())
        .await
        .map_err(|err| ApiError::Internal(err.into()))?
        .map_err(|err| ApiError::Unavailable(format!("the artifact store: {err}")))?;
    let now = SystemTime::now();
    let (mut in_use, mut young) = (0, 0);
    let mut old = Vec::new();
    for stored in contents {
        let age = now.duration_since(stored.modified).unwrap_or_default();
        if referenced.contains(&stored.sha256) {
            in_use += 1;
        } else if age < retention {
            young += 1;
        } else {
            old.push(SweepCandidate {
                sha256: stored.sha256,
                bytes: stored.bytes,
                age_secs: age.as_secs(),
            });
        }
    }
    old.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.sha256.cmp(&b.sha256)));
    let more = old.len().saturating_sub(MAX_CANDIDATES) as u64;
    old.truncate(MAX_CANDIDATES);
    if old.is_empty() && !record_empty {
        return Ok(None);
    }
    let plan = SweepPlanned {
        planned_at: chrono::Utc::now(),
        retention_secs: retention.as_secs(),
        candidate_bytes: old.iter().map(|c| c.bytes).sum(),
        candidates: old,
        more,
        referenced: in_use,
        young,
    };
    let id = uuid::Uuid::now_v7().to_string();
    execute(&state.sweeps, &id, SweepCommand::Plan(plan), meta, 1)
        .await
        .map_err(sweep_error)?;
    Ok(Some(id))
}

/// `POST /api/artifacts/sweeps/{id}/collect` (admin): deletes the plan's candidates that are
/// still unreferenced and unwritten since it was made, each recorded; the others are kept with
/// the reason. Answers the sweep as it ends (finished, or 503 with what stopped it: asking
/// again goes on from there).
pub(crate) async fn collect(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    collect_sweep(&state, &id, principal.meta()).await?;
    let sweep = existing(&state, &id).await?;
    Ok(Json(view(&id, &sweep, true)))
}

/// Collects sweep `id` (one correlation for the whole collection: the log shows it as one
/// action).
async fn collect_sweep(state: &AppState, id: &str, meta: CommandMeta) -> Result<(), ApiError> {
    let _one_at_a_time = state.sweep_lock.lock().await;
    let sweep = existing(state, id).await?;
    if sweep.finished.is_some() {
        return Err(sweep_error(AggregateError::UserError(SweepError::Finished)));
    }
    let plan = sweep.plan.as_ref().expect("existing sweeps have a plan");
    let written_before = SystemTime::from(plan.planned_at);
    let referenced = references(state).await?;
    let store = state.artifacts.clone();
    let links = tokio::task::spawn_blocking(move || store.job_links())
        .await
        .map_err(|err| ApiError::Internal(err.into()))?
        .map_err(|err| ApiError::Unavailable(format!("the artifact store: {err}")))?;
    let links = std::sync::Arc::new(links);
    let metrics = state.bus.metrics();
    for candidate in sweep.pending() {
        let sha256 = candidate.sha256.clone();
        let keep = |why: &str| {
            SweepCommand::RecordKept(ArtifactKept {
                sha256: sha256.clone(),
                why: why.to_owned(),
            })
        };
        let command = if referenced.contains(&sha256) {
            keep("referenced by a read model since the plan")
        } else {
            let (store, links, sha) = (state.artifacts.clone(), links.clone(), sha256.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                store.collect(&sha, written_before, &links)
            })
            .await
            .map_err(|err| ApiError::Internal(err.into()))?
            .map_err(|err| {
                ApiError::Unavailable(format!(
                    "the artifact store could not delete {sha256}: {err} (ask again to go on)"
                ))
            })?;
            match outcome {
                artifacts::Collected::Removed { bytes, links } => {
                    metrics.add("nebula_artifacts_collected_total", &[], 1.0);
                    metrics.add("nebula_artifacts_collected_bytes_total", &[], bytes as f64);
                    SweepCommand::RecordCollected(ArtifactCollected {
                        sha256: sha256.clone(),
                        bytes,
                        links,
                    })
                }
                artifacts::Collected::Fresh => keep("stored again since the plan"),
                artifacts::Collected::Gone => keep("no longer in the store"),
            }
        };
        match execute(&state.sweeps, id, command, meta.clone(), 3).await {
            // Decided by an earlier try whose answer was lost: nothing to record.
            Ok(()) | Err(AggregateError::UserError(SweepError::AlreadyDecided(_))) => {}
            Err(err) => return Err(sweep_error(err)),
        }
    }
    execute(&state.sweeps, id, SweepCommand::Finish, meta, 3)
        .await
        .map_err(sweep_error)?;
    Ok(())
}

/// How many finished render jobs one turn deletes at most.
const EXPIRED_PER_TURN: i64 = 500;

/// Deletes the finished render jobs without a share link that ended more than
/// `render_job_retention_days` ago (the oldest first, a bounded number a turn), so the plan
/// that follows finds their outputs unreferenced.
async fn expire_render_jobs(state: &AppState, meta: CommandMeta) {
    let days = state.config.render_job_retention_days;
    let before = chrono::Utc::now()
        - chrono::Duration::from_std(Duration::from_secs_f64(days * 86_400.0)).unwrap_or_default();
    let jobs = match state
        .read
        .unshared_jobs_finished_before(before, EXPIRED_PER_TURN)
        .await
    {
        Ok(jobs) => jobs,
        Err(err) => {
            tracing::warn!(error = %err, "the render jobs to expire could not be read");
            return;
        }
    };
    let metrics = state.bus.metrics();
    for job in jobs {
        let delete = RenderCommand::Delete {
            reason: format!("finished more than {days} days ago (render_job_retention_days)"),
        };
        match execute(&state.render_jobs, &job, delete, meta.clone(), 3).await {
            Ok(()) => metrics.add("nebula_render_jobs_expired_total", &[], 1.0),
            // Deleted meanwhile, by someone or an earlier turn the read model has not seen.
            Err(AggregateError::UserError(RenderError::NotFound)) => {}
            Err(err) => {
                tracing::warn!(job_id = job, error = %err, "an old render job was not deleted");
            }
        }
    }
}

/// Plans a sweep every `every` (with the configured retention), and collects it at once when
/// configured to; a failure is logged and tried again at the next turn.
pub(crate) async fn scheduled(state: AppState, every: Duration, cancel: CancellationToken) {
    let meta = || CommandMeta::new(events::Actor::Service("artifact-sweeper".to_owned()));
    let retention = Duration::from_secs_f64(state.config.artifact_retention_days * 86_400.0);
    let metrics = state.bus.metrics();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if state.config.render_job_retention_days > 0.0 {
            expire_render_jobs(&state, meta()).await;
        }
        let planned = plan_sweep(&state, retention, meta(), false).await;
        let outcome = match &planned {
            Ok(Some(_)) => "planned",
            Ok(None) => "nothing",
            Err(_) => "failed",
        };
        metrics.add(
            "nebula_artifact_sweep_turns_total",
            &[("outcome", outcome)],
            1.0,
        );
        let id = match planned {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(error = ?err, "a scheduled artifact sweep was not planned");
                continue;
            }
        };
        tracing::info!(sweep = id, "an artifact sweep planned on schedule");
        if state.config.artifact_sweep_collect
            && let Err(err) = collect_sweep(&state, &id, meta()).await
        {
            tracing::warn!(sweep = id, error = ?err, "a scheduled artifact sweep was not collected");
        }
    }
}

/// Every artifact a read model names, once the render read model has caught up with the log
/// (a read model behind it, or being rebuilt, would make referenced files look unreferenced).
async fn references(state: &AppState) -> Result<HashSet<String>, ApiError> {
    let render = projections::by_name("render").expect("the render projection exists");
    let head = state
        .bus
        .last_seq(render.stream())
        .await
        .map_err(unavailable)?;
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let at = state
            .read
            .checkpoints()
            .await?
            .into_iter()
            .find(|(name, _)| name == render.name())
            .map_or(0, |(_, seq)| seq);
        if at >= head.0 as i64 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "the render read model is {} events behind the log (catching up or being \
                 rebuilt): a sweep waits until it has caught up, so nothing in use looks unused",
                head.0 as i64 - at
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut found = state.read.render_artifact_references().await?;
    found.extend(
        sagas::video::artifact_references(&state.bus)
            .await
            .map_err(unavailable)?,
    );
    Ok(found)
}

async fn load(state: &AppState, id: &str) -> Result<ArtifactSweep, ApiError> {
    Ok(state
        .sweep_state
        .load_aggregate(id)
        .await
        .map_err(unavailable)?
        .state()
        .clone())
}

async fn existing(state: &AppState, id: &str) -> Result<ArtifactSweep, ApiError> {
    let uuid_like = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let sweep = if uuid_like {
        load(state, id).await?
    } else {
        ArtifactSweep::default()
    };
    if sweep.plan.is_none() {
        return Err(ApiError::NotFound(format!("no sweep {id}")));
    }
    Ok(sweep)
}

fn view(id: &str, sweep: &ArtifactSweep, with_candidates: bool) -> Value {
    let plan = sweep.plan.as_ref().expect("viewed sweeps have a plan");
    let (collected, collected_bytes) = sweep.collected();
    let mut out = json!({
        "id": id,
        "status": sweep.status(),
        "planned_at": plan.planned_at,
        "retention_secs": plan.retention_secs,
        "candidates_count": plan.candidates.len(),
        "candidate_bytes": plan.candidate_bytes,
        "more": plan.more,
        "referenced": plan.referenced,
        "young": plan.young,
        "pending": sweep.pending().len(),
        "collected": collected,
        "collected_bytes": collected_bytes,
        "kept": sweep.decided.len() as u64 - collected,
    });
    if with_candidates {
        out["candidates"] = plan
            .candidates
            .iter()
            .map(|c| {
                let mut row = json!({"sha256": c.sha256, "bytes": c.bytes, "age_secs": c.age_secs});
                match sweep.decided.get(&c.sha256) {
                    None => row["outcome"] = json!("pending"),
                    Some(Decision::Collected { links }) => {
                        row["outcome"] = json!("collected");
                        row["links"] = json!(links);
                    }
                    Some(Decision::Kept { why }) => {
                        row["outcome"] = json!("kept");
                        row["why"] = json!(why);
                    }
                }
                row
            })
            .collect();
    }
    out
}
