// Containers: each node's containers as its agent last listed them (state, health, image,
// ports, CPU, memory), start / stop / restart for operators and remove for admins, each carried
// out by the node's agent and answered here, and the log of container commands as they are
// recorded. `#/containers?node=<id>` opens one node.

import { api } from '../api.js';
import { button, closest, h, hc, showError, syncSelect } from '../dom.js';
import { actionsFor, addFollowed, commandOutcome, commandsOf, foldCommand, normalizeListing, touchesContainers } from '../state/containers.js';
import { DASH, fmtBytes, fmtClock, fmtPercent, isObj, plural, str, text } from '../state/format.js';
import { sortedNodeIds } from '../state/live.js';

const POLL_MS = 3000;
const WAIT_SECS = 30;
const LOG_LINES = 200;

const html = `
<section class="panel panel-containers" aria-label="Containers">
  <div class="panel-head">
    <label class="containers-pick">Node <select id="containers-node"></select></label>
    <span id="containers-docker" class="small muted"></span>
    <button id="containers-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="containers-error" class="studio-error" role="alert" hidden></div>
  <div class="table-wrap">
    <table id="containers">
      <thead>
        <tr>
          <th scope="col">Container</th>
          <th scope="col">State</th>
          <th scope="col">Image</th>
          <th scope="col">Ports</th>
          <th scope="col">CPU</th>
          <th scope="col">Memory</th>
          <th scope="col">Actions</th>
        </tr>
      </thead>
      <tbody></tbody>
    </table>
  </div>
  <div id="container-log" class="container-log" hidden>
    <div class="panel-head"><span id="container-log-title" class="small"></span><span id="container-log-follow-note" class="small muted"></span><button id="container-log-follow" class="btn btn-small" type="button" aria-pressed="false">Follow</button><button id="container-log-close" class="btn btn-small" type="button">Close</button></div>
    <pre id="container-log-text" class="ev-json"></pre>
  </div>
</section>
<section class="panel panel-container-commands" aria-labelledby="container-commands-title">
  <div class="panel-head"><h2 id="container-commands-title">Commands</h2></div>
  <ol id="container-commands" class="container-commands" aria-live="polite"></ol>
</section>`;

function stateBadge(row) {
  const badge = h('span', 'badge container-state state-' + row.state, row.state);
  badge.title = row.status;
  return badge;
}

function renderRow(row, note) {
  const tr = h('tr', 'container-row');
  tr.dataset.container = row.name;
  tr.dataset.state = row.state;
  const name = hc('td', 'container-name', [h('div', 'mono', row.name), row.compose ? h('div', 'small muted', row.compose) : null]);
  name.title = row.id;
  tr.appendChild(name);
  tr.appendChild(hc('td', 'container-status', [stateBadge(row), row.health ? h('span', 'small health-' + row.health, ' ' + row.health) : null, h('div', 'small muted', row.status)]));
  tr.appendChild(h('td', 'mono small', row.image || DASH));
  tr.appendChild(h('td', 'mono small', row.ports.length ? row.ports.join(', ') : DASH));
  tr.appendChild(h('td', 'small', row.cpu === null ? DASH : fmtPercent(row.cpu)));
  tr.appendChild(h('td', 'small', row.memUsed === null ? DASH : fmtBytes(row.memUsed) + (row.memLimit ? ' / ' + fmtBytes(row.memLimit) : '')));
  const actions = h('td', 'container-actions');
  for (const action of actionsFor(row)) {
    const b = button(action, 'btn-small', action + ' ' + row.name);
    b.dataset.action = action;
    b.dataset.needs = 'operator';
    b.disabled = !!(note && note.busy);
    actions.appendChild(b);
  }
  const logs = button('logs', 'btn-small', 'the last ' + LOG_LINES + ' lines of its log');
  logs.dataset.action = 'logs';
  actions.appendChild(logs);
  const remove = button(note && note.confirmRemove ? 'confirm remove' : 'remove', 'btn-small btn-danger', 'remove ' + row.name + ' (running ones are killed first)');
  remove.dataset.action = 'remove';
  remove.dataset.needs = 'admin';
  remove.disabled = !!(note && note.busy);
  actions.appendChild(remove);
  if (note && note.message) actions.appendChild(h('div', 'small container-note ' + (note.ok ? 'ok' : 'bad'), note.message));
  tr.appendChild(actions);
  return tr;
}

