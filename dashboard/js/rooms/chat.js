// Chat: per-server settings (Discord guilds, Twitch channels: which commands are on and for
// whom, cooldown and quota, the bot's nickname and avatar in a guild) through
// /api/chat/settings, and the live log of chat commands; a command opens to every event it
// caused (its correlation), with a link that shows them in the event feed.

import { api } from '../api.js';
import { closest, h, hc, onActivateKey, showError } from '../dom.js';
import { commandKey, commandOutcome, commandPrefix, commandTyped, commandWhere, formToSettings, normalizeScope, REFUSALS, rolesHint, scopeLabel, settingsToForm, touchesChat } from '../state/chat.js';
import { fmtClock, isObj, plain, str, summarize } from '../state/format.js';
import { isFeedEvent } from '../state/live.js';

const LOG_LIMIT = 50;
const REFRESH_MIN_MS = 300;
const REFRESH_AGAIN_MS = 1500; // the projection may not have caught up with the websocket
const POLL_MS = 20 * 1000;

const html = `
<div id="chat" class="chat">
  <div class="split">
    <section class="panel panel-chat-settings" aria-labelledby="chat-settings-title">
      <div class="panel-head"><h2 id="chat-settings-title">Server settings</h2></div>
      <form id="chat-scope-form" class="chat-scope-form" autocomplete="off">
        <select id="chat-platform" aria-label="Platform">
          <option value="discord">Discord guild</option>
          <option value="twitch">Twitch channel</option>
        </select>
        <input id="chat-scope" type="text" spellcheck="false" placeholder="guild id or channel" aria-label="Guild id or channel" required>
        <button id="chat-open" class="btn" type="submit">Open</button>
      </form>
      <div id="chat-open-error" class="studio-error" role="alert" hidden></div>
      <ul id="chat-known" class="chat-known" aria-label="Servers with settings"></ul>
      <form id="chat-settings-form" class="chat-settings-form" autocomplete="off" novalidate hidden data-needs="admin">
        <div class="chat-settings-title"><span id="chat-settings-scope"></span> <span id="chat-settings-state" class="small muted"></span></div>
        <table class="chat-rules">
          <thead><tr><th scope="col">Command</th><th scope="col">On</th><th scope="col">Only for roles <span class="small" id="chat-roles-hint"></span></th></tr></thead>
          <tbody id="chat-rules"></tbody>
        </table>
        <div class="chat-fields">
          <label class="field" for="chat-cooldown"><span class="field-label">Cooldown per user (s)</span>
            <input id="chat-cooldown" type="number" min="0" max="86400" step="1"></label>
          <label class="field" for="chat-quota"><span class="field-label">Quota per server</span>
            <input id="chat-quota" type="number" min="0" step="1"></label>
          <label class="field" for="chat-quota-window"><span class="field-label">Quota window (s)</span>
            <input id="chat-quota-window" type="number" min="1" max="86400" step="1"></label>
          <label class="field field-wide" for="chat-refusals"><span class="field-label">Replies to refused commands <span class="small">(summaries are posted in Twitch channels; Discord answers each interaction)</span></span>
            <select id="chat-refusals"></select></label>
          <label class="field" data-platform="discord" for="chat-nickname"><span class="field-label">Bot nickname</span>
            <input id="chat-nickname" type="text" maxlength="32" spellcheck="false" placeholder="the bot's name"></label>
          <label class="field field-wide" data-platform="discord" for="chat-avatar"><span class="field-label">Bot avatar <span class="small">(https URL or data:image/\u2026 URI)</span></span>
            <input id="chat-avatar" type="text" spellcheck="false" placeholder="the bot's own avatar"></label>
        </div>
        <div class="form-actions">
          <button id="chat-save" class="btn btn-primary" type="submit" data-needs="admin">Save</button>
          <span id="chat-notice" class="studio-notice" role="status" aria-live="polite"></span>
        </div>
        <div id="chat-error" class="studio-error" role="alert" hidden></div>
      </form>
    </section>

    <section class="panel panel-chat-log" aria-labelledby="chat-log-title">
      <div class="panel-head">
        <h2 id="chat-log-title">Chat commands</h2>
        <select id="chat-log-platform" aria-label="Show commands from">
          <option value="">all platforms</option>
          <option value="discord">Discord</option>
          <option value="twitch">Twitch</option>
        </select>
      </div>
      <div id="chat-log-error" class="studio-error" role="alert" hidden></div>
      <ol id="chat-log" class="chat-log" aria-live="polite"></ol>
    </section>
  </div>
</div>`;

