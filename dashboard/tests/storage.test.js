// The Storage room's pure parts: streams against their limits, and artifact sweeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { candidateOutcome, collectLabel, fmtRetention, normalizeStorage, normalizeSweep, normalizeSweeps, parseRetentionDays, scheduleLine, streamLabel, sweepSummary } from '../js/state/storage.js';

const MIB = 1024 * 1024;

test('streams are read against their limits, the artifact store as it is', () => {
  const got = normalizeStorage({
    warn_fraction: 0.8,
    streams: [
      { stream: 'EVENTS', bytes: 9 * MIB, messages: 1200, max_bytes: 10 * MIB },
      { stream: 'WORK', bytes: 10 * MIB, messages: 3, max_bytes: 10 * MIB },
      { stream: 'TELEMETRY', bytes: 1, messages: 1, max_bytes: null },
      { bytes: 5 },
      'junk',
    ],
    artifacts: { files: 12, bytes: 4096 },
  });
  assert.deepEqual(got.streams.map((s) => [s.label, s.tone]), [['event log', 'warn'], ['work queue', 'crit'], ['telemetry', '']]);
  assert.equal(got.streams[2].share, null);
  assert.deepEqual(got.artifacts, { files: 12, bytes: 4096 });
  assert.deepEqual(normalizeStorage(null), { streams: [], artifacts: null, warn: 0.8 });
  assert.equal(normalizeStorage({ artifacts: { files: 'x', bytes: 1 } }).artifacts, null);
  assert.equal(streamLabel('DLQ'), 'dead letters');
  assert.equal(streamLabel('NEW'), 'new');
});

const planned = {
  id: '01a2',
  status: 'planned',
  planned_at: '2026-12-07T21:00:00Z',
  retention_secs: 604800,
  candidates_count: 2,
  candidate_bytes: 3 * MIB,
  more: 0,
  referenced: 40,
  young: 3,
  pending: 2,
  collected: 0,
  collected_bytes: 0,
  kept: 0,
  candidates: [
    { sha256: 'a'.repeat(64), bytes: MIB, age_secs: 900000, outcome: 'pending' },
    { sha256: 'b'.repeat(64), bytes: 2 * MIB, age_secs: 800000, outcome: 'odd' },
    { bytes: 1 },
  ],
};

test('a planned sweep says what it would delete and offers to', () => {
  const sweep = normalizeSweep(planned);
  assert.equal(sweep.candidates.length, 2);
  assert.equal(sweep.candidates[1].outcome, 'pending');
  assert.equal(sweepSummary(sweep), '2 files (3.00 MiB) nothing uses \u00b7 40 files in use, 3 newer than 7 days');
  assert.equal(collectLabel(sweep), 'Delete 2 files (3.00 MiB)');
  assert.equal(candidateOutcome(sweep.candidates[0]), 'would be deleted');
  const more = normalizeSweep({ ...planned, more: 500, status: 'collecting', pending: 1 });
  assert.match(sweepSummary(more), /and 500 more for the next sweep\), 1 still to go/);
  assert.equal(collectLabel(more), 'Finish deleting (1 left)');
  const empty = normalizeSweep({ ...planned, candidates_count: 0, candidate_bytes: 0, candidates: [] });
  assert.equal(collectLabel(empty), null);
  assert.match(sweepSummary(empty), /^nothing to delete/);
  assert.equal(normalizeSweep({ status: 'planned' }), null);
});

test('a finished sweep says what it deleted and kept', () => {
  const sweep = normalizeSweep({
    ...planned,
    status: 'finished',
    pending: 0,
    collected: 1,
    collected_bytes: MIB,
    kept: 1,
    candidates: [
      { sha256: 'a'.repeat(64), bytes: MIB, age_secs: 1, outcome: 'collected', links: 2 },
      { sha256: 'b'.repeat(64), bytes: 2, age_secs: 1, outcome: 'kept', why: 'stored again since the plan' },
    ],
  });
  assert.equal(collectLabel(sweep), null);
  assert.equal(sweepSummary(sweep), 'deleted 1 file (1.00 MiB), 1 kept \u00b7 40 files in use, 3 newer than 7 days');
  assert.equal(candidateOutcome(sweep.candidates[0]), 'deleted with 2 job links');
  assert.equal(candidateOutcome(sweep.candidates[1]), 'kept: stored again since the plan');
});

test('sweeps list newest first with the default retention; the form takes sane days only', () => {
  const got = normalizeSweeps({ sweeps: [{ ...planned, id: '01a1' }, planned, null], retention_days: 14 });
  assert.deepEqual(got.sweeps.map((s) => s.id), ['01a2', '01a1']);
  assert.equal(got.retentionDays, 14);
  assert.equal(normalizeSweeps({}).retentionDays, 7);
  assert.equal(parseRetentionDays('7'), 7);
  assert.equal(parseRetentionDays(' 0.5 '), 0.5);
  for (const bad of ['', '0', '0.01', '-1', '1e3', 'abc', '4000', null]) assert.equal(parseRetentionDays(bad), null, String(bad));
  assert.equal(fmtRetention(3600), '1 hour');
  assert.equal(fmtRetention(86400 * 1.5), '1.5 days');
  assert.equal(fmtRetention(null), '');
});

test('the sweeps panel says what runs on its own', () => {
  const off = normalizeSweeps({ sweeps: [], retention_days: 7, schedule: { every_hours: null, collect: false, render_job_retention_days: null } });
  assert.deepEqual(off.schedule, { everyHours: null, collect: false, jobDays: null });
  assert.match(scheduleLine(off.schedule), /^Sweeps run when an admin plans one/);
  const on = normalizeSweeps({ schedule: { every_hours: 24, collect: true, render_job_retention_days: 90 } }).schedule;
  assert.equal(scheduleLine(on), 'Every 24 hours a sweep is planned and deleted at once (nothing is recorded when there is nothing to delete). Finished render jobs nobody shared are deleted 90 days after they end.');
  assert.match(scheduleLine({ everyHours: 0.5, collect: false, jobDays: null }), /^Every 30 minutes a sweep is planned and waits here for an admin/);
  assert.match(scheduleLine({ everyHours: 168, collect: false, jobDays: null }), /^Every 7 days /);
  assert.match(scheduleLine(normalizeSweeps({}).schedule), /^Sweeps run when an admin plans one/);
});
