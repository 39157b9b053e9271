import { test } from 'node:test';
import assert from 'node:assert/strict';

import { normalizeApp, normalizeApps, runWords, stepWords, touchesApps } from '../js/state/apps.js';

const spec = (image) => [{ name: 'web', spec: { image: image } }];

test('apps by name, with what each runs', () => {
  const apps = normalizeApps({ apps: [
    { name: 'web', live_release: 3, releases: [{}, {}, {}], definition: { nodes: ['gpu-1'], containers: spec('web:3') } },
    { name: 'api', definition: { nodes: [], containers: [] } },
    { nope: 1 },
  ] });
  assert.deepEqual(apps.map((a) => a.name), ['api', 'web']);
  assert.equal(apps[1].live, 3);
  assert.equal(apps[0].live, null);
  assert.deepEqual(apps[1].containers, ['web']);
});

test('an app: releases newest first with live and good marks, runs in words', () => {
  const app = normalizeApp({
    name: 'web', live_release: 1, good_releases: [1, 3],
    definition: { nodes: ['gpu-1'], containers: spec('web:4'), health: { http: 'http://x/health' } },
    releases: [1, 2, 3].map((n) => ({ number: n, spec_hash: 'abcdef0123456789', containers: spec('web:' + n) })),
    runs: [
      { run_id: 'r2', release: 2, previous: 1, status: 'rolled_back', live_release: 1, error: 'not healthy', requested_by: { kind: 'user', id: 'alice' },
        steps: [{ step: 'health', status: 'failed', error: 'not healthy' }, { step: 'rollback', status: 'ok' }] },
      { run_id: 'r5', release: 4, status: 'running', approval_id: 'a1', steps: [{ step: 'approval', status: 'running' }] },
    ],
  });
  assert.deepEqual(app.releases.map((r) => [r.number, r.live, r.good]), [[3, false, true], [2, false, false], [1, true, true]]);
  assert.equal(app.releases[0].hash, 'abcdef012345');
  assert.deepEqual(app.releases[0].images, ['web: web:3']);
  assert.equal(app.check, 'http://x/health');
  assert.equal(app.source, null);
  const built = normalizeApp({ name: 'site', definition: { git: { repo: '/srv/site.git', branch: 'main', build_command: 'make image' } } });
  assert.equal(built.source, '/srv/site.git @ main, built by: make image');
  const docker = normalizeApp({ name: 'site', definition: { git: { repo: '/srv/site.git', branch: 'main', dockerfile: 'Dockerfile' } } });
  assert.equal(docker.source, '/srv/site.git @ main, built from Dockerfile');
  assert.equal(runWords(app.runs[0]), 'rolled back: release 1 live again');
  assert.equal(runWords(app.runs[1]), 'waiting for approval');
  assert.equal(app.runs[0].by, 'alice');
  assert.equal(stepWords('stop_old'), 'stop old release');
  assert.ok(touchesApps({ aggregate_type: 'deploy_run' }));
  assert.ok(!touchesApps({ aggregate_type: 'approval' }));
});
