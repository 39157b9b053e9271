// Roles (what a caller may do, the lock's wording), who is signed in, and the Access room's
// tokens: the list, the create form's request, the labels.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  actorLabel,
  buildTokenRequest,
  canRevoke,
  createdToken,
  expiresLabel,
  fmtDateTime,
  isForbidden,
  isRole,
  needsLabel,
  normalizeTokens,
  normalizeWhoami,
  revokeQuestion,
  roleAllows,
  roleRank,
  ROLES,
  statusDetail,
  tokenNameError,
  whoamiLabel,
} from '../js/state/access.js';
import { DASH } from '../js/state/format.js';

test('roles are ordered viewer < operator < admin', () => {
  assert.deepEqual(ROLES, ['viewer', 'operator', 'admin']);
  assert.deepEqual(ROLES.map(roleRank), [0, 1, 2]);
  assert.equal(roleRank('root'), -1);
  assert.equal(roleRank(null), -1);
  assert.equal(isRole('operator'), true);
  assert.equal(isRole('Operator'), false);
});

test('a role allows what it needs and everything below', () => {
  const table = [
    ['viewer', 'viewer', true],
    ['viewer', 'operator', false],
    ['viewer', 'admin', false],
    ['operator', 'viewer', true],
    ['operator', 'operator', true],
    ['operator', 'admin', false],
    ['admin', 'viewer', true],
    ['admin', 'operator', true],
    ['admin', 'admin', true],
  ];
  for (const [role, needed, allowed] of table) assert.equal(roleAllows(role, needed), allowed, role + ' / ' + needed);
});

test('an unknown caller or an unknown need is never allowed', () => {
  assert.equal(roleAllows(null, 'viewer'), false, 'not signed in (or not known yet)');
  assert.equal(roleAllows(undefined, 'operator'), false);
  assert.equal(roleAllows('superuser', 'viewer'), false);
  assert.equal(roleAllows('admin', 'owner'), false);
  assert.equal(roleAllows('admin', undefined), false);
  assert.equal(roleAllows('admin', ''), false);
});

test('the lock says which role it needs', () => {
  assert.equal(needsLabel('operator'), 'needs the operator role');
  assert.equal(needsLabel('admin'), 'needs the admin role');
  assert.equal(needsLabel('nope'), 'needs the right role');
});

test('whoami: the answer, and the header line', () => {
  assert.deepEqual(normalizeWhoami({ name: 'ops', role: 'operator' }), { name: 'ops', role: 'operator' });
  assert.equal(whoamiLabel(normalizeWhoami({ name: 'ops', role: 'operator', extra: 1 })), 'ops \u00b7 operator');
  assert.equal(whoamiLabel({ name: 'admin', role: 'admin' }), 'admin \u00b7 admin');
  assert.equal(normalizeWhoami({ name: 'ops', role: 'root' }), null);
  assert.equal(normalizeWhoami({ name: '', role: 'viewer' }), null);
  assert.equal(normalizeWhoami({ role: 'viewer' }), null);
  assert.equal(normalizeWhoami(null), null);
  assert.equal(normalizeWhoami('ops'), null);
  assert.equal(whoamiLabel(null), '');
});

test('a 403 is a role too low, not a rejected token', () => {
  assert.equal(isForbidden({ ok: false, status: 403, message: 'this needs the operator role; grafana is a viewer' }), true);
  assert.equal(isForbidden({ ok: false, status: 401 }), false);
  assert.equal(isForbidden(null), false);
});

test('tokens list: active first, then expired, then revoked; by name; junk dropped', () => {
  const list = normalizeTokens({
    tokens: [
      { name: 'old', role: 'viewer', status: 'revoked', issued_at: '2026-01-01T00:00:00Z', issued_by: { kind: 'user', id: 'admin' }, revoked_at: '2026-02-01T00:00:00Z', revoked_by: { kind: 'user', id: 'admin' } },
      { name: 'grafana', role: 'viewer', status: 'active', issued_at: '2026-03-01T00:00:00Z', issued_by: { kind: 'user', id: 'admin' } },
      { name: 'ci', role: 'operator', status: 'expired', issued_at: '2026-01-01T00:00:00Z', issued_by: { kind: 'user', id: 'admin' }, expires_at: '2026-01-08T00:00:00Z' },
      { name: 'admin', role: 'admin', status: 'active', issued_at: '2026-01-01T00:00:00Z', issued_by: { kind: 'system', id: 'bootstrap' } },
      { role: 'viewer' },
      'junk',
      null,
    ],
  });
  assert.deepEqual(list.map((t) => [t.name, t.status]), [
    ['admin', 'active'],
    ['grafana', 'active'],
    ['ci', 'expired'],
    ['old', 'revoked'],
  ]);
  assert.equal(list[2].expires_at, '2026-01-08T00:00:00Z');
  assert.equal(list[1].expires_at, null);
  assert.deepEqual(normalizeTokens({}), []);
  assert.deepEqual(normalizeTokens(null), []);
  assert.deepEqual(normalizeTokens({ tokens: 'x' }), []);
});

