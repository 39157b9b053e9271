// Deep links and the token in the address.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseHash, resolveRoute, routeHash, sameRoute, tokenFromHash } from '../js/state/router.js';

const ROOMS = ['overview', 'nodes', 'events', 'studio', 'chat', 'streambot'];

test('routes and their parameters', () => {
  assert.deepEqual(parseHash('#/studio'), { room: 'studio', params: {}, token: null });
  assert.deepEqual(parseHash('#/events?filter=a%20b&x=1'), { room: 'events', params: { filter: 'a b', x: '1' }, token: null });
  assert.deepEqual(parseHash('#/chat/'), { room: 'chat', params: {}, token: null });
  assert.deepEqual(parseHash(''), { room: '', params: {}, token: null });
  assert.deepEqual(parseHash('#/'), { room: '', params: {}, token: null });
  assert.deepEqual(parseHash(undefined), { room: '', params: {}, token: null });
});

test('the token: legacy #token=, or a route parameter', () => {
  assert.deepEqual(parseHash('#token=abc'), { room: '', params: {}, token: 'abc' });
  assert.equal(tokenFromHash('#token=a%2Bb'), 'a+b');
  assert.deepEqual(parseHash('#/chat?token=t1&filter=x'), { room: 'chat', params: { filter: 'x' }, token: 't1' });
  assert.equal(tokenFromHash('#/studio'), null);
  assert.equal(tokenFromHash('#token='), null);
  assert.equal(tokenFromHash('#something-else'), null);
});

test('unknown rooms fall back to the overview, flagged', () => {
  assert.deepEqual(resolveRoute(parseHash('#/studio'), ROOMS, 'overview'), { room: 'studio', params: {}, known: true });
  assert.deepEqual(resolveRoute(parseHash('#/nope?x=1'), ROOMS, 'overview'), { room: 'overview', params: {}, known: false });
  assert.deepEqual(resolveRoute(parseHash('#token=abc'), ROOMS, 'overview'), { room: 'overview', params: {}, known: true });
  assert.deepEqual(resolveRoute(parseHash('#/overview'), ROOMS, 'overview'), { room: 'overview', params: {}, known: true });
});

test('hashes are written canonically and round-trip', () => {
  assert.equal(routeHash('overview', {}, 'overview'), '#/');
  assert.equal(routeHash('studio', { job: 'j1' }, 'overview'), '#/studio?job=j1');
  assert.equal(routeHash('events', { z: '1', filter: 'a b&c', empty: '' }, 'overview'), '#/events?filter=a%20b%26c&z=1');
  const parsed = parseHash(routeHash('events', { filter: 'a b&c' }, 'overview'));
  assert.deepEqual(parsed.params, { filter: 'a b&c' });
  assert.equal(sameRoute({ room: 'events', params: { a: '1', b: '2' } }, { room: 'events', params: { b: '2', a: '1' } }), true);
  assert.equal(sameRoute({ room: 'events', params: {} }, { room: 'events', params: { a: '1' } }), false);
  assert.equal(sameRoute(null, { room: 'events', params: {} }), false);
});
