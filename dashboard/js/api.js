// The gateway token and REST calls with it. A 401 anywhere means the token was rejected: the
// shell is told (it asks for a new one). A 403 is not that: the token is good but its role may
// not do this; the caller shows the message like any other failure.

import { isObj } from './state/format.js';
import { apiErrorMessage } from './state/errors.js';

const TOKEN_KEY = 'nebula.token';

let memoryToken = null; // when localStorage is unavailable
let rejected = () => {};

export function getToken() {
  try {
    const t = window.localStorage.getItem(TOKEN_KEY);
    if (t) return t;
  } catch (_e) {
    /* storage unavailable */
  }
  return memoryToken;
}

export function setToken(t) {
  memoryToken = t;
  try {
    window.localStorage.setItem(TOKEN_KEY, t);
  } catch (_e) {
    /* storage unavailable */
  }
}

export function clearToken() {
  memoryToken = null;
  try {
    window.localStorage.removeItem(TOKEN_KEY);
  } catch (_e) {
    /* storage unavailable */
  }
}

/** Who to tell when the gateway rejects the token (the shell). */
export function onTokenRejected(fn) {
  rejected = fn;
}

function authHeaders(extra) {
  return Object.assign({}, extra, { Authorization: 'Bearer ' + getToken() });
}

/**
 * A REST call with the token. Options: `method`, `json` (a body to send as JSON), or `body`
 * with `contentType`, `headers`. Resolves to `{ ok, status, data, message }`: `message` is what
 * to show when it failed (the server's error text when it sent one). Never throws.
 */
export async function api(path, options) {
  const o = options || {};
  if (!getToken()) return { ok: false, status: 0, data: null, message: 'no token' }; // the shell asks for one
  const headers = authHeaders(o.headers);
  const init = { method: o.method || 'GET', headers: headers, cache: 'no-store' };
  if (o.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(o.json);
  } else if (o.body !== undefined) {
    headers['Content-Type'] = o.contentType;
    init.body = o.body;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    return { ok: false, status: 0, data: null, message: 'network error' + (e && e.message ? ': ' + e.message : '') };
  }
  if (res.status === 401) {
    rejected('token rejected');
    return { ok: false, status: 401, data: null, message: 'token rejected' };
  }
  let data = null;
  try {
    data = await res.json();
  } catch (_e) {
    data = null;
  }
  if (!res.ok) return { ok: false, status: res.status, data: data, message: apiErrorMessage(res.status, isObj(data) ? data : null) };
  return { ok: true, status: res.status, data: data, message: null };
}

/** A binary resource with the token (an artifact), as a Blob; null when it cannot be had. */
export async function fetchBlob(path) {
  if (!getToken()) return null;
  try {
    const res = await fetch(path, { headers: authHeaders() });
    if (res.status === 401) {
      rejected('token rejected');
      return null;
    }
    return res.ok ? await res.blob() : null;
  } catch (_e) {
    return null;
  }
}
