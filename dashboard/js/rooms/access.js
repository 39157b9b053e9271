// Access: the gateway's named API tokens and their roles (admins only). The list with a revoke
// for each active token, and a form that issues a new one; its text is shown once, here, and
// never again (the gateway keeps only a hash of it).

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { actorLabel, buildTokenRequest, canRevoke, createdToken, expiresLabel, fmtDateTime, isForbidden, normalizeTokens, revokeQuestion, ROLE_NOTES, ROLES, roleAllows, statusDetail } from '../state/access.js';
import { DASH, plural, text } from '../state/format.js';

const NEEDS = 'admin';

const html = `
<div id="access" class="access">
  <div class="split">
    <section class="panel panel-token-create" aria-labelledby="token-create-title">
      <div class="panel-head"><h2 id="token-create-title">New token</h2></div>
      <form id="token-create-form" class="token-create-form" autocomplete="off" novalidate data-needs="admin">
        <label class="field" for="token-name"><span class="field-label">Name <span class="small">(a-z, 0-9, - and _)</span></span>
          <input id="token-name" name="name" type="text" maxlength="64" spellcheck="false" placeholder="grafana" required></label>
        <label class="field" for="token-role"><span class="field-label">Role</span>
          <select id="token-role" name="role">${ROLES.map((r) => `<option value="${r}">${r} \u2014 ${ROLE_NOTES[r]}</option>`).join('')}</select></label>
        <label class="field" for="token-expiry"><span class="field-label">Expires in days <span class="small">(optional; empty: never)</span></span>
          <input id="token-expiry" name="expiry" type="number" min="1" max="3650" step="1" inputmode="numeric" placeholder="never"></label>
        <div class="form-actions">
          <button id="token-create" class="btn btn-primary" type="submit" data-needs="admin">Create token</button>
          <span id="token-notice" class="studio-notice" role="status" aria-live="polite"></span>
        </div>
        <div id="token-create-error" class="studio-error" role="alert" hidden></div>
      </form>
      <div id="token-created-box" class="token-created-box" hidden>
        <label class="field-label" for="token-created">Token <span id="token-created-name" class="mono"></span></label>
        <div class="input-row">
          <textarea id="token-created" class="token-created" rows="3" readonly spellcheck="false"></textarea>
          <button id="token-copy" class="btn" type="button">Copy</button>
        </div>
        <p class="token-once">shown once \u2014 copy it now</p>
      </div>
    </section>

    <section class="panel panel-tokens" aria-labelledby="tokens-title">
      <div class="panel-head">
        <h2 id="tokens-title">API tokens</h2>
        <span id="tokens-count" class="small muted"></span>
        <button id="tokens-refresh" class="btn btn-small" type="button">Refresh</button>
      </div>
      <div id="access-error" class="studio-error" role="alert" hidden></div>
      <div class="tokens-wrap">
        <table class="tokens">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Issued</th>
              <th scope="col">Issued by</th>
              <th scope="col">Expires</th>
              <th scope="col"><span class="visually-hidden">Actions</span></th>
            </tr>
          </thead>
          <tbody id="tokens-table"></tbody>
        </table>
      </div>
    </section>
  </div>
</div>`;

function timeCell(iso, label) {
  const td = h('td', 'token-time mono', label === undefined ? fmtDateTime(iso) : label);
  if (iso) td.title = iso;
  return td;
}

function noteRow(message) {
  const tr = h('tr', 'empty-row');
  const td = h('td', 'empty-note', message);
  td.colSpan = 7;
  tr.appendChild(td);
  return tr;
}

