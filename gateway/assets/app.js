/* Nebula Command dashboard. Plain ES2020, no build step, no dependencies.
 *
 * Structure:
 *   - pure state layer: createState(), applyFrame(state, frame, now) and
 *     formatting helpers. No DOM access; loadable in node for unit checks.
 *   - DOM layer (only when `document` exists): auth, websocket with
 *     resume/backoff, incremental rendering of the node table and event feed.
 */
(function (global) {
  'use strict';

  const TOKEN_KEY = 'nebula.token';
  const STALE_MS = 30 * 1000; // 3x a typical 10 s heartbeat interval
  const MAX_EVENTS = 200;
  const SUMMARY_CHARS = 120;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const CLOSE_AUTH = 4001;
  const CLOSE_SLOW = 4008;
  const GIB = 1024 * 1024 * 1024;

  // ---------------------------------------------------------------------
  // small helpers (pure)
  // ---------------------------------------------------------------------

  const DASH = '\u2014';

  function isObj(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  function num(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  }

  function str(v) {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' && Number.isFinite(v)) return String(v);
    return null;
  }

  function text(v) {
    const s = str(v);
    return s === null || s === '' ? DASH : s;
  }

  function parseTime(v) {
    if (typeof v !== 'string' || v === '') return null;
    const t = Date.parse(v);
    return Number.isFinite(t) ? t : null;
  }

  function fmtBytes(v) {
    const n = num(v);
    if (n === null || n < 0) return DASH;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let x = n;
    let i = 0;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i += 1;
    }
    const digits = i === 0 ? 0 : x >= 100 ? 0 : x >= 10 ? 1 : 2;
    return x.toFixed(digits) + ' ' + units[i];
  }

  function fmtGiB(v) {
    const n = num(v);
    if (n === null || n < 0) return DASH;
    const g = n / GIB;
    return g >= 100 ? g.toFixed(0) : g.toFixed(1);
  }

  function fmtPercent(v) {
    const n = num(v);
    return n === null ? DASH : n.toFixed(1) + '%';
  }

  function ratioPercent(used, total) {
    const u = num(used);
    const t = num(total);
    if (u === null || t === null || t <= 0) return null;
    return Math.max(0, Math.min(100, (u / t) * 100));
  }

  function fmtAge(ms) {
    if (ms === null || !Number.isFinite(ms)) return DASH;
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ago';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ago';
    return Math.floor(h / 24) + 'd ago';
  }

  function fmtUptime(v) {
    const n = num(v);
    if (n === null || n < 0) return DASH;
    const d = Math.floor(n / 86400);
    const h = Math.floor((n % 86400) / 3600);
    const m = Math.floor((n % 3600) / 60);
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    return m + 'm';
  }

  function pad2(n) {
    return n < 10 ? '0' + n : String(n);
  }

  function fmtClock(v) {
    const t = parseTime(v);
    if (t === null) return DASH;
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function safeJson(v, indent) {
    try {
      const s = JSON.stringify(v, null, indent);
      return s === undefined ? DASH : s;
    } catch (_e) {
      return DASH;
    }
  }

  function summarize(data) {
    if (data === undefined || data === null) return DASH;
    const s = safeJson(data);
    return s.length > SUMMARY_CHARS ? s.slice(0, SUMMARY_CHARS) + '\u2026' : s;
  }

  function shortId(v) {
    const s = str(v);
    return s === null || s === '' ? DASH : s.slice(0, 8);
  }

  // ---------------------------------------------------------------------
  // state + frame application (pure-ish: mutates `state` only)
  // ---------------------------------------------------------------------

  function createState() {
    return {
      nodes: new Map(), // node_id -> node object (Node shape + internal `_rx`)
      events: [], // feed items, newest first: { seq, env }
      lastSeq: null, // last applied stream sequence (null = never had a snapshot)
      eventCount: 0, // events received this session (distinct stream seqs)
      countedThrough: null, // highest seq already counted
    };
  }

  function emptyChanges(kind) {
    return {
      kind: kind,
      applied: false,
      reset: false, // true => full re-render of nodes and events
      nodes: new Set(), // node ids whose row must be re-rendered
      events: [], // newly added feed items, oldest first
    };
  }

  function provisionalNode(id) {
    return {
      node_id: id,
      hostname: null,
      status: null,
      gpus: [],
      heartbeat: null,
      _provisional: true,
      _rx: null,
    };
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
    node._rx = node.heartbeat ? now : null;
    return node;
  }

  function markCounted(state, seq) {
    if (seq !== null && (state.countedThrough === null || seq > state.countedThrough)) state.countedThrough = seq;
  }

  function pushEvent(state, changes, seq, env) {
    const item = { seq: seq, env: env };
    state.events.unshift(item);
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    changes.events.push(item);
  }

  // Apply one event envelope to the node table. Unknown types are a no-op.
  function applyEventToNodes(state, changes, env) {
    if (!isObj(env)) return;
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
    const start = Math.max(0, list.length - MAX_EVENTS);
    // Count only events not already counted this session (a re-snapshot
    // after a reconnect repeats events we have seen).
    const countedBefore = state.countedThrough;
    for (let i = start; i < list.length; i += 1) {
      const env = list[i];
      const s = num(env.stream_seq);
      state.events.unshift({ seq: s, env: env });
      changes.events.push(state.events[0]);
      if (s === null || countedBefore === null || s > countedBefore) state.eventCount += 1;
      markCounted(state, s);
    }
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
      pushEvent(state, changes, seq, env);
      applyEventToNodes(state, changes, env);
    }
    if (seq !== null) {
      state.lastSeq = seq;
      markCounted(state, seq);
    }
    changes.applied = true;
  }

  // Returns true if `next` should replace `prev` (see protocol: drop only when
  // the sample sequence went backwards AND the sample time is older).
  function heartbeatIsNewer(prev, next) {
    if (!isObj(prev)) return true;
    const ps = num(prev.sample_seq);
    const ns = num(next.sample_seq);
    const pt = parseTime(prev.sampled_at);
    const nt = parseTime(next.sampled_at);
    const seqLower = ps !== null && ns !== null && ns < ps;
    const timeOlder = pt !== null && nt !== null && nt < pt;
    return !(seqLower && timeOlder);
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
    } else if (!heartbeatIsNewer(node.heartbeat, hb)) {
      return;
    }
    node.heartbeat = hb;
    node._rx = now;
    changes.nodes.add(id);
    changes.applied = true;
  }

  /**
   * Apply one server frame to `state`. Never throws on malformed input.
   * Returns a change description used by the renderer:
   *   { kind, applied, reset, nodes:Set<id>, events:[{seq, env}] (oldest first) }
   */
  function applyFrame(state, frame, now) {
    const t = num(now) === null ? Date.now() : now;
    const kind = isObj(frame) && typeof frame.type === 'string' ? frame.type : 'invalid';
    const changes = emptyChanges(kind);
    if (!isObj(frame)) return changes;
    try {
      switch (frame.type) {
        case 'snapshot':
          applySnapshot(state, frame, changes, t);
          break;
        case 'resumed': {
          // Keep current state. If the server's stream is behind what we saw
          // (stream was reset), follow it so later deltas are not dropped.
          const seq = num(frame.seq);
          if (seq !== null && (state.lastSeq === null || seq < state.lastSeq)) {
            state.lastSeq = seq;
            if (state.countedThrough !== null && seq < state.countedThrough) state.countedThrough = seq;
          }
          changes.applied = true;
          break;
        }
        case 'events':
          applyEventsFrame(state, frame, changes);
          break;
        case 'telemetry':
          applyTelemetry(state, frame, changes, t);
          break;
        default:
          break;
      }
    } catch (_e) {
      // Defensive: a malformed frame must never break the dashboard.
    }
    return changes;
  }

  // Time of the last heartbeat, clamped to when we received it (guards
  // against agent clocks running ahead of the browser).
  function heartbeatTime(node) {
    if (!node || !isObj(node.heartbeat)) return null;
    const sampled = parseTime(node.heartbeat.sampled_at);
    const rx = num(node._rx);
    if (sampled === null) return rx;
    if (rx === null) return sampled;
    return Math.min(sampled, rx);
  }

  function heartbeatAge(node, now) {
    const t = heartbeatTime(node);
    return t === null ? null : Math.max(0, now - t);
  }

  // 'online' | 'offline' | 'stale' | 'unknown'
  function nodeStatus(node, now) {
    const status = node ? node.status : null;
    if (status === 'offline') return 'offline';
    const age = heartbeatAge(node, now);
    if (age !== null && age > STALE_MS) return 'stale';
    if (status === 'online') return 'online';
    if (age !== null) return 'online';
    return 'unknown';
  }

  function sortedNodeIds(state) {
    return Array.from(state.nodes.keys()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  function eventMatches(item, filter) {
    if (!filter) return true;
    const env = item && isObj(item.env) ? item.env : {};
    const hay = [
      str(env.type) || '',
      (str(env.aggregate_type) || '') + '/' + (str(env.aggregate_id) || ''),
      str(env.correlation_id) || '',
    ]
      .join('\n')
      .toLowerCase();
    return hay.indexOf(filter.toLowerCase()) !== -1;
  }

  function wsUrl(loc, token, since) {
    const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = proto + '//' + loc.host + '/ws?token=' + encodeURIComponent(token);
    if (since !== null && since !== undefined) url += '&since=' + encodeURIComponent(String(since));
    return url;
  }

  function nextBackoff(ms) {
    return Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, ms * 2));
  }

  function tokenFromHash(hash) {
    if (typeof hash !== 'string' || hash.length < 2) return null;
    try {
      const params = new URLSearchParams(hash.replace(/^#/, ''));
      const t = params.get('token');
      return t ? t : null;
    } catch (_e) {
      return null;
    }
  }

  const api = {
    createState,
    applyFrame,
    heartbeatIsNewer,
    heartbeatTime,
    heartbeatAge,
    nodeStatus,
    sortedNodeIds,
    eventMatches,
    wsUrl,
    nextBackoff,
    tokenFromHash,
    fmtBytes,
    fmtGiB,
    fmtPercent,
    fmtAge,
    fmtClock,
    summarize,
    shortId,
    constants: { TOKEN_KEY, STALE_MS, MAX_EVENTS, BACKOFF_MIN_MS, BACKOFF_MAX_MS, CLOSE_AUTH, CLOSE_SLOW },
  };

  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  if (typeof document === 'undefined') return;

  // =====================================================================
  // DOM layer
  // =====================================================================

  const state = createState();
  const el = {
    conn: document.getElementById('conn-status'),
    connText: document.querySelector('#conn-status .conn-text'),
    auth: document.getElementById('auth'),
    form: document.getElementById('token-form'),
    input: document.getElementById('token-input'),
    message: document.getElementById('token-message'),
    tbody: document.querySelector('#nodes tbody'),
    nodeCount: document.getElementById('node-count'),
    events: document.getElementById('events'),
    eventCount: document.getElementById('event-count'),
    filter: document.getElementById('event-filter'),
  };
  const rows = new Map(); // node_id -> <tr>

  let memoryToken = null; // fallback when localStorage is unavailable
  let ws = null;
  let wsGeneration = 0;
  let backoffMs = BACKOFF_MIN_MS;
  let reconnectTimer = null;
  let everLive = false;
  let filterText = '';

  // ---- DOM helpers ---------------------------------------------------

  function h(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined && content !== null) e.textContent = String(content);
    return e;
  }

  function bar(percent) {
    const wrap = h('div', 'bar');
    const fill = h('div', 'bar-fill');
    if (percent === null) {
      wrap.classList.add('bar-empty');
    } else {
      fill.style.width = percent.toFixed(1) + '%';
      if (percent >= 90) wrap.classList.add('crit');
      else if (percent >= 75) wrap.classList.add('warn');
    }
    wrap.appendChild(fill);
    return wrap;
  }

  // ---- token storage --------------------------------------------------

  function getToken() {
    try {
      const t = global.localStorage.getItem(TOKEN_KEY);
      if (t) return t;
    } catch (_e) {
      /* storage unavailable */
    }
    return memoryToken;
  }

  function setToken(t) {
    memoryToken = t;
    try {
      global.localStorage.setItem(TOKEN_KEY, t);
    } catch (_e) {
      /* storage unavailable */
    }
  }

  function clearToken() {
    memoryToken = null;
    try {
      global.localStorage.removeItem(TOKEN_KEY);
    } catch (_e) {
      /* storage unavailable */
    }
  }

  function showTokenForm(message) {
    el.auth.hidden = false;
    el.form.hidden = false;
    el.message.textContent = message || '';
    el.input.value = '';
    try {
      el.input.focus();
    } catch (_e) {
      /* ignore */
    }
  }

  function hideTokenForm() {
    el.auth.hidden = true;
    el.form.hidden = true;
    el.message.textContent = '';
  }

  function tokenRejected() {
    clearToken();
    stopSocket();
    setConn('connecting');
    showTokenForm('token rejected');
  }

  // REST helper: Bearer auth, 401 => token rejected. Resolves to parsed JSON
  // or null on any failure.
  async function apiFetch(path, options) {
    const token = getToken();
    if (!token) {
      showTokenForm('');
      return null;
    }
    const opts = Object.assign({}, options || {});
    opts.headers = Object.assign({}, opts.headers || {}, { Authorization: 'Bearer ' + token });
    try {
      const res = await fetch(path, opts);
      if (res.status === 401) {
        tokenRejected();
        return null;
      }
      if (!res.ok) return null;
      return await res.json();
    } catch (_e) {
      return null;
    }
  }

  // Checks `token` against an authenticated endpoint; a 401 means it was
  // rejected. Network errors and other statuses are left to the backoff loop.
  async function probeToken(token) {
    let status = 0;
    try {
      const res = await fetch('/api/nodes', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      status = res.status;
    } catch (_e) {
      return;
    }
    if (status === 401 && getToken() === token) tokenRejected();
  }

  // ---- connection status ---------------------------------------------

  function setConn(s) {
    el.conn.dataset.state = s;
    if (el.connText) el.connText.textContent = s;
    else el.conn.textContent = s;
  }

  // ---- websocket -------------------------------------------------------

  function stopSocket() {
    if (reconnectTimer !== null) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
    wsGeneration += 1; // invalidates handlers of the old socket
    if (ws) {
      try {
        ws.close(1000, 'client closing');
      } catch (_e) {
        /* ignore */
      }
      ws = null;
    }
  }

  function connect() {
    stopSocket();
    const token = getToken();
    if (!token) {
      setConn('connecting');
      showTokenForm('');
      return;
    }
    hideTokenForm();
    setConn(everLive ? 'reconnecting' : 'connecting');
    const gen = wsGeneration;
    let sock;
    try {
      sock = new WebSocket(wsUrl(global.location, token, state.lastSeq));
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
      if (gen !== wsGeneration) return;
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
      } catch (_e) {
        return;
      }
      const changes = applyFrame(state, frame);
      if (changes.kind === 'invalid') return;
      backoffMs = BACKOFF_MIN_MS; // successful frame
      everLive = true;
      setConn('live');
      render(changes);
    };
    sock.onclose = (ev) => {
      if (gen !== wsGeneration) return;
      ws = null;
      if (ev && ev.code === CLOSE_AUTH) {
        tokenRejected();
        return;
      }
      scheduleReconnect();
      // The gateway may refuse the upgrade itself with HTTP 401, which a
      // browser only reports as a failed handshake: ask REST whether the
      // token is the reason.
      if (!opened) probeToken(token);
    };
    sock.onerror = () => {
      /* onclose follows; handled there */
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) return;
    setConn(everLive ? 'reconnecting' : 'connecting');
    const delay = backoffMs;
    backoffMs = nextBackoff(backoffMs);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  // ---- node table ------------------------------------------------------

  function renderNodeCell(node) {
    const td = h('td', 'node');
    td.appendChild(h('div', 'node-id', text(node.node_id)));
    const hostname = str(node.hostname);
    const sub = h('div', 'node-sub');
    if (node._provisional) {
      sub.textContent = 'awaiting inventory';
      sub.classList.add('muted');
    } else {
      sub.appendChild(h('span', 'node-host', hostname || DASH));
      const os = str(node.os);
      const kernel = str(node.kernel);
      const osText = os ? (kernel ? os + ' \u00b7 ' + kernel : os) : DASH;
      sub.appendChild(h('span', 'node-os', osText));
    }
    td.appendChild(sub);
    const agent = str(node.agent_version);
    const titleParts = [];
    if (str(node.cpu_model)) titleParts.push(str(node.cpu_model));
    if (agent) titleParts.push('agent ' + agent);
    if (str(node.agent_url)) titleParts.push(str(node.agent_url));
    if (node.heartbeat && num(node.heartbeat.uptime_secs) !== null) titleParts.push('up ' + fmtUptime(node.heartbeat.uptime_secs));
    if (titleParts.length) td.title = titleParts.join('\n');
    return td;
  }

  function renderStatusCell(node, now) {
    const td = h('td', 'status');
    const s = nodeStatus(node, now);
    const badge = h('span', 'badge badge-' + s, s === 'unknown' ? text(node.status) : s);
    if (s === 'offline' && str(node.deregister_reason)) badge.title = 'reason: ' + str(node.deregister_reason);
    td.appendChild(badge);
    td.dataset.status = s;
    return td;
  }

  function renderCpuCell(node) {
    const td = h('td', 'cpu');
    const hb = isObj(node.heartbeat) ? node.heartbeat : {};
    const pct = num(hb.cpu_percent);
    const line = h('div', 'metric-line');
    line.appendChild(h('span', 'metric-value', fmtPercent(pct)));
    const cores = num(node.cpu_cores);
    line.appendChild(h('span', 'small', cores === null ? '' : cores + (cores === 1 ? ' core' : ' cores')));
    td.appendChild(line);
    td.appendChild(bar(pct === null ? null : Math.max(0, Math.min(100, pct))));
    const load = num(hb.load_avg_1m);
    if (load !== null) td.title = 'load 1m: ' + load.toFixed(2);
    return td;
  }

  function renderUsageCell(cls, used, total, gib) {
    const td = h('td', cls);
    const u = num(used);
    const t = num(total);
    let label;
    if (gib) {
      label = u === null && t === null ? DASH : fmtGiB(u) + ' / ' + fmtGiB(t) + ' GiB';
    } else {
      label = u === null && t === null ? DASH : fmtBytes(u) + ' / ' + fmtBytes(t);
    }
    td.appendChild(h('div', 'metric-line metric-value', label));
    td.appendChild(bar(ratioPercent(u, t)));
    return td;
  }

  function renderGpusCell(node) {
    const td = h('td', 'gpus');
    const inv = Array.isArray(node.gpus) ? node.gpus.filter(isObj) : [];
    const hb = isObj(node.heartbeat) && Array.isArray(node.heartbeat.gpus) ? node.heartbeat.gpus.filter(isObj) : [];
    const byIndex = new Map();
    inv.forEach((g, i) => {
      const idx = num(g.index) === null ? i : g.index;
      byIndex.set(idx, { info: g, live: null });
    });
    hb.forEach((g, i) => {
      const idx = num(g.index) === null ? i : g.index;
      const entry = byIndex.get(idx) || { info: null, live: null };
      entry.live = g;
      byIndex.set(idx, entry);
    });
    if (byIndex.size === 0) {
      td.appendChild(h('span', 'muted', 'no GPU'));
      return td;
    }
    const indices = Array.from(byIndex.keys()).sort((a, b) => a - b);
    for (const idx of indices) {
      const { info, live } = byIndex.get(idx);
      const line = h('div', 'gpu');
      line.dataset.gpuIndex = String(idx);
      const head = h('div', 'gpu-head');
      head.appendChild(h('span', 'gpu-name', (info && str(info.name)) || 'GPU ' + idx));
      if (info && info.vendor === 'simulated') head.appendChild(h('span', 'tag tag-sim', 'SIMULATED'));
      td.appendChild(line);
      line.appendChild(head);

      const used = live ? num(live.memory_used_bytes) : null;
      const total = (live && num(live.memory_total_bytes)) || (info && num(info.memory_total_bytes)) || null;
      const stats = h('div', 'gpu-stats');
      stats.appendChild(h('span', 'gpu-vram', used === null && total === null ? DASH : fmtGiB(used) + ' / ' + fmtGiB(total) + ' GiB'));
      const util = live ? num(live.utilization_percent) : null;
      stats.appendChild(h('span', 'gpu-util', util === null ? DASH : util.toFixed(0) + '%'));
      const temp = live ? num(live.temperature_c) : null;
      stats.appendChild(h('span', 'gpu-temp' + (temp !== null && temp >= 85 ? ' hot' : ''), temp === null ? DASH : temp.toFixed(0) + '\u00b0C'));
      line.appendChild(stats);
      line.appendChild(bar(ratioPercent(used, total)));

      const tip = [];
      if (info && str(info.vendor)) tip.push('vendor: ' + str(info.vendor));
      if (info && str(info.uuid)) tip.push(str(info.uuid));
      if (info && str(info.driver_version)) tip.push('driver ' + str(info.driver_version));
      if (live && num(live.power_watts) !== null) tip.push('power ' + num(live.power_watts).toFixed(0) + ' W');
      if (str(node.gpu_source)) tip.push('source: ' + str(node.gpu_source));
      if (tip.length) line.title = tip.join('\n');
    }
    return td;
  }

  function renderSeenCell(node, now) {
    const td = h('td', 'seen', fmtAge(heartbeatAge(node, now)));
    const t = heartbeatTime(node);
    if (t !== null && node.heartbeat) td.title = text(node.heartbeat.sampled_at);
    return td;
  }

  function renderRow(node, now) {
    const tr = document.createElement('tr');
    tr.dataset.nodeId = node.node_id;
    const hb = isObj(node.heartbeat) ? node.heartbeat : null;
    const seq = hb ? num(hb.sample_seq) : null;
    if (seq !== null) tr.dataset.sampleSeq = String(seq);
    const s = nodeStatus(node, now);
    tr.className = 'node-row status-' + s + (node._provisional ? ' provisional' : '');
    tr.appendChild(renderNodeCell(node));
    tr.appendChild(renderStatusCell(node, now));
    tr.appendChild(renderCpuCell(node));
    tr.appendChild(renderUsageCell('ram', hb ? hb.memory_used_bytes : null, (hb && num(hb.memory_total_bytes)) || node.memory_total_bytes, true));
    tr.appendChild(renderUsageCell('disk', hb ? hb.disk_used_bytes : null, (hb && num(hb.disk_total_bytes)) || node.disk_total_bytes, false));
    tr.appendChild(renderGpusCell(node));
    tr.appendChild(renderSeenCell(node, now));
    return tr;
  }

  function emptyRow() {
    const tr = h('tr', 'empty-row');
    const td = h('td', null);
    td.colSpan = 7;
    td.appendChild(document.createTextNode('no nodes yet \u2014 start an agent with '));
    td.appendChild(h('code', null, 'nebula agent'));
    tr.appendChild(td);
    return tr;
  }

  function renderNodes(changedIds, full) {
    const now = Date.now();
    if (full) {
      rows.clear();
      el.tbody.textContent = '';
    }
    const ids = sortedNodeIds(state);
    if (ids.length === 0) {
      rows.clear();
      el.tbody.textContent = '';
      el.tbody.appendChild(emptyRow());
      el.nodeCount.textContent = '0';
      return;
    }
    const empty = el.tbody.querySelector('tr.empty-row');
    if (empty) empty.remove();
    // drop rows for nodes that no longer exist
    for (const [id, tr] of rows) {
      if (!state.nodes.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    // (re)build changed / missing rows, then enforce order
    for (const id of ids) {
      const existing = rows.get(id);
      if (!existing || full || changedIds.has(id)) {
        const tr = renderRow(state.nodes.get(id), now);
        if (existing) existing.replaceWith(tr);
        rows.set(id, tr);
      }
    }
    let prev = null;
    for (const id of ids) {
      const tr = rows.get(id);
      const expected = prev ? prev.nextSibling : el.tbody.firstChild;
      if (expected !== tr) el.tbody.insertBefore(tr, expected);
      prev = tr;
    }
    el.nodeCount.textContent = String(ids.length);
  }

  // refresh ages and stale badges once a second without rebuilding rows
  function tick() {
    const now = Date.now();
    for (const [id, tr] of rows) {
      const node = state.nodes.get(id);
      if (!node) continue;
      const seen = tr.querySelector('td.seen');
      if (seen) seen.textContent = fmtAge(heartbeatAge(node, now));
      const statusTd = tr.querySelector('td.status');
      const s = nodeStatus(node, now);
      if (statusTd && statusTd.dataset.status !== s) {
        statusTd.replaceWith(renderStatusCell(node, now));
        tr.className = 'node-row status-' + s + (node._provisional ? ' provisional' : '');
      }
    }
  }

  // ---- event feed ------------------------------------------------------

  function aggClass(aggType) {
    const s = str(aggType);
    if (!s) return 'agg-unknown';
    const known = ['node', 'job', 'service', 'deployment', 'workload', 'alert'];
    if (known.indexOf(s) !== -1) return 'agg-' + s;
    let hsh = 0;
    for (let i = 0; i < s.length; i += 1) hsh = (hsh * 31 + s.charCodeAt(i)) >>> 0;
    return 'agg-h' + (hsh % 4);
  }

  function renderEventItem(item) {
    const env = isObj(item.env) ? item.env : {};
    const li = h('li', 'event');
    if (item.seq !== null && item.seq !== undefined) li.dataset.seq = String(item.seq);
    li.dataset.type = str(env.type) || '';
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
    const corr = h('span', 'ev-corr', shortId(env.correlation_id));
    if (str(env.correlation_id)) corr.title = 'correlation ' + str(env.correlation_id);
    row.appendChild(corr);
    li.appendChild(row);
    li.appendChild(h('div', 'ev-summary', summarize(env.data)));
    li.hidden = !eventMatches(item, filterText);
    return li;
  }

  function toggleEvent(li) {
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

  function renderEvents(added, full) {
    if (full) {
      el.events.textContent = '';
      // state.events is newest first; append in that order
      for (const item of state.events) el.events.appendChild(renderEventItem(item));
    } else {
      for (const item of added) el.events.insertBefore(renderEventItem(item), el.events.firstChild);
      while (el.events.children.length > MAX_EVENTS) el.events.lastElementChild.remove();
    }
    el.eventCount.textContent = String(state.eventCount);
  }

  function applyFilter() {
    filterText = el.filter.value.trim();
    for (const li of el.events.children) li.hidden = !eventMatches(li._item, filterText);
  }

  // ---- render ----------------------------------------------------------

  function render(changes) {
    if (changes.reset || changes.nodes.size > 0) renderNodes(changes.nodes, changes.reset);
    if (changes.reset || changes.events.length > 0) renderEvents(changes.events, changes.reset);
  }

  // ---- boot ------------------------------------------------------------

  function boot() {
    const hashToken = tokenFromHash(global.location.hash);
    if (hashToken) {
      setToken(hashToken);
      try {
        global.history.replaceState(null, '', global.location.pathname + global.location.search);
      } catch (_e) {
        /* ignore */
      }
    }

    el.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = el.input.value.trim();
      if (!t) {
        el.message.textContent = 'enter a token';
        return;
      }
      setToken(t);
      el.input.value = '';
      backoffMs = BACKOFF_MIN_MS;
      connect();
    });

    el.events.addEventListener('click', (ev) => {
      const target = ev.target;
      if (!(target instanceof Element)) return;
      if (target.closest('pre.ev-json')) return; // allow selecting JSON text
      const li = target.closest('li.event');
      if (li) toggleEvent(li);
    });
    el.events.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      const target = ev.target;
      if (target instanceof Element && target.matches('li.event')) {
        ev.preventDefault();
        toggleEvent(target);
      }
    });
    el.filter.addEventListener('input', applyFilter);

    renderNodes(new Set(), true);
    renderEvents([], true);
    setInterval(tick, 1000);
    connect();
  }

  global.NebulaCommand = { state: state, apiFetch: apiFetch, reconnect: connect };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})(typeof window !== 'undefined' ? window : globalThis);
