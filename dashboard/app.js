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

  // The random end of a UUIDv7 (its start is a timestamp, the same for ids made together).
  function tailId(v) {
    const s = str(v);
    return s === null || s === '' ? DASH : s.slice(-8);
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

  // Progress ticks drive the studio's bars but would drown the event feed: the feed skips them.
  function isFeedEvent(env) {
    return !(isObj(env) && env.type === 'render.job_progressed');
  }

  function pushEvent(state, changes, seq, env) {
    const item = { seq: seq, env: env };
    if (isFeedEvent(env)) {
      state.events.unshift(item);
      if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    }
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

  // ---------------------------------------------------------------------
  // Creative Studio: pure helpers (form -> request, queue order, live events)
  // ---------------------------------------------------------------------

  const RENDER_MODES = ['txt2img', 'img2img', 'inpaint', 'controlnet', 'upscale', 'face_swap'];
  const IMAGE_FIELDS = ['init_image', 'mask_image', 'control_image', 'face_image'];
  const SAMPLER_FIELDS = ['prompt', 'negative_prompt', 'seed', 'steps', 'cfg', 'checkpoint', 'lora'];
  // The fields each mode's workflow reads. Image fields listed here are required by the mode.
  const MODE_FIELDS = {
    txt2img: SAMPLER_FIELDS.concat(['width', 'height']),
    img2img: SAMPLER_FIELDS.concat(['denoise', 'init_image']),
    inpaint: SAMPLER_FIELDS.concat(['denoise', 'init_image', 'mask_image']),
    controlnet: SAMPLER_FIELDS.concat(['width', 'height', 'controlnet_model', 'control_image']),
    upscale: ['upscale_model', 'init_image'],
    face_swap: ['init_image', 'face_image'],
  };
  const PROMPT_MODES = ['txt2img', 'img2img', 'inpaint', 'controlnet'];
  const MAX_SEED = Number.MAX_SAFE_INTEGER;
  const I32_MIN = -2147483648;
  const I32_MAX = 2147483647;
  const MAX_INPUT_BYTES = 16 * 1024 * 1024;
  const TERMINAL = ['completed', 'failed', 'cancelled'];
  const STATUS_RANK = { queued: 0, assigned: 1, running: 2, completed: 3, failed: 3, cancelled: 3 };
  const MAX_LIVE_JOBS = 500;

  function modeFields(mode) {
    return MODE_FIELDS[mode] ? MODE_FIELDS[mode].slice() : [];
  }

  function modeImages(mode) {
    return modeFields(mode).filter((f) => IMAGE_FIELDS.indexOf(f) !== -1);
  }

  function isTerminal(status) {
    return TERMINAL.indexOf(status) !== -1;
  }

  function isSimulated(backend) {
    return backend === 'simulated';
  }

  function truncate(v, n) {
    const s = str(v);
    if (s === null) return '';
    return s.length > n ? s.slice(0, Math.max(0, n - 1)) + '\u2026' : s;
  }

  function randomSeed(rand) {
    const r = typeof rand === 'function' ? rand : Math.random;
    // 2^32 * 2^20 < 2^53: a uniform integer that JSON carries exactly.
    return Math.floor(r() * 4294967296) * 1048576 + Math.floor(r() * 1048576);
  }

  function rawValue(values, name) {
    const v = values ? values[name] : undefined;
    if (v === undefined || v === null) return '';
    return String(v).trim();
  }

  function parseInteger(values, name, min, max, out) {
    const raw = rawValue(values, name);
    if (raw === '') return undefined;
    if (!/^-?\d+$/.test(raw)) {
      out.error = name + ' must be a whole number, got "' + raw + '"';
      return undefined;
    }
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      out.error = name + ' must be ' + min + '..=' + max + ', got ' + raw;
      return undefined;
    }
    return n;
  }

  function parseNumber(values, name, out) {
    const raw = rawValue(values, name);
    if (raw === '') return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n)) {
      out.error = name + ' must be a number, got "' + raw + '"';
      return undefined;
    }
    return n;
  }

  /**
   * Builds the body of `POST /api/render/jobs` from raw form values (strings) of the fields
   * `mode` uses, and the uploaded images (`{init_image: sha256, ...}`). Empty optional fields
   * are left out so the server fills in its defaults; fields the mode does not use are never
   * sent. Returns `{ body }` or `{ error }` (the server does the range checks).
   */
  function buildRenderRequest(mode, values, images) {
    if (RENDER_MODES.indexOf(mode) === -1) return { error: 'unknown mode ' + String(mode) };
    const fields = modeFields(mode);
    const uses = (f) => fields.indexOf(f) !== -1;
    const out = { error: null };
    const params = {};
    if (uses('prompt')) {
      const prompt = values && typeof values.prompt === 'string' ? values.prompt : '';
      if (prompt.trim() === '') {
        if (PROMPT_MODES.indexOf(mode) !== -1) return { error: mode + ' needs a prompt' };
      } else {
        params.prompt = prompt;
      }
    }
    if (uses('negative_prompt')) {
      const negative = values && typeof values.negative_prompt === 'string' ? values.negative_prompt : '';
      if (negative.trim() !== '') params.negative_prompt = negative;
    }
    if (uses('seed')) {
      const seed = parseInteger(values, 'seed', 0, MAX_SEED, out);
      if (out.error) return { error: out.error };
      if (seed !== undefined) params.seed = seed;
    }
    for (const name of ['steps', 'width', 'height']) {
      if (!uses(name)) continue;
      const v = parseInteger(values, name, 0, I32_MAX, out);
      if (out.error) return { error: out.error };
      if (v !== undefined) params[name] = v;
    }
    for (const name of ['cfg', 'denoise']) {
      if (!uses(name)) continue;
      const v = parseNumber(values, name, out);
      if (out.error) return { error: out.error };
      if (v !== undefined) params[name] = v;
    }
    if (uses('checkpoint')) {
      const checkpoint = rawValue(values, 'checkpoint');
      if (checkpoint !== '') params.checkpoint = checkpoint;
    }
    if (uses('lora')) {
      const name = rawValue(values, 'lora');
      if (name !== '') {
        const strength = parseNumber(values, 'lora_strength', out);
        if (out.error) return { error: out.error.replace('lora_strength', 'LoRA strength') };
        params.lora = { name: name, strength: strength === undefined ? 1 : strength };
      }
    }
    for (const name of ['upscale_model', 'controlnet_model']) {
      if (!uses(name)) continue;
      const v = rawValue(values, name);
      if (v !== '') params[name] = v;
    }
    for (const name of IMAGE_FIELDS) {
      if (!uses(name)) continue;
      const sha = images ? str(images[name]) : null;
      if (sha) params[name] = { sha256: sha };
    }
    const priority = parseInteger(values, 'priority', I32_MIN, I32_MAX, out);
    if (out.error) return { error: out.error };
    return {
      body: { mode: mode, params: params, priority: priority === undefined ? 0 : priority, source: 'dashboard' },
    };
  }

  /** The content type `POST /api/render/inputs` wants for a file, or null if unsupported. */
  function imageContentType(type, name) {
    if (type === 'image/png' || type === 'image/jpeg') return type;
    const n = typeof name === 'string' ? name.toLowerCase() : '';
    if (/\.png$/.test(n)) return 'image/png';
    if (/\.jpe?g$/.test(n)) return 'image/jpeg';
    return null;
  }

  /** The message to show for a failed REST call: the server's `{error: {message}}` if any. */
  function apiErrorMessage(status, body) {
    const message = isObj(body) && isObj(body.error) ? str(body.error.message) : null;
    switch (status) {
      case 429:
        return 'queue full: ' + (message || 'too many render jobs are waiting; try again later');
      case 413:
        return 'too large: ' + (message || 'input images may be at most ' + fmtBytes(MAX_INPUT_BYTES));
      case 415:
        return 'unsupported type: ' + (message || 'images must be PNG or JPEG');
      default:
        if (message) return message;
        return status ? 'request failed (HTTP ' + status + ')' : 'request failed';
    }
  }

  /**
   * The priority that moves a queued job one place up (`dir` < 0) or down (`dir` > 0) in
   * `jobs` (run order): one above the job before it, or one below the job after it. Null when
   * the job cannot move that way (not queued, or already first/last among queued jobs).
   */
  function reorderPriority(jobs, jobId, dir) {
    if (!Array.isArray(jobs)) return null;
    const queued = jobs.filter((j) => isObj(j) && j.status === 'queued');
    const i = queued.findIndex((j) => j.job_id === jobId);
    if (i === -1) return null;
    const other = queued[dir < 0 ? i - 1 : i + 1];
    if (!other) return null;
    const p = num(other.priority);
    if (p === null) return null;
    const next = dir < 0 ? p + 1 : p - 1;
    return next < I32_MIN || next > I32_MAX ? null : next;
  }

  function createStudioState() {
    return {
      queue: null, // GET /api/render/queue
      gallery: null, // completed jobs, newest first
      failures: null, // failed jobs, newest first
      live: new Map(), // job_id -> what the websocket told us since the last REST answer
      pausedLive: null, // pause state from render_queue events, until REST agrees
    };
  }

  function liveEntry(studio, id) {
    let entry = studio.live.get(id);
    if (!entry) {
      entry = { status: null, attempt: null, value: null, max: null, node_id: null, backend: null, priority: null, seq: null };
      studio.live.set(id, entry);
      while (studio.live.size > MAX_LIVE_JOBS) studio.live.delete(studio.live.keys().next().value);
    }
    return entry;
  }

  /**
   * Applies one event envelope to the studio's live overlay. Returns what to do:
   *   { relevant, progress: job_id|null, needs: {queue, gallery, failures} }
   * `progress` is set when only a bar moved (no REST round trip needed).
   */
  function applyStudioEvent(studio, env, seq) {
    const result = { relevant: false, progress: null, needs: { queue: false, gallery: false, failures: false } };
    if (!isObj(env)) return result;
    const type = str(env.type) || '';
    const agg = str(env.aggregate_type) || '';
    const data = isObj(env.data) ? env.data : {};
    const s = num(seq);
    if (agg === 'render_job' || type.indexOf('render.job_') === 0) {
      const id = str(env.aggregate_id);
      if (!id) return result;
      result.relevant = true;
      const entry = liveEntry(studio, id);
      if (s !== null && entry.seq !== null && s < entry.seq) return result; // older than what we have
      if (s !== null) entry.seq = s;
      result.needs.queue = true;
      switch (type) {
        case 'render.job_requested':
          entry.status = 'queued';
          entry.priority = num(data.priority);
          break;
        case 'render.job_queued':
          entry.status = 'queued';
          entry.priority = num(data.priority);
          entry.node_id = null;
          entry.value = null;
          entry.max = null;
          break;
        case 'render.job_priority_changed':
          entry.priority = num(data.priority);
          break;
        case 'render.job_assigned':
          entry.status = 'assigned';
          entry.node_id = str(data.node_id);
          entry.attempt = num(data.attempt);
          entry.value = null;
          entry.max = null;
          break;
        case 'render.job_started':
          entry.status = 'running';
          entry.node_id = str(data.node_id);
          entry.backend = str(data.backend);
          if (num(data.attempt) !== null) entry.attempt = num(data.attempt);
          break;
        case 'render.job_progressed': {
          const attempt = num(data.attempt);
          if (entry.attempt !== null && attempt !== null && attempt < entry.attempt) break;
          if (attempt !== null) entry.attempt = attempt;
          entry.value = num(data.value);
          entry.max = num(data.max);
          entry.status = 'running';
          result.needs.queue = false;
          result.progress = id;
          break;
        }
        case 'render.job_completed':
          entry.status = 'completed';
          if (entry.max !== null) entry.value = entry.max;
          result.needs.gallery = true;
          break;
        case 'render.job_failed':
          entry.status = 'failed';
          result.needs.failures = true;
          break;
        case 'render.job_cancelled':
          entry.status = 'cancelled';
          break;
        default:
          break;
      }
      return result;
    }
    if (agg === 'render_queue' || type.indexOf('render.queue_') === 0) {
      result.relevant = true;
      result.needs.queue = true;
      if (type === 'render.queue_paused') studio.pausedLive = { paused: true, reason: str(data.reason) };
      else if (type === 'render.queue_resumed') studio.pausedLive = { paused: false, reason: null };
      return result;
    }
    if (agg === 'comfyui' || type.indexOf('comfyui.') === 0) {
      result.relevant = true;
      result.needs.queue = true;
    }
    return result;
  }

  /** A queue job as the page shows it: the REST row with newer websocket news on top. */
  function effectiveJob(job, live) {
    const out = Object.assign({}, job);
    const restProgress = isObj(job.progress) && num(job.progress.max) !== null ? { value: num(job.progress.value) || 0, max: num(job.progress.max) } : null;
    out.progress = restProgress;
    if (!live) return out;
    const restRank = STATUS_RANK[job.status];
    const liveRank = STATUS_RANK[live.status];
    const restAttempt = num(job.attempt);
    const sameOrNewer = live.attempt === null || restAttempt === null || live.attempt >= restAttempt;
    if (liveRank !== undefined && (restRank === undefined || liveRank > restRank) && sameOrNewer) {
      out.status = live.status;
      if (live.node_id) out.node_id = live.node_id;
      if (live.backend) out.backend = live.backend;
    }
    if (live.status === 'running' && !out.backend && live.backend) out.backend = live.backend;
    if (live.priority !== null && out.status === 'queued') out.priority = live.priority;
    if (live.max !== null && live.value !== null && (out.status === 'running' || out.status === 'completed')) {
      const olderAttempt = live.attempt !== null && restAttempt !== null && live.attempt < restAttempt;
      const newerAttempt = live.attempt !== null && restAttempt !== null && live.attempt > restAttempt;
      if (!olderAttempt && (!restProgress || newerAttempt || live.value >= restProgress.value)) {
        out.progress = { value: live.value, max: live.max };
      }
    }
    if (out.status === 'queued' || out.status === 'assigned') out.progress = null;
    if (out.status === 'completed' && out.progress) out.progress = { value: out.progress.max, max: out.progress.max };
    return out;
  }

  function jobIds(list) {
    const ids = new Set();
    if (Array.isArray(list)) for (const j of list) if (isObj(j) && str(j.job_id)) ids.add(j.job_id);
    return ids;
  }

  /**
   * Where REST answers lag behind what the websocket already said (the read models are
   * eventually consistent): `{queue, gallery, failures}`, true for each list to fetch again.
   */
  function studioLag(studio) {
    const lag = { queue: false, gallery: false, failures: false };
    const queueJobs = studio.queue && Array.isArray(studio.queue.jobs) ? studio.queue.jobs : null;
    const inQueue = queueJobs ? new Map(queueJobs.filter(isObj).map((j) => [j.job_id, j])) : null;
    const inGallery = studio.gallery ? jobIds(studio.gallery) : null;
    const inFailures = studio.failures ? jobIds(studio.failures) : null;
    for (const [id, entry] of studio.live) {
      if (entry.status === null) continue;
      if (inQueue) {
        const job = inQueue.get(id);
        if (isTerminal(entry.status) ? job !== undefined : job === undefined) lag.queue = true;
      }
      if (entry.status === 'completed' && inGallery && !inGallery.has(id)) lag.gallery = true;
      if (entry.status === 'failed' && inFailures && !inFailures.has(id)) lag.failures = true;
    }
    if (studio.pausedLive && studio.queue && !!studio.queue.paused !== studio.pausedLive.paused) lag.queue = true;
    return lag;
  }

  /**
   * Forgets websocket news that REST now reflects; with `giveUp`, also the finished jobs REST
   * does not show (after many retries: e.g. a failure older than the short failure list).
   */
  function pruneLive(studio, giveUp) {
    const queueJobs = studio.queue && Array.isArray(studio.queue.jobs) ? studio.queue.jobs : null;
    if (!queueJobs) return;
    const inQueue = new Map(queueJobs.filter(isObj).map((j) => [j.job_id, j]));
    const inGallery = studio.gallery ? jobIds(studio.gallery) : new Set();
    const inFailures = studio.failures ? jobIds(studio.failures) : new Set();
    for (const [id, entry] of studio.live) {
      if (!isTerminal(entry.status)) {
        if (giveUp && !inQueue.has(id)) studio.live.delete(id);
        continue;
      }
      if (!giveUp) {
        if (inQueue.has(id)) continue;
        if (entry.status === 'completed' && !inGallery.has(id)) continue;
        if (entry.status === 'failed' && !inFailures.has(id)) continue;
      }
      studio.live.delete(id);
    }
    if (studio.pausedLive && studio.queue && (giveUp || !!studio.queue.paused === studio.pausedLive.paused)) studio.pausedLive = null;
  }

  /** Pause state to show: the websocket's word until REST agrees. */
  function queuePaused(studio) {
    if (studio.pausedLive) return studio.pausedLive;
    const q = studio.queue;
    return { paused: !!(q && q.paused), reason: q ? str(q.reason) : null };
  }

  function progressPercent(progress) {
    if (!isObj(progress)) return null;
    const v = num(progress.value);
    const m = num(progress.max);
    if (v === null || m === null || m <= 0) return null;
    return Math.max(0, Math.min(100, (v / m) * 100));
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
    tailId,
    modeFields,
    modeImages,
    buildRenderRequest,
    imageContentType,
    apiErrorMessage,
    reorderPriority,
    createStudioState,
    applyStudioEvent,
    effectiveJob,
    studioLag,
    pruneLive,
    queuePaused,
    progressPercent,
    randomSeed,
    truncate,
    isSimulated,
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

  // ---- Creative Studio ---------------------------------------------------

  const STUDIO_REFRESH_MIN_MS = 300; // at most one REST refresh per this interval
  const STUDIO_POLL_MS = 20 * 1000; // safety net when the websocket is quiet
  const STUDIO_LAG_RETRIES = 40; // refetches while REST lags the websocket
  const GALLERY_LIMIT = 48;
  const FAILURE_LIMIT = 10;
  const PROMPT_CHARS = 90;

  const studio = createStudioState();
  const st = {
    root: document.getElementById('studio'),
    form: document.getElementById('studio-form'),
    mode: document.getElementById('studio-mode'),
    prompt: document.getElementById('studio-prompt'),
    negative: document.getElementById('studio-negative'),
    seed: document.getElementById('studio-seed'),
    seedRandom: document.getElementById('studio-seed-random'),
    steps: document.getElementById('studio-steps'),
    cfg: document.getElementById('studio-cfg'),
    denoise: document.getElementById('studio-denoise'),
    width: document.getElementById('studio-width'),
    height: document.getElementById('studio-height'),
    checkpoint: document.getElementById('studio-checkpoint'),
    lora: document.getElementById('studio-lora'),
    loraStrength: document.getElementById('studio-lora-strength'),
    upscaleModel: document.getElementById('studio-upscale-model'),
    controlnetModel: document.getElementById('studio-controlnet-model'),
    priority: document.getElementById('studio-priority'),
    files: {
      init_image: document.getElementById('studio-init-image'),
      mask_image: document.getElementById('studio-mask-image'),
      control_image: document.getElementById('studio-control-image'),
      face_image: document.getElementById('studio-face-image'),
    },
    submit: document.getElementById('studio-submit'),
    notice: document.getElementById('studio-notice'),
    error: document.getElementById('studio-error'),
    queue: document.getElementById('studio-queue'),
    queueError: document.getElementById('studio-queue-error'),
    queueCount: document.getElementById('studio-queue-count'),
    pause: document.getElementById('studio-pause'),
    paused: document.getElementById('studio-paused'),
    comfyui: document.getElementById('studio-comfyui'),
    failures: document.getElementById('studio-failures'),
    gallery: document.getElementById('studio-gallery'),
    galleryCount: document.getElementById('studio-gallery-count'),
    simNote: document.getElementById('studio-sim-note'),
  };
  const queueRows = new Map(); // job_id -> { el, key }
  const tiles = new Map(); // job_id -> { el, sha }
  const blobs = new Map(); // sha256 -> { url, promise, refs }
  const uploads = new WeakMap(); // File -> sha256 (a chosen file is uploaded once)
  let submitting = false;
  let lastSubmitted = null;
  let refreshTimer = null;
  let refreshing = false;
  let refreshLastAt = 0;
  let lagRetries = 0;
  const refreshNeeds = { queue: false, gallery: false, failures: false };

  // REST with the server's error message: resolves to { ok, status, data, message }.
  async function apiCall(path, options) {
    const o = options || {};
    const token = getToken();
    if (!token) {
      showTokenForm('');
      return { ok: false, status: 0, data: null, message: 'no token' };
    }
    const headers = Object.assign({}, o.headers, { Authorization: 'Bearer ' + token });
    const init = { method: o.method || 'GET', headers: headers, cache: 'no-store' };
    if (o.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(o.json);
    } else if (o.body !== undefined) {
      headers['Content-Type'] = o.contentType;
      init.body = o.body;
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, data: null, message: 'network error' + (e && e.message ? ': ' + e.message : '') };
    }
    if (res.status === 401) {
      tokenRejected();
      return { ok: false, status: 401, data: null, message: 'token rejected' };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_e) {
      data = null;
    }
    if (!res.ok) return { ok: false, status: res.status, data: data, message: apiErrorMessage(res.status, data) };
    return { ok: true, status: res.status, data: data, message: null };
  }

  function showError(target, message) {
    target.textContent = message || '';
    target.hidden = !message;
  }

  function simBadge() {
    const b = h('span', 'badge-simulated', 'SIMULATED GPU');
    b.title = 'rendered by the simulated backend: a stand-in image, not a real GPU render';
    return b;
  }

  function statusBadge(status) {
    const s = str(status) || 'unknown';
    return h('span', 'badge badge-job status-' + s, s);
  }

  // ---- form --------------------------------------------------------------

  function applyMode() {
    const mode = st.mode.value;
    const fields = modeFields(mode);
    for (const node of st.form.querySelectorAll('[data-field]')) {
      node.hidden = fields.indexOf(node.dataset.field) === -1;
    }
    st.root.dataset.mode = mode;
  }

  function formValues() {
    return {
      prompt: st.prompt.value,
      negative_prompt: st.negative.value,
      seed: st.seed.value,
      steps: st.steps.value,
      cfg: st.cfg.value,
      denoise: st.denoise.value,
      width: st.width.value,
      height: st.height.value,
      checkpoint: st.checkpoint.value,
      lora: st.lora.value,
      lora_strength: st.loraStrength.value,
      upscale_model: st.upscaleModel.value,
      controlnet_model: st.controlnetModel.value,
      priority: st.priority.value,
    };
  }

  async function uploadImage(name, file) {
    const known = uploads.get(file);
    if (known) return { sha: known };
    const type = imageContentType(file.type, file.name);
    if (!type) return { error: name + ': ' + (file.name || 'the file') + ' is not a PNG or JPEG image' };
    if (file.size > MAX_INPUT_BYTES) return { error: name + ': ' + fmtBytes(file.size) + ' is larger than ' + fmtBytes(MAX_INPUT_BYTES) };
    const res = await apiCall('/api/render/inputs', { method: 'POST', body: file, contentType: type });
    if (!res.ok) return { error: name + ': ' + res.message };
    const sha = isObj(res.data) ? str(res.data.sha256) : null;
    if (!sha) return { error: name + ': the server answered without a sha256' };
    uploads.set(file, sha);
    return { sha: sha };
  }

  function setSubmitting(on, label) {
    submitting = on;
    st.submit.disabled = on;
    st.submit.textContent = on ? label || 'Submitting\u2026' : 'Render';
  }

  async function submitRender(ev) {
    ev.preventDefault();
    if (submitting) return;
    showError(st.error, '');
    st.notice.textContent = '';
    const mode = st.mode.value;
    if (modeFields(mode).indexOf('seed') !== -1 && st.seed.value.trim() === '') st.seed.value = String(randomSeed());
    const values = formValues();
    const check = buildRenderRequest(mode, values, {});
    if (check.error) {
      showError(st.error, check.error);
      return;
    }
    const images = {};
    for (const name of modeImages(mode)) {
      const input = st.files[name];
      const file = input && input.files && input.files[0];
      if (!file) {
        showError(st.error, mode + ' needs ' + name + ': choose a file');
        return;
      }
      images[name] = file;
    }
    setSubmitting(true, Object.keys(images).length ? 'Uploading\u2026' : 'Submitting\u2026');
    try {
      const shas = {};
      for (const name of Object.keys(images)) {
        const up = await uploadImage(name, images[name]);
        if (up.error) {
          showError(st.error, up.error);
          return;
        }
        shas[name] = up.sha;
      }
      const built = buildRenderRequest(mode, values, shas);
      if (built.error) {
        showError(st.error, built.error);
        return;
      }
      setSubmitting(true, 'Submitting\u2026');
      const res = await apiCall('/api/render/jobs', { method: 'POST', json: built.body });
      if (!res.ok) {
        showError(st.error, res.message);
        return;
      }
      const id = isObj(res.data) ? str(res.data.job_id) : null;
      lastSubmitted = id;
      st.notice.dataset.jobId = id || '';
      st.notice.textContent = 'queued ' + tailId(id);
      if (id) st.notice.title = 'job ' + id + (res.data.correlation_id ? '\ncorrelation ' + res.data.correlation_id : '');
      scheduleStudioRefresh({ queue: true });
    } finally {
      setSubmitting(false);
    }
  }

  function reuseParams(job) {
    if (!isObj(job)) return;
    const p = isObj(job.params) ? job.params : {};
    if (RENDER_MODES.indexOf(job.mode) !== -1) st.mode.value = job.mode;
    const set = (input, v) => {
      if (v !== undefined && v !== null) input.value = String(v);
    };
    set(st.prompt, p.prompt);
    set(st.negative, p.negative_prompt);
    set(st.seed, p.seed);
    set(st.steps, p.steps);
    set(st.cfg, p.cfg);
    set(st.denoise, p.denoise);
    set(st.width, p.width);
    set(st.height, p.height);
    set(st.checkpoint, p.checkpoint);
    st.lora.value = isObj(p.lora) ? str(p.lora.name) || '' : '';
    if (isObj(p.lora)) set(st.loraStrength, p.lora.strength);
    st.upscaleModel.value = str(p.upscale_model) || st.upscaleModel.value;
    st.controlnetModel.value = str(p.controlnet_model) || '';
    applyMode();
    st.notice.textContent = 'parameters of ' + tailId(job.job_id) + ' loaded' + (modeImages(st.mode.value).length ? ' (choose the images again)' : '');
    try {
      st.form.scrollIntoView({ behavior: 'smooth', block: 'start' });
    } catch (_e) {
      /* ignore */
    }
  }

  // ---- queue ---------------------------------------------------------------

  function queueJobs() {
    const jobs = studio.queue && Array.isArray(studio.queue.jobs) ? studio.queue.jobs.filter((j) => isObj(j) && str(j.job_id)) : [];
    return jobs.map((j) => effectiveJob(j, studio.live.get(j.job_id)));
  }

  function setProgress(elProgress, progress) {
    const pct = progressPercent(progress);
    const fill = elProgress.querySelector('.progress-fill');
    const label = elProgress.querySelector('.progress-label');
    if (pct === null) {
      elProgress.dataset.value = '';
      elProgress.dataset.max = '';
      elProgress.classList.add('progress-empty');
      if (fill) fill.style.width = '0';
      if (label) label.textContent = '';
      return;
    }
    elProgress.dataset.value = String(progress.value);
    elProgress.dataset.max = String(progress.max);
    elProgress.classList.remove('progress-empty');
    if (fill) fill.style.width = pct.toFixed(1) + '%';
    if (label) label.textContent = progress.value + ' / ' + progress.max;
    elProgress.title = pct.toFixed(0) + '%';
  }

  function queueRowKey(job, jobs) {
    return [
      job.status,
      job.mode,
      job.priority,
      job.node_id,
      job.backend,
      job.attempt,
      job.max_attempts,
      str(isObj(job.params) ? job.params.prompt : null),
      reorderPriority(jobs, job.job_id, -1) !== null,
      reorderPriority(jobs, job.job_id, 1) !== null,
      job.job_id === lastSubmitted,
    ].join('\u0001');
  }

  function actionButton(action, label, title, enabled) {
    const b = h('button', 'btn btn-small' + (action === 'cancel' ? ' btn-danger' : ''), label);
    b.type = 'button';
    b.dataset.action = action;
    b.title = title;
    b.setAttribute('aria-label', title);
    b.disabled = !enabled;
    return b;
  }

  function renderQueueRow(job, jobs) {
    const row = h('div', 'qjob status-' + (str(job.status) || 'unknown'));
    row.dataset.jobId = job.job_id;
    row.dataset.status = str(job.status) || '';
    if (job.job_id === lastSubmitted) row.classList.add('just-submitted');

    const info = h('div', 'qjob-info');
    const main = h('div', 'qjob-main');
    const id = h('span', 'qjob-id', tailId(job.job_id));
    id.title = 'job ' + job.job_id + (str(job.correlation_id) ? '\ncorrelation ' + job.correlation_id : '');
    main.appendChild(id);
    main.appendChild(h('span', 'mode-tag', text(job.mode)));
    main.appendChild(statusBadge(job.status));
    const prompt = isObj(job.params) ? str(job.params.prompt) : null;
    const p = h('span', 'qjob-prompt', prompt ? truncate(prompt, PROMPT_CHARS) : DASH);
    if (prompt) p.title = prompt;
    main.appendChild(p);
    info.appendChild(main);

    const meta = h('div', 'qjob-meta');
    meta.appendChild(h('span', 'qjob-node', 'node ' + text(job.node_id)));
    const backend = h('span', 'qjob-backend', 'backend ' + text(job.backend));
    meta.appendChild(backend);
    if (isSimulated(job.backend)) meta.appendChild(simBadge());
    meta.appendChild(h('span', 'qjob-priority', 'prio ' + text(job.priority)));
    if (num(job.attempt) !== null && num(job.attempt) > 0) meta.appendChild(h('span', 'qjob-attempt', 'attempt ' + job.attempt + (num(job.max_attempts) ? '/' + job.max_attempts : '')));
    info.appendChild(meta);
    row.appendChild(info);

    const progress = h('div', 'progress');
    progress.appendChild(h('div', 'progress-fill'));
    progress.appendChild(h('span', 'progress-label'));
    setProgress(progress, job.progress);
    row.appendChild(progress);

    const actions = h('div', 'qjob-actions');
    const queued = job.status === 'queued';
    actions.appendChild(actionButton('up', '\u25B2', 'move up (run sooner)', queued && reorderPriority(jobs, job.job_id, -1) !== null));
    actions.appendChild(actionButton('down', '\u25BC', 'move down (run later)', queued && reorderPriority(jobs, job.job_id, 1) !== null));
    actions.appendChild(actionButton('cancel', 'Cancel', 'cancel this job', ['queued', 'assigned', 'running'].indexOf(job.status) !== -1));
    row.appendChild(actions);
    return row;
  }

  function renderQueue() {
    const jobs = queueJobs();
    const seen = new Set();
    const emptyNote = st.queue.querySelector('.empty-note');
    if (jobs.length === 0) {
      for (const { el: row } of queueRows.values()) row.remove();
      queueRows.clear();
      if (!emptyNote) st.queue.appendChild(h('div', 'empty-note', studio.queue ? 'queue is empty' : 'loading\u2026'));
      else emptyNote.textContent = studio.queue ? 'queue is empty' : 'loading\u2026';
    } else if (emptyNote) {
      emptyNote.remove();
    }
    let prev = null;
    for (const job of jobs) {
      seen.add(job.job_id);
      const key = queueRowKey(job, jobs);
      let entry = queueRows.get(job.job_id);
      if (!entry || entry.key !== key) {
        const row = renderQueueRow(job, jobs);
        if (entry) entry.el.replaceWith(row);
        entry = { el: row, key: key };
        queueRows.set(job.job_id, entry);
      } else {
        setProgress(entry.el.querySelector('.progress'), job.progress);
      }
      const expected = prev ? prev.nextSibling : st.queue.firstChild;
      if (expected !== entry.el) st.queue.insertBefore(entry.el, expected);
      prev = entry.el;
    }
    for (const [id, entry] of queueRows) {
      if (!seen.has(id)) {
        entry.el.remove();
        queueRows.delete(id);
      }
    }

    const q = studio.queue;
    const queued = q ? num(q.queued) : null;
    const cap = q ? num(q.cap) : null;
    st.queueCount.textContent = (queued === null ? DASH : queued) + ' / ' + (cap === null ? DASH : cap) + ' queued';
    st.queueCount.classList.toggle('full', queued !== null && cap !== null && queued >= cap);
    renderPause();
    renderComfy();
    renderSimNote();
  }

  function renderPause() {
    const p = queuePaused(studio);
    st.pause.dataset.paused = p.paused ? 'true' : 'false';
    st.pause.textContent = p.paused ? 'Resume queue' : 'Pause queue';
    st.pause.classList.toggle('btn-warn', p.paused);
    st.paused.hidden = !p.paused;
    st.paused.textContent = p.paused ? 'PAUSED \u2014 nothing new starts; running jobs finish' + (p.reason ? ' (' + p.reason + ')' : '') : '';
    st.root.classList.toggle('queue-paused', p.paused);
  }

  function renderComfy() {
    const list = studio.queue && Array.isArray(studio.queue.comfyui) ? studio.queue.comfyui.filter(isObj) : [];
    st.comfyui.textContent = '';
    if (list.length === 0) {
      st.comfyui.appendChild(h('span', 'small muted', 'ComfyUI: no supervised instances'));
      return;
    }
    st.comfyui.appendChild(h('span', 'small muted', 'ComfyUI'));
    for (const c of list) {
      const state = str(c.state) || 'unknown';
      const chip = h('span', 'comfy-chip comfy-' + state);
      chip.dataset.nodeId = str(c.node_id) || '';
      chip.dataset.state = state;
      chip.appendChild(h('span', 'comfy-node', text(c.node_id)));
      chip.appendChild(h('span', 'comfy-state', state));
      if (str(c.vram_mode)) chip.appendChild(h('span', 'comfy-vram', str(c.vram_mode)));
      if (num(c.restarts)) chip.appendChild(h('span', 'comfy-restarts', '\u21BB' + c.restarts));
      const tip = [];
      if (num(c.pid) !== null) tip.push('pid ' + c.pid);
      tip.push('restarts ' + text(c.restarts));
      if (str(c.reason)) tip.push(str(c.reason));
      if (str(c.updated_at)) tip.push('updated ' + str(c.updated_at));
      chip.title = tip.join('\n');
      st.comfyui.appendChild(chip);
    }
  }

  function renderSimNote() {
    const sim =
      queueJobs().some((j) => isSimulated(j.backend)) ||
      (Array.isArray(studio.gallery) && studio.gallery.some((j) => isObj(j) && isObj(j.provenance) && isSimulated(j.provenance.backend)));
    st.simNote.hidden = !sim;
    st.simNote.textContent = sim ? 'Jobs marked SIMULATED GPU were rendered by the simulated backend (placeholder images).' : '';
  }

  async function queueAction(row, action, button) {
    const id = row.dataset.jobId;
    let res;
    button.disabled = true;
    showError(st.queueError, '');
    if (action === 'cancel') {
      res = await apiCall('/api/render/jobs/' + encodeURIComponent(id) + '/cancel', { method: 'POST', json: {} });
    } else {
      const priority = reorderPriority(queueJobs(), id, action === 'up' ? -1 : 1);
      if (priority === null) {
        button.disabled = false;
        return;
      }
      res = await apiCall('/api/render/jobs/' + encodeURIComponent(id) + '/priority', { method: 'POST', json: { priority: priority } });
    }
    if (!res.ok) {
      showError(st.queueError, tailId(id) + ': ' + res.message);
      button.disabled = false;
    }
    scheduleStudioRefresh({ queue: true });
  }

  async function togglePause() {
    const paused = queuePaused(studio).paused;
    st.pause.disabled = true;
    showError(st.queueError, '');
    const res = paused
      ? await apiCall('/api/render/queue/resume', { method: 'POST' })
      : await apiCall('/api/render/queue/pause', { method: 'POST', json: {} });
    st.pause.disabled = false;
    if (!res.ok) {
      showError(st.queueError, (paused ? 'resume: ' : 'pause: ') + res.message);
      return;
    }
    studio.pausedLive = { paused: !paused, reason: paused ? null : 'paused by admin' };
    renderPause();
    scheduleStudioRefresh({ queue: true });
  }

  // ---- failures -----------------------------------------------------------

  function renderFailures() {
    const list = Array.isArray(studio.failures) ? studio.failures.filter(isObj) : [];
    st.failures.textContent = '';
    if (list.length === 0) {
      st.failures.appendChild(h('li', 'empty-note', studio.failures ? 'no failures' : 'loading\u2026'));
      return;
    }
    for (const job of list) {
      const li = h('li', 'failure');
      li.dataset.jobId = str(job.job_id) || '';
      const head = h('div', 'failure-head');
      const id = h('span', 'qjob-id', tailId(job.job_id));
      id.title = 'job ' + text(job.job_id);
      head.appendChild(id);
      head.appendChild(h('span', 'mode-tag', text(job.mode)));
      head.appendChild(h('span', 'small muted', 'node ' + text(job.node_id)));
      if (isSimulated(job.backend)) head.appendChild(simBadge());
      const time = h('span', 'small muted failure-time', fmtClock(job.finished_at));
      if (str(job.finished_at)) time.title = str(job.finished_at);
      head.appendChild(time);
      li.appendChild(head);
      li.appendChild(h('div', 'failure-error', text(job.error)));
      st.failures.appendChild(li);
    }
  }

  // ---- gallery -------------------------------------------------------------

  function acquireArtifact(sha) {
    let entry = blobs.get(sha);
    if (!entry) {
      entry = { url: null, promise: null, refs: 0 };
      blobs.set(sha, entry);
      entry.promise = (async () => {
        const token = getToken();
        if (!token) return null;
        try {
          const res = await fetch('/api/render/artifacts/' + encodeURIComponent(sha), { headers: { Authorization: 'Bearer ' + token } });
          if (res.status === 401) {
            tokenRejected();
            return null;
          }
          if (!res.ok) return null;
          const blob = await res.blob();
          if (entry.refs <= 0) return null; // nobody wants it any more
          entry.url = URL.createObjectURL(blob);
          return entry.url;
        } catch (_e) {
          return null;
        }
      })();
      entry.promise.then((url) => {
        if (url === null && blobs.get(sha) === entry) blobs.delete(sha); // retry on a later render
      });
    }
    entry.refs += 1;
    return entry.promise;
  }

  function releaseArtifact(sha) {
    const entry = blobs.get(sha);
    if (!entry) return;
    entry.refs -= 1;
    if (entry.refs > 0) return;
    blobs.delete(sha);
    if (entry.url) URL.revokeObjectURL(entry.url);
  }

  function provenanceRow(dl, label, value, cls, title) {
    const dt = h('dt', null, label);
    const dd = h('dd', cls || null, value);
    if (title) dd.title = title;
    dl.appendChild(dt);
    dl.appendChild(dd);
    return dd;
  }

  function renderTile(job) {
    const artifacts = Array.isArray(job.artifacts) ? job.artifacts.filter(isObj) : [];
    const art = artifacts[0] || null;
    const prov = isObj(job.provenance) ? job.provenance : {};
    const params = isObj(job.params) ? job.params : {};
    const fig = h('figure', 'tile');
    fig.dataset.jobId = job.job_id;

    const frame = h('a', 'tile-image');
    frame.target = '_blank';
    frame.rel = 'noopener';
    if (art && num(art.width) && num(art.height)) frame.style.aspectRatio = art.width + ' / ' + art.height;
    frame.appendChild(h('span', 'tile-placeholder', art ? 'loading\u2026' : 'no image'));
    fig.appendChild(frame);

    const cap = h('figcaption', 'tile-caption');
    const head = h('div', 'tile-head');
    head.appendChild(h('span', 'mode-tag', text(job.mode)));
    if (isSimulated(prov.backend) || isSimulated(job.backend)) head.appendChild(simBadge());
    const time = h('span', 'small muted tile-time', fmtClock(job.finished_at));
    if (str(job.finished_at)) time.title = str(job.finished_at);
    head.appendChild(time);
    cap.appendChild(head);
    const prompt = str(params.prompt);
    const p = h('div', 'tile-prompt', prompt ? truncate(prompt, 140) : DASH);
    if (prompt) p.title = prompt;
    cap.appendChild(p);

    const dl = h('dl', 'provenance');
    provenanceRow(dl, 'model', text(prov.model), 'prov-model');
    const seed = provenanceRow(dl, 'seed', text(prov.seed), 'prov-seed');
    if (str(prov.seed) !== null) dl.dataset.seed = str(prov.seed);
    seed.classList.add('mono');
    provenanceRow(dl, 'node', text(prov.node_id), 'prov-node');
    provenanceRow(dl, 'backend', text(prov.backend), 'prov-backend' + (isSimulated(prov.backend) ? ' sim' : ''));
    const trig = isObj(prov.trigger) ? prov.trigger : {};
    provenanceRow(dl, 'trigger', text(trig.source) + (str(trig.reference) ? ' \u00b7 ' + str(trig.reference) : ''), 'prov-trigger');
    provenanceRow(dl, 'workflow', shortId(prov.workflow_hash), 'prov-workflow mono', str(prov.workflow_hash) || undefined);
    provenanceRow(dl, 'correlation', tailId(prov.correlation_id || job.correlation_id), 'prov-correlation mono', str(prov.correlation_id || job.correlation_id) || undefined);
    if (art) provenanceRow(dl, 'image', text(art.width) + '\u00d7' + text(art.height) + ' \u00b7 ' + fmtBytes(art.bytes), 'prov-image', art.sha256 ? 'sha256 ' + art.sha256 : undefined);
    provenanceRow(dl, 'job', tailId(job.job_id), 'prov-job mono', job.job_id);
    cap.appendChild(dl);

    const actions = h('div', 'tile-actions');
    const reuse = h('button', 'btn btn-small', '\u21BA reuse');
    reuse.type = 'button';
    reuse.title = 'load these parameters into the form';
    reuse.addEventListener('click', () => reuseParams(job));
    actions.appendChild(reuse);
    const dl2 = h('a', 'btn btn-small tile-download', '\u2913 download');
    dl2.hidden = true;
    if (art && str(art.filename)) dl2.download = str(art.filename);
    actions.appendChild(dl2);
    if (art && str(art.sha256)) {
      // Picked up by the Stream Bot panel (chat.js).
      const share = h('button', 'btn btn-small', '\u2197 post');
      share.type = 'button';
      share.title = 'announce this image on your streams';
      share.dataset.action = 'post-artifact';
      share.dataset.sha256 = str(art.sha256);
      actions.appendChild(share);
    }
    if (artifacts.length > 1) actions.appendChild(h('span', 'small muted', '+' + (artifacts.length - 1) + ' more'));
    cap.appendChild(actions);
    fig.appendChild(cap);

    const sha = art ? str(art.sha256) : null;
    if (sha) {
      acquireArtifact(sha).then((url) => {
        if (!fig.isConnected && tiles.get(job.job_id) === undefined) return;
        const placeholder = frame.querySelector('.tile-placeholder');
        if (!url) {
          if (placeholder) placeholder.textContent = 'image unavailable';
          return;
        }
        const img = document.createElement('img');
        img.alt = prompt ? truncate(prompt, 120) : 'render ' + tailId(job.job_id);
        img.decoding = 'async';
        if (num(art.width)) img.width = art.width;
        if (num(art.height)) img.height = art.height;
        img.src = url;
        if (placeholder) placeholder.remove();
        frame.appendChild(img);
        frame.href = url;
        dl2.href = url;
        dl2.hidden = false;
      });
    }
    return { el: fig, sha: sha };
  }

  function renderGallery() {
    const list = Array.isArray(studio.gallery) ? studio.gallery.filter((j) => isObj(j) && str(j.job_id)) : [];
    const seen = new Set();
    const emptyNote = st.gallery.querySelector('.empty-note');
    if (list.length === 0) {
      if (!emptyNote) st.gallery.appendChild(h('div', 'empty-note', 'nothing rendered yet'));
    } else if (emptyNote) {
      emptyNote.remove();
    }
    let prev = null;
    for (const job of list) {
      seen.add(job.job_id);
      let tile = tiles.get(job.job_id);
      if (!tile) {
        tile = renderTile(job);
        tiles.set(job.job_id, tile);
      }
      const expected = prev ? prev.nextSibling : st.gallery.firstChild;
      if (expected !== tile.el) st.gallery.insertBefore(tile.el, expected);
      prev = tile.el;
    }
    for (const [id, tile] of tiles) {
      if (seen.has(id)) continue;
      tile.el.remove();
      tiles.delete(id);
      if (tile.sha) releaseArtifact(tile.sha);
    }
    st.galleryCount.textContent = String(list.length);
    renderSimNote();
  }

  // ---- refresh (REST) and live updates (websocket) -------------------------

  function scheduleStudioRefresh(needs) {
    if (needs) {
      if (needs.queue) refreshNeeds.queue = true;
      if (needs.gallery) refreshNeeds.gallery = true;
      if (needs.failures) refreshNeeds.failures = true;
    }
    if (refreshing || refreshTimer !== null) return; // picked up when the current one ends
    if (!refreshNeeds.queue && !refreshNeeds.gallery && !refreshNeeds.failures) return;
    const wait = Math.max(0, STUDIO_REFRESH_MIN_MS - (Date.now() - refreshLastAt));
    refreshTimer = setTimeout(runStudioRefresh, wait);
  }

  async function runStudioRefresh() {
    refreshTimer = null;
    if (!getToken()) return;
    refreshing = true;
    refreshLastAt = Date.now();
    const want = Object.assign({}, refreshNeeds);
    refreshNeeds.queue = refreshNeeds.gallery = refreshNeeds.failures = false;
    try {
      const [queue, gallery, failures] = await Promise.all([
        want.queue ? apiCall('/api/render/queue') : null,
        want.gallery ? apiCall('/api/render/jobs?status=completed&limit=' + GALLERY_LIMIT) : null,
        want.failures ? apiCall('/api/render/jobs?status=failed&limit=' + FAILURE_LIMIT) : null,
      ]);
      if (queue && queue.ok && isObj(queue.data)) studio.queue = queue.data;
      if (gallery && gallery.ok && isObj(gallery.data)) studio.gallery = Array.isArray(gallery.data.jobs) ? gallery.data.jobs : [];
      if (failures && failures.ok && isObj(failures.data)) studio.failures = Array.isArray(failures.data.jobs) ? failures.data.jobs : [];
      const failed = [queue, gallery, failures].filter((r) => r && !r.ok && r.status !== 401);
      if (failed.length) showError(st.queueError, 'refresh failed: ' + failed[0].message);
      else if (st.queueError.textContent.indexOf('refresh failed') === 0) showError(st.queueError, '');
      // Ask again where the read models have not caught up with the websocket yet.
      const lag = studioLag(studio);
      const lagging = lag.queue || lag.gallery || lag.failures;
      if (lagging && lagRetries < STUDIO_LAG_RETRIES) {
        lagRetries += 1;
        if (lag.queue) refreshNeeds.queue = true;
        if (lag.gallery) refreshNeeds.gallery = true;
        if (lag.failures) refreshNeeds.failures = true;
      }
      pruneLive(studio, lagging && lagRetries >= STUDIO_LAG_RETRIES);
      if (want.queue) renderQueue();
      if (want.gallery) renderGallery();
      if (want.failures) renderFailures();
    } finally {
      refreshing = false;
      scheduleStudioRefresh(null);
    }
  }

  function studioOnEvents(items) {
    let needs = null;
    let progressed = false;
    for (const item of items) {
      const r = applyStudioEvent(studio, item.env, item.seq);
      if (!r.relevant) continue;
      if (r.progress) progressed = true;
      else lagRetries = 0; // a structural change: the read models get time to catch up again
      if (r.needs.queue || r.needs.gallery || r.needs.failures) {
        needs = needs || { queue: false, gallery: false, failures: false };
        if (r.needs.queue) needs.queue = true;
        if (r.needs.gallery) needs.gallery = true;
        if (r.needs.failures) needs.failures = true;
      }
      if (r.progress && !queueRows.has(r.progress)) {
        needs = needs || { queue: false, gallery: false, failures: false };
        needs.queue = true; // a job we have not listed yet
      }
    }
    if (progressed || needs) renderQueue(); // bars and statuses move now, lists follow
    if (needs) scheduleStudioRefresh(needs);
  }

  function studioRefreshAll() {
    scheduleStudioRefresh({ queue: true, gallery: true, failures: true });
  }

  function studioBoot() {
    applyMode();
    st.mode.addEventListener('change', applyMode);
    st.seedRandom.addEventListener('click', () => {
      st.seed.value = String(randomSeed());
    });
    st.form.addEventListener('submit', submitRender);
    st.pause.addEventListener('click', togglePause);
    st.queue.addEventListener('click', (ev) => {
      const target = ev.target;
      if (!(target instanceof Element)) return;
      const button = target.closest('button[data-action]');
      const row = button ? button.closest('[data-job-id]') : null;
      if (button && row && !button.disabled) queueAction(row, button.dataset.action, button);
    });
    renderQueue();
    renderFailures();
    renderGallery();
    setInterval(() => {
      if (!document.hidden) studioRefreshAll();
    }, STUDIO_POLL_MS);
  }

  // ---- render ----------------------------------------------------------

  function render(changes) {
    if (changes.reset || changes.nodes.size > 0) renderNodes(changes.nodes, changes.reset);
    const feed = changes.events.filter(function (item) { return isFeedEvent(item.env); });
    if (changes.reset || feed.length > 0) renderEvents(feed, changes.reset);
    // The studio follows the same feed: a (re)snapshot or resume refetches everything,
    // live events move bars at once and refetch what changed.
    if (changes.kind === 'snapshot' || changes.kind === 'resumed') studioRefreshAll();
    else if (changes.kind === 'events' && changes.events.length > 0) studioOnEvents(changes.events);
    for (const listener of changeListeners) {
      try {
        listener(changes);
      } catch (e) {
        console.error('a dashboard section failed on live changes', e);
      }
    }
  }

  // Other sections of the page (chat.js) follow the same feed.
  const changeListeners = [];

  function setEventFilter(value) {
    el.filter.value = value;
    applyFilter();
    el.filter.scrollIntoView({ block: 'nearest' });
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
    studioBoot();
    setInterval(tick, 1000);
    connect();
  }

  global.NebulaCommand = {
    state: state,
    studio: studio,
    apiFetch: apiFetch,
    api: apiCall,
    h: h,
    fmtClock: fmtClock,
    summarize: summarize,
    hasToken: () => !!getToken(),
    onChanges: (listener) => changeListeners.push(listener),
    setEventFilter: setEventFilter,
    reconnect: connect,
    refreshStudio: studioRefreshAll,
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})(typeof window !== 'undefined' ? window : globalThis);
