// The Studio's queue (live bars, reorder, cancel, pause) and its recent failures.

import { api } from '../api.js';
import { byIds, closest, emptyNote, h, hc, reconcile, showError } from '../dom.js';
import { refreshRender, studio } from '../render-feed.js';
import { DASH, fmtClock, isObj, num, str, tailId, text, truncate } from '../state/format.js';
import { isSimulated, queueJobs, queuePaused, reorderPriority, shownStatus } from '../state/studio.js';
import { jobBadge, progressBar, setProgress, simBadge } from '../widgets.js';

const PROMPT_CHARS = 90;
const CANCELLABLE = ['queued', 'assigned', 'running'];

function actionButton(action, label, title, enabled) {
  const b = h('button', 'btn btn-small' + (action === 'cancel' ? ' btn-danger' : ''), label);
  b.type = 'button';
  b.dataset.action = action;
  b.title = title;
  b.setAttribute('aria-label', title);
  b.disabled = !enabled;
  b.dataset.needs = 'operator'; // cancel and reorder: locked for viewers (locks.js)
  return b;
}

function jobId(job) {
  const id = h('span', 'qjob-id', tailId(job.job_id));
  id.title = 'job ' + job.job_id + (str(job.correlation_id) ? '\ncorrelation ' + job.correlation_id : '');
  return id;
}

function renderRow(job, jobs, justSubmitted) {
  const row = h('div', 'qjob status-' + (str(job.status) || 'unknown') + (justSubmitted ? ' just-submitted' : ''));
  row.dataset.jobId = job.job_id;
  row.dataset.status = str(job.status) || '';
  const prompt = isObj(job.params) ? str(job.params.prompt) : null;
  const p = h('span', 'qjob-prompt', prompt ? truncate(prompt, PROMPT_CHARS) : DASH);
  if (prompt) p.title = prompt;
  const badge = jobBadge(shownStatus(job));
  if (shownStatus(job) === 'waiting') badge.title = 'on ' + text(job.node_id) + ', waiting for its backend to begin it (in ComfyUI\u2019s own queue)';
  const main = hc('div', 'qjob-main', [jobId(job), h('span', 'mode-tag', text(job.mode)), badge, p]);
  const meta = hc('div', 'qjob-meta', [
    h('span', 'qjob-node', 'node ' + text(job.node_id)),
    h('span', 'qjob-backend', 'backend ' + text(job.backend)),
    isSimulated(job.backend) ? simBadge() : null,
    h('span', 'qjob-priority', 'prio ' + text(job.priority)),
    num(job.attempt) ? h('span', 'qjob-attempt', 'attempt ' + job.attempt + (num(job.max_attempts) ? '/' + job.max_attempts : '')) : null,
  ]);
  row.appendChild(hc('div', 'qjob-info', [main, meta]));
  row.appendChild(progressBar(job.progress));
  const queued = job.status === 'queued';
  row.appendChild(
    hc('div', 'qjob-actions', [
      actionButton('up', '\u25B2', 'move up (run sooner)', queued && reorderPriority(jobs, job.job_id, -1) !== null),
      actionButton('down', '\u25BC', 'move down (run later)', queued && reorderPriority(jobs, job.job_id, 1) !== null),
      actionButton('cancel', 'Cancel', 'cancel this job', CANCELLABLE.indexOf(job.status) !== -1),
    ]),
  );
  return row;
}

function renderFailure(job) {
  const li = h('li', 'failure');
  li.dataset.jobId = str(job.job_id) || '';
  const time = h('span', 'small muted failure-time', fmtClock(job.finished_at));
  if (str(job.finished_at)) time.title = str(job.finished_at);
  const head = hc('div', 'failure-head', [
    jobId(job),
    h('span', 'mode-tag', text(job.mode)),
    h('span', 'small muted', 'node ' + text(job.node_id)),
    isSimulated(job.backend) ? simBadge() : null,
    time,
  ]);
  li.appendChild(head);
  li.appendChild(h('div', 'failure-error', text(job.error)));
  return li;
}

function renderComfy(target) {
  const list = studio.queue && Array.isArray(studio.queue.comfyui) ? studio.queue.comfyui.filter(isObj) : [];
  target.textContent = '';
  target.hidden = !studio.queue; // nothing to say until the queue is loaded
  if (list.length === 0) {
    target.appendChild(h('span', 'small muted', 'ComfyUI: no supervised instances'));
    return;
  }
  target.appendChild(h('span', 'small muted', 'ComfyUI'));
  for (const c of list) {
    const state = str(c.state) || 'unknown';
    const chip = hc('span', 'comfy-chip comfy-' + state, [
      h('span', 'comfy-node', text(c.node_id)),
      h('span', 'comfy-state', state),
      str(c.vram_mode) ? h('span', 'comfy-vram', str(c.vram_mode)) : null,
      num(c.restarts) ? h('span', 'comfy-restarts', '\u21BB' + c.restarts) : null,
    ]);
    chip.dataset.nodeId = str(c.node_id) || '';
    chip.dataset.state = state;
    const tip = [];
    if (num(c.pid) !== null) tip.push('pid ' + c.pid);
    tip.push('restarts ' + text(c.restarts));
    if (str(c.reason)) tip.push(str(c.reason));
    if (str(c.updated_at)) tip.push('updated ' + str(c.updated_at));
    chip.title = tip.join('\n');
    target.appendChild(chip);
  }
}

