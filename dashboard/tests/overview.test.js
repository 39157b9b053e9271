// The overview's summaries, and the dead letters' reading.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { applyFrame, createState, STALE_MS } from '../js/state/live.js';
import { createStudioState } from '../js/state/studio.js';
import { attention, healthWarnings, jobSummary, nodeSummary, recentFailures, storageWarnings } from '../js/state/overview.js';
import { HISTORY_NOTE, normalizeLetters, payloadText, replayBlocked, replayOutcome } from '../js/state/dlq.js';

const NOW = Date.parse('2026-12-04T10:00:00Z');
const GIB = 1024 ** 3;
const ago = (ms) => new Date(NOW - ms).toISOString();

function liveState() {
  const state = createState();
  applyFrame(
    state,
    {
      type: 'snapshot',
      seq: 3,
      nodes: [
        {
          node_id: 'gpu-box',
          hostname: 'box',
          status: 'online',
          memory_total_bytes: 64 * GIB,
          gpus: [{ index: 0, name: 'RTX 4090', vendor: 'nvidia', memory_total_bytes: 24 * GIB }, { index: 1, name: 'RTX 3090', vendor: 'nvidia', memory_total_bytes: 24 * GIB }],
          heartbeat: { sampled_at: ago(1000), cpu_percent: 12, memory_used_bytes: 8 * GIB, gpus: [{ index: 0, memory_used_bytes: 6 * GIB, temperature_c: 60 }, { index: 1, memory_used_bytes: 2 * GIB, temperature_c: 88 }] },
        },
        { node_id: 'old', status: 'online', gpus: [], heartbeat: { sampled_at: ago(STALE_MS + 5000) } },
        { node_id: 'gone', status: 'offline', gpus: [{ index: 0, name: 'GTX', memory_total_bytes: 8 * GIB }] },
      ],
      events: [
        { stream_seq: 1, type: 'render.job_failed', aggregate_type: 'render_job', aggregate_id: 'job-A', occurred_at: ago(60e3), correlation_id: 'c-A', data: { reason: 'out of memory' } },
        { stream_seq: 2, type: 'post.failed', aggregate_type: 'post', aggregate_id: 'p1', occurred_at: ago(30e3), correlation_id: 'c-P', data: { destination: 'kick', error: '401', will_retry: false } },
        { stream_seq: 3, type: 'post.failed', aggregate_type: 'post', aggregate_id: 'p2', occurred_at: ago(20e3), data: { destination: 'kick', error: '503', will_retry: true } },
      ],
    },
    NOW,
  );
  // The snapshot's heartbeats were received "now"; make their receive times match their age.
  state.nodes.get('old')._rx = NOW - STALE_MS - 5000;
  return state;
}

test('nodes: counts by status, GPUs and VRAM of the nodes that are up', () => {
  const s = nodeSummary(liveState(), NOW);
  assert.deepEqual(s.counts, { total: 3, online: 1, stale: 1, offline: 1, unknown: 0 });
  assert.deepEqual(s.gpus, { count: 3, used: 8 * GIB, total: 48 * GIB });
  const box = s.nodes.find((n) => n.id === 'gpu-box');
  assert.equal(box.status, 'online');
  assert.deepEqual(box.gpus.map((g) => g.name), ['RTX 4090', 'RTX 3090']);
  assert.equal(box.ramTotal, 64 * GIB);
  assert.deepEqual(s.nodes.map((n) => n.id), ['gone', 'gpu-box', 'old']);
});

test('jobs: running and queued in run order, with the count and cap', () => {
  const studio = createStudioState();
  assert.equal(jobSummary(studio).loaded, false);
  studio.queue = {
    jobs: [
      { job_id: 'r', status: 'running', progress: { value: 3, max: 20 } },
      { job_id: 'q1', status: 'queued' },
      { job_id: 'a', status: 'assigned' },
      { job_id: 'q2', status: 'queued' },
    ],
    queued: 7,
    cap: 100,
    paused: false,
  };
  const j = jobSummary(studio);
  assert.deepEqual(j.running.map((x) => x.job_id), ['r', 'a']);
  assert.deepEqual(j.queued.map((x) => x.job_id), ['q1', 'q2']);
  assert.equal(j.queuedCount, 7, "the server's count, not only the listed jobs");
  assert.equal(j.cap, 100);
  assert.deepEqual(j.running[0].progress, { value: 3, max: 20 });
});

