// Hosts: the registry with metrics, the add-host form, and remote commands folded from events.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { execFromView, execSummary, foldExec, hostRequest, MAX_EXECS, normalizeHosts, touchesHosts } from '../js/state/hosts.js';

test('hosts are normalized with their key and metrics, junk dropped', () => {
  const rows = normalizeHosts({
    hosts: [
      {
        name: 'nas', address: '10.0.0.2', port: 2222, user: 'nebula', key_secret: 'ssh-nas', allowlist: ['uptime', 7],
        host_key: { algorithm: 'ssh-ed25519', fingerprint: 'SHA256:a' }, key_mismatch: { fingerprint: 'SHA256:b' },
        sample: { at: '2026-12-07T10:00:00Z', metrics: { load_1m: 0.5, load_5m: 0.4, load_15m: 0.3, memory_total_bytes: 8, memory_available_bytes: 4, uptime_secs: 60, disks: [{ mount: '/data', total_bytes: 9, used_bytes: 1 }, { mount: '/', total_bytes: 10, used_bytes: 5 }] } },
      },
      { name: 'box', address: 'box.lan', user: 'root', sample: { error: { reason: 'unreachable', message: 'refused' } } },
      { name: null },
      'junk',
    ],
  });
  assert.deepEqual(rows.map((r) => r.name), ['box', 'nas']);
  const nas = rows[1];
  assert.equal(nas.target, 'nebula@10.0.0.2:2222');
  assert.deepEqual(nas.allowlist, ['uptime']);
  assert.equal(nas.key, 'SHA256:a');
  assert.equal(nas.refusedKey, 'SHA256:b');
  assert.deepEqual(nas.metrics.load, [0.5, 0.4, 0.3]);
  assert.equal(nas.metrics.root.mount, '/');
  assert.equal(rows[0].target, 'root@box.lan:22');
  assert.equal(rows[0].metrics, null);
  assert.equal(rows[0].error, 'unreachable: refused');
  assert.deepEqual(normalizeHosts(null), []);
});

test('the add-host form becomes a request, or says what is missing', () => {
  const ok = hostRequest({ name: ' nas ', address: '10.0.0.2', port: '', user: 'nebula', keySecret: 'k', allowlist: 'uptime\n\n docker ps \n' });
  assert.deepEqual(ok.body, { name: 'nas', address: '10.0.0.2', port: 22, user: 'nebula', key_secret: 'k', allowlist: ['uptime', 'docker ps'] });
  assert.match(hostRequest({ name: 'x' }).error, /needed/);
  assert.match(hostRequest({ name: 'x', address: 'a', user: 'u', keySecret: 'k', port: '70000' }).error, /port/);
});

function env(id, type, data) {
  return { aggregate_type: 'host_exec', aggregate_id: id, type: type, data: data, actor: { kind: 'user', id: 'ops' }, occurred_at: '2026-12-07T10:00:00Z' };
}

test('an execution is folded: output in order, then how it ended', () => {
  const execs = new Map();
  assert.equal(foldExec(execs, env('e1', 'host_exec.output', { stream: 'stdout', text: 'early' })), false);
  assert.equal(foldExec(execs, env('e1', 'host_exec.requested', { host: 'nas', command: 'uptime', timeout_secs: 60 })), true);
  foldExec(execs, env('e1', 'host_exec.started', {}));
  foldExec(execs, env('e1', 'host_exec.output', { stream: 'stdout', text: 'up ' }));
  foldExec(execs, env('e1', 'host_exec.output', { stream: 'stderr', text: 'warn' }));
  foldExec(execs, env('e1', 'host_exec.completed', { exit_status: 0, duration_ms: 1500, output_bytes: 7, truncated: false }));
  const e = execs.get('e1');
  assert.equal(e.status, 'completed');
  assert.deepEqual(e.chunks.map((c) => c.text), ['up ', 'warn']);
  assert.equal(e.actor, 'ops');
  assert.equal(execSummary(e), 'exit 0 in 1.50 s');
  // Nothing changes a finished execution.
  assert.equal(foldExec(execs, env('e1', 'host_exec.failed', { reason: 'interrupted' })), false);
  foldExec(execs, env('e2', 'host_exec.requested', { host: 'nas', command: 'x' }));
  foldExec(execs, env('e2', 'host_exec.failed', { reason: 'auth_failed', error: 'refused the key', duration_ms: 10 }));
  assert.equal(execSummary(execs.get('e2')), 'auth_failed: refused the key in 0.01 s');
  for (let i = 0; i < MAX_EXECS + 5; i++) foldExec(execs, env('n' + i, 'host_exec.requested', { host: 'h', command: 'c' }));
  assert.equal(execs.size, MAX_EXECS);
  assert.equal(foldExec(execs, { aggregate_type: 'host' }), false);
});

test('an execution read back over REST has the fold shape', () => {
  const e = execFromView({ exec_id: 'e9', host: 'nas', command: 'df', status: 'completed', output: [{ stream: 'stdout', text: 'ok' }, 'junk'], exit_status: 3, truncated: true, duration_ms: 20, requested_by: { kind: 'user', id: 'admin' } });
  assert.equal(e.exit, 3);
  assert.deepEqual(e.chunks, [{ stream: 'stdout', text: 'ok' }]);
  assert.equal(execSummary(e), 'exit 3 in 0.02 s (output cut)');
  assert.equal(touchesHosts({ aggregate_type: 'host' }), true);
  assert.equal(touchesHosts({ aggregate_type: 'host_exec' }), false);
});
