// Apps (the Deploy Center): each app's releases — which one is live, which were good — its
// deploy runs with every step's output, live as the deployer records them, a Deploy button and
// a Roll back on every earlier release (admins). A run waiting for its approval links to it.
// `#/apps?app=<name>` opens one app.

import { api } from '../api.js';
import { button, closest, h, hc, roomLink, showError, syncSelect } from '../dom.js';
import { DASH, fmtClock } from '../state/format.js';
import { normalizeApp, normalizeApps, runWords, stepWords, touchesApps } from '../state/apps.js';

const html = `
<section class="panel panel-apps" aria-label="Apps">
  <div class="panel-head">
    <label class="containers-pick">App <select id="apps-app"></select></label>
    <span id="apps-summary" class="small muted"></span>
    <button id="apps-deploy" class="btn btn-small btn-primary" type="button" data-needs="admin">Deploy</button>
    <button id="apps-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="apps-error" class="studio-error" role="alert" hidden></div>
  <div id="apps-message" class="small" aria-live="polite"></div>
  <div class="table-wrap">
    <table id="app-releases">
      <thead><tr><th scope="col">Release</th><th scope="col">Containers</th><th scope="col">Spec</th><th scope="col"></th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
</section>
<section class="panel panel-app-runs" aria-labelledby="app-runs-title">
  <div class="panel-head"><h2 id="app-runs-title">Deploy runs</h2></div>
  <ol id="app-runs" class="app-runs"></ol>
</section>`;

function renderRelease(release) {
  const tr = h('tr', 'release-row' + (release.live ? ' live' : ''));
  tr.dataset.release = String(release.number);
  const marks = [h('span', 'mono', 'r' + release.number)];
  if (release.live) marks.push(h('span', 'badge release-live', 'live'));
  else if (release.good) marks.push(h('span', 'badge release-good', 'was live'));
  tr.appendChild(hc('td', null, marks));
  tr.appendChild(h('td', 'small mono', release.images.join(', ') || DASH));
  tr.appendChild(h('td', 'small mono muted', release.hash));
  const actions = h('td', 'release-actions');
  if (!release.live) {
    const label = (release.good ? 'Roll back to r' : 'Deploy r') + release.number;
    const back = button(label, 'btn-small', 'deploy release ' + release.number + ' again, exactly as it was recorded');
    back.dataset.action = 'rollback';
    back.dataset.needs = 'admin';
    actions.appendChild(back);
  }
  tr.appendChild(actions);
  return tr;
}