test('failures: REST and live merged, one per job, newest first, retried posts left out', () => {
  const state = liveState();
  const rest = [
    { job_id: 'job-A', mode: 'txt2img', node_id: 'gpu-box', error: 'CUDA out of memory', finished_at: ago(59e3) },
    { job_id: 'job-B', mode: 'img2img', error: 'missing input', finished_at: ago(3600e3) },
  ];
  const f = recentFailures(rest, state.events, 10);
  assert.deepEqual(f.map((x) => x.key), ['post:p1:kick', 'render:job-A', 'render:job-B']);
  assert.equal(f[1].detail, 'CUDA out of memory');
  assert.deepEqual([f[1].room, f[1].params], ['studio', { job: 'job-A' }]);
  assert.deepEqual([f[0].room, f[0].params], ['events', { filter: 'c-P' }]);
  assert.equal(recentFailures(rest, state.events, 1).length, 1);
  assert.deepEqual(recentFailures(null, [], 5), []);
});

test('failures: a service that went down or was given up on, and a ComfyUI that gave up, lead to their rooms', () => {
  const event = (seq, type, id, data) => ({ seq: seq, env: { type: type, aggregate_id: id, occurred_at: ago(seq * 1e3), correlation_id: 'c' + seq, data: data } });
  const events = [
    event(1, 'service.state_changed', 'gpu-box', { service: 'ollama', state: 'gave_up', reason: 'restarted 5 times without becoming healthy' }),
    event(2, 'service.state_changed', 'gpu-box', { service: 'ollama', state: 'healthy', reason: 'its check passes' }),
    event(3, 'comfyui.state_changed', 'gpu-box', { state: 'gave_up', reason: 'restarted 5 times' }),
    event(4, 'service.state_changed', 'nas', { service: 'web', state: 'down', reason: 'exited: exit status: 1' }),
  ];
  const f = recentFailures([], events, 10);
  assert.deepEqual(f.map((x) => x.title), ['ollama on gpu-box gave up', 'ComfyUI on gpu-box gave up', 'web on nas down']);
  assert.deepEqual([f[0].room, f[0].params], ['services', { node: 'gpu-box' }]);
  assert.equal(f[0].detail, 'restarted 5 times without becoming healthy');
  assert.equal(f[1].room, 'studio');
});

test('attention: what is wrong, most serious first; nothing when all is well', () => {
  const state = liveState();
  const nodes = nodeSummary(state, NOW);
  const studio = createStudioState();
  studio.queue = { jobs: [], queued: 100, cap: 100, paused: true, reason: 'maintenance' };
  const failures = recentFailures([], state.events, 10);
  const items = attention(nodes, jobSummary(studio), failures, { total: 3 }, NOW);
  assert.deepEqual(
    items.map((i) => i.text),
    ['1 node offline', '3 dead letters waiting', 'render queue full (100)', '1 node not heard from in 30s', 'RTX 3090 on gpu-box at 88\u00b0C', '2 failures in the last 24h', 'render queue paused (maintenance)'],
  );
  assert.deepEqual(items[4].params, { node: 'gpu-box' });
  const calm = createState();
  applyFrame(calm, { type: 'snapshot', seq: 0, nodes: [{ node_id: 'n', status: 'online' }], events: [] }, NOW);
  const quiet = createStudioState();
  quiet.queue = { jobs: [], queued: 0, cap: 100, paused: false };
  assert.deepEqual(attention(nodeSummary(calm, NOW), jobSummary(quiet), [], { total: 0 }, NOW), []);
  assert.deepEqual(attention(nodeSummary(calm, NOW), jobSummary(quiet), [], null, NOW), []);
});

test('dead letters: normalized newest first; replay only what can go back', () => {
  const got = normalizeLetters({
    letters: [
      { seq: 3, origin: 'chat-intake-twitch', origin_stream: 'WORK', origin_subject: 'nebula.work.chat.twitch', reason: 'boom', payload: { a: 1 }, replayable: true },
      { seq: 9, origin: 'projector', origin_stream: 'EVENTS', payload: 'not json', replayable: false },
      { no: 'seq' },
    ],
    total: 12,
  });
  assert.deepEqual(got.letters.map((l) => l.seq), [9, 3]);
  assert.equal(got.total, 12);
  assert.equal(normalizeLetters({ letters: [{ seq: 1 }] }).total, 1);
  assert.deepEqual(normalizeLetters(null), { letters: [], total: 0 });
  assert.equal(replayBlocked(got.letters[0]), HISTORY_NOTE);
  assert.equal(replayBlocked(got.letters[1]), null);
  assert.equal(replayBlocked({ replayable: false, origin_stream: 'WORK' }), 'not replayable');
  const told = normalizeLetters({ letters: [{ seq: 4, origin_stream: 'TELEMETRY', replayable: false, not_replayable_because: 'telemetry is a gauge' }] });
  assert.equal(replayBlocked(told.letters[0]), 'telemetry is a gauge', "the server's reason wins");
  assert.equal(payloadText('not json'), 'not json');
  assert.equal(payloadText({ a: 1 }), '{\n  "a": 1\n}');
});

