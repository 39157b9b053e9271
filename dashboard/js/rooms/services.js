// Services: what each node's agent supervises (processes it runs, containers, systemd units):
// state, restarts, pid and the reason for the state, as the agent answers now, and the recent
// changes from the log (restarts, hangs, give-ups). `#/services?node=<id>` opens one node.

import { api } from '../api.js';
import { h, hc, showError, syncSelect } from '../dom.js';
import { DASH, fmtClock, plural } from '../state/format.js';
import { sortedNodeIds } from '../state/live.js';
import { isTrouble, normalizeServices, touchesServices } from '../state/services.js';

const POLL_MS = 3000;

const html = `
<section class="panel panel-services" aria-label="Services">
  <div class="panel-head">
    <label class="containers-pick">Node <select id="services-node"></select></label>
    <span id="services-agent" class="small muted"></span>
    <button id="services-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="services-error" class="studio-error" role="alert" hidden></div>
  <div class="table-wrap">
    <table id="services">
      <thead>
        <tr>
          <th scope="col">Service</th>
          <th scope="col">State</th>
          <th scope="col">Restarts</th>
          <th scope="col">PID</th>
          <th scope="col">Since</th>
          <th scope="col">Why</th>
        </tr>
      </thead>
      <tbody></tbody>
    </table>
  </div>
</section>
<section class="panel panel-service-history" aria-labelledby="service-history-title">
  <div class="panel-head"><h2 id="service-history-title">Changes</h2></div>
  <ol id="service-history" class="service-history"></ol>
</section>`;

function renderRow(row) {
  const tr = h('tr', 'service-row' + (isTrouble(row.state) ? ' trouble' : ''));
  tr.dataset.service = row.name;
  tr.dataset.state = row.state;
  tr.appendChild(hc('td', null, [h('div', 'mono', row.name), h('div', 'small muted', row.kind)]));
  tr.appendChild(hc('td', null, [h('span', 'badge service-state state-' + row.state, row.state.replace('_', ' '))]));
  tr.appendChild(h('td', 'small', String(row.restarts)));
  tr.appendChild(h('td', 'mono small', row.pid === null ? DASH : String(row.pid)));
  tr.appendChild(h('td', 'small', row.since ? fmtClock(row.since) : DASH));
  tr.appendChild(h('td', 'small service-reason', row.reason || DASH));
  return tr;
}

function renderChange(change) {
  const li = h('li', 'service-change' + (isTrouble(change.state) ? ' trouble' : ''));
  li.dataset.state = change.state;
  li.appendChild(h('span', 'small muted', fmtClock(change.at)));
  li.appendChild(h('span', 'mono', ' ' + change.service));
  li.appendChild(h('span', 'badge service-state state-' + change.state, change.state.replace('_', ' ')));
  li.appendChild(h('span', 'small', ' ' + change.reason + (change.restarts ? ' (restarts ' + change.restarts + ')' : '')));
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const select = root.querySelector('#services-node');
  const agentNote = root.querySelector('#services-agent');
  const error = root.querySelector('#services-error');
  const tbody = root.querySelector('#services tbody');
  const history = root.querySelector('#service-history');
  const refresh = root.querySelector('#services-refresh');
  let node = null;
  let shown = false;
  let poll = null;
  let generation = 0;

  function renderNodes() {
    node = syncSelect(select, sortedNodeIds(ctx.live), node);
  }

  function render(view) {
    tbody.textContent = '';
    history.textContent = '';
    if (!view) {
      agentNote.textContent = node === null ? 'no nodes yet' : 'loading\u2026';
      return;
    }
    agentNote.textContent = view.answered ? plural(view.rows.length, 'service') + ' on ' + node : 'agent ' + view.agent;
    agentNote.classList.toggle('bad', !view.answered);
    if (!view.rows.length) {
      const td = h('td', null, view.answered ? 'nothing supervised on ' + node + ' ([[agent.services]] in its configuration)' : 'the agent did not answer');
      td.colSpan = 6;
      tbody.appendChild(hc('tr', 'empty-row', [td]));
    }
    for (const row of view.rows) tbody.appendChild(renderRow(row));
    if (!view.history.length) history.appendChild(h('li', 'empty-note', 'no changes recorded'));
    for (const change of view.history) history.appendChild(renderChange(change));
  }

  async function load() {
    if (node === null) return render(null);
    const gen = ++generation;
    refresh.disabled = true;
    const res = await api('/api/nodes/' + encodeURIComponent(node) + '/services');
    refresh.disabled = false;
    if (gen !== generation) return;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'services of ' + node + ' unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    render(normalizeServices(res.data));
  }

  select.addEventListener('change', () => {
    node = select.value || null;
    ctx.setParams({ node: node });
    render(null);
    load();
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (changes.reset || changes.nodes.size > 0) {
      const before = node;
      renderNodes();
      if (shown && before === null && node !== null) load();
    }
    if (shown && changes.events.some((item) => touchesServices(item.env))) load();
  });
  renderNodes();
  render(null);

  return {
    show(params) {
      shown = true;
      if (params && params.node && params.node !== node) {
        node = params.node;
        renderNodes();
      }
      load();
      if (poll === null) poll = setInterval(load, POLL_MS);
    },
    hide() {
      shown = false;
      if (poll !== null) clearInterval(poll);
      poll = null;
    },
  };
}

export default {
  id: 'services',
  title: 'Services',
  subtitle: 'what each node supervises: state, restarts, why; and every change',
  icon: 'M8 2v3M8 11v3M2 8h3M11 8h3M8 5a3 3 0 100 6 3 3 0 000-6z',
  css: ['css/nodes.css', 'css/services.css'],
  html: html,
  mount: mount,
};
