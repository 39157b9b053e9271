// Storage: what each stream and the artifact store hold (`GET /api/storage`), and artifact
// sweeps — a dry run that names the files nothing references, then their deletion
// (`GET/POST /api/artifacts/sweeps`, `POST …/{id}/collect`). Pure.

import { fmtBytes, isObj, num, plural, str } from './format.js';

const STREAM_NAMES = { EVENTS: 'event log', WORK: 'work queue', TELEMETRY: 'telemetry', DLQ: 'dead letters' };

/** A stream's name as a person reads it. */
export function streamLabel(stream) {
  return STREAM_NAMES[stream] || String(stream || '').toLowerCase() || 'stream';
}

/**
 * `GET /api/storage` → `{ streams: [{ stream, label, bytes, messages, max, share, tone }],
 * artifacts: { files, bytes } | null, warn }`. `share` is bytes / limit (null without a limit);
 * `tone` is `crit` when full, `warn` past the warning share, else ''.
 */
export function normalizeStorage(data) {
  const warn = isObj(data) && num(data.warn_fraction) ? data.warn_fraction : 0.8;
  const streams = [];
  for (const s of isObj(data) && Array.isArray(data.streams) ? data.streams : []) {
    if (!isObj(s) || !str(s.stream)) continue;
    const bytes = num(s.bytes);
    const max = num(s.max_bytes);
    const share = bytes !== null && max ? bytes / max : null;
    const tone = share === null ? '' : share >= 0.999 ? 'crit' : share >= warn ? 'warn' : '';
    streams.push({ stream: s.stream, label: streamLabel(s.stream), bytes: bytes, messages: num(s.messages), max: max, share: share, tone: tone });
  }
  const a = isObj(data) && isObj(data.artifacts) ? data.artifacts : null;
  const artifacts = a && num(a.files) !== null && num(a.bytes) !== null ? { files: a.files, bytes: a.bytes } : null;
  return { streams: streams, artifacts: artifacts, warn: warn };
}

function normalizeCandidate(raw) {
  if (!isObj(raw) || !str(raw.sha256)) return null;
  const outcome = ['pending', 'collected', 'kept'].indexOf(raw.outcome) === -1 ? 'pending' : raw.outcome;
  return { sha256: raw.sha256, bytes: num(raw.bytes), age_secs: num(raw.age_secs), outcome: outcome, why: str(raw.why), links: num(raw.links) };
}

/** One sweep as the API answers it; null when it is not one. */
export function normalizeSweep(raw) {
  if (!isObj(raw) || !str(raw.id)) return null;
  const status = ['planned', 'collecting', 'finished'].indexOf(raw.status) === -1 ? 'planned' : raw.status;
  const n = (v) => num(v) || 0;
  return {
    id: raw.id,
    status: status,
    planned_at: str(raw.planned_at),
    retention_secs: num(raw.retention_secs),
    candidates_count: n(raw.candidates_count),
    candidate_bytes: n(raw.candidate_bytes),
    more: n(raw.more),
    referenced: n(raw.referenced),
    young: n(raw.young),
    pending: n(raw.pending),
    collected: n(raw.collected),
    collected_bytes: n(raw.collected_bytes),
    kept: n(raw.kept),
    candidates: Array.isArray(raw.candidates) ? raw.candidates.map(normalizeCandidate).filter(Boolean) : null,
  };
}

/** `GET /api/artifacts/sweeps` → `{ sweeps, retentionDays, schedule }`, newest first. */
export function normalizeSweeps(data) {
  const sweeps = isObj(data) && Array.isArray(data.sweeps) ? data.sweeps.map(normalizeSweep).filter(Boolean) : [];
  sweeps.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const days = isObj(data) ? num(data.retention_days) : null;
  const s = isObj(data) && isObj(data.schedule) ? data.schedule : {};
  const every = num(s.every_hours);
  const keepJobs = num(s.render_job_retention_days);
  const schedule = { everyHours: every && every > 0 ? every : null, collect: s.collect === true, jobDays: keepJobs && keepJobs > 0 ? keepJobs : null };
  return { sweeps: sweeps, retentionDays: days && days > 0 ? days : 7, schedule: schedule };
}

