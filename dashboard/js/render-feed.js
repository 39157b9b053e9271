// The render queue, gallery and failures, shared by the Studio and the overview: REST lists
// kept fresh by the websocket (bars move at once, lists are fetched again when the log says they
// changed, and again while the read models lag what the websocket already said).
//
// `subscribe(fn)`: fn({ queue, gallery, failures, error }) after each update; the flags say
// which lists may have changed, `error` is a failed refresh's message (or null).

import { api, getToken } from './api.js';
import { onChanges } from './shell.js';
import { applyStudioEvent, createStudioState, pruneLive, queueLists, studioLag } from './state/studio.js';

const REFRESH_MIN_MS = 300; // at most one REST refresh per this interval
const POLL_MS = 20 * 1000; // safety net when the websocket is quiet
const LAG_RETRIES = 40; // refetches while REST lags the websocket
const GALLERY_LIMIT = 48;
export const FAILURE_LIMIT = 10;

/** The shared state (see state/studio.js `createStudioState`). */
export const studio = createStudioState();

const listeners = [];
const needs = { queue: false, gallery: false, failures: false };
let timer = null;
let refreshing = false;
let lastAt = 0;
let lagRetries = 0;

export function subscribeRender(fn) {
  listeners.push(fn);
}

function notify(update) {
  for (const fn of listeners) {
    try {
      fn(update);
    } catch (e) {
      console.error('a render view failed to update', e);
    }
  }
}

/** Asks for a refresh of the named lists (`{ queue, gallery, failures }`), soon. */
export function refreshRender(want) {
  if (want) {
    if (want.queue) needs.queue = true;
    if (want.gallery) needs.gallery = true;
    if (want.failures) needs.failures = true;
  }
  if (refreshing || timer !== null) return; // picked up when the current one ends
  if (!needs.queue && !needs.gallery && !needs.failures) return;
  timer = setTimeout(run, Math.max(0, REFRESH_MIN_MS - (Date.now() - lastAt)));
}

export function refreshAllRender() {
  refreshRender({ queue: true, gallery: true, failures: true });
}

async function run() {
  timer = null;
  if (!getToken()) return;
  refreshing = true;
  lastAt = Date.now();
  const want = Object.assign({}, needs);
  needs.queue = needs.gallery = needs.failures = false;
  try {
    const [queue, gallery, failures] = await Promise.all([
      want.queue ? api('/api/render/queue') : null,
      want.gallery ? api('/api/render/jobs?status=completed&limit=' + GALLERY_LIMIT) : null,
      want.failures ? api('/api/render/jobs?status=failed&limit=' + FAILURE_LIMIT) : null,
    ]);
    if (queue && queue.ok && queue.data) studio.queue = queue.data;
    if (gallery && gallery.ok && gallery.data) studio.gallery = Array.isArray(gallery.data.jobs) ? gallery.data.jobs : [];
    if (failures && failures.ok && failures.data) studio.failures = Array.isArray(failures.data.jobs) ? failures.data.jobs : [];
    const failed = [queue, gallery, failures].filter((r) => r && !r.ok && r.status !== 401);
    // Ask again where the read models have not caught up with the websocket yet.
    const lag = studioLag(studio);
    const lagging = lag.queue || lag.gallery || lag.failures;
    if (lagging && lagRetries < LAG_RETRIES) {
      lagRetries += 1;
      if (lag.queue) needs.queue = true;
      if (lag.gallery) needs.gallery = true;
      if (lag.failures) needs.failures = true;
    }
    pruneLive(studio, lagging && lagRetries >= LAG_RETRIES);
    notify({ queue: want.queue, gallery: want.gallery, failures: want.failures, error: failed.length ? 'refresh failed: ' + failed[0].message : null });
  } finally {
    refreshing = false;
    refreshRender(null);
  }
}

function onLive(changes) {
  // A (re)snapshot or resume refetches everything; live events move bars at once and refetch
  // what changed.
  if (changes.kind === 'snapshot' || changes.kind === 'resumed') {
    refreshAllRender();
    return;
  }
  if (changes.kind !== 'events' || changes.events.length === 0) return;
  let moved = false;
  const want = { queue: false, gallery: false, failures: false };
  for (const item of changes.events) {
    const r = applyStudioEvent(studio, item.env, item.seq);
    if (!r.relevant) continue;
    moved = true;
    if (!r.progress) lagRetries = 0; // a structural change: the read models get time to catch up again
    if (r.needs.queue) want.queue = true;
    if (r.needs.gallery) want.gallery = true;
    if (r.needs.failures) want.failures = true;
    if (r.progress && !queueLists(studio, r.progress)) want.queue = true; // a job not listed yet
  }
  if (!moved) return;
  notify({ queue: true, gallery: false, failures: false, error: undefined }); // bars and statuses now, lists follow
  refreshRender(want);
}

onChanges(onLive);
setInterval(() => {
  if (!document.hidden) refreshAllRender();
}, POLL_MS);
