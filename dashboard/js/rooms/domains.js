// Domains: host names served through Caddy — to an app (its port on its first node) or an
// upstream — with the state of each one's route and of its DNS record at Cloudflare (applied,
// failed with the reason, pending) and the certificate Caddy presents for it, an add form and a remove per domain (admins).

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { DASH } from '../state/format.js';
import { domainBody, normalizeDomains } from '../state/domains.js';

const POLL_MS = 5000;

const html = `
<section class="panel panel-domains" aria-label="Domains">
  <div class="panel-head">
    <span id="domains-count" class="small muted">loading\u2026</span>
    <button id="domains-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="domains-error" class="studio-error" role="alert" hidden></div>
  <div class="table-wrap">
    <table id="domains">
      <thead><tr><th scope="col">Host</th><th scope="col">Goes to</th><th scope="col">Route (Caddy)</th><th scope="col">DNS (Cloudflare)</th><th scope="col">Certificate</th><th scope="col"></th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
</section>
<section class="panel panel-domain-add" aria-labelledby="domain-add-title">
  <div class="panel-head"><h2 id="domain-add-title">Add a domain</h2></div>
  <form id="domain-add" class="domain-form">
    <label>host <input name="host" placeholder="app.example.com" required></label>
    <label>app <input name="app" placeholder="an app's name"></label>
    <label>port <input name="port" inputmode="numeric" placeholder="8080"></label>
    <label>or upstream <input name="upstream" placeholder="192.168.1.20:8123"></label>
    <label>DNS zone <input name="zone" placeholder="example.com (optional)"></label>
    <label>points at <input name="content" placeholder="203.0.113.7"></label>
    <label class="check"><input type="checkbox" name="proxied"> proxied</label>
    <button class="btn btn-small btn-primary" type="submit" data-needs="admin">Add</button>
    <span id="domain-add-message" class="small"></span>
  </form>
</section>`;

function stateCell(part, none) {
  if (!part) return h('td', 'small muted', none || 'none');
  const td = h('td', 'small');
  td.appendChild(h('span', 'badge domain-state state-' + part.state, part.state));
  if (part.detail) td.appendChild(h('span', 'mono', ' ' + part.detail));
  if (part.error) td.appendChild(h('div', 'domain-error', part.error));
  return td;
}

function renderRow(d) {
  const tr = h('tr', 'domain-row');
  tr.dataset.host = d.host;
  tr.dataset.route = d.route.state;
  tr.dataset.dns = d.dns ? d.dns.state : 'none';
  tr.appendChild(h('td', 'mono', d.host));
  tr.appendChild(h('td', 'small', d.target));
  tr.appendChild(stateCell(d.route));
  const dns = stateCell(d.dns);
  if (d.dns) dns.insertBefore(h('div', 'small muted', d.dns.zone + ' \u2192 ' + d.dns.content + (d.dns.proxied ? ' (proxied)' : '')), dns.firstChild);
  tr.appendChild(dns);
  tr.dataset.certificate = d.certificate ? d.certificate.state : 'none';
  tr.appendChild(stateCell(d.certificate, 'not looked at (TLS off, or not served yet)'));
  const remove = button('Remove', 'btn-small btn-danger', 'stop serving ' + d.host + ' and delete its DNS record');
  remove.dataset.action = 'remove';
  remove.dataset.needs = 'admin';
  tr.appendChild(hc('td', null, [remove]));
  return tr;
}

function mount(ctx) {
  const root = ctx.root;
  const tbody = root.querySelector('#domains tbody');
  const count = root.querySelector('#domains-count');
  const error = root.querySelector('#domains-error');
  const refresh = root.querySelector('#domains-refresh');
  const form = root.querySelector('#domain-add');
  const message = root.querySelector('#domain-add-message');
  let poll = null;

  async function load() {
    refresh.disabled = true;
    const res = await api('/api/domains');
    refresh.disabled = false;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'domains unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    const domains = normalizeDomains(res.data);
    tbody.textContent = '';
    count.textContent = domains.length + ' domain' + (domains.length === 1 ? '' : 's');
    if (!domains.length) {
      const td = h('td', null, 'no domains yet: add one below (Caddy serves it, Cloudflare keeps its DNS)');
      td.colSpan = 5;
      tbody.appendChild(hc('tr', 'empty-row', [td]));
    }
    for (const d of domains) tbody.appendChild(renderRow(d));
    if (!domains.length) count.textContent = DASH;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const el of form.querySelectorAll('input')) values[el.name] = el.type === 'checkbox' ? el.checked : el.value;
    const { body, error: problem } = domainBody(values);
    if (problem) {
      message.textContent = problem;
      message.className = 'small bad';
      return;
    }
    const res = await api('/api/domains', { method: 'POST', json: body });
    message.textContent = res.ok ? body.host + ' added; Caddy and Cloudflare are being told' : res.message;
    message.className = 'small ' + (res.ok ? 'ok' : 'bad');
    if (res.ok) form.reset();
    load();
  });
  tbody.addEventListener('click', async (ev) => {
    const b = closest(ev, 'button[data-action=remove]');
    const tr = b ? b.closest('tr[data-host]') : null;
    if (!tr || b.disabled) return;
    b.disabled = true;
    const res = await api('/api/domains/' + encodeURIComponent(tr.dataset.host), { method: 'DELETE' });
    if (!res.ok) showError(error, 'removing ' + tr.dataset.host + ' failed: ' + res.message);
    load();
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (poll !== null && changes.events.some((item) => item.env && item.env.aggregate_type === 'web_domain')) load();
  });

  return {
    show() {
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
  id: 'domains',
  title: 'Domains',
  subtitle: 'host names served through Caddy with TLS, their DNS at Cloudflare',
  icon: 'M8 2a6 6 0 100 12A6 6 0 008 2zM2 8h12M8 2c2 2 2 10 0 12M8 2c-2 2-2 10 0 12',
  css: ['css/nodes.css', 'css/domains.css'],
  html: html,
  mount: mount,
};