test('only active tokens can be revoked', () => {
  assert.equal(canRevoke({ name: 'a', status: 'active' }), true);
  assert.equal(canRevoke({ name: 'a', status: 'revoked' }), false);
  assert.equal(canRevoke({ name: 'a', status: 'expired' }), false);
  assert.equal(canRevoke(null), false);
});

test('who issued it: a user by name, anything else with its kind', () => {
  assert.equal(actorLabel({ kind: 'user', id: 'admin' }), 'admin');
  assert.equal(actorLabel({ kind: 'system', id: 'bootstrap' }), 'system:bootstrap');
  assert.equal(actorLabel({ id: 'ops' }), 'ops');
  assert.equal(actorLabel({ kind: 'system' }), 'system');
  assert.equal(actorLabel('cli'), 'cli');
  assert.equal(actorLabel(null), DASH);
  assert.equal(actorLabel(undefined), DASH);
});

test('token names: 1-64 of a-z 0-9 - _, starting with a letter or digit', () => {
  for (const ok of ['a', 'grafana', 'ci-bot_2', '0day', 'x'.repeat(64)]) assert.equal(tokenNameError(ok), null, ok);
  for (const bad of ['', '-lead', '_lead', 'Upper', 'with space', 'dot.name', 'ümlaut', 'x'.repeat(65)]) assert.notEqual(tokenNameError(bad), null, bad);
  assert.match(tokenNameError(''), /name/);
  assert.match(tokenNameError('x'.repeat(65)), /64/);
});

test('the create form becomes POST /api/tokens', () => {
  assert.deepEqual(buildTokenRequest({ name: ' grafana ', role: 'viewer', expiry: '' }), { body: { name: 'grafana', role: 'viewer' } });
  assert.deepEqual(buildTokenRequest({ name: 'ci', role: 'operator', expiry: ' 30 ' }), { body: { name: 'ci', role: 'operator', expires_in_days: 30 } });
  assert.deepEqual(buildTokenRequest({ name: 'ops2', role: 'admin', expiry: 3650 }), { body: { name: 'ops2', role: 'admin', expires_in_days: 3650 } });
  assert.deepEqual(buildTokenRequest({ name: 'ci', role: 'viewer' }), { body: { name: 'ci', role: 'viewer' } });
  for (const expiry of ['0', '-1', '1.5', 'soon', '3651']) assert.match(buildTokenRequest({ name: 'ci', role: 'viewer', expiry: expiry }).error, /expiry/, expiry);
  assert.match(buildTokenRequest({ name: 'ci', role: 'root', expiry: '' }).error, /role/);
  assert.match(buildTokenRequest({ name: 'Bad Name', role: 'viewer', expiry: '' }).error, /a-z/);
  assert.match(buildTokenRequest(null).error, /name/);
});

test('the created token: shown once from the 201 answer', () => {
  assert.deepEqual(createdToken({ name: 'ci', role: 'operator', expires_at: '2027-01-01T00:00:00Z', token: 'nbt_abc' }), {
    name: 'ci',
    role: 'operator',
    expires_at: '2027-01-01T00:00:00Z',
    token: 'nbt_abc',
  });
  assert.equal(createdToken({ name: 'ci', role: 'operator', expires_at: null, token: 'nbt_abc' }).expires_at, null);
  assert.equal(createdToken({ name: 'ci' }), null);
  assert.equal(createdToken(null), null);
});

test('times, expiry and status details', () => {
  assert.match(fmtDateTime('2026-12-04T10:00:00Z'), /^2026-12-0[34] \d\d:\d\d$/);
  assert.equal(fmtDateTime(null), DASH);
  assert.equal(fmtDateTime('not a time'), DASH);
  assert.equal(expiresLabel({ expires_at: null }), 'never');
  assert.match(expiresLabel({ expires_at: '2027-01-01T12:00:00Z' }), /^2027-01-0[12] /);
  assert.match(statusDetail({ status: 'revoked', revoked_at: '2026-02-01T12:00:00Z', revoked_by: { kind: 'user', id: 'admin' } }), /^revoked 2026-02-0[12] \d\d:\d\d by admin$/);
  assert.equal(statusDetail({ status: 'revoked', revoked_at: null, revoked_by: null }), 'revoked');
  assert.match(statusDetail({ status: 'expired', expires_at: '2026-01-08T12:00:00Z' }), /^expired 2026-01-0[78]/);
  assert.equal(statusDetail({ status: 'active' }), '');
});

test('the revoke question warns when it is your own token', () => {
  assert.match(revokeQuestion('grafana', false), /Revoke the token "grafana"\?/);
  assert.doesNotMatch(revokeQuestion('grafana', false), /signed out/);
  assert.match(revokeQuestion('admin', true), /you will be signed out/);
});
