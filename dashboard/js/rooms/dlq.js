// Dead letters: messages a consumer gave up on, with the reason, and a replay to send one back
// to where it came from once the cause is fixed. Publishes `dlq` ({ total, error }) for the
// overview and badges its nav entry with the count.

import { api } from '../api.js';
import { button, closest, h, hc, showError } from '../dom.js';
import { DASH, fmtBytes, fmtClock, fmtSince, plural, text } from '../state/format.js';
import { normalizeLetters, payloadText, replayBlocked, replayOutcome } from '../state/dlq.js';

const LIMIT = 50;
const POLL_MS = 30 * 1000;

const html = `
<section class="panel panel-dlq" aria-label="Dead letters">
  <div class="panel-head">
    <span id="dlq-count" class="small muted">loading\u2026</span>
    <button id="dlq-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="dlq-error" class="studio-error" role="alert" hidden></div>
  <ol id="dlq-list" class="dlq-list" aria-live="polite"></ol>
</section>`;

function field(label, value, cls) {
  return hc('div', 'dlq-field', [h('span', 'dlq-label', label), h('span', 'dlq-value' + (cls ? ' ' + cls : ''), value)]);
}

function renderLetter(letter, state, now) {
  const li = h('li', 'dlq-letter');
  li.dataset.seq = String(letter.seq);
  if (state.replayed) li.classList.add('replayed');
  const head = h('div', 'dlq-head');
  head.appendChild(h('span', 'ev-seq', '#' + letter.seq));
  head.appendChild(h('span', 'dlq-origin', text(letter.origin)));
  head.appendChild(h('span', 'badge dlq-stream', text(letter.origin_stream)));
  const when = h('span', 'small muted dlq-when', fmtSince(letter.dead_lettered_at, now) + ' \u00b7 ' + fmtClock(letter.dead_lettered_at));
  if (letter.dead_lettered_at) when.title = letter.dead_lettered_at;
  head.appendChild(when);
  li.appendChild(head);
  li.appendChild(h('div', 'dlq-reason', text(letter.reason)));
  const facts = h('div', 'dlq-facts');
  facts.appendChild(field('from', text(letter.origin_subject) + (letter.origin_seq !== null ? ' #' + letter.origin_seq : ''), 'mono'));
  facts.appendChild(field('size', letter.size === null ? DASH : fmtBytes(letter.size)));
  facts.appendChild(field('dead letter', text(letter.subject), 'mono'));
  li.appendChild(facts);

  const actions = h('div', 'dlq-actions');
  const blocked = replayBlocked(letter);
  const replay = button(state.replayed ? 'Replayed' : 'Replay', 'btn-small' + (blocked ? '' : ' btn-primary'), blocked || 'send it back to ' + text(letter.origin_subject));
  replay.dataset.action = 'replay';
  replay.dataset.needs = 'admin'; // locked for lesser roles (locks.js)
  replay.disabled = !!blocked || state.replayed || state.busy;
  actions.appendChild(replay);
  const show = button(state.open ? 'Hide payload' : 'Payload', 'btn-small');
  show.dataset.action = 'payload';
  actions.appendChild(show);
  if (blocked) actions.appendChild(h('span', 'small muted dlq-why', blocked));
  if (state.message) actions.appendChild(h('span', 'dlq-message ' + (state.ok ? 'ok' : 'bad'), state.message));
  li.appendChild(actions);
  if (state.open) li.appendChild(h('pre', 'ev-json dlq-payload', payloadText(letter.payload)));
  return li;
}

function mount(ctx) {
  const list = ctx.root.querySelector('#dlq-list');
  const count = ctx.root.querySelector('#dlq-count');
  const error = ctx.root.querySelector('#dlq-error');
  const refreshButton = ctx.root.querySelector('#dlq-refresh');
  let letters = null; // null until the first answer
  let total = 0;
  const states = new Map(); // seq -> { open, busy, replayed, message, ok }
  let loading = false;

  function stateOf(seq) {
    if (!states.has(seq)) states.set(seq, { open: false, busy: false, replayed: false, message: null, ok: false });
    return states.get(seq);
  }

  function render() {
    const now = Date.now();
    list.textContent = '';
    if (letters === null) return;
    if (!letters.length) {
      list.appendChild(h('li', 'empty-note', 'no dead letters \u2014 every consumer is keeping up'));
    }
    for (const letter of letters) list.appendChild(renderLetter(letter, stateOf(letter.seq), now));
    count.textContent = total > letters.length ? letters.length + ' of ' + total + ' shown' : plural(total, 'dead letter');
  }

  // The count on the nav and the overview: what the DLQ holds (a replayed letter left it).
  function publishTotal() {
    ctx.setBadge(total ? String(total) : '', 'crit');
    const waiting = letters.filter((letter) => !stateOf(letter.seq).replayed);
    ctx.publish('dlq', { total: total, error: null, newest: waiting[0] || null });
  }

  async function load() {
    if (loading) return;
    loading = true;
    refreshButton.disabled = true;
    try {
      const res = await api('/api/dlq?limit=' + LIMIT);
      if (!res.ok) {
        if (res.status === 401) return;
        showError(error, 'dead letters unavailable: ' + res.message + (res.status ? ' (HTTP ' + res.status + ')' : ''));
        count.textContent = DASH;
        ctx.setBadge('', '');
        ctx.publish('dlq', { total: null, error: res.message });
        return;
      }
      showError(error, '');
      const got = normalizeLetters(res.data);
      letters = got.letters;
      total = got.total;
      render();
      publishTotal();
    } finally {
      loading = false;
      refreshButton.disabled = false;
    }
  }

  async function replay(seq) {
    const state = stateOf(seq);
    state.busy = true;
    state.message = 'replaying\u2026';
    state.ok = true;
    render();
    const res = await api('/api/dlq/' + encodeURIComponent(seq) + '/replay', { method: 'POST', json: {} });
    const outcome = replayOutcome(res.status, res.data, res.ok ? null : res.message);
    state.busy = false;
    state.ok = outcome.ok;
    state.replayed = outcome.replayed;
    state.message = outcome.message;
    // Sent back (or found sent back already): it is off the DLQ now.
    if (outcome.replayed) total = Math.max(0, total - 1);
    render();
    publishTotal();
  }

  list.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const li = b ? b.closest('li[data-seq]') : null;
    if (!li || b.disabled) return;
    const seq = Number(li.dataset.seq);
    if (b.dataset.action === 'replay') replay(seq);
    else {
      stateOf(seq).open = !stateOf(seq).open;
      render();
    }
  });
  refreshButton.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (changes.kind === 'snapshot') load();
  });
  setInterval(() => {
    if (!document.hidden) load();
  }, POLL_MS);

  return { show: () => load() };
}

export default {
  id: 'dlq',
  title: 'Dead letters',
  subtitle: 'messages a consumer gave up on, and why; replay one once its cause is fixed',
  icon: 'M2 4h12v8H2zM2 4l6 5 6-5',
  css: ['css/dlq.css'],
  html: html,
  mount: mount,
};
