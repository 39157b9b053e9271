// Services: the live list (trouble first) and the history of changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { isTrouble, normalizeServices, touchesServices } from '../js/state/services.js';

test('services are listed trouble first, junk dropped, history kept in order', () => {
  const got = normalizeServices({
    agent: 'answered',
    services: [
      { name: 'web', kind: 'command', state: 'healthy', restarts: 1, pid: 42, reason: 'its check passes', since: '2026-12-07T10:00:00Z' },
      { name: 'crasher', kind: 'command', state: 'gave_up', restarts: 2, reason: 'restarted 2 times' },
      { name: 'db', kind: 'container', state: 'healthy' },
      { name: null },
      'junk',
    ],
    history: [
      { service: 'web', state: 'healthy', restarts: 1, at: '2026-12-07T10:00:02Z' },
      { service: 'web', state: 'down', reason: 'exited: signal: 9', at: '2026-12-07T10:00:01Z' },
      { state: 'x' },
    ],
  });
  assert.equal(got.answered, true);
  assert.deepEqual(got.rows.map((r) => r.name), ['crasher', 'db', 'web']);
  assert.equal(got.rows[2].pid, 42);
  assert.equal(got.rows[1].pid, null);
  assert.deepEqual(got.history.map((c) => c.state), ['healthy', 'down']);
  const away = normalizeServices({ agent: 'unavailable: no agent answers', services: [] });
  assert.equal(away.answered, false);
  assert.equal(normalizeServices(null).rows.length, 0);
});

test('trouble and relevant events are told apart', () => {
  assert.equal(isTrouble('gave_up'), true);
  assert.equal(isTrouble('healthy'), false);
  assert.equal(touchesServices({ aggregate_type: 'node_services' }), true);
  assert.equal(touchesServices({ aggregate_type: 'node' }), false);
});
