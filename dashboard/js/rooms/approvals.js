// Approvals: what waits for a yes — a deploy, a code change, a costly job — with its preview (a
// diff coloured by line, a plan), the policy that decides it, every decision so far, and
// Approve / Reject with a comment for those the policy lets decide. The nav entry counts the
// pending ones; a new request (an `approval.*` event on the websocket) refreshes the inbox at
// once. `#/approvals?id=<approval>` opens one.

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { fmtClock, fmtSince, plural } from '../state/format.js';
import { diffLines, normalizeApprovals, ownRequest, policyWords, touchesApprovals, whyNotDecide } from '../state/approvals.js';

const POLL_MS = 30 * 1000;

const html = `
<section class="panel panel-approvals" aria-label="Approvals">
  <div class="panel-head">
    <label class="containers-pick">Show <select id="approvals-filter">
      <option value="pending">waiting</option>
      <option value="">all</option>
    </select></label>
    <span id="approvals-count" class="small muted">loading\u2026</span>
    <button id="approvals-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="approvals-error" class="studio-error" role="alert" hidden></div>
  <ol id="approvals" class="approval-list" aria-live="polite"></ol>
</section>`;

function renderPreview(preview) {
  const pre = h('pre', 'approval-preview preview-' + preview.format);
  if (preview.format === 'diff') {
    for (const line of diffLines(preview.body)) {
      pre.appendChild(h('span', 'diff-line diff-' + line.kind, line.text + '\n'));
    }
  } else {
    pre.textContent = preview.body;
  }
  const parts = [pre];
  if (preview.truncated) parts.push(h('div', 'small muted', 'preview cut at 256 KiB'));
  return hc('div', 'approval-preview-wrap', parts);
}

function renderDecision(d) {
  const li = h('li', 'approval-decision decision-' + d.decision);
  li.dataset.decision = d.decision;
  li.appendChild(h('span', 'badge decision-badge', d.decision === 'approve' ? 'approved' : 'rejected'));
  li.appendChild(h('span', null, ' by ' + d.by + ' (' + d.role + ')'));
  if (d.at) li.appendChild(h('span', 'small muted', ' \u00b7 ' + fmtClock(d.at)));
  if (d.comment) li.appendChild(h('div', 'approval-comment', '\u201c' + d.comment + '\u201d'));
  return li;
}

function renderApproval(a, ui, who, now) {
  const li = h('li', 'approval state-' + a.state);
  li.dataset.approval = a.id;
  li.dataset.state = a.state;
  const head = h('div', 'approval-head');
  head.appendChild(h('span', 'badge approval-state state-' + a.state, a.state));
  head.appendChild(h('span', 'approval-summary', a.summary));
  li.appendChild(head);
  const facts = h('div', 'small muted approval-facts');
  facts.textContent = a.kind + ' ' + a.subject + ' \u00b7 asked by ' + a.requestedBy + ' ' + fmtSince(a.requestedAt, now) +
    ' \u00b7 ' + policyWords(a) + (a.state === 'pending' && a.expiresAt ? ' \u00b7 expires ' + fmtClock(a.expiresAt) : '');
  li.appendChild(facts);
  if (a.reason) li.appendChild(h('div', 'approval-reason', a.reason));
  li.appendChild(renderPreview(a.preview));
  if (a.decisions.length) {
    const ol = h('ol', 'approval-decisions');
    for (const d of a.decisions) ol.appendChild(renderDecision(d));
    li.appendChild(ol);
  }
  if (a.state === 'pending') {
    const why = whyNotDecide(a, who, now);
    const actions = h('div', 'approval-actions');
    const comment = h('input', 'approval-comment-input');
    comment.type = 'text';
    comment.placeholder = 'comment (optional)';
    comment.maxLength = 4096;
    comment.value = ui.comment || '';
    comment.dataset.field = 'comment';
    comment.disabled = !!why || ui.busy;
    actions.appendChild(comment);
    const own = ownRequest(a, who);
    const approve = button('Approve', 'btn-small btn-primary', own ? 'you asked for this: another person must approve it' : why || 'approve');
    approve.dataset.action = 'approve';
    approve.dataset.needs = 'operator';
    approve.disabled = !!why || own || ui.busy;
    actions.appendChild(approve);
    const reject = button('Reject', 'btn-small btn-danger', why || 'reject');
    reject.dataset.action = 'reject';
    reject.dataset.needs = 'operator';
    reject.disabled = !!why || ui.busy;
    actions.appendChild(reject);
    if (why) actions.appendChild(h('span', 'small muted', why));
    else if (own) actions.appendChild(h('span', 'small muted', 'you asked for this: you may reject it, another person approves'));
    if (ui.message) actions.appendChild(h('span', 'approval-message ' + (ui.ok ? 'ok' : 'bad'), ui.message));
    li.appendChild(actions);
  }
  return li;
}

