// Hosts: machines reached over SSH — each host's load, memory, disk and uptime as last read,
// its pinned host key (a refused new key shown loudly, with an accept button for admins), a
// form to add hosts (admins), and a command runner whose output streams in from the log as
// the control plane records it. `#/hosts?host=<name>` picks the runner's host.

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { DASH, fmtBytes, fmtClock, fmtUptime, plural, text } from '../state/format.js';
import { execFromView, execSummary, foldExec, hostRequest, normalizeHosts, touchesHosts } from '../state/hosts.js';

const POLL_MS = 5000;

const html = `
<section class="panel panel-hosts" aria-label="Hosts">
  <div class="panel-head">
    <span id="hosts-summary" class="small muted"></span>
    <button id="hosts-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="hosts-error" class="studio-error" role="alert" hidden></div>
  <div class="table-wrap">
    <table id="hosts">
      <thead>
        <tr>
          <th scope="col">Host</th>
          <th scope="col">Load</th>
          <th scope="col">Memory</th>
          <th scope="col">Disk /</th>
          <th scope="col">Uptime</th>
          <th scope="col">Host key</th>
          <th scope="col">Actions</th>
        </tr>
      </thead>
      <tbody></tbody>
    </table>
  </div>
</section>
<div class="split">
  <section class="panel panel-host-run" aria-labelledby="host-run-title">
    <div class="panel-head"><h2 id="host-run-title">Run a command</h2></div>
    <form id="host-run-form" class="host-form" autocomplete="off" novalidate>
      <label class="field" for="host-run-host"><span class="field-label">Host</span><select id="host-run-host"></select></label>
      <label class="field" for="host-run-command"><span class="field-label">Command <span class="small">(operators: the host's allowlist)</span></span>
        <input id="host-run-command" type="text" maxlength="4096" spellcheck="false" placeholder="uptime" required></label>
      <label class="field" for="host-run-timeout"><span class="field-label">Timeout, seconds</span>
        <input id="host-run-timeout" type="number" min="1" max="86400" step="1" value="60"></label>
      <div class="form-actions">
        <button id="host-run" class="btn btn-primary" type="submit" data-needs="operator">Run</button>
        <span id="host-run-status" class="small" role="status" aria-live="polite"></span>
      </div>
      <div id="host-run-error" class="studio-error" role="alert" hidden></div>
    </form>
    <pre id="host-run-output" class="host-output" aria-live="polite" hidden></pre>
    <h3 class="small muted">Recent commands</h3>
    <ol id="host-execs" class="host-execs"></ol>
  </section>
  <section class="panel panel-host-add" aria-labelledby="host-add-title">
    <div class="panel-head"><h2 id="host-add-title">Add a host</h2></div>
    <form id="host-add-form" class="host-form" autocomplete="off" novalidate data-needs="admin">
      <label class="field" for="host-name"><span class="field-label">Name <span class="small">(a-z, 0-9, -)</span></span><input id="host-name" type="text" maxlength="64" placeholder="nas"></label>
      <label class="field" for="host-address"><span class="field-label">Address</span><input id="host-address" type="text" placeholder="192.168.1.20"></label>
      <label class="field" for="host-port"><span class="field-label">Port</span><input id="host-port" type="number" min="1" max="65535" placeholder="22"></label>
      <label class="field" for="host-user"><span class="field-label">User</span><input id="host-user" type="text" placeholder="nebula"></label>
      <label class="field" for="host-key-secret"><span class="field-label">Key secret <span class="small">(the vault secret holding the private key)</span></span><input id="host-key-secret" type="text" placeholder="ssh-nas"></label>
      <label class="field" for="host-allowlist"><span class="field-label">Operators may run <span class="small">(one per line, * for any words)</span></span><textarea id="host-allowlist" rows="3" placeholder="systemctl status *&#10;docker ps"></textarea></label>
      <div class="form-actions">
        <button id="host-add" class="btn btn-primary" type="submit" data-needs="admin">Add host</button>
        <span id="host-add-notice" class="small" role="status" aria-live="polite"></span>
      </div>
      <div id="host-add-error" class="studio-error" role="alert" hidden></div>
    </form>
  </section>
</div>`;

function load3(load) {
  return load.map((v) => (v === null ? DASH : v.toFixed(2))).join(' ');
}