/** An interval in hours as a person says it ("24 hours", "2 days", "30 minutes"). */
function fmtHours(hours) {
  if (hours < 1) return plural(Math.max(1, Math.round(hours * 60)), 'minute');
  if (hours >= 48) return plural(Math.round((hours / 24) * 10) / 10, 'day');
  return plural(Math.round(hours * 10) / 10, 'hour');
}

/** What runs on its own, in one line. */
export function scheduleLine(schedule) {
  if (!schedule || !schedule.everyHours) return 'Sweeps run when an admin plans one ([gateway] artifact_sweep_every_hours runs them on their own).';
  const what = schedule.collect ? 'planned and deleted at once' : 'planned and waits here for an admin to delete what it names';
  const jobs = schedule.jobDays ? ' Finished render jobs nobody shared are deleted ' + fmtRetention(schedule.jobDays * 86400) + ' after they end.' : '';
  return 'Every ' + fmtHours(schedule.everyHours) + ' a sweep is ' + what + ' (nothing is recorded when there is nothing to delete).' + jobs;
}

/** A retention in days as a person says it ("7 days", "1 hour"). */
export function fmtRetention(secs) {
  const s = num(secs);
  if (s === null) return '';
  if (s < 86400) return plural(Math.round(s / 3600), 'hour');
  return plural(Math.round((s / 86400) * 10) / 10, 'day');
}

/** What a sweep found or did, in one line. */
export function sweepSummary(sweep) {
  if (!sweep) return '';
  const left = plural(sweep.referenced, 'file') + ' in use, ' + sweep.young + ' newer than ' + (fmtRetention(sweep.retention_secs) || 'the retention');
  if (sweep.status === 'finished') {
    const kept = sweep.kept ? ', ' + sweep.kept + ' kept' : '';
    return 'deleted ' + plural(sweep.collected, 'file') + ' (' + fmtBytes(sweep.collected_bytes) + ')' + kept + ' \u00b7 ' + left;
  }
  if (!sweep.candidates_count) return 'nothing to delete \u00b7 ' + left;
  const more = sweep.more ? ' (and ' + sweep.more + ' more for the next sweep)' : '';
  const done = sweep.status === 'collecting' ? ', ' + sweep.pending + ' still to go' : '';
  return plural(sweep.candidates_count, 'file') + ' (' + fmtBytes(sweep.candidate_bytes) + ') nothing uses' + more + done + ' \u00b7 ' + left;
}

/** The delete button's label for a sweep that can still be collected, else null. */
export function collectLabel(sweep) {
  if (!sweep || sweep.status === 'finished' || !sweep.candidates_count) return null;
  if (sweep.status === 'collecting') return 'Finish deleting (' + sweep.pending + ' left)';
  return 'Delete ' + plural(sweep.candidates_count, 'file') + ' (' + fmtBytes(sweep.candidate_bytes) + ')';
}

/** A retention the form may ask for: days from an hour to ten years, or null. */
export function parseRetentionDays(input) {
  const t = String(input === undefined || input === null ? '' : input).trim();
  if (!/^\d+(\.\d+)?$/.test(t)) return null;
  const days = Number(t);
  return days >= 1 / 24 && days <= 3650 ? days : null;
}

/** A candidate's fate, in words. */
export function candidateOutcome(c) {
  if (!c) return '';
  if (c.outcome === 'collected') return 'deleted' + (c.links ? ' with ' + plural(c.links, 'job link') : '');
  if (c.outcome === 'kept') return 'kept: ' + (c.why || 'no reason given');
  return 'would be deleted';
}
