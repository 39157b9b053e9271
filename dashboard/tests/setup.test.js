import { test } from 'node:test';
import assert from 'node:assert/strict';

import { normalizeSetup, parseTags, shouldOpen } from '../js/state/setup.js';

test('the wizard resumes at the first step not done, and opens itself only for admins', () => {
  const s = normalizeSetup({ steps: [{ step: 'sign_in', done: true }, { step: 'name_node', done: true, detail: 'site lab' }, { step: 'add_node', done: false }], dismissed: false, node_id: 'box' });
  assert.equal(s.next, 'add_node');
  assert.equal(s.steps[1].detail, 'site lab');
  assert.equal(s.nodeId, 'box');
  assert.ok(shouldOpen(s, { name: 'a', role: 'admin' }));
  assert.ok(!shouldOpen(s, { name: 'o', role: 'operator' }));
  assert.ok(!shouldOpen(Object.assign({}, s, { dismissed: true }), { name: 'a', role: 'admin' }));
  const all = normalizeSetup({ steps: ['sign_in', 'name_node', 'add_node', 'tokens', 'domain', 'first_render'].map((step) => ({ step: step, done: true })) });
  assert.equal(all.next, null);
  assert.ok(!shouldOpen(all, { name: 'a', role: 'admin' }));
});

test('tags as typed', () => {
  assert.deepEqual(parseTags(' Prod, gpu  gpu,'), ['prod', 'gpu']);
  assert.deepEqual(parseTags(''), []);
});
