// Services supervised on a node: the live list the agent answers and the history of changes,
// as `GET /api/nodes/{id}/services` returns them. Pure: no DOM.

import { isObj, num, str } from './format.js';

const ORDER = { gave_up: 0, down: 1, unhealthy: 2, starting: 3, healthy: 4, stopped: 5 };

/**
 * The answer → `{ agent, answered, rows, history }`: rows `{ name, kind, state, restarts, pid,
 * reason, since }` with trouble first, then by name; history `{ service, state, restarts,
 * reason, at }`, newest first.
 */
export function normalizeServices(data) {
  const d = isObj(data) ? data : {};
  const rows = (Array.isArray(d.services) ? d.services : [])
    .filter((s) => isObj(s) && str(s.name))
    .map((s) => ({
      name: str(s.name),
      kind: str(s.kind) || '?',
      state: str(s.state) || 'unknown',
      restarts: num(s.restarts) || 0,
      pid: num(s.pid),
      reason: str(s.reason) || '',
      since: str(s.since),
    }))
    .sort((a, b) => {
      const oa = a.state in ORDER ? ORDER[a.state] : 9;
      const ob = b.state in ORDER ? ORDER[b.state] : 9;
      return oa - ob || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    });
  const history = (Array.isArray(d.history) ? d.history : [])
    .filter((c) => isObj(c) && str(c.service))
    .map((c) => ({ service: str(c.service), state: str(c.state) || 'unknown', restarts: num(c.restarts) || 0, reason: str(c.reason) || '', at: str(c.at) }));
  const agent = str(d.agent) || 'unknown';
  return { agent: agent, answered: agent === 'answered', rows: rows, history: history };
}

/** Whether a service's state is trouble worth a red mark. */
export function isTrouble(state) {
  return state === 'gave_up' || state === 'down' || state === 'unhealthy';
}

/** Whether an event should make the room ask again. */
export function touchesServices(env) {
  return isObj(env) && env.aggregate_type === 'node_services';
}
