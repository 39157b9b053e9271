// The Creative Studio: form -> request, queue order, and the websocket's overlay on REST.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  applyStudioEvent,
  buildRenderRequest,
  createStudioState,
  effectiveJob,
  imageContentType,
  jobFormValues,
  modeFields,
  modeImages,
  pruneLive,
  queueJobs,
  queueLists,
  queuePaused,
  randomSeed,
  reorderPriority,
  shareOf,
  shownStatus,
  studioLag,
} from '../js/state/studio.js';

const base = { prompt: 'a fox', negative_prompt: '', seed: '42', steps: '20', cfg: '7', denoise: '0.75', width: '512', height: '512', checkpoint: 'sd.safetensors', lora: '', lora_strength: '1', upscale_model: '4x.pth', controlnet_model: '', priority: '0' };

test('txt2img sends only what txt2img reads, typed', () => {
  const r = buildRenderRequest('txt2img', base, {});
  assert.deepEqual(r, {
    body: { mode: 'txt2img', params: { prompt: 'a fox', seed: 42, steps: 20, width: 512, height: 512, cfg: 7, checkpoint: 'sd.safetensors' }, priority: 0, source: 'dashboard' },
  });
});

test('a clip carries its frames and rate, and comes back into the form', () => {
  const r = buildRenderRequest('animatediff', Object.assign({}, base, { frames: '24', fps: '12' }), {});
  assert.deepEqual(r.body.params.animation, { frames: 24, fps: 12 });
  assert.equal(r.body.params.width, 512);
  assert.equal('denoise' in r.body.params, false);
  assert.match(buildRenderRequest('animatediff', Object.assign({}, base, { frames: '1' }), {}).error, /frames/);
  assert.match(buildRenderRequest('animatediff', Object.assign({}, base, { prompt: ' ' }), {}).error, /needs a prompt/);
  const back = jobFormValues({ mode: 'animatediff', params: { prompt: 'p', animation: { frames: 24, fps: 12 } } });
  assert.equal(back.mode, 'animatediff');
  assert.equal(back.values.frames, '24');
  assert.equal(back.values.fps, '12');
});

test('empty optional fields are left to the server', () => {
  const r = buildRenderRequest('txt2img', { prompt: 'x', seed: ' ', steps: '', priority: '' }, {});
  assert.deepEqual(r.body.params, { prompt: 'x' });
  assert.equal(r.body.priority, 0);
});

test('each mode carries its images; upscale needs no prompt', () => {
  const img = buildRenderRequest('img2img', base, { init_image: 'abc' });
  assert.deepEqual(img.body.params.init_image, { sha256: 'abc' });
  assert.equal(img.body.params.denoise, 0.75);
  assert.equal('width' in img.body.params, false);
  const up = buildRenderRequest('upscale', { prompt: '', upscale_model: '4x.pth' }, { init_image: 'i', mask_image: 'm' });
  assert.deepEqual(up.body.params, { upscale_model: '4x.pth', init_image: { sha256: 'i' } });
  assert.deepEqual(modeImages('inpaint'), ['init_image', 'mask_image']);
  assert.deepEqual(modeImages('face_swap'), ['init_image', 'face_image']);
  assert.equal(modeFields('controlnet').indexOf('controlnet_model') !== -1, true);
  assert.deepEqual(modeFields('nope'), []);
});

test('bad values are refused with the reason', () => {
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { prompt: '  ' }), {}), { error: 'txt2img needs a prompt' });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { steps: '2.5' }), {}), { error: 'steps must be a whole number, got "2.5"' });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { seed: '-1' }), {}), { error: 'seed must be 0..=9007199254740991, got -1' });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { cfg: 'lots' }), {}), { error: 'cfg must be a number, got "lots"' });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { priority: '3000000000' }), {}), { error: 'priority must be -2147483648..=2147483647, got 3000000000' });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { lora: 'x', lora_strength: 'y' }), {}), { error: 'LoRA strength must be a number, got "y"' });
  assert.deepEqual(buildRenderRequest('paint', base, {}), { error: 'unknown mode paint' });
});

test('a LoRA carries its strength, 1 by default', () => {
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { lora: 'style', lora_strength: '0.6' }), {}).body.params.lora, { name: 'style', strength: 0.6 });
  assert.deepEqual(buildRenderRequest('txt2img', Object.assign({}, base, { lora: 'style', lora_strength: '' }), {}).body.params.lora, { name: 'style', strength: 1 });
});

test('a job loads back into the form', () => {
  const job = { job_id: 'j', mode: 'img2img', params: { prompt: 'p', seed: 7, steps: 30, lora: { name: 'l', strength: 0.5 }, init_image: { sha256: 'x' } } };
  assert.deepEqual(jobFormValues(job), { mode: 'img2img', values: { prompt: 'p', seed: '7', steps: '30', lora: 'l', lora_strength: '0.5', controlnet_model: '' } });
  assert.equal(jobFormValues({ mode: 'weird', params: {} }).mode, null);
  assert.equal(jobFormValues(null), null);
});