function renderCommand(command) {
  const li = h('li', 'container-command status-' + command.status);
  li.dataset.commandId = command.id;
  li.appendChild(h('span', 'small muted', fmtClock(command.at)));
  li.appendChild(h('span', 'mono', ' ' + text(command.action) + ' ' + text(command.container)));
  li.appendChild(h('span', 'small muted', ' on ' + text(command.node) + (command.actor ? ' by ' + command.actor : '')));
  li.appendChild(h('span', 'badge container-command-status', command.status));
  if (command.outcome) li.appendChild(h('span', 'small', ' ' + command.outcome));
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const select = root.querySelector('#containers-node');
  const docker = root.querySelector('#containers-docker');
  const error = root.querySelector('#containers-error');
  const tbody = root.querySelector('#containers tbody');
  const refreshButton = root.querySelector('#containers-refresh');
  const commandList = root.querySelector('#container-commands');
  const logBox = root.querySelector('#container-log');
  const logTitle = root.querySelector('#container-log-title');
  const logText = root.querySelector('#container-log-text');
  const followButton = root.querySelector('#container-log-follow');
  const followNote = root.querySelector('#container-log-follow-note');
  let logName = null; // the container whose log is shown
  let following = null; // { socket, view }
  const log = new Map();
  const notes = new Map(); // container name -> { busy, ok, message, confirmRemove }
  let node = null;
  let listing = null;
  let shown = false;
  let poll = null;
  let generation = 0;

  function renderNodes() {
    node = syncSelect(select, sortedNodeIds(ctx.live), node);
  }

  function render() {
    tbody.textContent = '';
    if (node === null) {
      docker.textContent = 'no nodes yet';
      return;
    }
    if (listing === null) {
      docker.textContent = 'loading\u2026';
      return;
    }
    docker.textContent = 'docker ' + listing.docker + (listing.sampledAt ? ' \u00b7 listed ' + fmtClock(listing.sampledAt) : '');
    docker.classList.toggle('bad', !listing.available);
    if (!listing.rows.length) {
      const td = h('td', null, listing.available ? 'no containers on ' + node : 'no listing: docker ' + listing.docker);
      td.colSpan = 7;
      tbody.appendChild(hc('tr', 'empty-row', [td]));
    }
    for (const row of listing.rows) tbody.appendChild(renderRow(row, notes.get(row.name)));
  }

  function renderCommands() {
    commandList.textContent = '';
    const commands = commandsOf(log, null);
    if (!commands.length) commandList.appendChild(h('li', 'empty-note', 'no container commands yet'));
    for (const command of commands) commandList.appendChild(renderCommand(command));
  }

  async function load() {
    if (node === null) return render();
    const gen = ++generation;
    refreshButton.disabled = true;
    const res = await api('/api/nodes/' + encodeURIComponent(node) + '/containers');
    refreshButton.disabled = false;
    if (gen !== generation) return;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'containers of ' + node + ' unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    listing = normalizeListing(res.data);
    render();
  }

  function stopFollowing(note) {
    if (following) {
      following.socket.onclose = null;
      following.socket.close();
    }
    following = null;
    followButton.textContent = 'Follow';
    followButton.setAttribute('aria-pressed', 'false');
    followNote.textContent = note || '';
  }

  function renderFollowed() {
    const view = following.view;
    logTitle.textContent = plural(view.lines.length, 'line') + ' of ' + logName + ' on ' + node;
    logText.textContent = view.lines.join('\n') || '(waiting for new lines)';
    logText.scrollTop = logText.scrollHeight;
    followNote.textContent =
      (view.skipped ? ' \u00b7 ' + fmtBytes(view.skipped) + ' left out (the log is faster than this view may show)' : '') +
      (view.ended ? ' \u00b7 ended: ' + view.ended : ' \u00b7 following');
  }

  async function follow() {
    if (following) return stopFollowing();
    if (logName === null) return;
    const res = await api('/api/ws-ticket', { method: 'POST' });
    const ticket = res.ok && isObj(res.data) ? str(res.data.ticket) : null;
    if (!ticket) return stopFollowing('cannot follow: ' + (res.message || 'no ticket'));
    const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = proto + '//' + window.location.host + '/api/nodes/' + encodeURIComponent(node) + '/containers/' + encodeURIComponent(logName) + '/logs/follow?tail=' + LOG_LINES + '&ticket=' + encodeURIComponent(ticket);
    const socket = new WebSocket(url);
    // The follow starts with its own tail, so what it shows has no gap and no line twice.
    following = { socket: socket, view: { lines: [], skipped: 0, ended: null } };
    followButton.textContent = 'Stop following';
    followButton.setAttribute('aria-pressed', 'true');
    followNote.textContent = ' \u00b7 connecting\u2026';
    socket.onmessage = (ev) => {
      let frame = null;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!following || following.socket !== socket) return;
      following.view = addFollowed(following.view, frame);
      renderFollowed();
    };
    socket.onclose = () => {
      if (following && following.socket === socket) stopFollowing(following.view.ended ? ' \u00b7 ended: ' + following.view.ended : ' \u00b7 the follow closed');
    };
  }

  async function showLogs(name) {
    stopFollowing();
    logName = name;
    logBox.hidden = false;
    logTitle.textContent = 'log of ' + name + ' on ' + node + ' \u2026';
    logText.textContent = '';
    const res = await api('/api/nodes/' + encodeURIComponent(node) + '/containers/' + encodeURIComponent(name) + '/logs?tail=' + LOG_LINES);
    if (!res.ok) {
      logTitle.textContent = 'log of ' + name + ': ' + res.message;
      return;
    }
    const lines = res.data && Array.isArray(res.data.lines) ? res.data.lines : [];
    logTitle.textContent = 'last ' + plural(lines.length, 'line') + ' of ' + name + ' on ' + node + (res.data.truncated ? ' (older lines left out)' : '');
    logText.textContent = lines.map((line) => (line && typeof line.text === 'string' ? line.text : '')).join('\n') || '(empty)';
  }

  async function act(name, action) {
    if (action === 'logs') return showLogs(name);
    const note = notes.get(name) || {};
    if (action === 'remove' && !note.confirmRemove) {
      notes.set(name, { confirmRemove: true });
      return render();
    }
    notes.set(name, { busy: true, ok: true, message: action + '\u2026' });
    render();
    const path = '/api/nodes/' + encodeURIComponent(node) + '/containers/' + encodeURIComponent(name);
    const res =
      action === 'remove'
        ? await api(path + '?force=true&wait=' + WAIT_SECS, { method: 'DELETE' })
        : await api(path + '/' + action + '?wait=' + WAIT_SECS, { method: 'POST', json: {} });
    const outcome = commandOutcome(res.status, res.data, res.ok ? null : res.message);
    notes.set(name, { busy: false, ok: outcome.ok, message: outcome.message });
    await load();
  }

  tbody.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const tr = b ? b.closest('tr[data-container]') : null;
    if (!tr || b.disabled) return;
    act(tr.dataset.container, b.dataset.action);
  });
  select.addEventListener('change', () => {
    node = select.value || null;
    listing = null;
    notes.clear();
    stopFollowing();
    logName = null;
    logBox.hidden = true;
    ctx.setParams({ node: node });
    render();
    load();
  });
  refreshButton.addEventListener('click', load);
  root.querySelector('#container-log-close').addEventListener('click', () => {
    stopFollowing();
    logName = null;
    logBox.hidden = true;
  });
  followButton.addEventListener('click', follow);

  ctx.onChanges((changes) => {
    if (changes.reset || changes.nodes.size > 0) renderNodes();
    let touched = false;
    let logged = false;
    for (const item of changes.events) {
      if (foldCommand(log, item.env)) logged = true;
      if (touchesContainers(item.env)) touched = true;
    }
    if (logged) renderCommands();
    if (touched && shown) load();
  });
  renderNodes();
  render();
  renderCommands();

  return {
    show(params) {
      shown = true;
      if (params && params.node && params.node !== node) {
        node = params.node;
        listing = null;
        renderNodes();
      }
      load();
      if (poll === null) poll = setInterval(load, POLL_MS);
    },
    hide() {
      shown = false;
      stopFollowing();
      if (poll !== null) clearInterval(poll);
      poll = null;
    },
  };
}

export default {
  id: 'containers',
  title: 'Containers',
  subtitle: "each node's containers: state, health, image, ports, use; start, stop, restart, remove",
  icon: 'M2 5l6-3 6 3v6l-6 3-6-3zM2 5l6 3 6-3M8 8v6',
  css: ['css/nodes.css', 'css/containers.css'],
  html: html,
  mount: mount,
};
