// The AI developer: jobs as `GET /api/ai-dev/jobs` and `GET /api/ai-dev/jobs/{id}` answer them,
// what each status allows, a step in words, and a diff split by file with each file's language
// (for the highlighter). Pure: no DOM.

import { isObj, num, str } from './format.js';
import { actorName, diffLines } from './approvals.js';

/** The list answer → `{ jobs, repos }`. */
export function normalizeJobs(data) {
  const d = isObj(data) ? data : {};
  const jobs = (Array.isArray(d.jobs) ? d.jobs : []).filter((j) => isObj(j) && str(j.job_id)).map(normalizeJob);
  const repos = (Array.isArray(d.repos) ? d.repos : []).filter(isObj).map((r) => ({ name: str(r.name) || '?', base: str(r.base) || 'main' }));
  return { jobs: jobs, repos: repos };
}

/** One job (whole, or as listed). */
export function normalizeJob(j) {
  const started = isObj(j.started) ? j.started : null;
  const change = isObj(j.change) ? j.change : null;
  const decision = isObj(j.decision) ? j.decision : null;
  return {
    id: str(j.job_id) || '?',
    repo: str(j.repo) || '?',
    base: str(j.base) || 'main',
    instruction: str(j.instruction) || '',
    status: str(j.status) || 'requested',
    by: actorName(j.requested_by),
    at: str(j.requested_at),
    branch: started ? str(started.branch) : null,
    model: started ? str(started.model) + ' (' + (str(started.model_rule) || '?') + ')' : null,
    toolMode: started ? str(started.tool_mode) : null,
    runsOn: started ? str(started.runs_on) : null,
    offeredTo: str(j.offered_to),
    fallback: str(j.fallback),
    tokens: num(j.tokens) || 0,
    steps: (Array.isArray(j.steps) ? j.steps : []).filter(isObj).map((s) => ({
      n: num(s.n) || 0,
      said: str(s.said) || '',
      tool: str(s.tool),
      arguments: str(s.arguments) || '',
      result: str(s.result) || '',
      refused: !!s.refused,
    })),
    builds: (Array.isArray(j.builds) ? j.builds : []).filter(isObj).map((b) => ({
      toolchain: str(b.toolchain) || '?',
      commands: (Array.isArray(b.commands) ? b.commands : []).map(str).filter(Boolean),
      ok: !!b.ok,
      exit: num(b.exit_status),
      ms: num(b.duration_ms) || 0,
      output: str(b.output) || '',
      failing: (Array.isArray(b.failing_tests) ? b.failing_tests : []).map(str).filter(Boolean),
    })),
    change: change
      ? {
          commit: str(change.commit) || '',
          summary: str(change.summary) || '',
          files: (Array.isArray(change.files) ? change.files : []).map(str).filter(Boolean),
          added: num(change.lines_added) || 0,
          removed: num(change.lines_removed) || 0,
          diff: str(change.diff) || '',
        }
      : null,
    decision: decision ? { rule: str(decision.auto_rule), reason: str(decision.reason) || '' } : null,
    approvalId: str(j.approval_id),
    merged: str(j.merged_commit),
    revert: str(j.revert_commit),
    rollbackError: str(j.rollback_error),
    cancelRequested: !!j.cancel_requested,
    failure: str(j.failure),
    error: str(j.error),
  };
}

/** What a person may do with a job in its status. */
export function actions(job) {
  switch (job.status) {
    case 'requested':
    case 'running':
    case 'approved':
      return job.cancelRequested ? [] : ['cancel'];
    case 'awaiting_approval':
      return job.approvalId ? ['approve', 'reject', 'cancel'] : ['cancel'];
    case 'merged':
      return ['rollback'];
    default:
      return [];
  }
}

/** A step in one line: `3. read_file {"path":"src/lib.rs"} → …` */
export function stepWords(step) {
  const call = step.tool ? step.tool + ' ' + step.arguments : 'said: ' + step.said;
  return step.n + '. ' + call;
}

const LANGUAGES = {
  rs: 'rust', py: 'python', js: 'javascript', mjs: 'javascript', ts: 'typescript', go: 'go',
  toml: 'ini', ini: 'ini', json: 'json', sh: 'bash', yml: 'yaml', yaml: 'yaml', md: 'markdown',
  html: 'xml', xml: 'xml', css: 'css',
};

/** The highlighter's language for a path, or null. */
export function languageOf(path) {
  const name = str(path).split('/').pop() || '';
  const dot = name.lastIndexOf('.');
  return dot < 0 ? null : LANGUAGES[name.slice(dot + 1).toLowerCase()] || null;
}

/**
 * A unified diff → its lines with their kind (as `diffLines`) and the language of the file each
 * belongs to (from its `+++ b/<path>` header).
 */
export function diffWithLanguages(body) {
  let language = null;
  return diffLines(body).map((line) => {
    if (line.kind === 'file' && line.text.startsWith('+++ ')) language = languageOf(line.text.slice(4).replace(/^b\//, ''));
    else if (line.kind === 'file' && line.text.startsWith('diff --git ')) language = languageOf(line.text.split(' ').pop().replace(/^b\//, ''));
    return { kind: line.kind, text: line.text, language: line.kind === 'file' || line.kind === 'hunk' ? null : language };
  });
}

/** Whether an event concerns the AI developer's jobs. */
export function touchesJobs(env) {
  return isObj(env) && env.aggregate_type === 'ai_dev_job';
}