test('uploads: PNG and JPEG only', () => {
  assert.equal(imageContentType('image/png', 'a'), 'image/png');
  assert.equal(imageContentType('', 'PHOTO.JPG'), 'image/jpeg');
  assert.equal(imageContentType('image/gif', 'a.gif'), null);
});

test('a random seed is a safe integer', () => {
  assert.equal(randomSeed(() => 0), 0);
  const top = randomSeed(() => 0.999999999);
  assert.equal(Number.isSafeInteger(top), true);
  assert.equal(top > 2 ** 51, true);
});

test('reordering moves a queued job past its neighbour', () => {
  const jobs = [
    { job_id: 'r', status: 'running', priority: 9 },
    { job_id: 'a', status: 'queued', priority: 5 },
    { job_id: 'b', status: 'queued', priority: 5 },
    { job_id: 'c', status: 'queued', priority: 1 },
  ];
  assert.equal(reorderPriority(jobs, 'b', -1), 6);
  assert.equal(reorderPriority(jobs, 'b', 1), 0);
  assert.equal(reorderPriority(jobs, 'a', -1), null, 'first queued job');
  assert.equal(reorderPriority(jobs, 'c', 1), null, 'last queued job');
  assert.equal(reorderPriority(jobs, 'r', 1), null, 'not queued');
  assert.equal(reorderPriority([{ job_id: 'x', status: 'queued', priority: 2147483647 }, { job_id: 'y', status: 'queued', priority: 1 }], 'y', -1), null, 'past i32');
});

function ev(type, id, data) {
  return { type: type, aggregate_type: 'render_job', aggregate_id: id, data: data || {} };
}

test('live events move a job ahead of REST, never backwards', () => {
  const studio = createStudioState();
  studio.queue = { jobs: [{ job_id: 'j', status: 'queued', priority: 0, attempt: 0 }], queued: 1, cap: 100 };
  assert.equal(applyStudioEvent(studio, ev('render.job_started', 'j', { node_id: 'n1', attempt: 1, backend: 'simulated' }), 10).needs.queue, true);
  const tick = applyStudioEvent(studio, ev('render.job_progressed', 'j', { attempt: 1, value: 5, max: 20 }), 11);
  assert.equal(tick.progress, 'j');
  assert.equal(tick.needs.queue, false, 'a bar moving needs no REST call');
  let shown = queueJobs(studio)[0];
  assert.equal(shown.status, 'running');
  assert.equal(shown.node_id, 'n1');
  assert.deepEqual(shown.progress, { value: 5, max: 20 });
  // An older event (a lower seq) does not undo a newer one.
  applyStudioEvent(studio, ev('render.job_progressed', 'j', { attempt: 1, value: 2, max: 20 }), 9);
  assert.deepEqual(queueJobs(studio)[0].progress, { value: 5, max: 20 });
  // Nor does REST lagging behind with a lower value.
  studio.queue.jobs[0] = { job_id: 'j', status: 'running', attempt: 1, progress: { value: 3, max: 20 } };
  assert.deepEqual(queueJobs(studio)[0].progress, { value: 5, max: 20 });
  // A retry (attempt 2) starts over even though its value is lower.
  applyStudioEvent(studio, ev('render.job_progressed', 'j', { attempt: 2, value: 1, max: 20 }), 12);
  assert.deepEqual(queueJobs(studio)[0].progress, { value: 1, max: 20 });
  assert.equal(queueLists(studio, 'j'), true);
  assert.equal(queueLists(studio, 'other'), false);
});

test('effectiveJob: REST wins when it is ahead; queued jobs have no bar', () => {
  assert.equal(effectiveJob({ job_id: 'j', status: 'completed' }, { status: 'running', attempt: null, priority: null, max: null, value: null }).status, 'completed');
  assert.equal(effectiveJob({ job_id: 'j', status: 'queued', progress: { value: 1, max: 2 } }, null).progress, null);
  assert.equal(effectiveJob({ job_id: 'j', status: 'queued', priority: 1 }, { status: 'queued', priority: 4, attempt: null, max: null, value: null }).priority, 4);
});