test('a replay answer: 202 replayed, 409 already was, anything else failed', () => {
  assert.deepEqual(replayOutcome(202, { seq: 12, replayed_to: 'nebula.work.chat.twitch' }, null), { ok: true, replayed: true, message: 'replayed to nebula.work.chat.twitch' });
  assert.deepEqual(replayOutcome(409, null, 'dead letter 12 was already replayed'), { ok: false, replayed: true, message: 'dead letter 12 was already replayed' });
  assert.deepEqual(replayOutcome(400, null, 'events are history'), { ok: false, replayed: false, message: 'events are history' });
  assert.deepEqual(replayOutcome(0, null, null), { ok: false, replayed: false, message: 'replay failed' });
});

test('attention: a node whose clock is off by more than a few seconds', () => {
  const state = createState();
  applyFrame(state, { type: 'snapshot', seq: 0, nodes: [
    { node_id: 'fast', status: 'online', heartbeat: { sampled_at: '2026-12-04T11:00:00Z' }, received_at: '2026-12-04T10:00:00Z', clock_skew_ms: 3600000 },
    { node_id: 'fine', status: 'online', heartbeat: { sampled_at: '2026-12-04T10:00:01Z' }, received_at: '2026-12-04T10:00:00Z', clock_skew_ms: 1000 },
  ], events: [] }, NOW);
  const summary = nodeSummary(state, NOW);
  // Seen now (by arrival), not in an hour.
  assert.equal(summary.nodes.find((n) => n.id === 'fast').status, 'online');
  const quiet = createStudioState();
  quiet.queue = { jobs: [], queued: 0, cap: 100, paused: false };
  const items = attention(summary, jobSummary(quiet), [], null, NOW);
  assert.deepEqual(items.map((i) => i.text), ['clock on fast ahead by 3600 s']);
  assert.deepEqual(items[0].params, { node: 'fast' });
});

test('attention: a stream near or at its limit', () => {
  const storage = { warn_fraction: 0.8, streams: [
    { stream: 'EVENTS', bytes: 7 * 1073741824, max_bytes: 8 * 1073741824 },
    { stream: 'WORK', bytes: 5, max_bytes: null },
    { stream: 'DLQ', bytes: 100, max_bytes: 100 },
  ] };
  assert.deepEqual(storageWarnings(storage).map((w) => [w.tone, w.text, w.room]), [
    ['warn', 'event log 87% full (7.0 of 8.0 GiB)', 'storage'],
    ['crit', 'DLQ stream full: new events are refused (0.00 of 0.00 GiB)', 'storage'],
  ]);
  assert.deepEqual(storageWarnings(null), []);
  assert.deepEqual(storageWarnings({ streams: [{ stream: 'EVENTS', bytes: 1, max_bytes: 100 }] }), []);
});

test('a dependency down and chat commands waiting for it need attention', () => {
  const health = {
    status: 'degraded',
    checks: { nats: { status: 'ok', latency_ms: 0.4 }, postgres: { status: 'ok' }, redis: { status: 'down', error: 'Connection refused (os error 111)' } },
    chat: { waiting_on_redis: 3, waiting_on_nats: 0, held: 40 },
  };
  assert.deepEqual(healthWarnings(health).map((w) => [w.tone, w.text, w.room]), [
    ['crit', 'Redis unreachable: Connection refused (os error 111)', null],
    ['warn', '3 chat commands waiting for Redis (answered once it is back)', 'chat'],
  ]);
  assert.deepEqual(healthWarnings({ status: 'ok', checks: { redis: { status: 'ok' } }, chat: { waiting_on_redis: 0 } }), []);
  assert.deepEqual(healthWarnings(null), []);
});
