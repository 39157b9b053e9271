// Approvals: the inbox as `GET /api/approvals` answers it, what the page shows of each
// (policy in words, decisions, whether the caller may decide), and a diff split into lines to
// colour. Pure: no DOM.

import { isObj, num, str } from './format.js';

const RANK = { viewer: 0, operator: 1, admin: 2 };

/** An actor as the log writes it (`{kind, id}`) → a name: `alice`, `service deploy`. */
export function actorName(actor) {
  if (!isObj(actor)) return '?';
  const id = str(actor.id) || '?';
  return actor.kind === 'user' ? id : str(actor.kind) + ' ' + id;
}

function normalizeOne(a) {
  const policy = isObj(a.policy) ? a.policy : {};
  const preview = isObj(a.preview) ? a.preview : {};
  const decisions = (Array.isArray(a.decisions) ? a.decisions : []).filter(isObj).map((d) => ({
    decision: str(d.decision) || '?',
    by: actorName(d.by),
    byActor: isObj(d.by) ? d.by : null,
    role: str(d.role) || '?',
    comment: str(d.comment) || '',
    at: str(d.at),
  }));
  return {
    id: str(a.approval_id),
    kind: str(a.subject_kind) || '?',
    subject: str(a.subject_id) || '?',
    summary: str(a.summary) || '',
    preview: { format: str(preview.format) || 'text', body: str(preview.body) || '', truncated: !!preview.truncated },
    role: str(policy.role) || 'admin',
    approvals: num(policy.approvals) || 1,
    requesterMayApprove: !!policy.requester_may_approve,
    rule: str(policy.rule),
    expiresAt: str(a.expires_at),
    requestedBy: actorName(a.requested_by),
    requestedByActor: isObj(a.requested_by) ? a.requested_by : null,
    requestedAt: str(a.requested_at),
    decisions: decisions,
    state: str(a.state) || 'pending',
    reason: str(a.reason) || '',
  };
}

/** The answer → approvals, pending first (oldest deadline first), then the rest newest first. */
export function normalizeApprovals(data) {
  const list = (isObj(data) && Array.isArray(data.approvals) ? data.approvals : []).filter((a) => isObj(a) && str(a.approval_id)).map(normalizeOne);
  const pending = list.filter((a) => a.state === 'pending').sort((a, b) => (a.expiresAt < b.expiresAt ? -1 : a.expiresAt > b.expiresAt ? 1 : 0));
  const rest = list.filter((a) => a.state !== 'pending');
  return pending.concat(rest);
}

/** "needs 1 admin approval · rule prod · four eyes" */
export function policyWords(a) {
  const parts = ['needs ' + a.approvals + ' ' + a.role + ' approval' + (a.approvals === 1 ? '' : 's')];
  if (!a.requesterMayApprove) parts.push('not by the requester');
  if (a.rule) parts.push('rule ' + a.rule);
  return parts.join(' \u00b7 ');
}

/**
 * Whether `who` ({name, role}) may decide `a` now, as the policy will judge it: `null` when they
 * may, else why not (the buttons say so instead of failing).
 */
export function whyNotDecide(a, who, now) {
  if (a.state !== 'pending') return 'already ' + a.state;
  if (a.expiresAt && Date.parse(a.expiresAt) <= now) return 'expired';
  if (!who || !(who.role in RANK)) return 'signed out';
  if (RANK[who.role] < (RANK[a.role] === undefined ? 2 : RANK[a.role])) return 'needs the ' + a.role + ' role';
  const mine = (actor) => actor && actor.kind === 'user' && actor.id === who.name;
  if (a.decisions.some((d) => mine(d.byActor))) return 'you decided already';
  return null;
}

/** Whether `who` asked for `a` and so may only reject it (unless its policy allows more). */
export function ownRequest(a, who) {
  const r = a.requestedByActor;
  return !!(who && r && r.kind === 'user' && r.id === who.name && !a.requesterMayApprove);
}

/** A unified diff's lines with their kind: `add`, `del`, `hunk`, `file` or `ctx`. */
export function diffLines(body) {
  return str(body)
    .split('\n')
    .map((line) => {
      let kind = 'ctx';
      if (line.startsWith('+++') || line.startsWith('---') || line.startsWith('diff ') || /^(index |new file mode|deleted file mode|similarity index|rename (from|to) )/.test(line)) kind = 'file';
      else if (line.startsWith('@@')) kind = 'hunk';
      else if (line.startsWith('+')) kind = 'add';
      else if (line.startsWith('-')) kind = 'del';
      return { kind: kind, text: line };
    });
}

/** Whether an event should make the inbox ask again. */
export function touchesApprovals(env) {
  return isObj(env) && env.aggregate_type === 'approval';
}
