/* Nebula Command dashboard: chat. Plain ES2020, no build step, no dependencies.
 *
 * Per-server settings (Discord guilds, Twitch channels: which commands are on and for whom,
 * cooldown and quota, the bot's nickname and avatar in a guild) read and saved through
 * /api/chat/settings, and the chat command log from /api/chat/commands, refreshed as chat and
 * render events arrive on the dashboard's websocket. A command opens to everything it caused:
 * the events of its correlation (/api/events?correlation_id=). The Stream Bot panel posts an
 * announcement (with a gallery image's link, from its "post" button) through /api/posts and
 * follows each destination's outcome as the post's events arrive.
 */
(function (global) {
  'use strict';

  const NC = global.NebulaCommand;
  if (!NC) return; // app.js failed to load; it reports that itself
  const h = NC.h;

  const COMMANDS = ['imagine', 'status', 'queue', 'cancel'];
  const LOG_LIMIT = 50;
  const REFRESH_MIN_MS = 300;
  const REFRESH_AGAIN_MS = 1500; // the projection may not have caught up with the websocket
  const POLL_MS = 20 * 1000;

  const ui = {
    scopeForm: document.getElementById('chat-scope-form'),
    platform: document.getElementById('chat-platform'),
    scope: document.getElementById('chat-scope'),
    known: document.getElementById('chat-known'),
    openError: document.getElementById('chat-open-error'),
    form: document.getElementById('chat-settings-form'),
    formScope: document.getElementById('chat-settings-scope'),
    formState: document.getElementById('chat-settings-state'),
    rules: document.getElementById('chat-rules'),
    rolesHint: document.getElementById('chat-roles-hint'),
    cooldown: document.getElementById('chat-cooldown'),
    quota: document.getElementById('chat-quota'),
    quotaWindow: document.getElementById('chat-quota-window'),
    nickname: document.getElementById('chat-nickname'),
    avatar: document.getElementById('chat-avatar'),
    save: document.getElementById('chat-save'),
    notice: document.getElementById('chat-notice'),
    error: document.getElementById('chat-error'),
    logPlatform: document.getElementById('chat-log-platform'),
    log: document.getElementById('chat-log'),
    logError: document.getElementById('chat-log-error'),
    postForm: document.getElementById('post-form'),
    postText: document.getElementById('post-text'),
    postArtifact: document.getElementById('post-artifact'),
    postArtifactSha: document.getElementById('post-artifact-sha'),
    postArtifactClear: document.getElementById('post-artifact-clear'),
    postSubmit: document.getElementById('post-submit'),
    postNotice: document.getElementById('post-notice'),
    postError: document.getElementById('post-error'),
    postList: document.getElementById('post-list'),
    gallery: document.getElementById('studio-gallery'),
  };

  let open = null; // { platform, scope } of the settings in the form
  let saving = false;
  const expanded = new Set(); // command ids whose details are open
  const detailsShown = new Map(); // command id -> { key, el }: refetched only when it changed
  let refreshTimer = null;
  let againTimer = null;
  let refreshing = false;
  let refreshPending = false;
  let lastRefreshAt = 0;

  function showError(target, message) {
    target.textContent = message || '';
    target.hidden = !message;
  }

  function isObj(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  function str(v) {
    return typeof v === 'string' ? v : null;
  }

  // ---- settings ----------------------------------------------------------

  function rolesHint(platform) {
    return platform === 'discord'
      ? '(role ids, or administrator; comma separated)'
      : '(badges: broadcaster, moderator, vip, subscriber)';
  }

  function fillForm(platform, scope, settings, customized) {
    open = { platform: platform, scope: scope };
    ui.form.hidden = false;
    ui.form.dataset.platform = platform;
    ui.form.dataset.scope = scope;
    ui.formScope.textContent = (platform === 'discord' ? 'Discord guild ' : 'Twitch #') + scope;
    ui.formState.textContent = customized ? '' : '(defaults: nothing saved yet)';
    ui.rolesHint.textContent = rolesHint(platform);
    ui.rules.textContent = '';
    const rules = isObj(settings.commands) ? settings.commands : {};
    for (const name of COMMANDS) {
      const rule = isObj(rules[name]) ? rules[name] : { enabled: true, roles: [] };
      const tr = h('tr', 'chat-rule');
      tr.dataset.command = name;
      tr.appendChild(h('td', 'chat-command-name', (platform === 'discord' ? '/' : '!') + name));
      const on = document.createElement('input');
      on.type = 'checkbox';
      on.name = 'enabled';
      on.checked = rule.enabled !== false;
      on.setAttribute('aria-label', name + ' on');
      const onCell = h('td', null);
      onCell.appendChild(on);
      tr.appendChild(onCell);
      const roles = document.createElement('input');
      roles.type = 'text';
      roles.name = 'roles';
      roles.spellcheck = false;
      roles.placeholder = 'everyone';
      roles.value = Array.isArray(rule.roles) ? rule.roles.join(', ') : '';
      roles.setAttribute('aria-label', name + ' roles');
      const rolesCell = h('td', null);
      rolesCell.appendChild(roles);
      tr.appendChild(rolesCell);
      ui.rules.appendChild(tr);
    }
    ui.cooldown.value = String(settings.cooldown_secs ?? 30);
    ui.quota.value = String(settings.quota ?? 20);
    ui.quotaWindow.value = String(settings.quota_window_secs ?? 3600);
    ui.nickname.value = str(settings.nickname) || '';
    ui.avatar.value = str(settings.avatar) || '';
    for (const node of ui.form.querySelectorAll('[data-platform]')) {
      node.hidden = node.dataset.platform !== platform;
    }
    showError(ui.error, '');
    ui.notice.textContent = '';
  }

  // The whole settings object from the form; a message for what is wrong.
  function formSettings() {
    const commands = {};
    for (const tr of ui.rules.querySelectorAll('tr[data-command]')) {
      const roles = tr
        .querySelector('input[name=roles]')
        .value.split(',')
        .map((r) => r.trim())
        .filter((r) => r !== '');
      const enabled = tr.querySelector('input[name=enabled]').checked;
      if (!enabled || roles.length) commands[tr.dataset.command] = { enabled: enabled, roles: roles };
    }
    const whole = (input, label, min, max) => {
      const raw = input.value.trim();
      const n = Number(raw);
      if (raw === '' || !Number.isInteger(n) || n < min || n > max) {
        throw new Error(label + ' must be a whole number from ' + min + ' to ' + max);
      }
      return n;
    };
    const settings = {
      commands: commands,
      cooldown_secs: whole(ui.cooldown, 'cooldown', 0, 86400),
      quota: whole(ui.quota, 'quota', 0, 4294967295),
      quota_window_secs: whole(ui.quotaWindow, 'quota window', 1, 86400),
    };
    if (open && open.platform === 'discord') {
      const nickname = ui.nickname.value.trim();
      const avatar = ui.avatar.value.trim();
      if (nickname) settings.nickname = nickname;
      if (avatar) settings.avatar = avatar;
    }
    return settings;
  }

  async function openSettings(platform, rawScope) {
    const scope = rawScope.trim().replace(/^#/, '').toLowerCase();
    if (!scope) return;
    ui.platform.value = platform;
    ui.scope.value = scope;
    showError(ui.openError, '');
    const res = await NC.api('/api/chat/settings/' + platform + '/' + encodeURIComponent(scope));
    if (!res.ok) {
      // Nothing open, so a Save cannot land on the server shown before.
      open = null;
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
    let settings;
    try {
      settings = formSettings();
    } catch (e) {
      showError(ui.error, e.message);
      return;
    }
    saving = true;
    ui.save.disabled = true;
    ui.save.textContent = 'Saving\u2026';
    try {
      const path = '/api/chat/settings/' + open.platform + '/' + encodeURIComponent(open.scope);
      const res = await NC.api(path, { method: 'PUT', json: settings });
      if (!res.ok) {
        showError(ui.error, res.message);
        return;
      }
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
    const res = await NC.api('/api/chat/settings');
    if (!res.ok) return;
    const list = isObj(res.data) && Array.isArray(res.data.settings) ? res.data.settings.filter(isObj) : [];
    ui.known.textContent = '';
    for (const item of list) {
      const li = h('li', 'chat-known-item');
      const button = h('button', 'btn btn-link', (item.platform === 'discord' ? 'Discord ' : 'Twitch #') + text(item.scope));
      button.type = 'button';
      button.dataset.platform = text(item.platform);
      button.dataset.scope = text(item.scope);
      li.appendChild(button);
      ui.known.appendChild(li);
    }
  }

  function text(v) {
    return v === undefined || v === null ? '' : String(v);
  }

  // ---- the command log -----------------------------------------------------

  function outcome(command) {
    switch (command.status) {
      case 'job':
        return { cls: 'job', label: 'job ' + (str(command.job_status) || 'submitted') };
      case 'rejected':
        return { cls: 'rejected', label: 'rejected: ' + (str(command.reason) || '?') };
      case 'answered':
        return { cls: 'answered', label: 'answered' };
      default:
        return { cls: 'received', label: str(command.status) || 'received' };
    }
  }

  function renderCommand(command) {
    const id = text(command.command_id);
    const li = h('li', 'chat-entry platform-' + text(command.platform));
    li.dataset.commandId = id;
    li.dataset.correlationId = text(command.correlation_id);
    li.dataset.status = text(command.status);
    li.tabIndex = 0;
    const row = h('div', 'chat-row');
    row.appendChild(h('span', 'ev-time', NC.fmtClock(command.received_at)));
    row.appendChild(h('span', 'badge chat-platform', text(command.platform)));
    const where = command.platform === 'twitch' ? '#' + text(command.scope) : 'guild ' + text(command.scope);
    row.appendChild(h('span', 'chat-where', where));
    row.appendChild(h('span', 'chat-user', text(command.user_name)));
    const prefix = command.platform === 'discord' ? '/' : '!';
    const typed = h('span', 'chat-typed', prefix + text(command.command) + (command.args ? ' ' + command.args : ''));
    typed.title = typed.textContent;
    row.appendChild(typed);
    const o = outcome(command);
    row.appendChild(h('span', 'badge chat-outcome outcome-' + o.cls, o.label));
    li.appendChild(row);
    const reply = str(command.reply_error)
      ? h('div', 'chat-reply chat-reply-failed', 'reply failed: ' + command.reply_error)
      : h('div', 'chat-reply', str(command.reply) ? '\u21b3 ' + command.reply : '');
    li.appendChild(reply);
    // What the command caused changes only when its row does (a decision, the job, a reply).
    const key = [command.status, command.job_status, command.reply, command.reply_error, command.updated_at].join('|');
    li.dataset.key = key;
    if (expanded.has(id)) {
      const shown = detailsShown.get(id);
      if (shown && shown.key === key) {
        li.appendChild(shown.el);
      } else {
        const el = details(li);
        detailsShown.set(id, { key: key, el: el });
        li.appendChild(el);
      }
      li.classList.add('expanded');
    }
    return li;
  }

  // Everything the command caused: its correlation's events, oldest first.
  function details(li) {
    const box = h('div', 'chat-details');
    const head = h('div', 'chat-details-head');
    head.appendChild(h('span', 'small muted', 'correlation ' + li.dataset.correlationId));
    const show = h('button', 'btn btn-link', 'show in the event feed');
    show.type = 'button';
    show.dataset.action = 'filter';
    head.appendChild(show);
    box.appendChild(head);
    const list = h('ol', 'chat-caused');
    list.appendChild(h('li', 'empty-note', 'loading\u2026'));
    box.appendChild(list);
    loadCaused(li.dataset.correlationId, list);
    return box;
  }

  async function loadCaused(correlation, list) {
    const res = await NC.api('/api/events?correlation_id=' + encodeURIComponent(correlation) + '&limit=200');
    list.textContent = '';
    if (!res.ok) {
      list.appendChild(h('li', 'studio-error', res.message));
      return;
    }
    const events = isObj(res.data) && Array.isArray(res.data.events) ? res.data.events.filter(isObj) : [];
    const shown = events.filter((e) => e.type !== 'render.job_progressed');
    const progress = events.length - shown.length;
    for (const e of shown) {
      const item = h('li', 'chat-caused-item');
      item.dataset.type = text(e.type);
      item.appendChild(h('span', 'ev-time', NC.fmtClock(e.occurred_at)));
      item.appendChild(h('span', 'ev-type', text(e.type)));
      item.appendChild(h('span', 'ev-agg', text(e.aggregate_type) + '/' + text(e.aggregate_id)));
      item.appendChild(h('span', 'ev-summary', NC.summarize(e.data)));
      list.appendChild(item);
    }
    if (progress > 0) list.appendChild(h('li', 'small muted', '+ ' + progress + ' progress events'));
    if (!events.length) list.appendChild(h('li', 'empty-note', 'no events yet'));
  }

  function renderLog(commands) {
    ui.log.textContent = '';
    if (!commands.length) {
      ui.log.appendChild(h('li', 'empty-note', 'no chat commands yet'));
      return;
    }
    for (const command of commands) ui.log.appendChild(renderCommand(command));
  }

  function scheduleRefresh() {
    if (refreshing) {
      refreshPending = true;
      return;
    }
    if (refreshTimer !== null) return;
    const wait = Math.max(0, REFRESH_MIN_MS - (Date.now() - lastRefreshAt));
    refreshTimer = setTimeout(refreshLog, wait);
  }

  async function refreshLog() {
    refreshTimer = null;
    if (!NC.hasToken()) return;
    refreshing = true;
    lastRefreshAt = Date.now();
    try {
      const platform = ui.logPlatform.value;
      const query = '?limit=' + LOG_LIMIT + (platform ? '&platform=' + platform : '');
      const res = await NC.api('/api/chat/commands' + query);
      if (!res.ok) {
        if (res.status !== 401) showError(ui.logError, 'refresh failed: ' + res.message);
        return;
      }
      showError(ui.logError, '');
      const commands = isObj(res.data) && Array.isArray(res.data.commands) ? res.data.commands.filter(isObj) : [];
      renderLog(commands);
    } finally {
      refreshing = false;
      if (refreshPending) {
        refreshPending = false;
        scheduleRefresh();
      }
    }
  }

  // ---- the Stream Bot --------------------------------------------------------

  const posts = new Map(); // post id -> the post as GET /api/posts/{id} answers (this session's)
  let postArtifact = null; // sha256 of the image to share with the next post
  let posting = false;

  function setPostArtifact(sha) {
    postArtifact = sha;
    ui.postArtifact.hidden = !sha;
    ui.postArtifactSha.textContent = sha ? sha.slice(0, 12) + '\u2026' : '';
    ui.postArtifactSha.title = sha || '';
  }

  function newKey() {
    if (global.crypto && typeof global.crypto.randomUUID === 'function') return global.crypto.randomUUID();
    return String(Date.now()) + '-' + Math.random().toString(16).slice(2);
  }

  async function submitPost(ev) {
    ev.preventDefault();
    if (posting) return;
    showError(ui.postError, '');
    ui.postNotice.textContent = '';
    const text = ui.postText.value.trim();
    const destinations = [...ui.postForm.querySelectorAll('input[name=destination]:checked')].map((i) => i.value);
    if (!text) return showError(ui.postError, 'write the announcement');
    if (!destinations.length) return showError(ui.postError, 'choose where to post');
    const body = { text: text, destinations: destinations };
    if (postArtifact) body.artifact = postArtifact;
    posting = true;
    ui.postSubmit.disabled = true;
    try {
      // One key per post: a retried request (a double click, a flaky network) finds it.
      const key = ui.postForm.dataset.key || newKey();
      ui.postForm.dataset.key = key;
      const res = await NC.api('/api/posts', { method: 'POST', json: body, headers: { 'Idempotency-Key': key } });
      if (!res.ok) return showError(ui.postError, res.message);
      delete ui.postForm.dataset.key;
      const id = isObj(res.data) ? str(res.data.post_id) : null;
      if (!id) return showError(ui.postError, 'the server answered without a post id');
      posts.set(id, { post_id: id, text: text, artifact: postArtifact, destinations: {} });
      ui.postNotice.textContent = 'posting\u2026';
      ui.postNotice.dataset.postId = id;
      ui.postText.value = '';
      setPostArtifact(null);
      renderPosts();
      refreshPost(id);
    } finally {
      posting = false;
      ui.postSubmit.disabled = false;
    }
  }

  async function refreshPost(id) {
    const res = await NC.api('/api/posts/' + encodeURIComponent(id));
    if (!res.ok || !isObj(res.data)) return;
    posts.set(id, res.data);
    renderPosts();
  }

  function outcomeLabel(name, outcome) {
    const o = isObj(outcome) ? outcome : {};
    switch (o.status) {
      case 'delivered':
        return { cls: 'delivered', label: name + ' \u2713', title: str(o.text) || '' };
      case 'failed':
        return { cls: 'failed', label: name + ' failed', title: str(o.error) || '' };
      default:
        return {
          cls: 'pending',
          label: name + (o.attempts ? ' retrying (' + o.attempts + ')' : ' \u2026'),
          title: str(o.last_error) || '',
        };
    }
  }

  function renderPosts() {
    ui.postList.textContent = '';
    const list = [...posts.values()].reverse();
    for (const post of list) {
      const li = h('li', 'chat-entry post-entry');
      li.dataset.postId = text(post.post_id);
      li.appendChild(h('div', 'chat-typed', text(post.text)));
      const outcomes = h('div', 'post-outcomes');
      const destinations = isObj(post.destinations) ? post.destinations : {};
      for (const name of Object.keys(destinations).sort()) {
        const o = outcomeLabel(name, destinations[name]);
        const badge = h('span', 'badge outcome-' + o.cls, o.label);
        badge.dataset.destination = name;
        badge.dataset.status = (isObj(destinations[name]) && str(destinations[name].status)) || 'pending';
        if (o.title) badge.title = o.title;
        outcomes.appendChild(badge);
      }
      li.appendChild(outcomes);
      ui.postList.appendChild(li);
    }
    const latest = posts.get(ui.postNotice.dataset.postId);
    if (latest && isObj(latest.destinations) && Object.keys(latest.destinations).length) {
      const states = Object.values(latest.destinations).map((o) => (isObj(o) ? o.status : 'pending'));
      if (!states.includes('pending')) {
        ui.postNotice.textContent = states.includes('failed') ? 'posted, with failures' : 'posted';
      }
    }
  }

  function relevant(env) {
    return isObj(env) && (env.aggregate_type === 'chat_command' || env.aggregate_type === 'chat_settings' ||
      (env.aggregate_type === 'render_job' && env.type !== 'render.job_progressed'));
  }

  function onChanges(changes) {
    if (changes.kind === 'snapshot' || changes.kind === 'resumed') {
      scheduleRefresh();
      loadKnown();
      return;
    }
    for (const item of changes.events || []) {
      const env = item.env;
      if (isObj(env) && env.aggregate_type === 'post' && posts.has(env.aggregate_id)) refreshPost(env.aggregate_id);
    }
    if (changes.kind !== 'events' || !changes.events.some((item) => relevant(item.env))) return;
    scheduleRefresh();
    // Once more a little later: the read model follows the log a moment behind.
    if (againTimer !== null) clearTimeout(againTimer);
    againTimer = setTimeout(() => {
      againTimer = null;
      scheduleRefresh();
    }, REFRESH_AGAIN_MS);
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

  function boot() {
    ui.scopeForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      openSettings(ui.platform.value, ui.scope.value);
    });
    ui.known.addEventListener('click', (ev) => {
      const button = ev.target instanceof Element ? ev.target.closest('button[data-scope]') : null;
      if (button) openSettings(button.dataset.platform, button.dataset.scope);
    });
    ui.form.addEventListener('submit', saveSettings);
    ui.logPlatform.addEventListener('change', scheduleRefresh);
    ui.log.addEventListener('click', (ev) => {
      const target = ev.target;
      if (!(target instanceof Element)) return;
      const li = target.closest('li.chat-entry');
      if (!li) return;
      if (target.closest('button[data-action=filter]')) {
        NC.setEventFilter(li.dataset.correlationId);
        return;
      }
      if (target.closest('.chat-details')) return; // allow selecting text
      toggle(li);
    });
    ui.log.addEventListener('keydown', (ev) => {
      if ((ev.key === 'Enter' || ev.key === ' ') && ev.target instanceof Element && ev.target.matches('li.chat-entry')) {
        ev.preventDefault();
        toggle(ev.target);
      }
    });
    ui.postForm.addEventListener('submit', submitPost);
    ui.postArtifactClear.addEventListener('click', () => setPostArtifact(null));
    ui.gallery.addEventListener('click', (ev) => {
      const button = ev.target instanceof Element ? ev.target.closest('button[data-action=post-artifact]') : null;
      if (!button) return;
      setPostArtifact(button.dataset.sha256);
      ui.postForm.scrollIntoView({ block: 'nearest' });
      ui.postText.focus();
    });
    NC.onChanges(onChanges);
    if (NC.hasToken()) {
      scheduleRefresh();
      loadKnown();
    }
    setInterval(() => {
      if (!document.hidden) scheduleRefresh();
    }, POLL_MS);
  }

  boot();
})(window);
