import { test } from 'node:test';
import assert from 'node:assert/strict';

import { actions, diffWithLanguages, languageOf, normalizeJob, normalizeJobs, stepWords, touchesJobs } from '../js/state/aidev.js';

test('jobs and repositories as the list answers them', () => {
  const { jobs, repos } = normalizeJobs({
    jobs: [{ job_id: 'j1', repo: 'calc', instruction: 'fix it', status: 'awaiting_approval', approval_id: 'a1', requested_by: { kind: 'user', id: 'alice' } }, { nope: 1 }],
    repos: [{ name: 'calc', base: 'main' }],
  });
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0].by, 'alice');
  assert.deepEqual(repos, [{ name: 'calc', base: 'main' }]);
  assert.deepEqual(actions(jobs[0]), ['approve', 'reject', 'cancel']);
});

test('what each status allows', () => {
  const job = (status, extra) => normalizeJob(Object.assign({ job_id: 'j', status: status }, extra || {}));
  assert.deepEqual(actions(job('running')), ['cancel']);
  assert.deepEqual(actions(job('running', { cancel_requested: true })), []);
  assert.deepEqual(actions(job('merged')), ['rollback']);
  assert.deepEqual(actions(job('failed')), []);
  assert.deepEqual(actions(job('awaiting_approval')), ['cancel']);
  assert.deepEqual(actions(job('approved')), ['cancel']);
});

test('where a job runs: a node, or here after the node did not take it', () => {
  const remote = normalizeJob({ job_id: 'j', offered_to: 'gpu-box', started: { runs_on: 'gpu-box' } });
  assert.equal(remote.runsOn, 'gpu-box');
  assert.equal(remote.offeredTo, 'gpu-box');
  assert.equal(remote.fallback, null);
  const here = normalizeJob({
    job_id: 'j', offered_to: 'gpu-box', fallback: 'node gpu-box did not take it within 3s; it runs here',
    started: { runs_on: 'local' },
  });
  assert.equal(here.runsOn, 'local');
  assert.match(here.fallback, /did not take it/);
});

test('a whole job: its model, steps, builds and change', () => {
  const j = normalizeJob({
    job_id: 'j1', status: 'merged', tokens: 900,
    started: { branch: 'ai-dev/j1-x', model: 'coder:7b', model_rule: 'asked for by the job', tool_mode: 'tools' },
    steps: [{ n: 1, tool: 'read_file', arguments: '{"path":".env"}', result: 'refused: secret', refused: true }, { n: 2, said: 'thinking' }],
    builds: [{ toolchain: 'cargo', commands: ['cargo test'], ok: false, exit_status: 101, failing_tests: ['tests::adds'], output: 'x' }],
    change: { commit: 'abc', files: ['src/lib.rs'], lines_added: 1, lines_removed: 1, diff: '+a' },
    decision: { auto_rule: 'small_change', reason: '2 lines' },
  });
  assert.equal(j.model, 'coder:7b (asked for by the job)');
  assert.equal(stepWords(j.steps[0]), '1. read_file {"path":".env"}');
  assert.equal(stepWords(j.steps[1]), '2. said: thinking');
  assert.ok(j.steps[0].refused);
  assert.deepEqual(j.builds[0].failing, ['tests::adds']);
  assert.equal(j.decision.rule, 'small_change');
  assert.ok(touchesJobs({ aggregate_type: 'ai_dev_job' }));
  assert.ok(!touchesJobs({ aggregate_type: 'approval' }));
});

test('a diff by file, each line with its language', () => {
  assert.equal(languageOf('src/lib.rs'), 'rust');
  assert.equal(languageOf('deploy/app.toml'), 'ini');
  assert.equal(languageOf('Makefile'), null);
  const lines = diffWithLanguages('diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-    a - b\n+    a + b\ndiff --git a/x.py b/x.py\n+++ b/x.py\n+print(1)');
  assert.deepEqual(lines.map((l) => [l.kind, l.language]), [
    ['file', null], ['file', null], ['file', null], ['hunk', null], ['del', 'rust'], ['add', 'rust'], ['file', null], ['file', null], ['add', 'python'],
  ]);
});