function renderToken(token, state, self) {
  const tr = h('tr', 'token-row status-' + token.status);
  tr.dataset.name = token.name;
  tr.dataset.status = token.status;
  const name = hc('td', 'token-name', [h('span', 'mono', token.name), self ? h('span', 'tag tag-you', 'YOU') : null]);
  tr.appendChild(name);
  tr.appendChild(hc('td', null, [h('span', 'badge token-role role-' + (token.role || 'unknown'), text(token.role))]));
  const status = hc('td', null, [h('span', 'badge token-status status-' + token.status, token.status)]);
  const detail = statusDetail(token);
  if (detail) status.title = detail;
  tr.appendChild(status);
  tr.appendChild(timeCell(token.issued_at));
  tr.appendChild(h('td', 'token-by mono', actorLabel(token.issued_by)));
  tr.appendChild(timeCell(token.expires_at, expiresLabel(token)));
  const actions = h('td', 'token-actions');
  if (canRevoke(token)) {
    const revoke = button(state.busy ? 'Revoking\u2026' : 'Revoke', 'btn-small btn-danger', 'revoke ' + token.name + ': it stops working at once');
    revoke.dataset.action = 'revoke';
    revoke.dataset.needs = NEEDS;
    revoke.disabled = !!state.busy;
    actions.appendChild(revoke);
  }
  if (state.message) actions.appendChild(h('span', 'token-message ' + (state.ok ? 'ok' : 'bad'), state.message));
  tr.appendChild(actions);
  return tr;
}