function mountSettings(root) {
  const q = (id) => root.querySelector('#' + id);
  const ui = {
    scopeForm: q('chat-scope-form'),
    platform: q('chat-platform'),
    scope: q('chat-scope'),
    known: q('chat-known'),
    openError: q('chat-open-error'),
    form: q('chat-settings-form'),
    formScope: q('chat-settings-scope'),
    formState: q('chat-settings-state'),
    rules: q('chat-rules'),
    rolesHint: q('chat-roles-hint'),
    cooldown: q('chat-cooldown'),
    quota: q('chat-quota'),
    quotaWindow: q('chat-quota-window'),
    refusals: q('chat-refusals'),
    nickname: q('chat-nickname'),
    avatar: q('chat-avatar'),
    save: q('chat-save'),
    notice: q('chat-notice'),
    error: q('chat-error'),
  };
  for (const [value, label] of REFUSALS) {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label;
    ui.refusals.appendChild(option);
  }
  let open = null; // { platform, scope } of the settings in the form
  let saving = false;

  function ruleRow(platform, rule) {
    const tr = h('tr', 'chat-rule');
    tr.dataset.command = rule.command;
    const on = document.createElement('input');
    on.type = 'checkbox';
    on.name = 'enabled';
    on.checked = rule.enabled;
    on.setAttribute('aria-label', rule.command + ' on');
    const roles = document.createElement('input');
    roles.type = 'text';
    roles.name = 'roles';
    roles.spellcheck = false;
    roles.placeholder = 'everyone';
    roles.value = rule.roles;
    roles.setAttribute('aria-label', rule.command + ' roles');
    tr.appendChild(h('td', 'chat-command-name', commandPrefix(platform) + rule.command));
    tr.appendChild(hc('td', null, [on]));
    tr.appendChild(hc('td', null, [roles]));
    return tr;
  }

  function fillForm(platform, scope, settings, customized) {
    open = { platform: platform, scope: scope };
    const form = settingsToForm(settings);
    ui.form.hidden = false;
    ui.form.dataset.platform = platform;
    ui.form.dataset.scope = scope;
    ui.formScope.textContent = scopeLabel(platform, scope);
    ui.formState.textContent = customized ? '' : '(defaults: nothing saved yet)';
    ui.rolesHint.textContent = rolesHint(platform);
    ui.rules.textContent = '';
    for (const rule of form.rules) ui.rules.appendChild(ruleRow(platform, rule));
    ui.cooldown.value = form.cooldown;
    ui.quota.value = form.quota;
    ui.quotaWindow.value = form.quotaWindow;
    ui.refusals.value = form.refusals;
    ui.nickname.value = form.nickname;
    ui.avatar.value = form.avatar;
    for (const node of ui.form.querySelectorAll('[data-platform]')) node.hidden = node.dataset.platform !== platform;
    showError(ui.error, '');
    ui.notice.textContent = '';
  }

  function readForm() {
    return {
      rules: Array.from(ui.rules.querySelectorAll('tr[data-command]'), (tr) => ({
        command: tr.dataset.command,
        enabled: tr.querySelector('input[name=enabled]').checked,
        roles: tr.querySelector('input[name=roles]').value,
      })),
      cooldown: ui.cooldown.value,
      quota: ui.quota.value,
      quotaWindow: ui.quotaWindow.value,
      refusals: ui.refusals.value,
      nickname: ui.nickname.value,
      avatar: ui.avatar.value,
    };
  }

  async function openSettings(platform, rawScope) {
    const scope = normalizeScope(rawScope);
    if (!scope) return;
    ui.platform.value = platform;
    ui.scope.value = scope;
    showError(ui.openError, '');
    const res = await api('/api/chat/settings/' + platform + '/' + encodeURIComponent(scope));
    if (!res.ok) {
      open = null; // nothing open, so a Save cannot land on the server shown before
      ui.form.hidden = true;
      showError(ui.openError, res.message);
      return;
    }
    const data = isObj(res.data) ? res.data : {};
    fillForm(platform, str(data.scope) || scope, isObj(data.settings) ? data.settings : {}, !!data.customized);
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    if (saving || !open) return;
    showError(ui.error, '');
    ui.notice.textContent = '';
    const built = formToSettings(open.platform, readForm());
    if (built.error) return showError(ui.error, built.error);
    saving = true;
    ui.save.disabled = true;
    ui.save.textContent = 'Saving\u2026';
    try {
      const res = await api('/api/chat/settings/' + open.platform + '/' + encodeURIComponent(open.scope), { method: 'PUT', json: built.settings });
      if (!res.ok) return showError(ui.error, res.message);
      ui.formState.textContent = '';
      ui.notice.textContent = 'saved';
      ui.notice.dataset.correlationId = (isObj(res.data) && str(res.data.correlation_id)) || '';
      setTimeout(loadKnown, REFRESH_AGAIN_MS);
    } finally {
      saving = false;
      ui.save.disabled = false;
      ui.save.textContent = 'Save';
    }
  }

  async function loadKnown() {
    const res = await api('/api/chat/settings');
    if (!res.ok) return;
    const list = isObj(res.data) && Array.isArray(res.data.settings) ? res.data.settings.filter(isObj) : [];
    ui.known.textContent = '';
    if (!list.length) ui.known.appendChild(h('li', 'small muted', 'no server has settings yet: open one by its guild id or channel'));
    for (const item of list) {
      const b = h('button', 'btn btn-link', (item.platform === 'discord' ? 'Discord ' : 'Twitch #') + plain(item.scope));
      b.type = 'button';
      b.dataset.platform = plain(item.platform);
      b.dataset.scope = plain(item.scope);
      ui.known.appendChild(hc('li', 'chat-known-item', [b]));
    }
  }

  ui.scopeForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    openSettings(ui.platform.value, ui.scope.value);
  });
  ui.known.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-scope]');
    if (b) openSettings(b.dataset.platform, b.dataset.scope);
  });
  ui.form.addEventListener('submit', saveSettings);
  return { loadKnown: loadKnown };
}

