// Hosts over SSH: the registry as the API answers it (with each host's pinned key and latest
// metrics), the add-host form read into a request, and remote commands folded from their
// events (output in order, then the exit status or the reason it failed). Pure: no DOM.

import { isObj, num, str } from './format.js';

export const MAX_EXECS = 30;
const FINAL = ['completed', 'failed'];

/**
 * `GET /api/hosts` → rows sorted by name: `{ name, target, allowlist, key, refusedKey,
 * metrics, error, sampledAt }`; metrics `{ load, memTotal, memAvailable, uptime, root }`.
 */
export function normalizeHosts(data) {
  const hosts = isObj(data) && Array.isArray(data.hosts) ? data.hosts : [];
  return hosts
    .filter((x) => isObj(x) && str(x.name))
    .map((x) => {
      const sample = isObj(x.sample) ? x.sample : {};
      const m = isObj(sample.metrics) ? sample.metrics : null;
      const disks = m && Array.isArray(m.disks) ? m.disks.filter(isObj) : [];
      const root = disks.find((d) => d.mount === '/') || disks[0] || null;
      return {
        name: str(x.name),
        target: (str(x.user) || '?') + '@' + (str(x.address) || '?') + ':' + (num(x.port) === null ? 22 : num(x.port)),
        allowlist: Array.isArray(x.allowlist) ? x.allowlist.filter((a) => typeof a === 'string') : [],
        keySecret: str(x.key_secret),
        key: isObj(x.host_key) ? str(x.host_key.fingerprint) : null,
        refusedKey: isObj(x.key_mismatch) ? str(x.key_mismatch.fingerprint) : null,
        metrics: m
          ? {
              load: [num(m.load_1m), num(m.load_5m), num(m.load_15m)],
              memTotal: num(m.memory_total_bytes),
              memAvailable: num(m.memory_available_bytes),
              uptime: num(m.uptime_secs),
              root: root ? { mount: str(root.mount), total: num(root.total_bytes), used: num(root.used_bytes) } : null,
            }
          : null,
        error: isObj(sample.error) ? (str(sample.error.reason) || 'error') + ': ' + (str(sample.error.message) || '') : null,
        sampledAt: str(sample.at),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The add-host form's fields → `{ body }` for `POST /api/hosts`, or `{ error }`. */
export function hostRequest(form) {
  const f = isObj(form) ? form : {};
  const name = (str(f.name) || '').trim();
  const address = (str(f.address) || '').trim();
  const user = (str(f.user) || '').trim();
  const keySecret = (str(f.keySecret) || '').trim();
  if (!name || !address || !user || !keySecret) return { error: 'name, address, user and key secret are needed' };
  const rawPort = (str(f.port) || '').trim();
  const port = rawPort === '' ? 22 : Number(rawPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { error: 'port must be 1-65535' };
  const allowlist = (str(f.allowlist) || '')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  return { body: { name: name, address: address, port: port, user: user, key_secret: keySecret, allowlist: allowlist } };
}

/**
 * Folds `host_exec.*` events (in log order) into `execs`, a Map exec id → `{ id, host, command,
 * status, chunks: [{stream, text}], exit, reason, error, truncated, durationMs, actor, at }`,
 * newest last, at most MAX_EXECS. Returns whether anything changed.
 */
export function foldExec(execs, env) {
  if (!isObj(env) || env.aggregate_type !== 'host_exec') return false;
  const id = str(env.aggregate_id);
  const type = str(env.type) || '';
  const data = isObj(env.data) ? env.data : {};
  if (!id) return false;
  let entry = execs.get(id);
  if (type === 'host_exec.requested') {
    if (entry) return false;
    execs.set(id, {
      id: id,
      host: str(data.host),
      command: str(data.command),
      status: 'requested',
      chunks: [],
      exit: null,
      reason: null,
      error: null,
      truncated: false,
      durationMs: null,
      actor: isObj(env.actor) ? str(env.actor.id) : null,
      at: str(env.occurred_at),
    });
    while (execs.size > MAX_EXECS) execs.delete(execs.keys().next().value);
    return true;
  }
  if (!entry || FINAL.indexOf(entry.status) !== -1) return false;
  if (type === 'host_exec.started') entry.status = 'started';
  else if (type === 'host_exec.output') entry.chunks.push({ stream: str(data.stream) || 'stdout', text: str(data.text) || '' });
  else if (type === 'host_exec.completed') {
    entry.status = 'completed';
    entry.exit = num(data.exit_status);
    entry.truncated = data.truncated === true;
    entry.durationMs = num(data.duration_ms);
  } else if (type === 'host_exec.failed') {
    entry.status = 'failed';
    entry.reason = str(data.reason);
    entry.error = str(data.error);
    entry.durationMs = num(data.duration_ms);
  } else return false;
  return true;
}

/** An execution as `GET /api/host-execs/{id}` answers it, in the fold's shape. */
export function execFromView(view) {
  const v = isObj(view) ? view : {};
  return {
    id: str(v.exec_id),
    host: str(v.host),
    command: str(v.command),
    status: str(v.status) || 'requested',
    chunks: (Array.isArray(v.output) ? v.output : []).filter(isObj).map((c) => ({ stream: str(c.stream) || 'stdout', text: str(c.text) || '' })),
    exit: num(v.exit_status),
    reason: str(v.reason),
    error: str(v.error),
    truncated: v.truncated === true,
    durationMs: num(v.duration_ms),
    actor: isObj(v.requested_by) ? str(v.requested_by.id) : null,
    at: str(v.requested_at),
  };
}

/** One line saying how an execution ended (or that it runs). */
export function execSummary(exec) {
  if (!isObj(exec)) return '';
  const took = exec.durationMs === null ? '' : ' in ' + (exec.durationMs / 1000).toFixed(2) + ' s';
  if (exec.status === 'completed') return 'exit ' + exec.exit + took + (exec.truncated ? ' (output cut)' : '');
  if (exec.status === 'failed') return (exec.reason || 'failed') + ': ' + (exec.error || '') + took;
  return exec.status + '\u2026';
}

/** Whether an event should make the room ask for the host list again. */
export function touchesHosts(env) {
  return isObj(env) && env.aggregate_type === 'host';
}
