// Containers: the listing, the actions each container offers, and the command log.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { actionsFor, addFollowed, commandOutcome, commandsOf, foldCommand, MAX_COMMANDS, MAX_FOLLOWED, normalizeListing, touchesContainers } from '../js/state/containers.js';

test('a listing is normalized, sorted, and junk dropped', () => {
  const got = normalizeListing({
    docker: 'available',
    sampled_at: '2026-12-06T10:00:00Z',
    containers: [
      { id: 'b1', name: 'web', image: 'nginx', state: 'running', status: 'Up 5 minutes (healthy)', health: 'healthy', ports: ['0.0.0.0:80->80/tcp', 3], compose_project: 'site', compose_service: 'web', cpu_percent: 1.5, memory_used_bytes: 1024, memory_limit_bytes: 2048 },
      { id: 'a1', name: 'db', state: 'exited' },
      { name: null },
      'junk',
    ],
  });
  assert.equal(got.available, true);
  assert.deepEqual(got.rows.map((r) => r.name), ['db', 'web']);
  const web = got.rows[1];
  assert.equal(web.compose, 'site/web');
  assert.deepEqual(web.ports, ['0.0.0.0:80->80/tcp']);
  assert.equal(web.cpu, 1.5);
  assert.equal(got.rows[0].image, '');
  const down = normalizeListing({ docker: 'unavailable: no socket', containers: [] });
  assert.equal(down.available, false);
  assert.equal(normalizeListing(null).docker, 'unknown');
});

test('a running container stops or restarts; a stopped one starts', () => {
  assert.deepEqual(actionsFor({ state: 'running' }), ['stop', 'restart']);
  assert.deepEqual(actionsFor({ state: 'exited' }), ['start']);
  assert.deepEqual(actionsFor({ state: 'created' }), ['start']);
});

test('a command answer: done, failed, expired, waiting, refused', () => {
  assert.deepEqual(commandOutcome(200, { status: 'completed', outcome: 'web exited' }), { ok: true, done: true, message: 'web exited' });
  assert.deepEqual(commandOutcome(200, { status: 'failed', outcome: 'docker: no such container' }), { ok: false, done: true, message: 'failed: docker: no such container' });
  assert.equal(commandOutcome(200, { status: 'expired', outcome: 'no agent' }).message, 'expired: no agent');
  assert.equal(commandOutcome(202, { status: 'started' }).done, false);
  assert.deepEqual(commandOutcome(403, null, 'this needs the operator role'), { ok: false, done: true, message: 'this needs the operator role' });
});

const env = (id, type, data, actor) => ({ aggregate_type: 'container_command', aggregate_id: id, type: type, data: data || {}, actor: actor, occurred_at: '2026-12-06T10:00:00Z' });

test('the command log folds requests and their outcomes, newest first, bounded', () => {
  const log = new Map();
  assert.equal(foldCommand(log, env('c1', 'container.command_requested', { node_id: 'box', container: 'web', action: 'stop' }, { kind: 'user', id: 'ops' })), true);
  assert.equal(foldCommand(log, env('c1', 'container.command_started')), true);
  assert.equal(foldCommand(log, env('c1', 'container.command_completed', { summary: 'web exited' })), true);
  // Final stays final; a repeat request is ignored; other aggregates are not commands.
  assert.equal(foldCommand(log, env('c1', 'container.command_failed', { error: 'late' })), false);
  assert.equal(foldCommand(log, env('c1', 'container.command_requested', {})), false);
  assert.equal(foldCommand(log, { aggregate_type: 'render_job', aggregate_id: 'x', type: 'render.job_queued' }), false);
  assert.equal(foldCommand(log, env('c2', 'container.command_expired', { reason: 'no agent' })), false, 'unknown command');
  foldCommand(log, env('c2', 'container.command_requested', { node_id: 'other', container: 'db', action: 'start' }));
  assert.deepEqual(log.get('c1'), { id: 'c1', node: 'box', container: 'web', action: 'stop', status: 'completed', outcome: 'web exited', actor: 'ops', at: '2026-12-06T10:00:00Z' });
  assert.deepEqual(commandsOf(log, null).map((c) => c.id), ['c2', 'c1']);
  assert.deepEqual(commandsOf(log, 'box').map((c) => c.id), ['c1']);
  for (let i = 0; i < MAX_COMMANDS + 5; i++) foldCommand(log, env('n' + i, 'container.command_requested', { node_id: 'box' }));
  assert.equal(log.size, MAX_COMMANDS);
  assert.equal(touchesContainers({ aggregate_type: 'node_containers' }), true);
  assert.equal(touchesContainers({ aggregate_type: 'node' }), false);
});

test('a followed log keeps its newest lines, counts what was left out, and says when it ended', () => {
  let view = addFollowed(null, { lines: [{ stream: 'stdout', text: 'a' }, 'junk', { text: 'b' }] });
  assert.deepEqual(view.lines, ['a', 'b']);
  view = addFollowed(view, { lines: [], skipped_bytes: 4096 });
  view = addFollowed(view, { lines: [{ text: 'c' }], skipped_bytes: 10 });
  assert.equal(view.skipped, 4106);
  assert.equal(view.ended, null);
  const many = { lines: Array.from({ length: MAX_FOLLOWED + 5 }, (_, i) => ({ text: 'l' + i })) };
  view = addFollowed(view, many);
  assert.equal(view.lines.length, MAX_FOLLOWED);
  assert.equal(view.lines[view.lines.length - 1], 'l' + (MAX_FOLLOWED + 4));
  assert.equal(addFollowed(view, { lines: [], ended: 'web stopped' }).ended, 'web stopped');
});
