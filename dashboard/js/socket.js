// The page's one websocket: frames folded into the live state, reconnect with backoff, resume
// from the last sequence seen (`?since=`) so nothing is missed or shown twice.

import { getToken, probeToken } from './api.js';
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
    hooks.status('live');
    hooks.changes(changes);
  }

  function connect() {
    stop();
    const token = getToken();
    if (!token) {
      hooks.status('connecting');
      hooks.noToken();
      return;
    }
    hooks.status(everLive ? 'reconnecting' : 'connecting');
    const gen = generation;
    let sock;
    try {
      sock = new WebSocket(wsUrl(window.location, token, state.lastSeq));
    } catch (_e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    let opened = false;
    sock.onopen = () => {
      opened = true;
    };
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
      scheduleReconnect();
      if (!opened) probeToken(token);
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
