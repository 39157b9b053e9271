// Storage: what the event log, the other streams and the artifact store hold, against their
// limits; and artifact sweeps — plan one (a dry run: the files no render job, share link, video
// project or schedule uses and nobody wrote for the retention period), look at what it names,
// then delete them (admin). Each step is recorded on the event log.

import { api } from '../api.js';
import { bar, button, closest, h, hc, showError } from '../dom.js';
import { DASH, fmtBytes, fmtClock, fmtSince, plural, ratioPercent } from '../state/format.js';
import { candidateOutcome, collectLabel, fmtRetention, normalizeStorage, normalizeSweep, normalizeSweeps, parseRetentionDays, scheduleLine, sweepSummary } from '../state/storage.js';

const POLL_MS = 60 * 1000;

const html = `
<section class="panel panel-storage" aria-label="Storage">
  <div class="panel-head">
    <h2>What is stored</h2>
    <button id="storage-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="storage-error" class="studio-error" role="alert" hidden></div>
  <table id="storage-table">
    <thead><tr><th>Where</th><th>Holds</th><th>Size</th><th>Limit</th><th class="storage-bar-col">Used</th></tr></thead>
    <tbody id="storage-rows"></tbody>
  </table>
</section>
<section class="panel panel-sweeps" aria-label="Artifact sweeps">
  <div class="panel-head">
    <h2>Artifact sweeps</h2>
    <span class="small muted">a dry run first; nothing is deleted until you say so</span>
  </div>
  <form id="sweep-form" class="sweep-form" data-needs="admin">
    <label>Leave files written in the last <input id="sweep-days" name="days" inputmode="decimal" size="5" autocomplete="off"> days</label>
    <button id="sweep-plan" class="btn btn-primary btn-small" type="submit">Plan a sweep (dry run)</button>
    <span id="sweep-form-note" class="small muted" role="status"></span>
  </form>
  <div id="sweep-schedule" class="small muted sweep-schedule"></div>
  <div id="sweep-error" class="studio-error" role="alert" hidden></div>
  <ol id="sweeps" class="sweep-list" aria-live="polite"></ol>
</section>`;

function storageRow(where, holds, bytes, max, tone) {
  const tr = h('tr');
  if (tone) tr.classList.add(tone);
  tr.appendChild(h('td', null, where));
  tr.appendChild(h('td', 'num', holds));
  tr.appendChild(h('td', 'num', fmtBytes(bytes)));
  tr.appendChild(h('td', 'num', max ? fmtBytes(max) : 'no limit of its own'));
  const used = h('td', 'storage-bar-col');
  const percent = max ? ratioPercent(bytes, max) : null;
  used.appendChild(bar(percent));
  used.appendChild(h('span', 'small muted storage-percent', percent === null ? DASH : percent.toFixed(percent < 10 ? 1 : 0) + '%'));
  tr.appendChild(used);
  return tr;
}

function renderCandidates(sweep) {
  const ol = h('ol', 'sweep-candidates');
  for (const c of sweep.candidates || []) {
    const li = hc('li', 'sweep-candidate ' + c.outcome, [
      h('span', 'mono', c.sha256.slice(0, 12) + '\u2026'),
      h('span', 'num', fmtBytes(c.bytes)),
      h('span', 'small muted', c.age_secs === null ? DASH : 'written ' + fmtSince(new Date(Date.now() - c.age_secs * 1000).toISOString(), Date.now())),
      h('span', 'sweep-outcome', candidateOutcome(c)),
    ]);
    li.title = c.sha256;
    ol.appendChild(li);
  }
  return ol;
}

function renderSweep(sweep, ui, now) {
  const li = h('li', 'sweep ' + sweep.status);
  li.dataset.sweep = sweep.id;
  li.dataset.status = sweep.status;
  const head = h('div', 'sweep-head');
  head.appendChild(h('span', 'badge sweep-status', sweep.status));
  const when = h('span', 'small muted', 'planned ' + fmtSince(sweep.planned_at, now) + ' \u00b7 ' + fmtClock(sweep.planned_at) + ' \u00b7 files unused for ' + (fmtRetention(sweep.retention_secs) || DASH));
  if (sweep.planned_at) when.title = sweep.planned_at;
  head.appendChild(when);
  li.appendChild(head);
  li.appendChild(h('div', 'sweep-summary', sweepSummary(sweep)));
  const actions = h('div', 'sweep-actions');
  const label = collectLabel(sweep);
  if (label) {
    const del = button(ui.busy ? 'Deleting\u2026' : label, 'btn-small btn-danger', 'delete the files this sweep names (each is checked again first)');
    del.dataset.action = 'collect';
    del.dataset.needs = 'admin';
    del.disabled = !!ui.busy;
    actions.appendChild(del);
  }
  if (sweep.candidates_count) {
    const show = button(ui.open ? 'Hide files' : 'Files', 'btn-small');
    show.dataset.action = 'files';
    actions.appendChild(show);
  }
  if (ui.message) actions.appendChild(h('span', 'sweep-message ' + (ui.ok ? 'ok' : 'bad'), ui.message));
  li.appendChild(actions);
  if (ui.open && sweep.candidates) li.appendChild(renderCandidates(sweep));
  return li;
}

