// The live state: websocket frames folded into nodes and the event feed.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  applyFrame,
  createState,
  eventMatches,
  gpuRows,
  arrivedLater,
  heartbeatTime,
  isFeedEvent,
  MAX_EVENTS,
  mergeHistory,
  nextBackoff,
  nodeStatus,
  sortedNodeIds,
  STALE_MS,
  wsUrl,
} from '../js/state/live.js';

const NOW = Date.parse('2026-12-04T10:00:00Z');

function env(seq, type, extra) {
  return Object.assign({ event_id: 'e' + seq + type, stream_seq: seq, type: type, aggregate_type: type.split('.')[0], aggregate_id: 'a' + seq, occurred_at: '2026-12-04T09:59:00Z', data: {} }, extra);
}

const progress = (seq) => env(seq, 'render.job_progressed', { aggregate_type: 'render_job', aggregate_id: 'job-1', data: { attempt: 1, value: seq, max: 20 } });

function snapshot(seq, events, nodes) {
  return { type: 'snapshot', seq: seq, nodes: nodes || [], events: events };
}

test('a snapshot replaces nodes and the feed, newest first', () => {
  const state = createState();
  const changes = applyFrame(
    state,
    snapshot(3, [env(1, 'node.registered'), env(2, 'job.submitted'), env(3, 'job.completed')], [{ node_id: 'b', heartbeat: { sampled_at: '2026-12-04T09:59:59Z' } }, { node_id: 'a' }, { hostname: 'no id' }]),
    NOW,
  );
  assert.equal(changes.kind, 'snapshot');
  assert.equal(changes.reset, true);
  assert.deepEqual(sortedNodeIds(state), ['a', 'b']);
  assert.deepEqual(state.events.map((i) => i.seq), [3, 2, 1]);
  assert.deepEqual(changes.feed.map((i) => i.seq), [1, 2, 3]);
  assert.equal(state.lastSeq, 3);
  assert.equal(state.eventCount, 3);
  assert.equal(state.nodes.get('b')._rx, NOW);
  assert.equal(state.nodes.get('a')._rx, null);
});

test('the feed skips progress ticks in a snapshot, as it does live (the reload bug)', () => {
  const state = createState();
  const events = [env(1, 'render.job_started', { aggregate_type: 'render_job' })];
  for (let s = 2; s < 40; s += 1) events.push(progress(s));
  events.push(env(40, 'render.job_completed', { aggregate_type: 'render_job' }));
  const changes = applyFrame(state, snapshot(40, events), NOW);
  assert.deepEqual(state.events.map((i) => i.env.type), ['render.job_completed', 'render.job_started']);
  assert.deepEqual(changes.feed.map((i) => i.seq), [1, 40]);
  // Every event still reaches the rooms (the studio's bars) and the count.
  assert.equal(changes.events.length, 40);
  assert.equal(state.eventCount, 40);

  const live = applyFrame(state, { type: 'events', seq: 41, events: [progress(41)] }, NOW);
  assert.equal(live.feed.length, 0);
  assert.equal(live.events.length, 1);
  assert.equal(state.events.length, 2);
});

test('a snapshot keeps the newest MAX_EVENTS feed events', () => {
  const state = createState();
  const events = [];
  for (let s = 1; s <= MAX_EVENTS + 30; s += 1) events.push(s % 2 ? progress(s) : env(s, 'job.submitted'));
  events.push(...Array.from({ length: MAX_EVENTS }, (_, i) => env(MAX_EVENTS + 31 + i, 'job.submitted')));
  const changes = applyFrame(state, snapshot(2 * MAX_EVENTS + 30, events), NOW);
  assert.equal(state.events.length, MAX_EVENTS);
  assert.equal(state.events[0].seq, 2 * MAX_EVENTS + 30);
  assert.equal(state.events[MAX_EVENTS - 1].seq, MAX_EVENTS + 31);
  assert.equal(changes.feed.length, MAX_EVENTS);
});

test('events frames append in order and drop duplicates from a resume', () => {
  const state = createState();
  applyFrame(state, snapshot(5, [env(5, 'job.submitted')]), NOW);
  applyFrame(state, { type: 'events', seq: 6, events: [env(6, 'job.started')] }, NOW);
  const dup = applyFrame(state, { type: 'events', seq: 6, events: [env(6, 'job.started')] }, NOW);
  const old = applyFrame(state, { type: 'events', seq: 4, events: [env(4, 'job.old')] }, NOW);
  assert.equal(dup.applied, false);
  assert.equal(old.applied, false);
  applyFrame(state, { type: 'events', seq: 7, events: [env(7, 'job.completed')] }, NOW);
  assert.deepEqual(state.events.map((i) => i.seq), [7, 6, 5]);
  assert.equal(state.lastSeq, 7);
  assert.equal(state.eventCount, 3);
});

