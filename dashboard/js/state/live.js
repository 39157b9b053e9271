// The live state every room shares: websocket frames (see the README's websocket contract)
// folded into nodes and the event feed. Pure: mutates only the state it is given.

import { isObj, num, parseTime, str } from './format.js';

export const STALE_MS = 30 * 1000; // 3x a typical 10 s heartbeat interval
export const MAX_EVENTS = 200;
export const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 5000;
export const CLOSE_AUTH = 4001;
export const HOT_C = 85; // a GPU this hot is throttling or about to

export function createState() {
  return {
    nodes: new Map(), // node_id -> node object (Node shape + internal `_rx`)
    events: [], // feed items, newest first: { seq, env }
    lastSeq: null, // last applied stream sequence (null = never had a snapshot)
    eventCount: 0, // events received this session (distinct stream seqs)
    countedThrough: null, // highest seq already counted
    busConnected: true, // the gateway's link to NATS, as its `bus` frames say
  };
}

function emptyChanges(kind) {
  return {
    kind: kind,
    applied: false,
    reset: false, // true => full re-render of nodes and events
    nodes: new Set(), // node ids whose row must be re-rendered
    events: [], // every new event (progress ticks too), oldest first: { seq, env }
    feed: [], // the new events the feed shows, oldest first
  };
}

function provisionalNode(id) {
  return { node_id: id, hostname: null, status: null, gpus: [], heartbeat: null, _provisional: true, _rx: null };
}

function normalizeNode(raw, now) {
  if (!isObj(raw)) return null;
  const id = str(raw.node_id);
  if (id === null || id === '') return null;
  const node = Object.assign({}, raw);
  node.node_id = id;
  node.gpus = Array.isArray(raw.gpus) ? raw.gpus.filter(isObj) : [];
  node.heartbeat = isObj(raw.heartbeat) ? raw.heartbeat : null;
  node._provisional = false;
  // When its last heartbeat arrived, by the server's clock (never later than now); the agent's
  // own clock is only data.
  const received = parseTime(raw.received_at);
  node._rx = node.heartbeat ? (received === null ? now : Math.min(received, now)) : null;
  node._tseq = null;
  return node;
}

function markCounted(state, seq) {
  if (seq !== null && (state.countedThrough === null || seq > state.countedThrough)) state.countedThrough = seq;
}

/** Progress ticks drive the studio's bars but would drown the event feed: the feed skips them. */
export function isFeedEvent(env) {
  return !(isObj(env) && env.type === 'render.job_progressed');
}

function pushFeed(state, item) {
  state.events.unshift(item);
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
}

// Apply one event envelope to the node table. Unknown types are a no-op.
function applyEventToNodes(state, changes, env) {
  if (env.aggregate_type !== undefined && env.aggregate_type !== 'node') return;
  const id = str(env.aggregate_id);
  if (id === null || id === '') return;
  const data = isObj(env.data) ? env.data : {};
  if (env.type === 'node.registered') {
    const prev = state.nodes.get(id);
    const node = Object.assign({}, data);
    node.node_id = id;
    node.gpus = Array.isArray(data.gpus) ? data.gpus.filter(isObj) : [];
    node.status = 'online';
    node.registered_at = str(env.occurred_at);
    node.heartbeat = prev ? prev.heartbeat : null;
    node._rx = prev ? prev._rx : null;
    node._provisional = false;
    state.nodes.set(id, node);
    changes.nodes.add(id);
  } else if (env.type === 'node.deregistered') {
    let node = state.nodes.get(id);
    if (!node) {
      node = provisionalNode(id);
      state.nodes.set(id, node);
    }
    node.status = 'offline';
    node.deregister_reason = str(data.reason);
    changes.nodes.add(id);
  }
}

function applySnapshot(state, frame, changes, now) {
  const seq = num(frame.seq);
  state.nodes = new Map();
  if (Array.isArray(frame.nodes)) {
    for (const raw of frame.nodes) {
      const node = normalizeNode(raw, now);
      if (node) state.nodes.set(node.node_id, node);
    }
  }
  state.events = [];
  const list = Array.isArray(frame.events) ? frame.events.filter(isObj) : [];
  // Count only events not already counted this session (a re-snapshot after a reconnect
  // repeats events we have seen).
  const countedBefore = state.countedThrough;
  for (const env of list) {
    const s = num(env.stream_seq);
    const item = { seq: s, env: env };
    changes.events.push(item);
    if (isFeedEvent(env)) {
      pushFeed(state, item);
      changes.feed.push(item);
    }
    if (s === null || countedBefore === null || s > countedBefore) state.eventCount += 1;
    markCounted(state, s);
  }
  if (changes.feed.length > MAX_EVENTS) changes.feed.splice(0, changes.feed.length - MAX_EVENTS);
  if (seq !== null) {
    state.lastSeq = seq;
    markCounted(state, seq);
  }
  changes.reset = true;
  changes.applied = true;
}