export function mountQueue() {
  const el = byIds({
    root: 'studio',
    queue: 'studio-queue',
    error: 'studio-queue-error',
    count: 'studio-queue-count',
    pause: 'studio-pause',
    paused: 'studio-paused',
    comfyui: 'studio-comfyui',
    failures: 'studio-failures',
  });
  const rows = new Map(); // job_id -> { el, key }
  let lastSubmitted = null;

  function rowKey(job, jobs) {
    const prompt = str(isObj(job.params) ? job.params.prompt : null);
    const up = reorderPriority(jobs, job.job_id, -1) !== null;
    const down = reorderPriority(jobs, job.job_id, 1) !== null;
    return [shownStatus(job), job.mode, job.priority, job.node_id, job.backend, job.attempt, job.max_attempts, prompt, up, down, job.job_id === lastSubmitted].join('\u0001');
  }

  function renderPause() {
    const p = queuePaused(studio);
    el.pause.dataset.paused = p.paused ? 'true' : 'false';
    el.pause.textContent = p.paused ? 'Resume queue' : 'Pause queue';
    el.pause.classList.toggle('btn-warn', p.paused);
    el.paused.hidden = !p.paused;
    el.paused.textContent = p.paused ? 'PAUSED \u2014 nothing new starts; running jobs finish' + (p.reason ? ' (' + p.reason + ')' : '') : '';
    el.root.classList.toggle('queue-paused', p.paused);
  }

  function renderQueue() {
    const jobs = queueJobs(studio);
    emptyNote(el.queue, jobs.length ? null : studio.queue ? 'queue is empty \u2014 submit a render with the form' : 'loading\u2026');
    reconcile(el.queue, jobs, (job) => job.job_id, rows, (job, entry) => {
      const key = rowKey(job, jobs);
      if (entry && entry.key === key) {
        setProgress(entry.el.querySelector('.progress'), job.progress); // only the bar moved
        return entry;
      }
      return { el: renderRow(job, jobs, job.job_id === lastSubmitted), key: key };
    });
    const q = studio.queue;
    const queued = q ? num(q.queued) : null;
    const cap = q ? num(q.cap) : null;
    el.count.textContent = (queued === null ? DASH : queued) + ' / ' + (cap === null ? DASH : cap) + ' queued';
    el.count.classList.toggle('full', queued !== null && cap !== null && queued >= cap);
    renderPause();
    renderComfy(el.comfyui);
  }

  function renderFailures() {
    const list = Array.isArray(studio.failures) ? studio.failures.filter(isObj) : [];
    el.failures.textContent = '';
    if (list.length === 0) el.failures.appendChild(h('li', 'empty-note', studio.failures ? 'no failures' : 'loading\u2026'));
    for (const job of list) el.failures.appendChild(renderFailure(job));
  }

  async function queueAction(row, action, b) {
    const id = row.dataset.jobId;
    b.disabled = true;
    showError(el.error, '');
    let res;
    if (action === 'cancel') {
      res = await api('/api/render/jobs/' + encodeURIComponent(id) + '/cancel', { method: 'POST', json: {} });
    } else {
      const priority = reorderPriority(queueJobs(studio), id, action === 'up' ? -1 : 1);
      if (priority === null) {
        b.disabled = false;
        return;
      }
      res = await api('/api/render/jobs/' + encodeURIComponent(id) + '/priority', { method: 'POST', json: { priority: priority } });
    }
    if (!res.ok) {
      showError(el.error, tailId(id) + ': ' + res.message);
      b.disabled = false;
    }
    refreshRender({ queue: true });
  }

  async function togglePause() {
    const paused = queuePaused(studio).paused;
    el.pause.disabled = true;
    showError(el.error, '');
    const res = paused ? await api('/api/render/queue/resume', { method: 'POST' }) : await api('/api/render/queue/pause', { method: 'POST', json: {} });
    el.pause.disabled = false;
    if (!res.ok) {
      showError(el.error, (paused ? 'resume: ' : 'pause: ') + res.message);
      return;
    }
    studio.pausedLive = { paused: !paused, reason: paused ? null : 'paused by admin' };
    renderPause();
    refreshRender({ queue: true });
  }

  el.pause.addEventListener('click', togglePause);
  el.queue.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const row = b ? b.closest('[data-job-id]') : null;
    if (b && row && !b.disabled) queueAction(row, b.dataset.action, b);
  });

  return {
    renderQueue: renderQueue,
    renderFailures: renderFailures,
    setLastSubmitted: (id) => {
      lastSubmitted = id;
    },
    // A refresh's failure shows until a refresh succeeds; other errors stay until replaced.
    showRefreshError: (message) => {
      if (message) showError(el.error, message);
      else if (el.error.textContent.indexOf('refresh failed') === 0) showError(el.error, '');
    },
  };
}