test('resumed keeps the state; a re-snapshot does not count seen events again', () => {
  const state = createState();
  applyFrame(state, snapshot(2, [env(1, 'a.x'), env(2, 'a.y')]), NOW);
  const resumed = applyFrame(state, { type: 'resumed', seq: 2 }, NOW);
  assert.equal(resumed.applied, true);
  assert.equal(state.events.length, 2);
  applyFrame(state, snapshot(3, [env(1, 'a.x'), env(2, 'a.y'), env(3, 'a.z')]), NOW);
  assert.equal(state.eventCount, 3);
  // The server's stream went back (it was reset): follow it so later deltas apply.
  applyFrame(state, { type: 'resumed', seq: 1 }, NOW);
  assert.equal(state.lastSeq, 1);
  assert.equal(applyFrame(state, { type: 'events', seq: 2, events: [env(2, 'a.again')] }, NOW).applied, true);
});

test('node events register and deregister nodes', () => {
  const state = createState();
  applyFrame(state, snapshot(0, []), NOW);
  const reg = applyFrame(state, { type: 'events', seq: 1, events: [env(1, 'node.registered', { aggregate_type: 'node', aggregate_id: 'gpu-1', data: { hostname: 'box', gpus: [{ index: 0, name: 'RTX' }, 'junk'] } })] }, NOW);
  assert.deepEqual([...reg.nodes], ['gpu-1']);
  const node = state.nodes.get('gpu-1');
  assert.equal(node.hostname, 'box');
  assert.equal(node.status, 'online');
  assert.equal(node.gpus.length, 1);
  applyFrame(state, { type: 'events', seq: 2, events: [env(2, 'node.deregistered', { aggregate_type: 'node', aggregate_id: 'gpu-1', data: { reason: 'shutdown' } })] }, NOW);
  assert.equal(state.nodes.get('gpu-1').status, 'offline');
  assert.equal(state.nodes.get('gpu-1').deregister_reason, 'shutdown');
  assert.equal(nodeStatus(state.nodes.get('gpu-1'), NOW), 'offline');
});

test('telemetry is latest-wins and creates a provisional node', () => {
  const state = createState();
  const hb = (tseq, seq, at) => ({ type: 'telemetry', node_id: 'n1', telemetry_seq: tseq, clock_skew_ms: 3600000, heartbeat: { sample_seq: seq, sampled_at: at, cpu_percent: seq } });
  assert.equal(applyFrame(state, hb(10, 5, '2026-12-04T10:59:50Z'), NOW).applied, true);
  assert.equal(state.nodes.get('n1')._provisional, true);
  assert.equal(state.nodes.get('n1').clock_skew_ms, 3600000);
  // An earlier arrival, replayed: dropped.
  assert.equal(applyFrame(state, hb(9, 6, '2026-12-04T11:00:00Z'), NOW).applied, false);
  // A later arrival wins whatever its clock says (the agent's clock set back an hour).
  assert.equal(applyFrame(state, hb(11, 1, '2026-12-04T09:59:55Z'), NOW).applied, true);
  assert.equal(state.nodes.get('n1').heartbeat.cpu_percent, 1);
  // Arrival time, not the agent's clock, says how old the reading is.
  assert.equal(heartbeatTime(state.nodes.get('n1')), NOW);
  assert.equal(arrivedLater(null, 1), true);
  assert.equal(arrivedLater(5, 5), false);
});

test('malformed frames never throw', () => {
  const state = createState();
  for (const frame of [null, 'x', 42, [], {}, { type: 'events', events: 'no' }, { type: 'snapshot', nodes: 'x', events: [null, 1] }, { type: 'telemetry' }]) {
    assert.doesNotThrow(() => applyFrame(state, frame, NOW));
  }
  assert.equal(applyFrame(state, null, NOW).kind, 'invalid');
});

