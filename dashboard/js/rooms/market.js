// Marketplace: app templates (built in, and from the configured catalogs) — what each is, what
// it needs, its documentation — and an install form per template (its inputs, secret ones as
// password fields that go to the vault, the nodes, the app's name). An install is a deploy of
// the Deploy Center: it lands in Apps with its releases and rollback. Catalogs or templates
// that could not be used are listed with the reason.

import { api } from '../api.js';
import { button, closest, h, hc, roomLink, showError } from '../dom.js';
import { sortedNodeIds } from '../state/live.js';
import { installBody, normalizeMarket, resourceWords } from '../state/market.js';

const html = `
<section class="panel panel-market" aria-label="Marketplace">
  <div class="panel-head">
    <span id="market-count" class="small muted">loading\u2026</span>
    <button id="market-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="market-error" class="studio-error" role="alert" hidden></div>
  <ul id="market-broken" class="market-broken"></ul>
  <ul id="market" class="market-grid"></ul>
</section>`;

function field(labelText, input) {
  return hc('label', 'market-field', [h('span', 'small', labelText), input]);
}

function renderCard(t, nodes, ui, href) {
  const li = h('li', 'market-card');
  li.dataset.template = t.id;
  const head = h('div', 'market-head');
  head.appendChild(h('span', 'market-title', t.title));
  head.appendChild(h('span', 'badge', t.category));
  if (t.catalog !== 'builtin') head.appendChild(h('span', 'small muted', ' from ' + t.catalog));
  li.appendChild(head);
  li.appendChild(h('p', 'small', t.description));
  const facts = h('div', 'small muted');
  facts.textContent = [resourceWords(t), t.version !== null ? 'template v' + t.version : ''].filter(Boolean).join(' \u00b7 ');
  li.appendChild(facts);
  if (t.docs) {
    const docs = h('a', 'small', 'documentation');
    docs.href = t.docs;
    docs.target = '_blank';
    docs.rel = 'noopener noreferrer';
    li.appendChild(docs);
  }
  const form = h('form', 'market-form');
  form.dataset.template = t.id;
  const name = h('input');
  name.name = 'app-name';
  name.placeholder = t.id;
  form.appendChild(field('app name', name));
  const select = h('select');
  select.name = 'node';
  for (const id of nodes) {
    const o = h('option', null, id);
    o.value = id;
    select.appendChild(o);
  }
  form.appendChild(field('node', select));
  for (const input of t.inputs) {
    const el = h('input');
    el.name = 'input-' + input.name;
    el.dataset.input = input.name;
    el.type = input.secret ? 'password' : 'text';
    el.autocomplete = 'off';
    el.placeholder = input.default !== null && input.default !== undefined ? input.default : input.secret ? 'kept in the vault' : 'required';
    form.appendChild(field(input.name + (input.secret ? ' (secret)' : '') + ' \u2014 ' + input.prompt, el));
  }
  const install = button('Install', 'btn-small btn-primary', nodes.length ? 'install as an app and deploy it' : 'no nodes to install on');
  install.type = 'submit';
  install.dataset.needs = 'admin';
  install.disabled = !nodes.length || ui.busy;
  form.appendChild(install);
  if (ui.message) form.appendChild(h('span', 'market-message ' + (ui.ok ? 'ok' : 'bad'), ui.message));
  if (ui.app) form.appendChild(roomLink(href('apps', { app: ui.app }), 'open ' + ui.app + ' in Apps', 'small'));
  li.appendChild(form);
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const list = root.querySelector('#market');
  const brokenList = root.querySelector('#market-broken');
  const count = root.querySelector('#market-count');
  const error = root.querySelector('#market-error');
  const refresh = root.querySelector('#market-refresh');
  let market = null;
  const ui = new Map(); // template -> { busy, message, ok, app }

  function uiOf(id) {
    if (!ui.has(id)) ui.set(id, { busy: false, message: null, ok: false, app: null });
    return ui.get(id);
  }

  function render() {
    list.textContent = '';
    brokenList.textContent = '';
    if (!market) return;
    count.textContent = market.templates.length + ' templates' + (market.broken.length ? ' \u00b7 ' + market.broken.length + ' could not be used' : '');
    for (const b of market.broken) {
      const li = h('li', 'market-broken-item', (b.template ? 'template ' + b.template + ' of ' : 'catalog ') + b.catalog + ': ' + b.error);
      li.dataset.catalog = b.catalog;
      if (b.template) li.dataset.template = b.template;
      brokenList.appendChild(li);
    }
    const nodes = sortedNodeIds(ctx.live);
    for (const t of market.templates) list.appendChild(renderCard(t, nodes, uiOf(t.id), ctx.href));
  }

  async function load() {
    refresh.disabled = true;
    const res = await api('/api/marketplace');
    refresh.disabled = false;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'marketplace unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    market = normalizeMarket(res.data);
    render();
  }

  async function install(form) {
    const t = market && market.templates.find((x) => x.id === form.dataset.template);
    if (!t) return;
    const values = {};
    for (const el of form.querySelectorAll('input[data-input]')) values[el.dataset.input] = el.value;
    const node = form.querySelector('select[name=node]').value;
    const { body, missing } = installBody(t, form.querySelector('input[name=app-name]').value, node ? [node] : [], values);
    const state = uiOf(t.id);
    if (missing.length) {
      state.message = 'needs a value: ' + missing.join(', ');
      state.ok = false;
      return render();
    }
    state.busy = true;
    state.message = 'installing\u2026';
    state.ok = true;
    render();
    const res = await api('/api/marketplace/' + encodeURIComponent(t.id) + '/install', { method: 'POST', json: body });
    state.busy = false;
    state.ok = res.ok;
    state.app = res.ok ? res.data.app : null;
    state.message = res.ok ? 'deploying release ' + res.data.release + ' (run ' + res.data.run_id + ')' : res.message;
    render();
  }

  list.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const form = closest(ev, 'form[data-template]');
    if (form) install(form);
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (market && (changes.reset || changes.nodes.size > 0) && !list.querySelector('input:focus')) render();
  });

  return { show: () => load() };
}

export default {
  id: 'market',
  title: 'Marketplace',
  subtitle: 'apps in one click: Ollama, ComfyUI, Home Assistant, Plex and more, with releases and rollback',
  icon: 'M2 5l1-3h10l1 3M2 5h12v9H2zM6 8h4',
  css: ['css/market.css'],
  html: html,
  mount: mount,
};
