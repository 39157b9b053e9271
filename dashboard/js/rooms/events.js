// Events: the live feed of the event log (progress ticks left out), filterable by type,
// aggregate or correlation. `#/events?filter=<text>` opens it filtered (the chat log's "show in
// the event feed" does that).

import { closest, emptyNote, h, onActivateKey } from '../dom.js';
import { DASH, fmtClock, isObj, safeJson, shortId, str, summarize, text } from '../state/format.js';
import { api } from '../api.js';
import { eventMatches, MAX_EVENTS, mergeHistory } from '../state/live.js';

const html = `
<section class="panel panel-events" aria-label="Event feed">
  <div class="panel-head">
    <input id="event-filter" type="search" placeholder="filter: type / aggregate / correlation" spellcheck="false" aria-label="Filter events">
    <span id="events-shown" class="small muted" aria-live="polite"></span>
  </div>
  <ol id="events" class="events"></ol>
</section>`;

const HISTORY_WINDOW = 1000; // how far back (stream sequences) a reload looks for the feed

const KNOWN_AGGREGATES = ['node', 'job', 'render_job', 'render_queue', 'comfyui', 'chat_command', 'chat_settings', 'post'];

function aggClass(aggType) {
  const s = str(aggType);
  if (!s) return 'agg-unknown';
  if (KNOWN_AGGREGATES.indexOf(s) !== -1) return 'agg-' + s.replace(/_/g, '-');
  let hash = 0;
  for (let i = 0; i < s.length; i += 1) hash = (hash * 31 + s.charCodeAt(i)) >>> 0;
  return 'agg-h' + (hash % 4);
}

function isFailure(type) {
  return /(_failed|\.failed|_rejected)$/.test(type);
}

function renderItem(item, filter) {
  const env = isObj(item.env) ? item.env : {};
  const type = str(env.type) || '';
  const li = h('li', 'event' + (isFailure(type) ? ' event-failure' : ''));
  if (item.seq !== null && item.seq !== undefined) li.dataset.seq = String(item.seq);
  li.dataset.type = type;
  li.dataset.aggregateType = str(env.aggregate_type) || '';
  li.tabIndex = 0;
  li._item = item;
  const row = h('div', 'ev-row');
  row.appendChild(h('span', 'ev-seq', item.seq === null || item.seq === undefined ? DASH : '#' + item.seq));
  const time = h('span', 'ev-time', fmtClock(env.occurred_at));
  if (str(env.occurred_at)) time.title = str(env.occurred_at);
  row.appendChild(time);
  row.appendChild(h('span', 'ev-type ' + aggClass(env.aggregate_type), text(env.type)));
  row.appendChild(h('span', 'ev-agg', text(env.aggregate_type) + '/' + text(env.aggregate_id)));
  const corr = h('button', 'ev-corr', shortId(env.correlation_id));
  corr.type = 'button';
  if (str(env.correlation_id)) {
    corr.title = 'correlation ' + str(env.correlation_id) + ' \u2014 show only this correlation';
    corr.dataset.correlation = str(env.correlation_id);
  } else {
    corr.disabled = true;
  }
  row.appendChild(corr);
  li.appendChild(row);
  li.appendChild(h('div', 'ev-summary', summarize(env.data)));
  li.hidden = !eventMatches(item, filter);
  return li;
}

function toggle(li) {
  let pre = li.querySelector('pre.ev-json');
  if (pre) {
    pre.remove();
    li.classList.remove('expanded');
    return;
  }
  pre = h('pre', 'ev-json', safeJson(li._item ? li._item.env : null, 2));
  li.appendChild(pre);
  li.classList.add('expanded');
}

function mount(ctx) {
  const list = ctx.root.querySelector('#events');
  const input = ctx.root.querySelector('#event-filter');
  const shown = ctx.root.querySelector('#events-shown');
  let filter = '';

  function count() {
    const total = list.children.length;
    if (!total) {
      shown.textContent = '';
      return;
    }
    const visible = filter ? Array.prototype.filter.call(list.children, (li) => !li.hidden).length : total;
    shown.textContent = filter ? visible + ' of ' + total + ' shown' : total + ' recent';
  }

  function render(added, full) {
    if (full) {
      list.textContent = '';
      for (const item of ctx.live.events) list.appendChild(renderItem(item, filter)); // newest first
    } else {
      for (const item of added) list.insertBefore(renderItem(item, filter), list.firstChild);
      const items = list.querySelectorAll('li.event');
      for (let i = MAX_EVENTS; i < items.length; i += 1) items[i].remove();
    }
    emptyNote(list, list.querySelector('li.event') ? null : 'no events yet \u2014 they appear here as they are recorded');
    count();
  }

  function setFilter(value, fromUser) {
    filter = value.trim();
    if (input.value !== value) input.value = value;
    for (const li of list.querySelectorAll('li.event')) li.hidden = !eventMatches(li._item, filter);
    count();
    if (fromUser) ctx.setParams(filter ? { filter: filter } : {});
  }

  list.addEventListener('click', (ev) => {
    const corr = closest(ev, 'button.ev-corr');
    if (corr && corr.dataset.correlation) {
      setFilter(corr.dataset.correlation, true);
      return;
    }
    if (closest(ev, 'pre.ev-json')) return; // allow selecting JSON text
    const li = closest(ev, 'li.event');
    if (li) toggle(li);
  });
  onActivateKey(list, 'li.event', toggle);
  input.addEventListener('input', () => setFilter(input.value, true));

  // After a (re)snapshot, fill the feed from the log: the snapshot's few events may all be
  // progress ticks, which the feed leaves out.
  async function backfill() {
    const through = ctx.live.lastSeq;
    if (through === null || ctx.live.events.length >= MAX_EVENTS || through <= ctx.live.events.length) return;
    const after = Math.max(0, through - HISTORY_WINDOW);
    const res = await api('/api/events?after=' + after + '&limit=' + HISTORY_WINDOW);
    if (!res.ok || !res.data || !Array.isArray(res.data.events)) return;
    if (mergeHistory(ctx.live, res.data.events)) render([], true);
  }

  ctx.onChanges((changes) => {
    if (changes.reset || changes.feed.length > 0) render(changes.feed, changes.reset);
    if (changes.kind === 'snapshot') backfill();
  });
  render([], true);

  return {
    show(params) {
      if (params && typeof params.filter === 'string') setFilter(params.filter, false);
      else if (filter) ctx.setParams({ filter: filter });
    },
  };
}

export default {
  id: 'events',
  title: 'Events',
  subtitle: 'the event log as it is written; click a line for its JSON, a correlation to follow it',
  icon: 'M3 4h10M3 8h10M3 12h6',
  css: ['css/events.css'],
  html: html,
  mount: mount,
};
