// The overview: what a homelab owner looks at first, derived from the live state, the render
// queue and the dead letters. Pure.

import { isObj, num, parseTime, plural, str, tailId } from './format.js';
import { clockSkew, gpuRows, heartbeatAge, HOT_C, nodeStatus, sortedNodeIds } from './live.js';

/** A node's clock this far off the server's is worth a warning. */
export const SKEW_WARN_MS = 5000;
import { queueJobs, queuePaused } from './studio.js';

const DAY_MS = 24 * 3600 * 1000;

/** Nodes with their GPUs, and the totals: `{ nodes, counts, gpus: { count, used, total } }`. */
export function nodeSummary(state, now) {
  const counts = { total: 0, online: 0, stale: 0, offline: 0, unknown: 0 };
  const gpus = { count: 0, used: 0, total: 0 };
  const nodes = sortedNodeIds(state).map((id) => {
    const node = state.nodes.get(id);
    const status = nodeStatus(node, now);
    counts.total += 1;
    counts[status] += 1;
    const rows = gpuRows(node);
    for (const g of rows) {
      gpus.count += 1;
      if (status === 'offline') continue;
      if (g.used !== null) gpus.used += g.used;
      if (g.total !== null) gpus.total += g.total;
    }
    const hb = isObj(node.heartbeat) ? node.heartbeat : {};
    return {
      id: id,
      hostname: str(node.hostname),
      status: status,
      provisional: !!node._provisional,
      age: heartbeatAge(node, now),
      skew: clockSkew(node),
      cpu: num(hb.cpu_percent),
      ramUsed: num(hb.memory_used_bytes),
      ramTotal: num(hb.memory_total_bytes) || num(node.memory_total_bytes),
      gpus: rows,
    };
  });
  return { nodes: nodes, counts: counts, gpus: gpus };
}

/** The render queue at a glance: running and queued jobs in run order, the count and cap. */
export function jobSummary(studio) {
  const jobs = queueJobs(studio);
  const q = studio.queue;
  const queued = jobs.filter((j) => j.status === 'queued');
  return {
    loaded: !!q,
    running: jobs.filter((j) => j.status === 'running' || j.status === 'assigned'),
    queued: queued,
    queuedCount: q && num(q.queued) !== null ? q.queued : queued.length,
    cap: q ? num(q.cap) : null,
    paused: queuePaused(studio),
  };
}

/** A supervised state as words: `gave_up` → `gave up`. */
function stateWords(state) {
  return state === 'gave_up' ? 'gave up' : str(state) || '?';
}

function eventFailure(item) {
  const env = item && isObj(item.env) ? item.env : null;
  if (!env) return null;
  const data = isObj(env.data) ? env.data : {};
  const id = str(env.aggregate_id) || '';
  const base = { at: parseTime(env.occurred_at), when: str(env.occurred_at), correlation: str(env.correlation_id) };
  const inFeed = { room: 'events', params: { filter: base.correlation || id } };
  switch (env.type) {
    case 'render.job_failed':
      return Object.assign(base, { key: 'render:' + id, kind: 'render', title: 'render ' + tailId(id) + ' failed', detail: str(data.reason), room: 'studio', params: { job: id } });
    case 'chat.reply_failed':
      return Object.assign(base, inFeed, { key: 'chat:' + id + ':' + item.seq, kind: 'chat', title: 'chat reply failed', detail: str(data.error) });
    case 'chat.command_rejected':
      if (data.reason !== 'queue_full') return null; // cooldowns and roles are the rules working
      return Object.assign(base, inFeed, { key: 'chat:' + id + ':' + item.seq, kind: 'chat', title: 'chat command refused: queue full', detail: str(data.message) });
    case 'post.failed':
      if (data.will_retry) return null; // retried; a final failure follows if it comes to that
      return Object.assign(base, inFeed, { key: 'post:' + id + ':' + str(data.destination), kind: 'post', title: 'post to ' + (str(data.destination) || '?') + ' failed', detail: str(data.error) });
    case 'comfyui.state_changed':
      if (['down', 'unresponsive', 'gave_up'].indexOf(data.state) < 0) return null;
      return Object.assign(base, { key: 'comfyui:' + id + ':' + item.seq, kind: 'comfyui', title: 'ComfyUI on ' + id + ' ' + stateWords(data.state), detail: str(data.reason), room: 'studio', params: {} });
    case 'service.state_changed':
      if (data.state !== 'down' && data.state !== 'gave_up') return null;
      return Object.assign(base, { key: 'service:' + id + ':' + item.seq, kind: 'service', title: (str(data.service) || 'a service') + ' on ' + id + ' ' + stateWords(data.state), detail: str(data.reason), room: 'services', params: { node: id } });
    default:
      return null;
  }
}

function jobFailure(job) {
  const id = str(job.job_id) || '';
  return {
    key: 'render:' + id,
    kind: 'render',
    title: (str(job.mode) || 'render') + ' ' + tailId(id) + ' failed' + (str(job.node_id) ? ' on ' + job.node_id : ''),
    detail: str(job.error),
    at: parseTime(job.finished_at) ?? parseTime(job.updated_at),
    when: str(job.finished_at) || str(job.updated_at),
    correlation: str(job.correlation_id),
    room: 'studio',
    params: { job: id },
  };
}

/**
 * Recent failures, newest first: failed render jobs (REST, `jobs`) and the failures the live
 * feed saw (`feed`: feed items, any order). One entry per failed job, whichever told of it.
 */
