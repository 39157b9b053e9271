// The Creative Studio's state: the render form's request, queue order, and the live overlay the
// websocket keeps on top of the REST lists (which lag it: the read models are eventually
// consistent). Pure: no DOM, loadable in Node.

import { isObj, num, str } from './format.js';

const RENDER_MODES = ['txt2img', 'img2img', 'inpaint', 'controlnet', 'upscale', 'face_swap', 'animatediff'];
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
  animatediff: SAMPLER_FIELDS.concat(['width', 'height', 'frames', 'fps']),
};
const PROMPT_MODES = ['txt2img', 'img2img', 'inpaint', 'controlnet', 'animatediff'];
const MAX_SEED = Number.MAX_SAFE_INTEGER;
const I32_MIN = -2147483648;
const I32_MAX = 2147483647;
export const MAX_INPUT_BYTES = 16 * 1024 * 1024;
const TERMINAL = ['completed', 'failed', 'cancelled', 'deleted'];
const STATUS_RANK = { queued: 0, assigned: 1, running: 2, completed: 3, failed: 3, cancelled: 3 };
const MAX_LIVE_JOBS = 500;

export function modeFields(mode) {
  return MODE_FIELDS[mode] ? MODE_FIELDS[mode].slice() : [];
}

export function modeImages(mode) {
  return modeFields(mode).filter((f) => IMAGE_FIELDS.indexOf(f) !== -1);
}

function isTerminal(status) {
  return TERMINAL.indexOf(status) !== -1;
}

export function isSimulated(backend) {
  return backend === 'simulated';
}