function applyEventsFrame(state, frame, changes) {
  const seq = num(frame.seq);
  if (seq !== null && state.lastSeq !== null && seq <= state.lastSeq) return; // duplicate
  const list = Array.isArray(frame.events) ? frame.events.filter(isObj) : [];
  for (const env of list) {
    state.eventCount += 1;
    const item = { seq: seq, env: env };
    changes.events.push(item);
    if (isFeedEvent(env)) {
      pushFeed(state, item);
      changes.feed.push(item);
    }
    applyEventToNodes(state, changes, env);
  }
  if (seq !== null) {
    state.lastSeq = seq;
    markCounted(state, seq);
  }
  changes.applied = true;
}

/**
 * Merges older history into the feed: `events` as `GET /api/events` lists them (any order).
 * Only what the feed shows, not already in it, and not past the live position is taken; the feed
 * stays newest first and at most MAX_EVENTS long. (The snapshot carries only the last few
 * events, which during a render are mostly progress ticks.) Returns how many were added.
 */
export function mergeHistory(state, events) {
  const have = new Set();
  for (const item of state.events) have.add(historyKey(item.env, item.seq));
  const added = [];
  for (const env of Array.isArray(events) ? events : []) {
    if (!isObj(env) || !isFeedEvent(env)) continue;
    const seq = num(env.stream_seq);
    if (seq === null || (state.lastSeq !== null && seq > state.lastSeq)) continue;
    const key = historyKey(env, seq);
    if (have.has(key)) continue;
    have.add(key);
    added.push({ seq: seq, env: env });
  }
  if (!added.length) return 0;
  // Newest first; a stable sort keeps the order of events of one commit as they came.
  state.events = state.events.concat(added.reverse()).sort((a, b) => (b.seq ?? Infinity) - (a.seq ?? Infinity));
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
  return added.length;
}

function historyKey(env, seq) {
  return isObj(env) && str(env.event_id) ? env.event_id : seq + '/' + (isObj(env) ? str(env.type) : '');
}

/**
 * Whether a heartbeat that arrived as TELEMETRY sequence `next` replaces the one shown (which
 * arrived as `prev`): the later arrival wins, whatever the agents' clocks say. A frame without a
 * sequence (an older gateway) is taken as it comes.
 */
export function arrivedLater(prev, next) {
  const p = num(prev);
  const n = num(next);
  return p === null || n === null || n > p;
}

/** How far a node's clock is off (ms, + ahead), as of its last heartbeat; null when unknown. */
export function clockSkew(node) {
  return node ? num(node.clock_skew_ms) : null;
}

function applyTelemetry(state, frame, changes, now) {
  const hb = frame.heartbeat;
  if (!isObj(hb)) return;
  const id = str(frame.node_id) || str(hb.node_id);
  if (id === null || id === '') return;
  let node = state.nodes.get(id);
  if (!node) {
    node = provisionalNode(id);
    state.nodes.set(id, node);
  } else if (!arrivedLater(node._tseq, frame.telemetry_seq)) {
    return;
  }
  node.heartbeat = hb;
  node._rx = now;
  node._tseq = num(frame.telemetry_seq);
  if (num(frame.clock_skew_ms) !== null) node.clock_skew_ms = frame.clock_skew_ms;
  changes.nodes.add(id);
  changes.applied = true;
}

function applyResumed(state, frame, changes) {
  // Keep the current state. If the server's stream is behind what we saw (the stream was
  // reset), follow it so later deltas are not dropped.
  const seq = num(frame.seq);
  if (seq !== null && (state.lastSeq === null || seq < state.lastSeq)) {
    state.lastSeq = seq;
    if (state.countedThrough !== null && seq < state.countedThrough) state.countedThrough = seq;
  }
  changes.applied = true;
}

