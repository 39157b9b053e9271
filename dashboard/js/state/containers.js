// Containers on the nodes: a node's listing as the API answers it, what may be done to each
// container, and the log of container commands folded from their events. Pure: no DOM.

import { isObj, num, str } from './format.js';

const RUNNING = ['running', 'restarting', 'paused'];
const FINAL = ['completed', 'failed', 'expired'];
export const MAX_COMMANDS = 50;

/**
 * `GET /api/nodes/{id}/containers` → `{ docker, available, sampledAt, rows }`, rows sorted by
 * name: `{ id, name, image, state, status, health, ports, compose, cpu, memUsed, memLimit }`.
 */
export function normalizeListing(data) {
  const d = isObj(data) ? data : {};
  const docker = str(d.docker) || 'unknown';
  const rows = (Array.isArray(d.containers) ? d.containers : [])
    .filter((c) => isObj(c) && str(c.name))
    .map((c) => ({
      id: str(c.id) || '',
      name: str(c.name),
      image: str(c.image) || '',
      state: str(c.state) || 'unknown',
      status: str(c.status) || '',
      health: str(c.health),
      ports: Array.isArray(c.ports) ? c.ports.filter((p) => typeof p === 'string') : [],
      compose: str(c.compose_project) ? str(c.compose_project) + (str(c.compose_service) ? '/' + str(c.compose_service) : '') : null,
      cpu: num(c.cpu_percent),
      memUsed: num(c.memory_used_bytes),
      memLimit: num(c.memory_limit_bytes),
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { docker: docker, available: docker === 'available', sampledAt: str(d.sampled_at), rows: rows };
}

/** The actions a container offers: start when it is not running; stop and restart when it is. */
export function actionsFor(row) {
  const running = RUNNING.indexOf(row.state) !== -1;
  return running ? ['stop', 'restart'] : ['start'];
}

/** `POST …/{action}?wait=` answer → `{ ok, done, message }` for the row's notice. */
export function commandOutcome(status, data, message) {
  const d = isObj(data) ? data : {};
  const state = str(d.status);
  const outcome = str(d.outcome);
  if (status === 200 && state === 'completed') return { ok: true, done: true, message: outcome || 'done' };
  if (status === 200 && (state === 'failed' || state === 'expired')) return { ok: false, done: true, message: state + ': ' + (outcome || '?') };
  if (status === 202) return { ok: true, done: false, message: 'sent; waiting for the node (' + (state || 'requested') + ')' };
  return { ok: false, done: true, message: message || 'HTTP ' + status };
}

/**
 * Folds container command events (`container.command_*`, in log order) into `log`, a Map
 * command id → `{ id, node, container, action, status, outcome, actor, at }`, newest last,
 * at most MAX_COMMANDS. Returns whether anything changed.
 */
export function foldCommand(log, env) {
  if (!isObj(env) || env.aggregate_type !== 'container_command') return false;
  const id = str(env.aggregate_id);
  const type = str(env.type) || '';
  if (!id || type.indexOf('container.command_') !== 0) return false;
  const data = isObj(env.data) ? env.data : {};
  let entry = log.get(id);
  if (type === 'container.command_requested') {
    if (entry) return false;
    entry = {
      id: id,
      node: str(data.node_id),
      container: str(data.container),
      action: str(data.action),
      status: 'requested',
      outcome: null,
      actor: isObj(env.actor) ? str(env.actor.id) : null,
      at: str(env.occurred_at),
    };
    log.set(id, entry);
    while (log.size > MAX_COMMANDS) log.delete(log.keys().next().value);
    return true;
  }
  if (!entry || FINAL.indexOf(entry.status) !== -1) return false;
  const status = type.slice('container.command_'.length);
  if (['started', 'completed', 'failed', 'expired'].indexOf(status) === -1) return false;
  entry.status = status;
  entry.outcome = str(data.summary) || str(data.error) || str(data.reason) || entry.outcome;
  return true;
}

/** The log newest first, for one node (or every node when `node` is null). */
export function commandsOf(log, node) {
  return Array.from(log.values())
    .filter((c) => node === null || c.node === node)
    .reverse();
}

/** Whether an event should make the room ask for the listing again. */
export function touchesContainers(env) {
  return isObj(env) && (env.aggregate_type === 'container_command' || env.aggregate_type === 'node_containers');
}

/** Lines a followed log keeps on screen. */
export const MAX_FOLLOWED = 2000;

/**
 * One frame of a followed log (`{lines, skipped_bytes?, ended?}`) added to `view` (`{ lines:
 * [text], skipped, ended }`, the newest MAX_FOLLOWED lines kept). Returns the new view.
 */
export function addFollowed(view, frame) {
  const v = isObj(view) ? view : { lines: [], skipped: 0, ended: null };
  const f = isObj(frame) ? frame : {};
  const added = (Array.isArray(f.lines) ? f.lines : []).filter(isObj).map((l) => (typeof l.text === 'string' ? l.text : ''));
  const lines = v.lines.concat(added);
  return {
    lines: lines.length > MAX_FOLLOWED ? lines.slice(lines.length - MAX_FOLLOWED) : lines,
    skipped: v.skipped + (num(f.skipped_bytes) || 0),
    ended: str(f.ended) || v.ended,
  };
}
