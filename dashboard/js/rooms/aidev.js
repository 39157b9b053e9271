// AI Developer: ask the local LLM for a change on one of the configured repositories, follow
// the job step by step (live over the websocket), see its builds and its diff (highlighted by
// the vendored highlight.js), and — for those allowed — approve or reject the change, cancel a
// job, or roll a merged change back. `#/aidev?job=<id>` opens one job.

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { fmtSince, plural } from '../state/format.js';
import { actions, diffWithLanguages, normalizeJob, normalizeJobs, stepWords, touchesJobs } from '../state/aidev.js';

const LANGUAGES = ['rust', 'python', 'javascript', 'typescript', 'go', 'ini', 'json', 'bash', 'yaml', 'markdown', 'xml', 'css'];

const html = `
<section class="panel panel-aidev-new" aria-labelledby="aidev-new-title">
  <div class="panel-head"><h2 id="aidev-new-title">New job</h2></div>
  <form id="aidev-form" class="aidev-form">
    <label>repository <select name="repo" id="aidev-repo"></select></label>
    <label class="aidev-instruction">instruction <textarea name="instruction" rows="3" maxlength="16384" placeholder="Make the failing test in tests/parse.rs pass" required></textarea></label>
    <label>model <input name="model" placeholder="the repository's or default"></label>
    <button class="btn btn-small btn-primary" type="submit" data-needs="operator">Start</button>
    <span id="aidev-form-message" class="small"></span>
  </form>
</section>
<section class="panel panel-aidev-jobs" aria-label="AI developer jobs">
  <div class="panel-head">
    <span id="aidev-count" class="small muted">loading\u2026</span>
    <button id="aidev-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="aidev-error" class="studio-error" role="alert" hidden></div>
  <ol id="aidev-jobs" class="aidev-jobs"></ol>
</section>
<section class="panel panel-aidev-job" aria-label="The job" id="aidev-job" hidden></section>`;

let highlighter = null;

/** highlight.js with the grammars the diffs need, loaded once, on first use. */
async function loadHighlighter() {
  if (highlighter) return highlighter;
  const core = (await import('../vendor/highlight/core.min.js')).default;
  const grammars = await Promise.all(LANGUAGES.map((name) => import('../vendor/highlight/languages/' + name + '.min.js')));
  LANGUAGES.forEach((name, i) => core.registerLanguage(name, grammars[i].default));
  highlighter = core;
  return core;
}

function renderDiff(body, hljs) {
  const pre = h('pre', 'aidev-diff');
  for (const line of diffWithLanguages(body)) {
    const span = h('span', 'diff-line diff-' + line.kind);
    if (hljs && line.language && (line.kind === 'add' || line.kind === 'del' || line.kind === 'ctx') && line.text.length > 1) {
      span.appendChild(document.createTextNode(line.text[0]));
      const code = h('span', 'hljs');
      // highlight.js escapes what it is given: its HTML holds no markup of the diff's own.
      code.innerHTML = hljs.highlight(line.text.slice(1), { language: line.language, ignoreIllegals: true }).value;
      span.appendChild(code);
    } else {
      span.textContent = line.text || ' ';
    }
    pre.appendChild(span);
  }
  return pre;
}

function renderJobRow(job, chosen, now) {
  const li = h('li', 'aidev-row' + (job.id === chosen ? ' chosen' : ''));
  li.dataset.job = job.id;
  li.dataset.status = job.status;
  li.appendChild(h('span', 'badge aidev-status status-' + job.status, job.status.replace('_', ' ')));
  li.appendChild(h('span', 'mono', ' ' + job.repo + ' '));
  li.appendChild(h('span', 'aidev-instr', job.instruction.split('\n')[0]));
  li.appendChild(h('span', 'small muted', ' \u00b7 ' + job.by + ' ' + fmtSince(job.at, now)));
  return li;
}