function mountLog(root, go) {
  const list = root.querySelector('#chat-log');
  const platform = root.querySelector('#chat-log-platform');
  const error = root.querySelector('#chat-log-error');
  const expanded = new Set(); // command ids whose details are open
  const detailsShown = new Map(); // command id -> { key, el }: refetched only when it changed
  let timer = null;
  let refreshing = false;
  let pending = false;
  let lastAt = 0;

  async function loadCaused(correlation, target) {
    const res = await api('/api/events?correlation_id=' + encodeURIComponent(correlation) + '&limit=200');
    target.textContent = '';
    if (!res.ok) return target.appendChild(h('li', 'studio-error', res.message));
    const events = isObj(res.data) && Array.isArray(res.data.events) ? res.data.events.filter(isObj) : [];
    const shown = events.filter(isFeedEvent);
    for (const e of shown) {
      const item = hc('li', 'chat-caused-item', [
        h('span', 'ev-time', fmtClock(e.occurred_at)),
        h('span', 'ev-type', plain(e.type)),
        h('span', 'ev-agg', plain(e.aggregate_type) + '/' + plain(e.aggregate_id)),
        h('span', 'ev-summary', summarize(e.data)),
      ]);
      item.dataset.type = plain(e.type);
      target.appendChild(item);
    }
    if (events.length > shown.length) target.appendChild(h('li', 'small muted', '+ ' + (events.length - shown.length) + ' progress events'));
    if (!events.length) target.appendChild(h('li', 'empty-note', 'no events yet'));
  }

  // Everything the command caused: its correlation's events, oldest first.
  function details(li) {
    const show = h('button', 'btn btn-link', 'show in the event feed');
    show.type = 'button';
    show.dataset.action = 'filter';
    const head = hc('div', 'chat-details-head', [h('span', 'small muted', 'correlation ' + li.dataset.correlationId), show]);
    const caused = hc('ol', 'chat-caused', [h('li', 'empty-note', 'loading\u2026')]);
    loadCaused(li.dataset.correlationId, caused);
    return hc('div', 'chat-details', [head, caused]);
  }

  function renderCommand(command) {
    const id = plain(command.command_id);
    const li = h('li', 'chat-entry platform-' + plain(command.platform));
    li.dataset.commandId = id;
    li.dataset.correlationId = plain(command.correlation_id);
    li.dataset.status = plain(command.status);
    li.tabIndex = 0;
    const typed = h('span', 'chat-typed', commandTyped(command));
    typed.title = typed.textContent;
    const o = commandOutcome(command);
    li.appendChild(
      hc('div', 'chat-row', [
        h('span', 'ev-time', fmtClock(command.received_at)),
        h('span', 'badge chat-platform', plain(command.platform)),
        h('span', 'chat-where', commandWhere(command)),
        h('span', 'chat-user', plain(command.user_name)),
        typed,
        h('span', 'badge chat-outcome outcome-' + o.cls, o.label),
      ]),
    );
    li.appendChild(
      str(command.reply_error)
        ? h('div', 'chat-reply chat-reply-failed', 'reply failed: ' + command.reply_error)
        : h('div', 'chat-reply', str(command.reply) ? '\u21b3 ' + command.reply : ''),
    );
    const key = commandKey(command);
    li.dataset.key = key;
    if (expanded.has(id)) {
      const shown = detailsShown.get(id);
      const el = shown && shown.key === key ? shown.el : details(li);
      detailsShown.set(id, { key: key, el: el });
      li.appendChild(el);
      li.classList.add('expanded');
    }
    return li;
  }

  async function refresh() {
    timer = null;
    refreshing = true;
    lastAt = Date.now();
    try {
      const query = '?limit=' + LOG_LIMIT + (platform.value ? '&platform=' + platform.value : '');
      const res = await api('/api/chat/commands' + query);
      if (!res.ok) {
        if (res.status !== 401) showError(error, 'refresh failed: ' + res.message);
        return;
      }
      showError(error, '');
      const commands = isObj(res.data) && Array.isArray(res.data.commands) ? res.data.commands.filter(isObj) : [];
      list.textContent = '';
      if (!commands.length) list.appendChild(h('li', 'empty-note', 'no chat commands yet \u2014 they appear here as viewers use the bots'));
      for (const command of commands) list.appendChild(renderCommand(command));
    } finally {
      refreshing = false;
      if (pending) {
        pending = false;
        schedule();
      }
    }
  }

  function schedule() {
    if (refreshing) {
      pending = true;
      return;
    }
    if (timer === null) timer = setTimeout(refresh, Math.max(0, REFRESH_MIN_MS - (Date.now() - lastAt)));
  }

  function toggle(li) {
    const id = li.dataset.commandId;
    const open = li.querySelector('.chat-details');
    if (open) {
      open.remove();
      expanded.delete(id);
      detailsShown.delete(id);
      li.classList.remove('expanded');
      return;
    }
    expanded.add(id);
    li.classList.add('expanded');
    const el = details(li);
    detailsShown.set(id, { key: li.dataset.key, el: el });
    li.appendChild(el);
  }

  platform.addEventListener('change', schedule);
  list.addEventListener('click', (ev) => {
    const li = closest(ev, 'li.chat-entry');
    if (!li) return;
    if (closest(ev, 'button[data-action=filter]')) return go('events', { filter: li.dataset.correlationId });
    if (closest(ev, '.chat-details')) return; // allow selecting text
    toggle(li);
  });
  onActivateKey(list, 'li.chat-entry', toggle);
  list.appendChild(h('li', 'empty-note', 'loading\u2026'));
  return { schedule: schedule };
}

function mount(ctx) {
  const settings = mountSettings(ctx.root);
  const log = mountLog(ctx.root, ctx.go);
  let againTimer = null;

  ctx.onChanges((changes) => {
    if (changes.kind === 'snapshot' || changes.kind === 'resumed') {
      log.schedule();
      settings.loadKnown();
      return;
    }
    if (changes.kind !== 'events' || !changes.events.some((item) => touchesChat(item.env))) return;
    log.schedule();
    // Once more a little later: the read model follows the log a moment behind.
    if (againTimer !== null) clearTimeout(againTimer);
    againTimer = setTimeout(() => {
      againTimer = null;
      log.schedule();
    }, REFRESH_AGAIN_MS);
  });
  setInterval(() => {
    if (!document.hidden) log.schedule();
  }, POLL_MS);
  return {};
}

export default {
  id: 'chat',
  title: 'Chat',
  subtitle: 'Discord guilds and Twitch channels: who may do what, and everything each command caused',
  icon: 'M2 3h12v8H6l-3 3v-3H2z',
  css: ['css/chat.css'],
  html: html,
  mount: mount,
};
