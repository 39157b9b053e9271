// The page's one websocket: frames folded into the live state, reconnect with backoff, resume
// from the last sequence seen (`?since=`) so nothing is missed or shown twice. The token never
// goes into the websocket's address: every (re)connect first asks `POST /api/ws-ticket` (with
// the token in its header) for a one-time ticket, and opens `/ws?ticket=…` with it.

import { api, getToken } from './api.js';
import { isObj, str } from './state/format.js';
import { applyFrame, BACKOFF_MIN_MS, CLOSE_AUTH, nextBackoff, wsUrl } from './state/live.js';

/**
 * `hooks`: `changes(changes)` after every applied frame, `status(s)` with 'connecting' | 'live'
 * | 'reconnecting', `rejected(message)` when the gateway refuses the token, `noToken()`.
 */
export function createSocket(state, hooks) {
  let ws = null;
  let generation = 0;
  let backoffMs = BACKOFF_MIN_MS;
  let reconnectTimer = null;
  let everLive = false;

  function stop() {
    if (reconnectTimer !== null) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
    generation += 1; // invalidates the old socket's handlers
    if (ws) {
      try {
        ws.close(1000, 'client closing');
      } catch (_e) {
        /* ignore */
      }
      ws = null;
    }
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) return;
    hooks.status(everLive ? 'reconnecting' : 'connecting');
    const delay = backoffMs;
    backoffMs = nextBackoff(backoffMs);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  function onMessage(ev) {
    let frame;
    try {
      frame = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
    } catch (_e) {
      return;
    }
    const changes = applyFrame(state, frame);
    if (changes.kind === 'invalid') return;
    backoffMs = BACKOFF_MIN_MS; // a good frame
    everLive = true;
    if (state.busConnected === false) hooks.status('reconnecting', 'reconnecting to NATS');
    else hooks.status('live');
    hooks.changes(changes);
  }

  /** A fresh one-time ticket for the websocket: the ticket, 'rejected' (a 401), or null. */
  async function fetchTicket() {
    const res = await api('/api/ws-ticket', { method: 'POST' });
    if (res.status === 401) return 'rejected';
    if (!res.ok) return null; // the network, or the gateway busy: the backoff loop tries again
    return isObj(res.data) ? str(res.data.ticket) || null : null;
  }

  async function connect() {
    stop();
    const token = getToken();
    if (!token) {
      hooks.status('connecting');
      hooks.noToken();
      return;
    }
    hooks.status(everLive ? 'reconnecting' : 'connecting');
    const gen = generation;
    const ticket = await fetchTicket();
    if (gen !== generation || getToken() !== token) return; // stopped, restarted or signed out meanwhile
    if (ticket === 'rejected') {
      hooks.rejected('token rejected'); // api() has usually told the shell already (it stops us)
      return;
    }
    if (!ticket) {
      scheduleReconnect();
      return;
    }
    let sock;
    try {
      sock = new WebSocket(wsUrl(window.location, ticket, state.lastSeq));
    } catch (_e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onmessage = (ev) => {
      if (gen === generation) onMessage(ev);
    };
    sock.onclose = (ev) => {
      if (gen !== generation) return;
      ws = null;
      if (ev && ev.code === CLOSE_AUTH) {
        hooks.rejected('token rejected');
        return;
      }
      // A handshake that failed (a ticket is good once, for a short while) or a dropped socket:
      // the next try asks for a new ticket, and a token rejected by then shows there.
      scheduleReconnect();
    };
    sock.onerror = () => {
      /* onclose follows */
    };
  }

  /** Connect now with a fresh backoff (a new token). */
  function restart() {
    backoffMs = BACKOFF_MIN_MS;
    connect();
  }

  return { connect: connect, restart: restart, stop: stop };
}