export function recentFailures(jobs, feed, limit) {
  const byKey = new Map();
  for (const item of Array.isArray(feed) ? feed : []) {
    const f = eventFailure(item);
    if (f) byKey.set(f.key, f);
  }
  for (const job of Array.isArray(jobs) ? jobs : []) {
    if (!isObj(job) || !str(job.job_id)) continue;
    const f = jobFailure(job);
    const seen = byKey.get(f.key);
    byKey.set(f.key, seen ? Object.assign({}, seen, f, { at: f.at ?? seen.at, when: f.when || seen.when, detail: f.detail || seen.detail }) : f);
  }
  const list = Array.from(byKey.values()).sort((a, b) => (b.at ?? -Infinity) - (a.at ?? -Infinity));
  return list.slice(0, num(limit) === null ? list.length : limit);
}

/**
 * The few lines that need the owner's attention, most serious first: `[{ tone, text, room,
 * params? }]` (tone 'crit' or 'warn'; room null: nowhere to go, the failures are listed here).
 * Empty when all is well. `dlq` is `{ total }`, or null when unknown.
 */
export function attention(nodes, jobs, failures, dlq, now, storage, health) {
  const out = [];
  for (const w of healthWarnings(health)) out.push(w);
  for (const w of storageWarnings(storage)) out.push(w);
  if (nodes.counts.offline) out.push({ tone: 'crit', text: plural(nodes.counts.offline, 'node') + ' offline', room: 'nodes' });
  if (nodes.counts.stale) out.push({ tone: 'warn', text: plural(nodes.counts.stale, 'node') + ' not heard from in 30s', room: 'nodes' });
  for (const n of nodes.nodes) {
    if (n.status === 'offline') continue;
    if (n.skew !== null && Math.abs(n.skew) > SKEW_WARN_MS) out.push({ tone: 'warn', text: 'clock on ' + n.id + ' ' + (n.skew > 0 ? 'ahead' : 'behind') + ' by ' + Math.round(Math.abs(n.skew) / 1000) + ' s', room: 'nodes', params: { node: n.id } });
    for (const g of n.gpus) if (g.temp !== null && g.temp >= HOT_C) out.push({ tone: 'warn', text: g.name + ' on ' + n.id + ' at ' + g.temp.toFixed(0) + '\u00b0C', room: 'nodes', params: { node: n.id } });
  }
  if (dlq && num(dlq.total)) out.push({ tone: 'crit', text: plural(dlq.total, 'dead letter') + ' waiting', room: 'dlq' });
  const today = failures.filter((f) => f.at !== null && now - f.at < DAY_MS).length;
  if (today) out.push({ tone: 'warn', text: plural(today, 'failure') + ' in the last 24h', room: null });
  if (jobs.paused.paused) out.push({ tone: 'warn', text: 'render queue paused' + (jobs.paused.reason ? ' (' + jobs.paused.reason + ')' : ''), room: 'studio' });
  if (jobs.cap !== null && jobs.queuedCount >= jobs.cap) out.push({ tone: 'crit', text: 'render queue full (' + jobs.cap + ')', room: 'studio' });
  return out.filter((a) => a.tone === 'crit').concat(out.filter((a) => a.tone !== 'crit'));
}

const DEPENDENCIES = { nats: 'NATS', postgres: 'Postgres', redis: 'Redis' };

/**
 * `GET /health` → a dependency that is down, and chat commands waiting for one to come back
 * (none is lost: they are answered once it is), as attention lines: `[{ tone, text, room }]`.
 */
export function healthWarnings(health) {
  if (!isObj(health)) return [];
  const out = [];
  const checks = isObj(health.checks) ? health.checks : {};
  for (const key of Object.keys(DEPENDENCIES)) {
    const check = checks[key];
    if (isObj(check) && check.status === 'down') out.push({ tone: 'crit', text: DEPENDENCIES[key] + ' unreachable' + (str(check.error) ? ': ' + str(check.error) : ''), room: null });
  }
  const chat = isObj(health.chat) ? health.chat : {};
  for (const [key, name] of [['waiting_on_redis', 'Redis'], ['waiting_on_nats', 'NATS']]) {
    const n = num(chat[key]);
    if (n) out.push({ tone: 'warn', text: plural(n, 'chat command') + ' waiting for ' + name + ' (answered once it is back)', room: 'chat' });
  }
  return out;
}

/**
 * `GET /api/storage` → the streams at or past the warning share of their limit, as attention
 * lines (`crit` when full) leading to the Storage room: `[{ tone, text, room }]`.
 */
export function storageWarnings(storage) {
  if (!isObj(storage) || !Array.isArray(storage.streams)) return [];
  const warn = num(storage.warn_fraction) || 0.8;
  const out = [];
  for (const s of storage.streams.filter(isObj)) {
    const max = num(s.max_bytes);
    const bytes = num(s.bytes);
    if (!max || bytes === null) continue;
    const share = bytes / max;
    if (share < warn) continue;
    const name = s.stream === 'EVENTS' ? 'event log' : str(s.stream) + ' stream';
    const gib = (n) => (n / 1073741824).toFixed(n < 1073741824 ? 2 : 1);
    const full = share >= 0.999;
    out.push({ tone: full ? 'crit' : 'warn', text: name + (full ? ' full: new events are refused' : ' ' + Math.floor(share * 100) + '% full') + ' (' + gib(bytes) + ' of ' + gib(max) + ' GiB)', room: 'storage' });
  }
  return out;
}