function renderJob(job, hljs, ui) {
  const parts = [];
  const head = h('div', 'panel-head');
  head.appendChild(h('h2', null, 'Job ' + job.id.slice(0, 8)));
  head.appendChild(h('span', 'badge aidev-status status-' + job.status, job.status.replace('_', ' ')));
  parts.push(head);
  parts.push(h('p', 'aidev-instruction-text', job.instruction));
  const facts = [job.repo + ' @ ' + job.base];
  if (job.branch) facts.push('branch ' + job.branch);
  if (job.model) facts.push('model ' + job.model + (job.toolMode === 'json' ? ', JSON mode' : ''));
  if (job.runsOn) facts.push(job.runsOn === 'local' ? 'runs on the control plane' : 'runs on node ' + job.runsOn);
  else if (job.offeredTo) facts.push('offered to node ' + job.offeredTo);
  facts.push(plural(job.steps.length, 'step', 'steps') + ', ' + job.tokens + ' tokens');
  parts.push(h('div', 'small muted', facts.join(' \u00b7 ')));
  if (job.fallback) parts.push(h('div', 'small muted', job.fallback));
  if (job.error) parts.push(h('div', 'aidev-error', (job.failure ? job.failure + ': ' : '') + job.error));
  if (job.rollbackError) parts.push(h('div', 'aidev-error', 'rollback failed: ' + job.rollbackError));
  const buttons = h('div', 'aidev-actions');
  for (const action of actions(job)) {
    const labels = { approve: 'Approve and merge', reject: 'Reject', cancel: 'Cancel', rollback: 'Roll back' };
    const b = button(labels[action], 'btn-small ' + (action === 'approve' ? 'btn-primary' : action === 'reject' || action === 'rollback' ? 'btn-danger' : ''), labels[action]);
    b.dataset.action = action;
    b.dataset.needs = 'operator';
    b.disabled = ui.busy;
    buttons.appendChild(b);
  }
  if (ui.message) buttons.appendChild(h('span', 'small ' + (ui.ok ? 'ok' : 'bad'), ui.message));
  parts.push(buttons);
  if (job.decision) {
    parts.push(h('div', 'aidev-decision small', job.decision.rule ? 'auto-approved by ' + job.decision.rule + ': ' + job.decision.reason : 'needs a person: ' + job.decision.reason));
  }
  if (job.change) {
    parts.push(h('h3', null, 'Change'));
    parts.push(h('p', null, job.change.summary));
    parts.push(h('div', 'small muted', job.change.files.join(', ') + ' \u00b7 +' + job.change.added + ' \u2212' + job.change.removed + ' \u00b7 ' + job.change.commit.slice(0, 12) + (job.merged ? ' \u00b7 merged as ' + job.merged.slice(0, 12) : '') + (job.revert ? ' \u00b7 reverted by ' + job.revert.slice(0, 12) : '')));
    parts.push(renderDiff(job.change.diff, hljs));
  }
  if (job.builds.length) {
    parts.push(h('h3', null, 'Builds'));
    const ol = h('ol', 'aidev-builds');
    for (const b of job.builds) {
      const li = h('li', 'aidev-build ' + (b.ok ? 'ok' : 'bad'));
      li.appendChild(h('span', 'badge', b.ok ? 'green' : 'red'));
      li.appendChild(h('span', null, ' ' + b.toolchain + ': ' + (b.commands.join(', ') || 'nothing to run') + ' \u00b7 ' + (b.ms / 1000).toFixed(1) + ' s'));
      if (b.failing.length) li.appendChild(h('div', 'small', 'failing: ' + b.failing.join(', ')));
      const details = h('details');
      details.appendChild(h('summary', 'small', 'output'));
      details.appendChild(h('pre', 'aidev-output', b.output));
      li.appendChild(details);
      ol.appendChild(li);
    }
    parts.push(ol);
  }
  parts.push(h('h3', null, 'Steps'));
  const steps = h('ol', 'aidev-steps');
  for (const step of job.steps) {
    const li = h('li', 'aidev-step' + (step.refused ? ' refused' : ''));
    li.appendChild(h('div', 'mono', stepWords(step)));
    if (step.said && step.tool) li.appendChild(h('div', 'small muted', step.said));
    if (step.result) li.appendChild(h('pre', 'aidev-result', step.result));
    if (step.refused) li.insertBefore(h('span', 'badge refused-badge', 'refused'), li.firstChild);
    steps.appendChild(li);
  }
  if (!job.steps.length) steps.appendChild(h('li', 'empty-note', 'no steps yet'));
  parts.push(steps);
  return parts;
}