function renderRow(row, note) {
  const tr = h('tr', 'host-row');
  tr.dataset.host = row.name;
  tr.appendChild(hc('td', 'host-name', [h('div', 'mono', row.name), h('div', 'small muted', row.target)]));
  const m = row.metrics;
  if (m) {
    tr.appendChild(h('td', 'mono small host-load', load3(m.load)));
    tr.appendChild(h('td', 'small', m.memAvailable === null ? DASH : fmtBytes(m.memAvailable) + ' free of ' + fmtBytes(m.memTotal)));
    tr.appendChild(h('td', 'small', m.root ? fmtBytes(m.root.used) + ' / ' + fmtBytes(m.root.total) : DASH));
    tr.appendChild(h('td', 'small', fmtUptime(m.uptime)));
  } else {
    const td = h('td', 'small host-unread ' + (row.error ? 'bad' : 'muted'), row.error || 'not read yet');
    td.colSpan = 4;
    tr.appendChild(td);
  }
  const key = h('td', 'small host-key');
  if (row.refusedKey) {
    key.appendChild(h('div', 'badge host-key-refused', 'refused'));
    key.appendChild(h('div', 'mono', row.refusedKey));
    key.appendChild(h('div', 'muted', 'pinned ' + text(row.key)));
  } else key.appendChild(h('div', 'mono', row.key || 'pinned on first contact'));
  tr.appendChild(key);
  const actions = h('td', 'host-actions');
  const run = button('run', 'btn-small', 'run a command on ' + row.name);
  run.dataset.action = 'run';
  actions.appendChild(run);
  if (row.refusedKey) {
    const accept = button('accept new key', 'btn-small', 'pin ' + row.refusedKey + ' (check it is really the host\u2019s new key)');
    accept.dataset.action = 'accept';
    accept.dataset.needs = 'admin';
    actions.appendChild(accept);
  }
  const remove = button(note && note.confirmRemove ? 'confirm remove' : 'remove', 'btn-small btn-danger', 'forget ' + row.name + ' and its pinned key');
  remove.dataset.action = 'remove';
  remove.dataset.needs = 'admin';
  actions.appendChild(remove);
  if (note && note.message) actions.appendChild(h('div', 'small host-note ' + (note.ok ? 'ok' : 'bad'), note.message));
  tr.appendChild(actions);
  return tr;
}