test('node status: online, stale after STALE_MS, unknown without news', () => {
  const at = (ms) => new Date(NOW - ms).toISOString();
  const node = (hbAgo, status) => ({ node_id: 'n', status: status, heartbeat: hbAgo === null ? null : { sampled_at: at(hbAgo) }, _rx: hbAgo === null ? null : NOW - hbAgo });
  assert.equal(nodeStatus(node(1000, 'online'), NOW), 'online');
  assert.equal(nodeStatus(node(STALE_MS + 1, 'online'), NOW), 'stale');
  assert.equal(nodeStatus(node(null, 'online'), NOW), 'online');
  assert.equal(nodeStatus(node(null, null), NOW), 'unknown');
  assert.equal(nodeStatus(node(1000, null), NOW), 'online');
  // An agent clock ahead of the browser: the receive time bounds the age.
  const ahead = { node_id: 'n', status: 'online', heartbeat: { sampled_at: new Date(NOW + 60000).toISOString() }, _rx: NOW - STALE_MS - 5 };
  assert.equal(nodeStatus(ahead, NOW), 'stale');
});

test('gpuRows joins inventory and samples by index', () => {
  const rows = gpuRows({
    gpus: [{ index: 1, name: 'RTX 3090', vendor: 'nvidia', memory_total_bytes: 24 }, { index: 0, name: 'Sim', vendor: 'simulated', memory_total_bytes: 8 }],
    heartbeat: { gpus: [{ index: 0, memory_used_bytes: 2, memory_total_bytes: 8, utilization_percent: 50, temperature_c: 70 }, { index: 2, memory_used_bytes: 1 }] },
  });
  assert.deepEqual(rows.map((g) => [g.index, g.name, g.used, g.total, g.simulated]), [
    [0, 'Sim', 2, 8, true],
    [1, 'RTX 3090', null, 24, false],
    [2, 'GPU 2', 1, null, false],
  ]);
  assert.equal(rows[0].util, 50);
  assert.deepEqual(gpuRows({}), []);
});

test('the feed filter matches type, aggregate and correlation', () => {
  const item = { seq: 1, env: { type: 'render.job_failed', aggregate_type: 'render_job', aggregate_id: 'J1', correlation_id: 'C-42' } };
  assert.equal(eventMatches(item, ''), true);
  assert.equal(eventMatches(item, 'JOB_FAILED'), true);
  assert.equal(eventMatches(item, 'render_job/j1'), true);
  assert.equal(eventMatches(item, 'c-42'), true);
  assert.equal(eventMatches(item, 'node'), false);
  assert.equal(isFeedEvent(progress(1)), false);
  assert.equal(isFeedEvent(env(1, 'render.job_completed')), true);
});

test('history merges below the live feed without ticks, duplicates or the future', () => {
  const state = createState();
  applyFrame(state, snapshot(10, [progress(9), env(10, 'job.completed')]), NOW);
  const added = mergeHistory(state, [env(3, 'job.submitted'), progress(4), env(10, 'job.completed'), env(7, 'job.started'), env(12, 'job.later'), { type: 'x' }]);
  assert.equal(added, 2);
  assert.deepEqual(state.events.map((i) => i.seq), [10, 7, 3]);
  assert.equal(mergeHistory(state, [env(7, 'job.started')]), 0);
  assert.equal(state.eventCount, 2, 'history is not counted as received');
});

test('websocket url (a one-time ticket, never the token) and backoff', () => {
  assert.equal(wsUrl({ protocol: 'https:', host: 'h:1' }, 'a b', 7), 'wss://h:1/ws?ticket=a%20b&since=7');
  assert.equal(wsUrl({ protocol: 'http:', host: 'h' }, '0f3a', null), 'ws://h/ws?ticket=0f3a');
  assert.equal(wsUrl({ protocol: 'http:', host: 'h' }, 't', undefined), 'ws://h/ws?ticket=t');
  assert.equal(wsUrl({ protocol: 'http:', host: 'h' }, 't', 0), 'ws://h/ws?ticket=t&since=0');
  assert.equal(wsUrl({ protocol: 'https:', host: 'h' }, 't', 3).indexOf('token='), -1);
  assert.equal(nextBackoff(0), 500);
  assert.equal(nextBackoff(1000), 2000);
  assert.equal(nextBackoff(4000), 5000);
});

test('the gateway saying NATS is away, then back', () => {
  const state = createState();
  assert.equal(state.busConnected, true);
  assert.equal(applyFrame(state, { type: 'bus', connected: false }, NOW).applied, true);
  assert.equal(state.busConnected, false);
  applyFrame(state, { type: 'bus', connected: true }, NOW);
  assert.equal(state.busConnected, true);
});
