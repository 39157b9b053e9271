// The first-run wizard: its progress as `GET /api/setup` answers it, and the words for each
// step. Pure: no DOM.

import { isObj, str } from './format.js';

export const STEPS = [
  { id: 'sign_in', title: 'Sign in', skip: false },
  { id: 'name_node', title: 'Name this node', skip: false },
  { id: 'add_node', title: 'Add another node', skip: true },
  { id: 'tokens', title: 'Chat and platform tokens', skip: true },
  { id: 'domain', title: 'A domain', skip: true },
  { id: 'first_render', title: 'A first test render', skip: false },
];

/** `{ steps: [{ id, title, skip, done, detail }], next, dismissed, nodeId }` */
export function normalizeSetup(data) {
  const d = isObj(data) ? data : {};
  const done = {};
  for (const s of Array.isArray(d.steps) ? d.steps : []) {
    if (isObj(s) && str(s.step)) done[s.step] = { done: !!s.done, detail: str(s.detail) || '' };
  }
  const steps = STEPS.map((s) => Object.assign({}, s, done[s.id] || { done: false, detail: '' }));
  const next = steps.find((s) => !s.done);
  return { steps: steps, next: next ? next.id : null, dismissed: !!d.dismissed, nodeId: str(d.node_id) || '' };
}

/** Whether the wizard should open by itself: an admin, not put away, something left to do. */
export function shouldOpen(setup, who) {
  return !!(setup && who && who.role === 'admin' && !setup.dismissed && setup.next !== null);
}

/** Tags typed as `prod, gpu` → `['prod', 'gpu']` (lower-case, no empties, no repeats). */
export function parseTags(text) {
  const out = [];
  for (const t of str(text) ? text.split(/[\s,]+/) : []) {
    const tag = t.trim().toLowerCase();
    if (tag && out.indexOf(tag) < 0) out.push(tag);
  }
  return out;
}