function mount(ctx) {
  const root = ctx.root;
  const list = root.querySelector('#approvals');
  const count = root.querySelector('#approvals-count');
  const error = root.querySelector('#approvals-error');
  const filter = root.querySelector('#approvals-filter');
  const refresh = root.querySelector('#approvals-refresh');
  let approvals = null;
  let who = null;
  let focus = null; // an approval opened by link
  let generation = 0;
  const ui = new Map(); // id -> { comment, busy, message, ok }

  function uiOf(id) {
    if (!ui.has(id)) ui.set(id, { comment: '', busy: false, message: null, ok: false });
    return ui.get(id);
  }

  function render() {
    const now = Date.now();
    list.textContent = '';
    if (approvals === null) return;
    const shown = focus ? approvals.filter((a) => a.id === focus) : approvals;
    if (!shown.length) list.appendChild(h('li', 'empty-note', filter.value === 'pending' ? 'nothing waits for a decision' : 'no approvals yet'));
    for (const a of shown) list.appendChild(renderApproval(a, uiOf(a.id), who, now));
    const pending = approvals.filter((a) => a.state === 'pending').length;
    count.textContent = focus ? 'one approval \u00b7 ' : '';
    count.textContent += plural(pending, 'waiting', 'waiting');
  }

  // The nav badge counts what waits, whatever the room shows.
  async function loadBadge() {
    const res = await api('/api/approvals?state=pending');
    if (res.ok) {
      const n = normalizeApprovals(res.data).length;
      ctx.setBadge(n ? String(n) : '', 'warn');
      ctx.publish('approvals', { pending: n });
    }
  }

  async function load() {
    const gen = ++generation;
    refresh.disabled = true;
    const res = await api('/api/approvals' + (filter.value ? '?state=' + filter.value : ''));
    refresh.disabled = false;
    if (gen !== generation) return;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'approvals unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    approvals = normalizeApprovals(res.data);
    render();
    loadBadge();
  }

  async function decide(id, action) {
    const state = uiOf(id);
    state.busy = true;
    state.message = action === 'approve' ? 'approving\u2026' : 'rejecting\u2026';
    state.ok = true;
    render();
    const res = await api('/api/approvals/' + encodeURIComponent(id) + '/' + action, { method: 'POST', json: { comment: state.comment } });
    state.busy = false;
    state.ok = res.ok;
    state.message = res.ok ? (res.data.state === 'pending' ? 'recorded; more approvals needed' : res.data.state) : res.message;
    if (res.ok) state.comment = '';
    render();
    load();
  }

  list.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const li = b ? b.closest('li[data-approval]') : null;
    if (!li || b.disabled) return;
    decide(li.dataset.approval, b.dataset.action);
  });
  list.addEventListener('input', (ev) => {
    const input = ev.target;
    const li = input && input.closest ? input.closest('li[data-approval]') : null;
    if (li && input.dataset.field === 'comment') uiOf(li.dataset.approval).comment = input.value;
  });
  filter.addEventListener('change', () => {
    focus = null;
    ctx.setParams({});
    load();
  });
  refresh.addEventListener('click', load);
  ctx.subscribe('whoami', (value) => {
    who = value;
    render();
  });
  ctx.onChanges((changes) => {
    if (changes.kind === 'snapshot' || changes.events.some((item) => touchesApprovals(item.env))) load();
  });
  setInterval(() => {
    if (!document.hidden) load();
  }, POLL_MS);

  return {
    show(params) {
      focus = params && params.id ? params.id : null;
      if (focus) filter.value = '';
      load();
    },
  };
}

export default {
  id: 'approvals',
  title: 'Approvals',
  subtitle: 'what waits for a yes: the preview, the policy, every decision',
  icon: 'M3 8l3 3 7-7M2 14h12',
  css: ['css/approvals.css'],
  html: html,
  mount: mount,
};
