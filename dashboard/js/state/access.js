// Who is signed in and what their role may do; the API tokens the Access room lists and
// issues (`GET/POST /api/tokens`, `DELETE /api/tokens/{name}`). Pure: no DOM, loadable in Node.

import { DASH, isObj, num, parseTime, str } from './format.js';

/** The gateway's roles, least first: each may do everything the ones before it may. */
export const ROLES = ['viewer', 'operator', 'admin'];

/** What each role adds, for the role picker. */
export const ROLE_NOTES = {
  viewer: 'every read, the live feed, metrics',
  operator: 'also renders, the queue, uploads, posts',
  admin: 'also chat settings, dead-letter replay, tokens',
};

export const TOKEN_NAME_MAX = 64;
export const EXPIRY_DAYS_MAX = 3650;
const TOKEN_NAME = /^[a-z0-9][a-z0-9_-]*$/;

/** A role's rank (0 = viewer), or -1 for anything that is not a role. */
export function roleRank(role) {
  return typeof role === 'string' ? ROLES.indexOf(role) : -1;
}

export function isRole(role) {
  return roleRank(role) !== -1;
}

/**
 * Whether a caller with `role` may do what needs `needed`. Nothing is allowed to an unknown
 * caller (not signed in, not known yet), and nothing needing an unknown role is allowed.
 */
export function roleAllows(role, needed) {
  const have = roleRank(role);
  const need = roleRank(needed);
  return have !== -1 && need !== -1 && have >= need;
}

/** The hint on a control the caller may not use: "needs the operator role". */
export function needsLabel(needed) {
  return 'needs the ' + (isRole(needed) ? needed : 'right') + ' role';
}

/** `GET /api/whoami`'s answer as `{ name, role }`, or null when it is not one. */
export function normalizeWhoami(data) {
  if (!isObj(data)) return null;
  const name = str(data.name);
  if (!name || !isRole(data.role)) return null;
  return { name: name, role: data.role };
}

/** The header's line: "ops · operator". */
export function whoamiLabel(who) {
  return who ? who.name + ' \u00b7 ' + who.role : '';
}

/** Who issued or revoked a token (`{ kind, id }`): "admin", or "system:deploy" for non-users. */
export function actorLabel(actor) {
  if (typeof actor === 'string') return actor || DASH;
  if (!isObj(actor)) return DASH;
  const id = str(actor.id);
  const kind = str(actor.kind);
  if (!id) return kind || DASH;
  return !kind || kind === 'user' ? id : kind + ':' + id;
}

const STATUS_ORDER = { active: 0, expired: 1, revoked: 2 };

function normalizeToken(raw) {
  if (!isObj(raw)) return null;
  const name = str(raw.name);
  if (!name) return null;
  const status = str(raw.status) || 'active';
  return {
    name: name,
    role: str(raw.role),
    status: status,
    issued_at: str(raw.issued_at),
    issued_by: raw.issued_by === undefined ? null : raw.issued_by,
    expires_at: str(raw.expires_at),
    revoked_at: str(raw.revoked_at),
    revoked_by: raw.revoked_by === undefined ? null : raw.revoked_by,
  };
}

/** `GET /api/tokens`'s answer as a list: active first, then expired, then revoked; by name. */
export function normalizeTokens(data) {
  const list = isObj(data) && Array.isArray(data.tokens) ? data.tokens.map(normalizeToken).filter(Boolean) : [];
  const rank = (t) => (t.status in STATUS_ORDER ? STATUS_ORDER[t.status] : 3);
  return list.sort((a, b) => rank(a) - rank(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Only an active token can be revoked. */
export function canRevoke(token) {
  return !!token && token.status === 'active';
}

/** Why `name` cannot name a token, or null when it can (the server checks it again). */
export function tokenNameError(name) {
  const n = typeof name === 'string' ? name : '';
  if (n === '') return 'give the token a name';
  if (n.length > TOKEN_NAME_MAX) return 'a name is at most ' + TOKEN_NAME_MAX + ' characters';
  if (!TOKEN_NAME.test(n)) return 'a name is a-z, 0-9, - and _, starting with a letter or digit';
  return null;
}

/**
 * The create form (`{ name, role, expiry }`, strings) as `POST /api/tokens`'s body:
 * `{ body }`, or `{ error }` saying what to fix. An empty expiry never expires.
 */
export function buildTokenRequest(form) {
  const f = isObj(form) ? form : {};
  const name = typeof f.name === 'string' ? f.name.trim() : '';
  const nameError = tokenNameError(name);
  if (nameError) return { error: nameError };
  if (!isRole(f.role)) return { error: 'choose a role: ' + ROLES.join(', ') };
  const body = { name: name, role: f.role };
  const expiry = typeof f.expiry === 'string' ? f.expiry.trim() : f.expiry === undefined || f.expiry === null ? '' : String(f.expiry);
  if (expiry !== '') {
    const days = Number(expiry);
    if (!Number.isInteger(days) || days < 1 || days > EXPIRY_DAYS_MAX) return { error: 'expiry: a whole number of days, 1 to ' + EXPIRY_DAYS_MAX + ' (or empty: never)' };
    body.expires_in_days = days;
  }
  return { body: body };
}

/** `POST /api/tokens`'s 201 answer as `{ name, role, expires_at, token }`, or null. */
export function createdToken(data) {
  if (!isObj(data) || !str(data.token)) return null;
  return { name: str(data.name), role: str(data.role), expires_at: str(data.expires_at), token: str(data.token) };
}

function pad2(n) {
  return n < 10 ? '0' + n : String(n);
}

/** "2026-12-04 10:00" in local time, or the dash. */
export function fmtDateTime(iso) {
  const t = parseTime(iso);
  if (t === null) return DASH;
  const d = new Date(t);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + pad2(d.getHours()) + ':' + pad2(d.getMinutes());
}

/** A token's expiry as shown: "never", or its time. */
export function expiresLabel(token) {
  if (!token || !token.expires_at) return 'never';
  return fmtDateTime(token.expires_at);
}

/** The status cell's tooltip: when and by whom a token was revoked, when it expired. */
export function statusDetail(token) {
  if (!token) return '';
  if (token.status === 'revoked') {
    const parts = ['revoked'];
    if (token.revoked_at) parts.push(fmtDateTime(token.revoked_at));
    if (token.revoked_by !== null && token.revoked_by !== undefined) parts.push('by ' + actorLabel(token.revoked_by));
    return parts.join(' ');
  }
  if (token.status === 'expired') return token.expires_at ? 'expired ' + fmtDateTime(token.expires_at) : 'expired';
  return '';
}

/** The confirm question before a revoke; `self` when it is the caller's own token. */
export function revokeQuestion(name, self) {
  return 'Revoke the token "' + name + '"? Whatever uses it loses access at once.' + (self ? ' It is the token you are signed in with: you will be signed out.' : '');
}

/** Whether a REST answer means the caller's role may not do it (not a rejected token). */
export function isForbidden(res) {
  return !!res && num(res.status) === 403;
}
