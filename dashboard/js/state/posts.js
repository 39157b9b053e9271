// The Stream Bot: what a post request carries and how each destination's outcome reads. Pure.

import { isObj, str } from './format.js';

const DESTINATIONS = ['twitch', 'youtube', 'kick'];
const SHA256 = /^[0-9a-f]{64}$/;

/** Whether `v` names an artifact (a lower-case hex SHA-256). */
export function isSha256(v) {
  return typeof v === 'string' && SHA256.test(v);
}

/** The body of `POST /api/posts`: `{ body }`, or `{ error }` for what the user must fix. */
export function buildPost(text, destinations, artifact) {
  const t = typeof text === 'string' ? text.trim() : '';
  const to = (Array.isArray(destinations) ? destinations : []).filter((d) => DESTINATIONS.indexOf(d) !== -1);
  if (!t) return { error: 'write the announcement' };
  if (!to.length) return { error: 'choose where to post' };
  const body = { text: t, destinations: to };
  if (artifact) body.artifact = artifact;
  return { body: body };
}

/** One destination's badge: `{ cls, label, title }`. */
export function destinationOutcome(name, outcome) {
  const o = isObj(outcome) ? outcome : {};
  switch (o.status) {
    case 'delivered':
      return { cls: 'delivered', label: name + ' \u2713', title: str(o.text) || '' };
    case 'failed':
      return { cls: 'failed', label: name + ' failed', title: str(o.error) || '' };
    default:
      return { cls: 'pending', label: name + (o.attempts ? ' retrying (' + o.attempts + ')' : ' \u2026'), title: str(o.last_error) || '' };
  }
}

/** 'posted', 'posted, with failures', or null while a destination is still pending. */
export function postSummary(post) {
  const destinations = isObj(post) && isObj(post.destinations) ? post.destinations : {};
  const states = Object.values(destinations).map((o) => (isObj(o) ? o.status : 'pending'));
  if (!states.length || states.some((s) => s !== 'delivered' && s !== 'failed')) return null;
  return states.indexOf('failed') !== -1 ? 'posted, with failures' : 'posted';
}