function mount(ctx) {
  const root = ctx.root;
  const list = root.querySelector('#aidev-jobs');
  const detail = root.querySelector('#aidev-job');
  const count = root.querySelector('#aidev-count');
  const error = root.querySelector('#aidev-error');
  const refresh = root.querySelector('#aidev-refresh');
  const form = root.querySelector('#aidev-form');
  const repoSelect = root.querySelector('#aidev-repo');
  const formMessage = root.querySelector('#aidev-form-message');
  let jobs = [];
  let chosen = null;
  let job = null;
  let shown = false;
  const ui = { busy: false, message: null, ok: false };

  function renderList() {
    const now = Date.now();
    list.textContent = '';
    if (!jobs.length) list.appendChild(h('li', 'empty-note', 'no jobs yet: ask for a change above'));
    for (const j of jobs) list.appendChild(renderJobRow(j, chosen, now));
    const running = jobs.filter((j) => j.status === 'running' || j.status === 'requested').length;
    const waiting = jobs.filter((j) => j.status === 'awaiting_approval').length;
    count.textContent = plural(jobs.length, 'job', 'jobs') + ' \u00b7 ' + running + ' running \u00b7 ' + waiting + ' waiting for approval';
    ctx.setBadge(waiting ? String(waiting) : '', 'warn');
  }

  async function renderDetail() {
    if (!job) {
      detail.hidden = true;
      return;
    }
    const hljs = job.change ? await loadHighlighter().catch(() => null) : null;
    detail.textContent = '';
    for (const part of renderJob(job, hljs, ui)) detail.appendChild(part);
    detail.hidden = false;
  }

  async function loadJob() {
    if (!chosen) {
      job = null;
      return renderDetail();
    }
    const res = await api('/api/ai-dev/jobs/' + encodeURIComponent(chosen));
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'job ' + chosen + ' unavailable: ' + res.message);
      return;
    }
    job = normalizeJob(res.data);
    renderDetail();
  }

  async function load() {
    refresh.disabled = true;
    const res = await api('/api/ai-dev/jobs');
    refresh.disabled = false;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'jobs unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    const data = normalizeJobs(res.data);
    jobs = data.jobs;
    const current = repoSelect.value;
    repoSelect.textContent = '';
    for (const r of data.repos) {
      const option = h('option', null, r.name + ' (' + r.base + ')');
      option.value = r.name;
      repoSelect.appendChild(option);
    }
    if (!data.repos.length) repoSelect.appendChild(h('option', null, 'none configured ([[ai_dev.repos]])'));
    if (current) repoSelect.value = current;
    renderList();
    loadJob();
  }

  async function act(action) {
    if (!job) return;
    ui.busy = true;
    ui.message = action + '\u2026';
    ui.ok = true;
    renderDetail();
    const path = action === 'approve' || action === 'reject'
      ? '/api/approvals/' + encodeURIComponent(job.approvalId) + '/' + action
      : '/api/ai-dev/jobs/' + encodeURIComponent(job.id) + '/' + action;
    const res = await api(path, { method: 'POST', json: action === 'approve' || action === 'reject' ? { comment: '' } : {} });
    ui.busy = false;
    ui.ok = res.ok;
    ui.message = res.ok ? action + ' recorded' : action + ' refused: ' + res.message;
    load();
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { repo: repoSelect.value, instruction: form.instruction.value.trim() };
    if (form.model.value.trim()) body.model = form.model.value.trim();
    formMessage.textContent = 'asking\u2026';
    formMessage.className = 'small';
    const res = await api('/api/ai-dev/jobs', { method: 'POST', json: body });
    formMessage.textContent = res.ok ? 'job ' + res.data.job_id.slice(0, 8) + ' started' : 'refused: ' + res.message;
    formMessage.className = 'small ' + (res.ok ? 'ok' : 'bad');
    if (res.ok) {
      form.instruction.value = '';
      chosen = res.data.job_id;
      ctx.setParams({ job: chosen });
      ui.message = null;
    }
    load();
  });
  list.addEventListener('click', (ev) => {
    const li = closest(ev, 'li[data-job]');
    if (!li) return;
    chosen = li.dataset.job;
    ui.message = null;
    ctx.setParams({ job: chosen });
    renderList();
    loadJob();
  });
  detail.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    if (b && !b.disabled) act(b.dataset.action);
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (shown && (changes.kind === 'snapshot' || changes.events.some((item) => touchesJobs(item.env)))) load();
  });

  return {
    show(params) {
      shown = true;
      if (params && params.job) chosen = params.job;
      load();
    },
    hide() {
      shown = false;
    },
  };
}

export default {
  id: 'aidev',
  title: 'AI Developer',
  subtitle: 'a local LLM changes code on its own branch; you approve what lands',
  icon: 'M4 4h8v8H4zM6 7h1M9 7h1M6 10h4M8 1v3',
  css: ['css/aidev.css', 'css/approvals.css'],
  html: html,
  mount: mount,
};
