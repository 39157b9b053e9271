// The overview (home, `#/`): what a homelab owner looks at first. What needs attention; nodes
// with their GPUs and VRAM; the render jobs running and waiting; recent failures. Every item
// links into its room.

import { api } from '../api.js';
import { bar, h, hc, roomLink } from '../dom.js';
import { FAILURE_LIMIT, refreshAllRender, studio, subscribeRender } from '../render-feed.js';
import { DASH, fmtAge, fmtPercent, fmtSince, fmtUsage, plural, ratioPercent, str, tailId, text, truncate } from '../state/format.js';
import { attention, jobSummary, nodeSummary, recentFailures } from '../state/overview.js';
import { gpuLine, jobBadge, nodeBadge, progressBar } from '../widgets.js';

const QUEUED_SHOWN = 5;
const RENDER_EVERY_MS = 250;

const html = `
<div id="overview-setup" class="ov-setup" hidden></div>
<div id="overview-attention" class="ov-attention" role="status" aria-live="polite"></div>
<div id="overview-stats" class="ov-stats"></div>
<div class="ov-grid">
  <section class="panel ov-panel-nodes" aria-labelledby="ov-nodes-title">
    <div class="panel-head"><h2 id="ov-nodes-title">Nodes &amp; GPUs</h2><a class="room-link small" href="#/nodes">all details \u2192</a></div>
    <div id="overview-nodes" class="ov-nodes"></div>
  </section>
  <div class="ov-side">
    <section class="panel ov-panel-jobs" aria-labelledby="ov-jobs-title">
      <div class="panel-head"><h2 id="ov-jobs-title">Render jobs</h2><a class="room-link small" href="#/studio">open the Studio \u2192</a></div>
      <div id="overview-jobs" class="ov-jobs"></div>
    </section>
    <section class="panel ov-panel-failures" aria-labelledby="ov-failures-title">
      <div class="panel-head"><h2 id="ov-failures-title">Recent failures</h2><a class="room-link small" href="#/dlq">dead letters \u2192</a></div>
      <ol id="overview-failures" class="ov-failures"></ol>
    </section>
  </div>
</div>`;

function stat(label, value, sub, href, tone) {
  const a = hc('a', 'ov-stat' + (tone ? ' tone-' + tone : ''), [h('span', 'ov-stat-label', label), h('span', 'ov-stat-value', value)]);
  a.href = href;
  if (sub) a.appendChild(typeof sub === 'string' ? h('span', 'ov-stat-sub', sub) : sub);
  return a;
}

function nodeCard(n, href) {
  const card = h('a', 'ov-node status-' + n.status);
  card.href = href;
  card.dataset.nodeId = n.id;
  const head = hc('div', 'ov-node-head', [h('span', 'node-id', n.id), nodeBadge(n.status, null), h('span', 'small muted ov-seen', fmtAge(n.age))]);
  card.appendChild(head);
  const ram = fmtUsage(n.ramUsed, n.ramTotal);
  const facts = n.provisional ? 'awaiting inventory' : (n.hostname || DASH) + ' \u00b7 CPU ' + fmtPercent(n.cpu) + ' \u00b7 RAM ' + ram;
  card.appendChild(h('div', 'ov-node-facts small', facts));
  if (!n.gpus.length) card.appendChild(h('div', 'ov-node-nogpu small muted', 'no GPU'));
  for (const g of n.gpus) card.appendChild(gpuLine(g, null));
  return card;
}

function jobLine(job, href) {
  const a = h('a', 'ov-job status-' + (str(job.status) || 'unknown'));
  a.href = href;
  a.dataset.jobId = job.job_id;
  const prompt = job.params && str(job.params.prompt);
  a.appendChild(
    hc('div', 'ov-job-main', [
      h('span', 'qjob-id', tailId(job.job_id)),
      h('span', 'mode-tag', text(job.mode)),
      jobBadge(job.status),
      h('span', 'ov-job-prompt', prompt ? truncate(prompt, 70) : DASH),
    ]),
  );
  if (job.status !== 'queued') {
    a.appendChild(hc('div', 'ov-job-run', [h('span', 'small muted', 'on ' + text(job.node_id)), progressBar(job.progress)]));
  }
  return a;
}