/**
 * Applies one server frame to `state`; never throws on malformed input. Returns what changed:
 *   { kind, applied, reset, nodes: Set<id>, events: [{seq, env}], feed: [{seq, env}] }
 * (`events` and `feed` oldest first; `feed` leaves out what the feed does not show).
 */
export function applyFrame(state, frame, now) {
  const t = num(now) === null ? Date.now() : now;
  const kind = isObj(frame) && typeof frame.type === 'string' ? frame.type : 'invalid';
  const changes = emptyChanges(kind);
  if (!isObj(frame)) return changes;
  try {
    if (frame.type === 'snapshot') applySnapshot(state, frame, changes, t);
    else if (frame.type === 'resumed') applyResumed(state, frame, changes);
    else if (frame.type === 'events') applyEventsFrame(state, frame, changes);
    else if (frame.type === 'telemetry') applyTelemetry(state, frame, changes, t);
    else if (frame.type === 'bus') {
      // The gateway's own link to NATS: while it is down nothing new can arrive.
      state.busConnected = frame.connected !== false;
      changes.applied = true;
    }
  } catch (_e) {
    // Defensive: a malformed frame must never break the dashboard.
  }
  return changes;
}

/** When the last heartbeat arrived (this page's or the server's clock, never the agent's). */
export function heartbeatTime(node) {
  if (!node || !isObj(node.heartbeat)) return null;
  return num(node._rx);
}

export function heartbeatAge(node, now) {
  const t = heartbeatTime(node);
  return t === null ? null : Math.max(0, now - t);
}

/** 'online' | 'offline' | 'stale' | 'unknown' */
export function nodeStatus(node, now) {
  const status = node ? node.status : null;
  if (status === 'offline') return 'offline';
  const age = heartbeatAge(node, now);
  if (age !== null && age > STALE_MS) return 'stale';
  if (status === 'online') return 'online';
  if (age !== null) return 'online';
  return 'unknown';
}

export function sortedNodeIds(state) {
  return Array.from(state.nodes.keys()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * A node's GPUs, inventory and latest sample joined by index, in index order:
 * [{ index, name, vendor, simulated, used, total, util, temp, power, info, live }].
 */
export function gpuRows(node) {
  const inv = node && Array.isArray(node.gpus) ? node.gpus.filter(isObj) : [];
  const hb = node && isObj(node.heartbeat) && Array.isArray(node.heartbeat.gpus) ? node.heartbeat.gpus.filter(isObj) : [];
  const byIndex = new Map();
  const entry = (g, i) => {
    const idx = num(g.index) === null ? i : g.index;
    if (!byIndex.has(idx)) byIndex.set(idx, { info: null, live: null });
    return byIndex.get(idx);
  };
  inv.forEach((g, i) => {
    entry(g, i).info = g;
  });
  hb.forEach((g, i) => {
    entry(g, i).live = g;
  });
  return Array.from(byIndex.keys())
    .sort((a, b) => a - b)
    .map((index) => {
      const { info, live } = byIndex.get(index);
      return {
        index: index,
        name: (info && str(info.name)) || 'GPU ' + index,
        vendor: info ? str(info.vendor) : null,
        simulated: !!info && info.vendor === 'simulated',
        used: live ? num(live.memory_used_bytes) : null,
        total: (live && num(live.memory_total_bytes)) || (info && num(info.memory_total_bytes)) || null,
        util: live ? num(live.utilization_percent) : null,
        temp: live ? num(live.temperature_c) : null,
        power: live ? num(live.power_watts) : null,
        info: info,
        live: live,
      };
    });
}

/** Whether a feed item matches the filter text (type, aggregate, correlation). */
export function eventMatches(item, filter) {
  if (!filter) return true;
  const env = item && isObj(item.env) ? item.env : {};
  const hay = [str(env.type) || '', (str(env.aggregate_type) || '') + '/' + (str(env.aggregate_id) || ''), str(env.correlation_id) || '']
    .join('\n')
    .toLowerCase();
  return hay.indexOf(filter.toLowerCase()) !== -1;
}

/**
 * The websocket's address for a one-time `ticket` (from `POST /api/ws-ticket`; the token itself
 * never goes into an address), resuming after `since` when there is one.
 */
export function wsUrl(loc, ticket, since) {
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = proto + '//' + loc.host + '/ws?ticket=' + encodeURIComponent(ticket);
  if (since !== null && since !== undefined) url += '&since=' + encodeURIComponent(String(since));
  return url;
}

export function nextBackoff(ms) {
  return Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, ms * 2));
}