function renderRun(run, href) {
  const li = h('li', 'app-run status-' + run.status);
  li.dataset.run = run.id;
  li.dataset.status = run.status;
  const head = h('div', 'app-run-head');
  head.appendChild(h('span', 'badge run-status status-' + run.status, run.status.replace('_', ' ')));
  head.appendChild(h('span', null, ' release ' + run.release + (run.previous !== null ? ' (replacing ' + run.previous + ')' : '') + ' \u00b7 ' + runWords(run)));
  head.appendChild(h('span', 'small muted', ' \u00b7 ' + run.trigger + ' by ' + run.by + (run.at ? ' at ' + fmtClock(run.at) : '')));
  if (run.approval) {
    head.appendChild(h('span', 'small muted', ' \u00b7 '));
    head.appendChild(roomLink(href('approvals', { id: run.approval }), 'its approval', 'small'));
  }
  li.appendChild(head);
  // the run's error, unless a failed step below says the same
  if (run.error && !run.steps.some((s) => s.error === run.error)) li.appendChild(h('div', 'app-run-error', run.error));
  const steps = h('ol', 'run-steps');
  for (const step of run.steps) {
    const s = h('li', 'run-step step-' + step.status);
    s.dataset.step = step.step;
    s.dataset.status = step.status;
    s.appendChild(h('span', 'badge step-status', step.status));
    s.appendChild(h('span', null, ' ' + stepWords(step.step)));
    if (step.error) s.appendChild(h('div', 'small step-error', step.error));
    if (step.output) s.appendChild(h('pre', 'step-output', step.output.trim()));
    steps.appendChild(s);
  }
  li.appendChild(steps);
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const select = root.querySelector('#apps-app');
  const summary = root.querySelector('#apps-summary');
  const error = root.querySelector('#apps-error');
  const message = root.querySelector('#apps-message');
  const releases = root.querySelector('#app-releases tbody');
  const runs = root.querySelector('#app-runs');
  const deployButton = root.querySelector('#apps-deploy');
  const refresh = root.querySelector('#apps-refresh');
  let names = [];
  let chosen = null;
  let shown = false;
  let generation = 0;

  function render(app) {
    releases.textContent = '';
    runs.textContent = '';
    deployButton.disabled = chosen === null;
    if (!app) {
      summary.textContent = chosen === null ? 'no apps yet (POST /api/apps, or install one from the marketplace)' : 'loading\u2026';
      return;
    }
    summary.textContent = (app.live !== null ? 'release ' + app.live + ' live' : 'nothing live') + ' on ' + (app.nodes.join(', ') || DASH) + ' \u00b7 check: ' + app.check + (app.source ? ' \u00b7 source: ' + app.source : '');
    if (!app.releases.length) {
      const td = h('td', null, 'no releases yet: Deploy makes the first');
      td.colSpan = 4;
      releases.appendChild(hc('tr', 'empty-row', [td]));
    }
    for (const release of app.releases) releases.appendChild(renderRelease(release));
    if (!app.runs.length) runs.appendChild(h('li', 'empty-note', 'no deploys yet'));
    for (const run of app.runs) runs.appendChild(renderRun(run, ctx.href));
  }

  async function loadList() {
    const res = await api('/api/apps');
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'apps unavailable: ' + res.message);
      return;
    }
    names = normalizeApps(res.data).map((a) => a.name);
    chosen = syncSelect(select, names, chosen);
  }

  async function load() {
    const gen = ++generation;
    refresh.disabled = true;
    await loadList();
    if (chosen === null) {
      refresh.disabled = false;
      return render(null);
    }
    const res = await api('/api/apps/' + encodeURIComponent(chosen));
    refresh.disabled = false;
    if (gen !== generation) return;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'app ' + chosen + ' unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    render(normalizeApp(res.data));
  }

  async function ask(path, body, what) {
    message.textContent = what + '\u2026';
    message.className = 'small';
    const res = await api(path, { method: 'POST', json: body });
    message.textContent = res.ok ? what + ': run ' + res.data.run_id + ' (release ' + res.data.release + ')' : what + ' refused: ' + res.message;
    message.className = 'small ' + (res.ok ? 'ok' : 'bad');
    load();
  }

  deployButton.addEventListener('click', () => {
    if (chosen !== null) ask('/api/apps/' + encodeURIComponent(chosen) + '/deploy', {}, 'deploy of ' + chosen);
  });
  releases.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action=rollback]');
    const tr = b ? b.closest('tr[data-release]') : null;
    if (!tr || b.disabled || chosen === null) return;
    const number = Number(tr.dataset.release);
    ask('/api/apps/' + encodeURIComponent(chosen) + '/rollback', { release: number }, 'rollback of ' + chosen + ' to r' + number);
  });
  select.addEventListener('change', () => {
    chosen = select.value || null;
    ctx.setParams(chosen ? { app: chosen } : {});
    message.textContent = '';
    render(null);
    load();
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (shown && (changes.kind === 'snapshot' || changes.events.some((item) => touchesApps(item.env)))) load();
  });
  render(null);

  return {
    show(params) {
      shown = true;
      if (params && params.app) chosen = params.app;
      load();
    },
    hide() {
      shown = false;
    },
  };
}

export default {
  id: 'apps',
  title: 'Apps',
  subtitle: 'deploys with approvals, releases, automatic and one-click rollback',
  icon: 'M2 3h12v4H2zM2 9h12v4H2zM4 5h1M4 11h1',
  css: ['css/nodes.css', 'css/apps.css'],
  html: html,
  mount: mount,
};
