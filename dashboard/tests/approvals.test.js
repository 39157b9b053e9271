import { test } from 'node:test';
import assert from 'node:assert/strict';

import { actorName, diffLines, normalizeApprovals, ownRequest, policyWords, touchesApprovals, whyNotDecide } from '../js/state/approvals.js';

const NOW = Date.parse('2026-12-07T12:00:00Z');
const row = (id, state, extra) => Object.assign({
  approval_id: id,
  subject_kind: 'deploy',
  subject_id: 'run-' + id,
  summary: 'deploy web',
  preview: { format: 'diff', body: '--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same' },
  policy: { role: 'admin', approvals: 2, expires_at: '2026-12-08T00:00:00Z', requester_may_approve: false, rule: 'prod' },
  expires_at: '2026-12-08T00:00:00Z',
  requested_by: { kind: 'user', id: 'alice' },
  requested_at: '2026-12-07T11:00:00Z',
  decisions: [],
  state: state,
}, extra || {});

test('the inbox: pending first by deadline, then the rest; odd rows dropped', () => {
  const list = normalizeApprovals({
    approvals: [
      row('a', 'granted'),
      row('b', 'pending', { expires_at: '2026-12-09T00:00:00Z' }),
      row('c', 'pending'),
      { summary: 'no id' },
      'junk',
    ],
  });
  assert.deepEqual(list.map((a) => a.id), ['c', 'b', 'a']);
  assert.equal(list[0].requestedBy, 'alice');
  assert.equal(policyWords(list[0]), 'needs 2 admin approvals \u00b7 not by the requester \u00b7 rule prod');
  assert.deepEqual(normalizeApprovals(null), []);
  assert.equal(actorName({ kind: 'service', id: 'deploy' }), 'service deploy');
});

test('who may decide, as the policy will judge it', () => {
  const [a] = normalizeApprovals({ approvals: [row('a', 'pending', { decisions: [{ decision: 'approve', by: { kind: 'user', id: 'bob' }, role: 'admin' }] })] });
  assert.equal(whyNotDecide(a, { name: 'carol', role: 'admin' }, NOW), null);
  assert.equal(whyNotDecide(a, { name: 'olga', role: 'operator' }, NOW), 'needs the admin role');
  assert.equal(whyNotDecide(a, { name: 'bob', role: 'admin' }, NOW), 'you decided already');
  assert.equal(whyNotDecide(a, null, NOW), 'signed out');
  assert.equal(whyNotDecide(a, { name: 'carol', role: 'admin' }, Date.parse('2026-12-08T00:00:01Z')), 'expired');
  assert.ok(ownRequest(a, { name: 'alice', role: 'admin' }));
  assert.ok(!ownRequest(a, { name: 'carol', role: 'admin' }));
  const [done] = normalizeApprovals({ approvals: [row('d', 'rejected')] });
  assert.equal(whyNotDecide(done, { name: 'carol', role: 'admin' }, NOW), 'already rejected');
});

test('a diff is coloured by line', () => {
  assert.deepEqual(diffLines('--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same').map((l) => l.kind), ['file', 'file', 'hunk', 'del', 'add', 'ctx']);
  assert.ok(touchesApprovals({ aggregate_type: 'approval' }));
  assert.ok(!touchesApprovals({ aggregate_type: 'host' }));
});