export function randomSeed(rand) {
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
export function buildRenderRequest(mode, values, images) {
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
  if (uses('frames')) {
    // A clip: its frames and rate (the motion module and context window keep their defaults).
    const animation = {};
    for (const [name, min, max] of [['frames', 2, 256], ['fps', 1, 60]]) {
      const v = parseInteger(values, name, min, max, out);
      if (out.error) return { error: out.error };
      if (v !== undefined) animation[name] = v;
    }
    params.animation = animation;
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
export function imageContentType(type, name) {
  if (type === 'image/png' || type === 'image/jpeg') return type;
  const n = typeof name === 'string' ? name.toLowerCase() : '';
  if (/\.png$/.test(n)) return 'image/png';
  if (/\.jpe?g$/.test(n)) return 'image/jpeg';
  return null;
}

/**
 * The priority that moves a queued job one place up (`dir` < 0) or down (`dir` > 0) in
 * `jobs` (run order): one above the job before it, or one below the job after it. Null when
 * the job cannot move that way (not queued, or already first/last among queued jobs).
 */
export function reorderPriority(jobs, jobId, dir) {
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

export function createStudioState() {
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
export function applyStudioEvent(studio, env, seq) {
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
      case 'render.job_deleted':
        entry.status = 'deleted';
        result.needs.queue = false;
        result.needs.gallery = true;
        result.needs.failures = true;
        break;
      case 'render.job_shared':
      case 'render.job_share_revoked':
        // The job's place in the queue is unchanged; its gallery tile shows the link.
        result.needs.queue = false;
        result.needs.gallery = true;
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
export function effectiveJob(job, live) {
  const out = Object.assign({}, job);
  const restProgress = isObj(job.progress) && num(job.progress.max) !== null ? { value: num(job.progress.value) || 0, max: num(job.progress.max) } : null;
  out.progress = restProgress;
  if (live) overlay(out, job, live, restProgress);
  if (out.status === 'queued' || out.status === 'assigned') out.progress = null;
  if (out.status === 'completed' && out.progress) out.progress = { value: out.progress.max, max: out.progress.max };
  return out;
}

function overlay(out, job, live, restProgress) {
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
export function studioLag(studio) {
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
    if (entry.status === 'deleted' && inGallery && inGallery.has(id)) lag.gallery = true;
    if (entry.status === 'deleted' && inFailures && inFailures.has(id)) lag.failures = true;
  }
  if (studio.pausedLive && studio.queue && !!studio.queue.paused !== studio.pausedLive.paused) lag.queue = true;
  return lag;
}

/**
 * Forgets websocket news that REST now reflects; with `giveUp`, also the finished jobs REST
 * does not show (after many retries: e.g. a failure older than the short failure list).
 */
export function pruneLive(studio, giveUp) {
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
      if (entry.status === 'deleted' && (inGallery.has(id) || inFailures.has(id))) continue;
    }
    studio.live.delete(id);
  }
  if (studio.pausedLive && studio.queue && (giveUp || !!studio.queue.paused === studio.pausedLive.paused)) studio.pausedLive = null;
}

/** Pause state to show: the websocket's word until REST agrees. */
export function queuePaused(studio) {
  if (studio.pausedLive) return studio.pausedLive;
  const q = studio.queue;
  return { paused: !!(q && q.paused), reason: q ? str(q.reason) : null };
}

/**
 * The status a job is shown with: a running job whose backend has not begun it (no progress
 * yet: its prompt still waits in ComfyUI's own queue) is `waiting` on its node.
 */
export function shownStatus(job) {
  if (!isObj(job)) return 'unknown';
  if (job.status === 'running' && progressPercent(job.progress) === null) return 'waiting';
  return str(job.status) || 'unknown';
}

export function progressPercent(progress) {
  if (!isObj(progress)) return null;
  const v = num(progress.value);
  const m = num(progress.max);
  if (v === null || m === null || m <= 0) return null;
  return Math.max(0, Math.min(100, (v / m) * 100));
}

/** The queue as the page shows it, in run order: each REST row with the websocket's news on top. */
export function queueJobs(studio) {
  const jobs = studio.queue && Array.isArray(studio.queue.jobs) ? studio.queue.jobs.filter((j) => isObj(j) && str(j.job_id)) : [];
  return jobs.map((j) => effectiveJob(j, studio.live.get(j.job_id)));
}

/** Whether the last REST answer lists the job in the queue. */
export function queueLists(studio, jobId) {
  const jobs = studio.queue && Array.isArray(studio.queue.jobs) ? studio.queue.jobs : [];
  return jobs.some((j) => isObj(j) && j.job_id === jobId);
}

const REUSED = ['prompt', 'negative_prompt', 'seed', 'steps', 'cfg', 'denoise', 'width', 'height', 'checkpoint', 'upscale_model'];

/**
 * The form values that render `job` again: `{ mode, values }` (strings, by field name). Images
 * are not carried over: they are chosen again. Null for something that is not a job.
 */
export function jobFormValues(job) {
  if (!isObj(job)) return null;
  const p = isObj(job.params) ? job.params : {};
  const values = {};
  for (const name of REUSED) {
    if (p[name] !== undefined && p[name] !== null) values[name] = String(p[name]);
  }
  values.lora = isObj(p.lora) ? str(p.lora.name) || '' : '';
  if (isObj(p.lora) && num(p.lora.strength) !== null) values.lora_strength = String(p.lora.strength);
  values.controlnet_model = str(p.controlnet_model) || '';
  if (isObj(p.animation)) {
    for (const name of ['frames', 'fps']) {
      if (num(p.animation[name]) !== null) values[name] = String(p.animation[name]);
    }
  }
  return { mode: RENDER_MODES.indexOf(job.mode) !== -1 ? job.mode : null, values: values };
}

/**
 * The share link a gallery tile shows for output `sha` of `job`: REST's (`job.shares`, each
 * `{sha256, token, url}`), unless this page just shared (`pending` = `{token, url}`) or revoked
 * (`pending` = null) and REST does not show it yet. `{ link: {token, url} | null, settled }`:
 * settled once REST agrees (the pending note can go).
 */
export function shareOf(job, sha, pending) {
  const shares = isObj(job) && Array.isArray(job.shares) ? job.shares.filter(isObj) : [];
  const rest = shares.find((s) => str(s.sha256) === sha && str(s.token) && str(s.url));
  const restLink = rest ? { token: str(rest.token), url: str(rest.url) } : null;
  if (pending === undefined) return { link: restLink, settled: true };
  const agrees = pending === null ? restLink === null : restLink !== null && restLink.token === pending.token;
  return { link: agrees ? restLink : pending, settled: agrees };
}
