// Formatting and the API's error messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DASH, fmtAge, fmtBytes, fmtGiB, fmtPercent, fmtSince, fmtUptime, fmtUsage, plural, ratioPercent, shortId, summarize, tailId, text, truncate } from '../js/state/format.js';
import { apiErrorMessage, serverMessage } from '../js/state/errors.js';

const GIB = 1024 ** 3;

test('bytes, GiB and usage', () => {
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(1536), '1.50 KiB');
  assert.equal(fmtBytes(20 * 1024 * 1024), '20.0 MiB');
  assert.equal(fmtBytes(270553174016), '252 GiB');
  assert.equal(fmtBytes(-1), DASH);
  assert.equal(fmtBytes('12'), DASH);
  assert.equal(fmtGiB(24 * GIB), '24.0');
  assert.equal(fmtGiB(128 * GIB), '128');
  assert.equal(fmtUsage(12.6 * GIB, 24 * GIB), '12.6 / 24.0 GiB');
  assert.equal(fmtUsage(null, 24 * GIB), DASH + ' / 24.0 GiB');
  assert.equal(fmtUsage(null, null), DASH);
});

test('percent and ratio', () => {
  assert.equal(fmtPercent(12.345), '12.3%');
  assert.equal(fmtPercent(NaN), DASH);
  assert.equal(ratioPercent(1, 4), 25);
  assert.equal(ratioPercent(5, 4), 100);
  assert.equal(ratioPercent(1, 0), null);
  assert.equal(ratioPercent(null, 4), null);
});

test('ages and uptime', () => {
  assert.equal(fmtAge(0), '0s ago');
  assert.equal(fmtAge(59999), '59s ago');
  assert.equal(fmtAge(61000), '1m ago');
  assert.equal(fmtAge(3 * 3600e3), '3h ago');
  assert.equal(fmtAge(72 * 3600e3), '3d ago');
  assert.equal(fmtAge(null), DASH);
  assert.equal(fmtSince('2026-12-04T10:00:00Z', Date.parse('2026-12-04T10:05:00Z')), '5m ago');
  assert.equal(fmtSince('not a time', 0), DASH);
  assert.equal(fmtUptime(59), '0m');
  assert.equal(fmtUptime(3700), '1h 1m');
  assert.equal(fmtUptime(90000), '1d 1h');
});

test('text helpers', () => {
  assert.equal(text(''), DASH);
  assert.equal(text(0), '0');
  assert.equal(shortId('0123456789'), '01234567');
  assert.equal(tailId('01a23ee3-6d57-7351-b365-f2ac46953783'), '46953783');
  assert.equal(truncate('abcdef', 4), 'abc\u2026');
  assert.equal(truncate('abc', 4), 'abc');
  assert.equal(summarize({ a: 'x'.repeat(200) }).length, 121);
  assert.equal(summarize(null), DASH);
  assert.equal(plural(1, 'node'), '1 node');
  assert.equal(plural(3, 'dead letter'), '3 dead letters');
});

test('error messages: the server words them, in either shape', () => {
  assert.equal(serverMessage({ error: 'dead letter 12 was already replayed' }), 'dead letter 12 was already replayed');
  assert.equal(serverMessage({ error: { code: 'not_found', message: 'no such route' } }), 'no such route');
  assert.equal(serverMessage(null), null);
  assert.equal(apiErrorMessage(404, { error: { message: 'no such route' } }), 'no such route');
  assert.equal(apiErrorMessage(429, { error: { message: '100 jobs are waiting' } }), 'queue full: 100 jobs are waiting');
  assert.equal(apiErrorMessage(413, null), 'too large: input images may be at most 16.0 MiB');
  assert.equal(apiErrorMessage(500, null), 'request failed (HTTP 500)');
  assert.equal(apiErrorMessage(403, { error: { code: 'forbidden', message: 'this needs the operator role; grafana is a viewer' } }), 'this needs the operator role; grafana is a viewer');
  assert.match(apiErrorMessage(403, null), /not allowed/);
  assert.equal(apiErrorMessage(0, null), 'request failed');
});