test('lag: REST is asked again until it shows what the websocket said, then the overlay is pruned', () => {
  const studio = createStudioState();
  studio.queue = { jobs: [{ job_id: 'j', status: 'running' }], paused: false };
  studio.gallery = [];
  studio.failures = [];
  const done = applyStudioEvent(studio, ev('render.job_completed', 'j'), 5);
  assert.equal(done.needs.gallery, true);
  assert.deepEqual(studioLag(studio), { queue: true, gallery: true, failures: false });
  studio.queue = { jobs: [], paused: false };
  studio.gallery = [{ job_id: 'j' }];
  assert.deepEqual(studioLag(studio), { queue: false, gallery: false, failures: false });
  pruneLive(studio, false);
  assert.equal(studio.live.size, 0);

  applyStudioEvent(studio, ev('render.job_failed', 'k'), 6);
  assert.equal(studioLag(studio).failures, true);
  pruneLive(studio, false);
  assert.equal(studio.live.has('k'), true, 'kept while REST has not caught up');
  pruneLive(studio, true);
  assert.equal(studio.live.has('k'), false, 'given up after the retries');
});

test('pause: the websocket says it first, REST confirms', () => {
  const studio = createStudioState();
  studio.queue = { jobs: [], paused: false, reason: null };
  assert.deepEqual(queuePaused(studio), { paused: false, reason: null });
  const r = applyStudioEvent(studio, { type: 'render.queue_paused', aggregate_type: 'render_queue', aggregate_id: 'default', data: { reason: 'maintenance' } }, 3);
  assert.equal(r.needs.queue, true);
  assert.deepEqual(queuePaused(studio), { paused: true, reason: 'maintenance' });
  assert.equal(studioLag(studio).queue, true);
  studio.queue = { jobs: [], paused: true, reason: 'maintenance' };
  pruneLive(studio, false);
  assert.equal(studio.pausedLive, null);
  assert.equal(applyStudioEvent(studio, { type: 'node.registered', aggregate_type: 'node' }, 4).relevant, false);
});

test('a tile shows REST\'s share link, or what this page just did until REST agrees', () => {
  const sha = 'ab'.repeat(32);
  const link = { token: '0f'.repeat(16), url: 'https://n.example/share/' + '0f'.repeat(16) + '.png' };
  const shared = { job_id: 'j', shares: [{ sha256: sha, token: link.token, url: link.url }] };
  const bare = { job_id: 'j', shares: [] };
  assert.deepEqual(shareOf(shared, sha, undefined), { link: link, settled: true });
  assert.deepEqual(shareOf(bare, sha, undefined), { link: null, settled: true });
  // Another output's share, junk and a missing list are no link.
  assert.deepEqual(shareOf(shared, 'cd'.repeat(32), undefined), { link: null, settled: true });
  assert.deepEqual(shareOf({ shares: [null, 3, { sha256: sha }] }, sha, undefined), { link: null, settled: true });
  assert.deepEqual(shareOf(null, sha, undefined), { link: null, settled: true });
  // Just shared: shown at once, settled when REST has the same token.
  assert.deepEqual(shareOf(bare, sha, link), { link: link, settled: false });
  assert.deepEqual(shareOf(shared, sha, link), { link: link, settled: true });
  // Just revoked: gone at once, settled when REST has no link.
  assert.deepEqual(shareOf(shared, sha, null), { link: null, settled: false });
  assert.deepEqual(shareOf(bare, sha, null), { link: null, settled: true });
});

test('share events refresh the gallery, not the queue', () => {
  const studio = createStudioState();
  for (const type of ['render.job_shared', 'render.job_share_revoked']) {
    const result = applyStudioEvent(studio, { type: type, aggregate_type: 'render_job', aggregate_id: 'j1', data: {} }, 9);
    assert.equal(result.relevant, true);
    assert.deepEqual(result.needs, { queue: false, gallery: true, failures: false });
  }
});

test('a running job its backend has not begun is shown waiting on its node', () => {
  assert.equal(shownStatus({ status: 'running', progress: null }), 'waiting');
  assert.equal(shownStatus({ status: 'running', progress: { value: 0, max: 20 } }), 'running');
  assert.equal(shownStatus({ status: 'queued' }), 'queued');
  assert.equal(shownStatus(null), 'unknown');
});

test('a deleted job leaves the gallery: REST is asked until it no longer lists it', () => {
  const studio = createStudioState();
  studio.queue = { jobs: [], queued: 0, cap: 100 };
  studio.gallery = [{ job_id: 'j', status: 'completed' }];
  studio.failures = [];
  const r = applyStudioEvent(studio, ev('render.job_deleted', 'j', { outputs: ['ab'], reason: 'deleted by admin' }), 20);
  assert.equal(r.relevant, true);
  assert.deepEqual(r.needs, { queue: false, gallery: true, failures: true });
  assert.equal(studioLag(studio).gallery, true, 'still listed');
  pruneLive(studio, false);
  assert.equal(studio.live.has('j'), true, 'kept until REST agrees');
  studio.gallery = [];
  assert.equal(studioLag(studio).gallery, false);
  pruneLive(studio, false);
  assert.equal(studio.live.has('j'), false);
});
