// Deep links: `#/<room>[?key=value&…]`. The gateway token may arrive once as `#token=…` (or as
// a `token` parameter of a route); the shell stores it and takes it out of the address bar.
// Pure: works on strings only.

/**
 * Splits a location hash into `{ room, params, token }`: `room` is '' for the home route
 * (`#`, `#/`, or a hash that is not a route, such as `#token=…`); `params` is a plain object.
 */
export function parseHash(hash) {
  const raw = typeof hash === 'string' ? hash.replace(/^#/, '') : '';
  let path = '';
  let query = raw;
  if (raw.startsWith('/')) {
    const q = raw.indexOf('?');
    path = q === -1 ? raw.slice(1) : raw.slice(1, q);
    query = q === -1 ? '' : raw.slice(q + 1);
  }
  const params = {};
  let token = null;
  let search;
  try {
    search = new URLSearchParams(query);
  } catch (_e) {
    search = new URLSearchParams('');
  }
  for (const [key, value] of search) {
    if (key === 'token') token = value || null;
    else if (raw.startsWith('/')) params[key] = value;
  }
  let room = path.replace(/\/+$/, '');
  try {
    room = decodeURIComponent(room);
  } catch (_e) {
    /* keep it as written */
  }
  return { room: room, params: params, token: token };
}

/** The token in a hash (`#token=…` or `#/room?token=…`), or null. */
export function tokenFromHash(hash) {
  return parseHash(hash).token;
}

/**
 * The room to show for a parsed hash: one of `rooms` (ids), else `home`. `known` is false when
 * the hash named a room that does not exist (the shell then rewrites the address).
 */
export function resolveRoute(parsed, rooms, home) {
  const ids = Array.isArray(rooms) ? rooms : [];
  if (parsed.room === '' || parsed.room === home) return { room: home, params: parsed.room === '' ? {} : parsed.params, known: true };
  if (ids.indexOf(parsed.room) !== -1) return { room: parsed.room, params: parsed.params, known: true };
  return { room: home, params: {}, known: false };
}

/** The hash of a route; the home room is `#/`. Parameters are written in key order. */
export function routeHash(room, params, home) {
  const path = room === home ? '' : encodeURIComponent(room);
  const keys = Object.keys(params || {})
    .filter((k) => params[k] !== undefined && params[k] !== null && params[k] !== '')
    .sort();
  if (!keys.length) return '#/' + path;
  const query = keys.map((k) => encodeURIComponent(k) + '=' + encodeURIComponent(String(params[k]))).join('&');
  return '#/' + path + '?' + query;
}

/** Whether two routes are the same (room and parameters). */
export function sameRoute(a, b) {
  return !!a && !!b && routeHash(a.room, a.params, null) === routeHash(b.room, b.params, null);
}