function renderExec(exec) {
  const li = h('li', 'host-exec status-' + exec.status);
  li.dataset.execId = exec.id;
  li.appendChild(h('span', 'small muted', fmtClock(exec.at)));
  li.appendChild(h('span', 'mono', ' ' + text(exec.host) + '$ ' + text(exec.command)));
  li.appendChild(h('span', 'small muted', exec.actor ? ' by ' + exec.actor : ''));
  li.appendChild(h('span', 'badge host-exec-status', exec.status));
  li.appendChild(h('span', 'small', ' ' + execSummary(exec)));
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const q = (id) => root.querySelector('#' + id);
  const tbody = root.querySelector('#hosts tbody');
  const ui = {
    summary: q('hosts-summary'), error: q('hosts-error'), refresh: q('hosts-refresh'),
    runForm: q('host-run-form'), runHost: q('host-run-host'), runCommand: q('host-run-command'), runTimeout: q('host-run-timeout'),
    runStatus: q('host-run-status'), runError: q('host-run-error'), output: q('host-run-output'), execList: q('host-execs'),
    addForm: q('host-add-form'), addNotice: q('host-add-notice'), addError: q('host-add-error'),
  };
  const execs = new Map();
  const notes = new Map();
  let rows = [];
  let watching = null; // the exec id whose output is shown
  let wanted = null; // the host the route asked for
  let poll = null;

  function render() {
    tbody.textContent = '';
    ui.summary.textContent = plural(rows.length, 'host') + (rows.some((r) => r.refusedKey) ? ' \u00b7 a host key was refused' : '');
    if (!rows.length) {
      const td = h('td', null, 'no hosts yet \u2014 an admin adds them below (the private key goes in the vault first)');
      td.colSpan = 7;
      tbody.appendChild(hc('tr', 'empty-row', [td]));
    }
    for (const row of rows) tbody.appendChild(renderRow(row, notes.get(row.name)));
    const chosen = ui.runHost.value || wanted;
    ui.runHost.textContent = '';
    for (const row of rows) ui.runHost.appendChild(h('option', null, row.name));
    if (chosen && rows.some((r) => r.name === chosen)) ui.runHost.value = chosen;
  }

  function renderExecs() {
    ui.execList.textContent = '';
    const list = Array.from(execs.values()).reverse();
    if (!list.length) ui.execList.appendChild(h('li', 'empty-note', 'no commands yet'));
    for (const exec of list) ui.execList.appendChild(renderExec(exec));
    const exec = watching ? execs.get(watching) : null;
    if (!exec) return;
    ui.output.hidden = false;
    ui.output.textContent = '';
    for (const chunk of exec.chunks) ui.output.appendChild(h('span', 'out-' + chunk.stream, chunk.text));
    ui.runStatus.textContent = execSummary(exec);
    ui.runStatus.dataset.status = exec.status;
  }

  async function load() {
    ui.refresh.disabled = true;
    const res = await api('/api/hosts');
    ui.refresh.disabled = false;
    if (!res.ok) {
      if (res.status !== 401) showError(ui.error, 'hosts unavailable: ' + res.message);
      return;
    }
    showError(ui.error, '');
    rows = normalizeHosts(res.data);
    render();
  }

  async function run(ev) {
    ev.preventDefault();
    showError(ui.runError, '');
    const host = ui.runHost.value;
    const command = ui.runCommand.value.trim();
    if (!host || !command) return showError(ui.runError, 'pick a host and write a command');
    const timeout = Number(ui.runTimeout.value || 60);
    ui.runStatus.textContent = 'sending\u2026';
    const res = await api('/api/hosts/' + encodeURIComponent(host) + '/exec', { method: 'POST', json: { command: command, timeout_secs: timeout } });
    if (!res.ok) {
      ui.runStatus.textContent = '';
      return showError(ui.runError, res.message);
    }
    watching = res.data.exec_id;
    ui.output.hidden = false;
    ui.output.textContent = '';
    ui.runStatus.textContent = 'requested\u2026';
    // The live feed brings the output; the stored execution fills anything it missed.
    const done = await api('/api/host-execs/' + encodeURIComponent(watching) + '?wait=120');
    if (done.ok && done.data && done.data.exec_id === watching) {
      execs.set(watching, execFromView(done.data));
      renderExecs();
    }
  }

  async function add(ev) {
    ev.preventDefault();
    showError(ui.addError, '');
    const built = hostRequest({
      name: q('host-name').value, address: q('host-address').value, port: q('host-port').value,
      user: q('host-user').value, keySecret: q('host-key-secret').value, allowlist: q('host-allowlist').value,
    });
    if (built.error) return showError(ui.addError, built.error);
    const res = await api('/api/hosts', { method: 'POST', json: built.body });
    if (!res.ok) return showError(ui.addError, res.message);
    ui.addNotice.textContent = 'added ' + built.body.name + '; its key is pinned on first contact';
    ui.addForm.reset();
    load();
  }

  async function act(name, action) {
    if (action === 'run') {
      ui.runHost.value = name;
      ui.runCommand.focus();
      return;
    }
    const row = rows.find((r) => r.name === name);
    if (!row) return;
    if (action === 'remove' && !(notes.get(name) || {}).confirmRemove) {
      notes.set(name, { confirmRemove: true });
      return render();
    }
    const res =
      action === 'remove'
        ? await api('/api/hosts/' + encodeURIComponent(name), { method: 'DELETE' })
        : await api('/api/hosts/' + encodeURIComponent(name) + '/accept-key', { method: 'POST', json: { fingerprint: row.refusedKey } });
    notes.set(name, { ok: res.ok, message: res.ok ? (action === 'remove' ? 'removed' : 'new key pinned') : res.message });
    await load();
  }

  tbody.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const tr = b ? b.closest('tr[data-host]') : null;
    if (!tr || b.disabled) return;
    act(tr.dataset.host, b.dataset.action);
  });
  ui.refresh.addEventListener('click', load);
  ui.runForm.addEventListener('submit', run);
  ui.addForm.addEventListener('submit', add);

  ctx.onChanges((changes) => {
    let folded = false;
    let touched = false;
    for (const item of changes.events) {
      if (foldExec(execs, item.env)) folded = true;
      if (touchesHosts(item.env)) touched = true;
    }
    if (folded) renderExecs();
    if (touched && poll !== null) load();
  });
  render();
  renderExecs();

  return {
    show(params) {
      if (params && params.host) wanted = params.host;
      load();
      if (poll === null) poll = setInterval(load, POLL_MS);
    },
    hide() {
      if (poll !== null) clearInterval(poll);
      poll = null;
    },
  };
}

export default {
  id: 'hosts',
  title: 'Hosts',
  subtitle: 'machines over SSH: load, memory, disk, pinned host keys; run a command and watch its output',
  icon: 'M2 3h12v7H2zM5 13h6M8 10v3',
  css: ['css/nodes.css', 'css/hosts.css'],
  html: html,
  mount: mount,
};