function mount(ctx) {
  const q = (id) => ctx.root.querySelector('#' + id);
  const ui = {
    form: q('token-create-form'),
    name: q('token-name'),
    role: q('token-role'),
    expiry: q('token-expiry'),
    submit: q('token-create'),
    notice: q('token-notice'),
    formError: q('token-create-error'),
    createdBox: q('token-created-box'),
    createdName: q('token-created-name'),
    created: q('token-created'),
    copy: q('token-copy'),
    count: q('tokens-count'),
    refresh: q('tokens-refresh'),
    error: q('access-error'),
    table: q('tokens-table'),
  };
  let who = null; // { name, role } from the shell
  let tokens = null; // null until the first answer
  const states = new Map(); // name -> { busy, message, ok }
  let visible = false;
  let loading = false;
  let creating = false;

  const admin = () => !!who && roleAllows(who.role, NEEDS);

  function stateOf(name) {
    if (!states.has(name)) states.set(name, { busy: false, message: null, ok: false });
    return states.get(name);
  }

  function render() {
    ui.table.textContent = '';
    if (!admin()) {
      ui.count.textContent = DASH;
      ui.table.appendChild(noteRow(who ? 'tokens are managed with the admin role; ' + who.name + ' is ' + (who.role === 'operator' ? 'an ' : 'a ') + who.role : 'loading\u2026'));
      return;
    }
    if (tokens === null) {
      ui.table.appendChild(noteRow('loading\u2026'));
      return;
    }
    if (!tokens.length) ui.table.appendChild(noteRow('no named tokens yet \u2014 create one with the form'));
    for (const token of tokens) ui.table.appendChild(renderToken(token, stateOf(token.name), token.name === who.name));
    const active = tokens.filter((t) => t.status === 'active').length;
    ui.count.textContent = plural(active, 'active token') + (tokens.length > active ? ' \u00b7 ' + (tokens.length - active) + ' inactive' : '');
  }

  async function load() {
    if (loading || !admin()) return render();
    loading = true;
    ui.refresh.disabled = true;
    try {
      const res = await api('/api/tokens');
      if (!res.ok) {
        if (res.status === 401) return;
        showError(ui.error, (isForbidden(res) ? '' : 'tokens unavailable: ') + res.message);
        return;
      }
      showError(ui.error, '');
      tokens = normalizeTokens(res.data);
      for (const name of Array.from(states.keys())) if (!tokens.some((t) => t.name === name)) states.delete(name);
      render();
    } finally {
      loading = false;
      ui.refresh.disabled = false;
    }
  }

  function showCreated(created) {
    ui.createdBox.hidden = !created;
    ui.createdName.textContent = created ? created.name + ' \u00b7 ' + created.role + (created.expires_at ? ' \u00b7 expires ' + fmtDateTime(created.expires_at) : '') : '';
    ui.created.textContent = created ? created.token : '';
    ui.created.value = created ? created.token : '';
    ui.copy.textContent = 'Copy';
  }

  async function create(ev) {
    ev.preventDefault();
    if (creating) return;
    showError(ui.formError, '');
    ui.notice.textContent = '';
    showCreated(null);
    const built = buildTokenRequest({ name: ui.name.value, role: ui.role.value, expiry: ui.expiry.value });
    if (built.error) return showError(ui.formError, built.error);
    creating = true;
    ui.submit.disabled = true;
    ui.submit.textContent = 'Creating\u2026';
    try {
      const res = await api('/api/tokens', { method: 'POST', json: built.body });
      if (!res.ok) return showError(ui.formError, res.message);
      const created = createdToken(res.data);
      if (!created) return showError(ui.formError, 'the server answered without the token');
      showCreated(created);
      ui.notice.textContent = 'created ' + (created.name || built.body.name);
      ui.name.value = '';
      ui.expiry.value = '';
      try {
        ui.created.focus();
        ui.created.select();
      } catch (_e) {
        /* ignore */
      }
      load();
    } finally {
      creating = false;
      ui.submit.disabled = false;
      ui.submit.textContent = 'Create token';
    }
  }

  async function revoke(name) {
    const self = !!who && who.name === name;
    if (!window.confirm(revokeQuestion(name, self))) return;
    const state = stateOf(name);
    state.busy = true;
    state.message = null;
    render();
    const res = await api('/api/tokens/' + encodeURIComponent(name), { method: 'DELETE' });
    state.busy = false;
    state.ok = res.ok;
    state.message = res.ok ? null : res.message;
    if (!res.ok && res.status === 401) return; // our own token, revoked: the shell asks for another
    if (res.ok) showError(ui.error, '');
    render();
    if (res.ok) load();
  }

  async function copyToken() {
    const value = ui.created.value;
    if (!value) return;
    let done = false;
    try {
      if (navigator.clipboard && typeof navigator.clipboard.writeText === 'function') {
        await navigator.clipboard.writeText(value);
        done = true;
      }
    } catch (_e) {
      done = false;
    }
    if (!done) {
      ui.created.focus();
      ui.created.select();
      try {
        done = document.execCommand('copy');
      } catch (_e) {
        done = false;
      }
    }
    ui.copy.textContent = done ? 'Copied' : 'Select and copy';
  }

  ui.form.addEventListener('submit', create);
  ui.copy.addEventListener('click', copyToken);
  ui.refresh.addEventListener('click', load);
  ui.table.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action=revoke]');
    const tr = b ? b.closest('tr[data-name]') : null;
    if (tr && !b.disabled) revoke(tr.dataset.name);
  });
  ctx.subscribe('whoami', (next) => {
    const was = who ? who.name + '/' + who.role : '';
    who = next;
    if ((who ? who.name + '/' + who.role : '') === was) return;
    // Someone else (or nobody) now: what was shown for the one before goes.
    tokens = null;
    states.clear();
    showError(ui.error, '');
    showError(ui.formError, '');
    ui.notice.textContent = '';
    showCreated(null);
    if (visible) load();
    else render();
  });
  render();

  return {
    show() {
      visible = true;
      load();
    },
    hide() {
      visible = false;
      showCreated(null); // the new token's text is shown once: not again after leaving
      ui.notice.textContent = '';
    },
  };
}

export default {
  id: 'access',
  title: 'Access',
  subtitle: 'named API tokens and their roles: viewer, operator, admin',
  icon: 'M6.5 9.5a3 3 0 1 1 2-2L14 13v1.5h-2V13h-1.5v-1.5H9zM5.5 6.5h.01',
  needs: NEEDS,
  css: ['css/access.css'],
  html: html,
  mount: mount,
};