function failureLine(f, href, now) {
  const li = h('li', 'ov-failure kind-' + f.kind);
  li.dataset.key = f.key;
  const a = hc('a', 'ov-failure-link', [
    hc('div', 'ov-failure-head', [h('span', 'badge ov-kind', f.kind), h('span', 'ov-failure-title', f.title), h('span', 'small muted ov-when', fmtSince(f.when, now))]),
    h('div', 'ov-failure-detail', f.detail || DASH),
  ]);
  a.href = href;
  if (f.when) a.title = f.when;
  li.appendChild(a);
  return li;
}

function mount(ctx) {
  const q = (id) => ctx.root.querySelector('#' + id);
  const el = { attention: q('overview-attention'), stats: q('overview-stats'), nodes: q('overview-nodes'), jobs: q('overview-jobs'), failures: q('overview-failures') };
  let dlq = null; // { total, error } once the dead-letter room has asked
  let storage = null; // `GET /api/storage`, asked when the room shows
  let health = null; // `GET /health` (a 503 still says which check is down)
  let visible = false;
  let dirty = true;
  let timer = null;

  function renderAttention(items, nodes) {
    el.attention.textContent = '';
    el.attention.dataset.state = items.length ? 'attention' : 'ok';
    if (!items.length) {
      const line = nodes.counts.total ? 'All quiet: ' + plural(nodes.counts.online, 'node') + ' online, nothing failing.' : 'Welcome. Start an agent on each machine to see it here:';
      el.attention.appendChild(h('span', 'ov-ok', line));
      if (!nodes.counts.total) el.attention.appendChild(h('code', null, 'nebula agent'));
      return;
    }
    for (const item of items) {
      const cls = 'ov-alert tone-' + item.tone;
      el.attention.appendChild(item.room ? roomLink(ctx.href(item.room, item.params || {}), item.text, cls) : h('span', cls, item.text));
    }
  }

  function renderStats(nodes, jobs, failures) {
    el.stats.textContent = '';
    const c = nodes.counts;
    const nodeSub = c.total ? 'of ' + c.total + (c.stale ? ' \u00b7 ' + c.stale + ' stale' : '') + (c.offline ? ' \u00b7 ' + c.offline + ' offline' : '') : 'none yet';
    el.stats.appendChild(stat('Nodes online', String(c.online), nodeSub, ctx.href('nodes', {}), c.stale || c.offline ? 'warn' : ''));
    const vram = hc('span', 'ov-stat-sub', ['VRAM ' + (nodes.gpus.total ? fmtUsage(nodes.gpus.used, nodes.gpus.total) : DASH), bar(ratioPercent(nodes.gpus.used, nodes.gpus.total))]);
    el.stats.appendChild(stat('GPUs', String(nodes.gpus.count), vram, ctx.href('nodes', {}), ''));
    const queueSub = jobs.loaded ? jobs.queuedCount + ' queued' + (jobs.cap !== null ? ' of ' + jobs.cap : '') + (jobs.paused.paused ? ' \u00b7 paused' : '') : 'loading\u2026';
    el.stats.appendChild(stat('Rendering', String(jobs.running.length), queueSub, ctx.href('studio', {}), jobs.paused.paused ? 'warn' : ''));
    const dlqSub = dlq === null ? 'dead letters: \u2026' : dlq.total === null ? 'dead letters: unavailable' : 'dead letters: ' + dlq.total;
    const tone = dlq && dlq.total ? 'crit' : failures.length ? 'warn' : '';
    el.stats.appendChild(stat('Recent failures', String(failures.length), dlqSub, ctx.href('dlq', {}), tone));
  }

  function renderNodes(nodes) {
    el.nodes.textContent = '';
    if (!nodes.nodes.length) {
      const note = h('div', 'empty-note', 'no nodes yet \u2014 start an agent with ');
      note.appendChild(h('code', null, 'nebula agent'));
      note.append(' on each machine');
      el.nodes.appendChild(note);
      return;
    }
    for (const n of nodes.nodes) el.nodes.appendChild(nodeCard(n, ctx.href('nodes', { node: n.id })));
  }

  function renderJobs(jobs) {
    el.jobs.textContent = '';
    if (!jobs.loaded) return el.jobs.appendChild(h('div', 'empty-note', 'loading\u2026'));
    if (!jobs.running.length && !jobs.queued.length) {
      const note = h('div', 'empty-note', 'nothing running \u2014 ');
      note.appendChild(roomLink(ctx.href('studio', {}), 'submit a render in the Studio'));
      return el.jobs.appendChild(note);
    }
    for (const job of jobs.running) el.jobs.appendChild(jobLine(job, ctx.href('studio', { job: job.job_id })));
    for (const job of jobs.queued.slice(0, QUEUED_SHOWN)) el.jobs.appendChild(jobLine(job, ctx.href('studio', { job: job.job_id })));
    const more = jobs.queuedCount - Math.min(jobs.queued.length, QUEUED_SHOWN);
    if (more > 0) el.jobs.appendChild(roomLink(ctx.href('studio', {}), '+ ' + more + ' more queued', 'ov-more small'));
  }

  function renderFailures(failures, now) {
    el.failures.textContent = '';
    if (!failures.length) {
      el.failures.appendChild(h('li', 'empty-note', 'no failures \u2014 renders, chat replies and posts are all going through'));
      return;
    }
    for (const f of failures) el.failures.appendChild(failureLine(f, ctx.href(f.room, f.params), now));
  }

  function render() {
    timer = null;
    if (!visible) {
      dirty = true;
      return;
    }
    dirty = false;
    const now = Date.now();
    const nodes = nodeSummary(ctx.live, now);
    const jobs = jobSummary(studio);
    const failures = recentFailures(studio.failures, ctx.live.events, FAILURE_LIMIT);
    renderAttention(attention(nodes, jobs, failures, dlq, now, storage, health), nodes);
    renderStats(nodes, jobs, failures);
    renderNodes(nodes);
    renderJobs(jobs);
    renderFailures(failures, now);
  }

  function schedule() {
    if (!visible) dirty = true;
    else if (timer === null) timer = setTimeout(render, RENDER_EVERY_MS);
  }

  ctx.onChanges((changes) => {
    if (changes.reset || changes.nodes.size || changes.feed.length) schedule();
  });
  subscribeRender(schedule);
  ctx.subscribe('dlq', (value) => {
    dlq = value;
    schedule();
  });
  // The first-run wizard, while an admin has steps left and has not put it away.
  const setupCard = ctx.root.querySelector('#overview-setup');
  ctx.subscribe('setup', (value) => {
    setupCard.textContent = '';
    setupCard.hidden = !value || value.left === 0 || value.dismissed;
    if (setupCard.hidden) return;
    setupCard.appendChild(h('span', null, 'Setting up: ' + value.done + ' of ' + value.total + ' steps done. '));
    const link = h('a', null, 'Continue with ' + value.nextTitle);
    link.href = ctx.href('setup', {});
    setupCard.appendChild(link);
  });

  return {
    show() {
      visible = true;
      if (dirty) render();
      refreshAllRender();
      api('/api/storage').then((res) => {
        if (!res.ok) return;
        storage = res.data;
        schedule();
      });
      api('/health').then((res) => {
        health = res.data;
        schedule();
      });
    },
    hide() {
      visible = false;
    },
    tick: schedule, // ages and staleness move with time
  };
}

export default {
  id: 'overview',
  title: 'Overview',
  subtitle: 'your machines, GPUs and jobs at a glance',
  icon: 'M2 2h5v5H2zM9 2h5v3H9zM9 7h5v7H9zM2 9h5v5H2z',
  css: ['css/overview.css'],
  html: html,
  mount: mount,
};