function mount(ctx) {
  const rows = ctx.root.querySelector('#storage-rows');
  const storageError = ctx.root.querySelector('#storage-error');
  const list = ctx.root.querySelector('#sweeps');
  const sweepError = ctx.root.querySelector('#sweep-error');
  const form = ctx.root.querySelector('#sweep-form');
  const days = ctx.root.querySelector('#sweep-days');
  const note = ctx.root.querySelector('#sweep-form-note');
  const refreshButton = ctx.root.querySelector('#storage-refresh');
  const schedule = ctx.root.querySelector('#sweep-schedule');
  let sweeps = null; // null until the first answer
  const full = new Map(); // id -> the sweep with its candidates, once asked for
  const uis = new Map(); // id -> { open, busy, message, ok }
  let loading = false;

  const uiOf = (id) => {
    if (!uis.has(id)) uis.set(id, { open: false, busy: false, message: null, ok: true });
    return uis.get(id);
  };

  function renderStorage(storage) {
    rows.textContent = '';
    for (const s of storage.streams) rows.appendChild(storageRow(s.label, s.messages === null ? DASH : plural(s.messages, 'message'), s.bytes, s.max, s.tone));
    if (storage.artifacts) rows.appendChild(storageRow('artifact store', plural(storage.artifacts.files, 'file'), storage.artifacts.bytes, null, ''));
  }

  function renderSweeps() {
    list.textContent = '';
    if (sweeps === null) return;
    if (!sweeps.length) list.appendChild(h('li', 'empty-note', 'no sweeps yet \u2014 plan one to see what nothing uses'));
    const now = Date.now();
    for (const s of sweeps) list.appendChild(renderSweep(full.get(s.id) || s, uiOf(s.id), now));
  }

  async function load() {
    if (loading) return;
    loading = true;
    refreshButton.disabled = true;
    try {
      const [storage, listed] = await Promise.all([api('/api/storage'), api('/api/artifacts/sweeps')]);
      if (storage.ok) {
        showError(storageError, '');
        renderStorage(normalizeStorage(storage.data));
      } else if (storage.status !== 401) {
        showError(storageError, 'storage unavailable: ' + storage.message + (storage.status ? ' (HTTP ' + storage.status + ')' : ''));
      }
      if (listed.ok) {
        showError(sweepError, '');
        const got = normalizeSweeps(listed.data);
        sweeps = got.sweeps;
        if (!days.value) days.value = String(got.retentionDays);
        schedule.textContent = scheduleLine(got.schedule);
        // A listed sweep replaces its older full copy when it moved on.
        for (const s of sweeps) {
          const had = full.get(s.id);
          if (had && (had.status !== s.status || had.pending !== s.pending)) full.delete(s.id);
        }
        renderSweeps();
      } else if (listed.status !== 401) {
        showError(sweepError, 'sweeps unavailable: ' + listed.message + (listed.status ? ' (HTTP ' + listed.status + ')' : ''));
      }
    } finally {
      loading = false;
      refreshButton.disabled = false;
    }
  }

  async function openFiles(id) {
    const ui = uiOf(id);
    ui.open = !ui.open;
    if (ui.open && !full.has(id)) {
      const res = await api('/api/artifacts/sweeps/' + encodeURIComponent(id));
      if (res.ok) full.set(id, normalizeSweep(res.data));
      else ui.message = 'files unavailable: ' + res.message;
    }
    renderSweeps();
  }

  async function collect(id) {
    const sweep = full.get(id) || (sweeps || []).find((s) => s.id === id);
    if (!sweep || !window.confirm(collectLabel(sweep) + '? Files written or used since the plan are kept.')) return;
    const ui = uiOf(id);
    ui.busy = true;
    ui.message = null;
    renderSweeps();
    const res = await api('/api/artifacts/sweeps/' + encodeURIComponent(id) + '/collect', { method: 'POST', json: {} });
    ui.busy = false;
    ui.ok = res.ok;
    if (res.ok) {
      const done = normalizeSweep(res.data);
      full.set(id, done);
      ui.message = 'done';
      sweeps = sweeps.map((s) => (s.id === id ? done : s));
    } else {
      ui.message = res.message + (res.status === 503 ? ' \u2014 ask again to go on' : '');
    }
    renderSweeps();
    load();
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const wanted = parseRetentionDays(days.value);
    if (wanted === null) {
      note.textContent = 'days: a number from 0.042 (an hour) to 3650';
      return;
    }
    note.textContent = 'looking through the store\u2026';
    const res = await api('/api/artifacts/sweeps', { method: 'POST', json: { retention_days: wanted } });
    if (!res.ok) {
      note.textContent = 'not planned: ' + res.message;
      return;
    }
    const planned = normalizeSweep(res.data);
    note.textContent = planned && planned.candidates_count ? 'planned: look at the files, then delete them' : 'planned: nothing to delete';
    if (planned) {
      full.set(planned.id, planned);
      uiOf(planned.id).open = planned.candidates_count > 0;
      sweeps = [planned].concat((sweeps || []).filter((s) => s.id !== planned.id));
      renderSweeps();
    }
  });
  list.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const li = b ? b.closest('li[data-sweep]') : null;
    if (!li || b.disabled) return;
    if (b.dataset.action === 'collect') collect(li.dataset.sweep);
    else openFiles(li.dataset.sweep);
  });
  refreshButton.addEventListener('click', load);
  setInterval(() => {
    if (!document.hidden && ctx.root.offsetParent !== null) load();
  }, POLL_MS);

  return { show: () => load() };
}

export default {
  id: 'storage',
  title: 'Storage',
  subtitle: 'what the event log and the artifact store hold; sweep away the artifacts nothing uses',
  icon: 'M3 3h10v3H3zM3 7h10v3H3zM3 11h10v2H3z',
  css: ['css/nodes.css', 'css/storage.css'],
  html: html,
  mount: mount,
};
