// The shell: the room registry, the left navigation, `#/room` deep links (load, back/forward),
// the gateway token and who it signs in (`GET /api/whoami`: the header's name and role, sign
// out), the one websocket for the whole page, and the buses rooms share (live changes; named
// topics with their last value).
//
// A room is an object given to `registerRoom` before `start`:
//   { id, title, subtitle?, icon (an SVG path, 16x16), css?: ['css/x.css'], html (its markup),
//     needs?: 'operator' | 'admin' (its nav entry is hidden from lesser roles),
//     mount(ctx) -> { show(params)?, hide()?, tick(now)? } }
// `ctx`: { id, root, live, go, href, setParams, setBadge, onChanges, publish, subscribe }.
// Rooms are mounted once, at start, and live on while hidden: the websocket feeds them all.
//
// Roles: a control a room marks `data-needs="operator"` (or "admin") is locked for callers
// below that role (locks.js), in the rooms' markup as it is and as they render it later. The
// topic `whoami` carries `{ name, role }` (null while signed out or not known yet).

import { api, clearToken, getToken, onTokenRejected, setToken } from './api.js';
import { byIds, h, icon } from './dom.js';
import { setRole, watchLocks } from './locks.js';
import { isRole, normalizeWhoami, whoamiLabel } from './state/access.js';
import { createState } from './state/live.js';
import { parseHash, resolveRoute, routeHash, sameRoute } from './state/router.js';
import { createSocket } from './socket.js';

const PREFERRED_HOME = 'overview'; // `#/`; the first room when there is no overview
const STYLE_WAIT_MS = 3000;
const WHOAMI_RETRY_MS = 5000; // a failed whoami (not a rejected token) is asked again, at most this often
const ROOM_ID = /^[a-z][a-z0-9-]*$/;

/** The live state every room reads: nodes and the event feed, folded from the websocket. */
const live = createState();

const rooms = new Map(); // id -> { def, section, link, badge, instance }
const changeListeners = [];
const topics = new Map(); // name -> { has, value, listeners }
let home = PREFERRED_HOME;
let current = null; // { room, params } shown now
let started = false;
let el = null;
let socket = null;
let who = null; // { name, role } of the token in use; null: signed out or not known yet
let whoGeneration = 0; // answers for an older token (or sign-in) are dropped
let whoLoading = false;
let whoTriedAt = 0;

export function registerRoom(def) {
  if (started) throw new Error('rooms are registered before the shell starts');
  if (!def || !ROOM_ID.test(def.id || '') || typeof def.mount !== 'function' || !def.title) {
    throw new Error('a room needs an id (lower case), a title and mount()');
  }
  if (def.needs !== undefined && !isRole(def.needs)) throw new Error('room ' + def.id + ' needs an unknown role: ' + def.needs);
  if (rooms.has(def.id)) throw new Error('room ' + def.id + ' is registered twice');
  rooms.set(def.id, { def: def, section: null, link: null, badge: null, instance: null });
}

/** Calls `fn(changes)` after every websocket frame (see state/live.js `applyFrame`). */
export function onChanges(fn) {
  changeListeners.push(fn);
}

function topic(name) {
  if (!topics.has(name)) topics.set(name, { has: false, value: undefined, listeners: [] });
  return topics.get(name);
}

/** Tells every subscriber of `name`; late subscribers get the last value at once. */
function publish(name, value) {
  const t = topic(name);
  t.has = true;
  t.value = value;
  for (const fn of t.listeners.slice()) deliver(fn, value, 'topic ' + name);
}

function subscribe(name, fn) {
  const t = topic(name);
  t.listeners.push(fn);
  if (t.has) deliver(fn, t.value, 'topic ' + name);
}

function deliver(fn, value, what) {
  try {
    fn(value);
  } catch (e) {
    console.error('a dashboard room failed on ' + what, e);
  }
}

/** The deep link of a room. */
function href(room, params) {
  return routeHash(room, params, home);
}

/** Shows a room (a new history entry), its parameters applied before this returns. */
function go(room, params) {
  const route = resolveRoute({ room: room, params: params || {} }, Array.from(rooms.keys()), home);
  const hash = href(route.room, route.params);
  if (window.location.hash !== hash) window.history.pushState(null, '', hash);
  applyRoute(route);
}

/** Rewrites the current room's parameters in the address bar (no new entry, nothing re-run). */
function setParams(params) {
  if (!current) return;
  current = { room: current.room, params: Object.assign({}, params) };
  window.history.replaceState(null, '', href(current.room, current.params));
}

function setBadge(room, label, tone) {
  const r = rooms.get(room);
  if (!r || !r.badge) return;
  r.badge.textContent = label === null || label === undefined ? '' : String(label);
  r.badge.hidden = r.badge.textContent === '';
  r.badge.dataset.tone = tone || '';
}

function applyRoute(route) {
  if (current && sameRoute(current, route)) return;
  const previous = current ? rooms.get(current.room) : null;
  const next = rooms.get(route.room);
  if (!next) return;
  const moved = !current || current.room !== route.room;
  current = { room: route.room, params: Object.assign({}, route.params) };
  if (moved) {
    for (const [id, r] of rooms) {
      r.section.hidden = id !== route.room;
      if (id === route.room) r.link.setAttribute('aria-current', 'page');
      else r.link.removeAttribute('aria-current');
    }
    next.link.scrollIntoView({ block: 'nearest', inline: 'nearest' }); // a narrow screen's nav scrolls sideways
    document.body.dataset.room = route.room;
    document.title = next.def.title + ' \u00b7 Nebula Command';
    if (previous) call(previous, 'hide');
    window.scrollTo(0, 0);
  }
  call(next, 'show', route.params);
}

function call(r, hook, arg) {
  if (!r.instance || typeof r.instance[hook] !== 'function') return;
  try {
    r.instance[hook](arg);
  } catch (e) {
    console.error('room ' + r.def.id + ' failed in ' + hook, e);
  }
}

// The token arrives once in the address (`#token=…`): keep it, take it out of the address bar.
function routeFromAddress() {
  const parsed = parseHash(window.location.hash);
  const route = resolveRoute(parsed, Array.from(rooms.keys()), home);
  if (parsed.token) setToken(parsed.token);
  if (parsed.token || !route.known) {
    window.history.replaceState(null, '', window.location.pathname + window.location.search + href(route.room, route.params));
  }
  return { route: route, token: parsed.token };
}

function onAddressChange() {
  const { route, token } = routeFromAddress();
  if (token) signedIn();
  applyRoute(route);
}

// ---- the page around the rooms ----------------------------------------------

function buildNav() {
  const list = h('ul', 'nav-list');
  for (const [id, r] of rooms) {
    const a = h('a', 'nav-link');
    a.href = href(id, {});
    a.dataset.room = id;
    a.appendChild(icon(r.def.icon || 'M3 3h10v10H3z'));
    a.appendChild(h('span', 'nav-label', r.def.title));
    r.badge = h('span', 'nav-badge');
    r.badge.hidden = true;
    a.appendChild(r.badge);
    r.link = a;
    const li = h('li', null);
    if (r.def.needs) {
      li.dataset.needs = r.def.needs; // hidden from lesser roles (locks.js)
      li.dataset.needsMode = 'hide';
    }
    li.appendChild(a);
    list.appendChild(li);
  }
  el.nav.appendChild(list);
  el.nav.addEventListener('click', (ev) => {
    const a = ev.target instanceof Element ? ev.target.closest('a.nav-link') : null;
    if (!a || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    go(a.dataset.room, {});
  });
}

function buildSection(id, r) {
  const section = h('section', 'room room-' + id);
  section.id = 'room-' + id;
  section.dataset.room = id;
  section.hidden = true;
  section.setAttribute('aria-labelledby', 'room-' + id + '-title');
  const head = h('header', 'room-head');
  const title = h('h1', 'room-title', r.def.title);
  title.id = 'room-' + id + '-title';
  head.appendChild(title);
  if (r.def.subtitle) head.appendChild(h('p', 'room-sub', r.def.subtitle));
  const body = h('div', 'room-body');
  body.innerHTML = r.def.html || ''; // the room's own static markup
  section.appendChild(head);
  section.appendChild(body);
  el.rooms.appendChild(section);
  r.section = section;
  return body;
}

function mountRoom(id, r, body) {
  const ctx = {
    id: id,
    root: body,
    live: live,
    go: go,
    href: href,
    setParams: (params) => {
      if (current && current.room === id) setParams(params);
    },
    setBadge: (label, tone) => setBadge(id, label, tone),
    onChanges: onChanges,
    publish: publish,
    subscribe: subscribe,
  };
  try {
    r.instance = r.def.mount(ctx) || {};
  } catch (e) {
    console.error('room ' + id + ' failed to mount', e);
    body.textContent = '';
    body.appendChild(h('div', 'studio-error', 'this room failed to load: ' + (e && e.message ? e.message : e)));
  }
}

// Room stylesheets load before the rooms are shown (no flash of unstyled markup).
function loadStyles() {
  const loads = [];
  for (const r of rooms.values()) {
    for (const path of r.def.css || []) {
      const link = document.createElement('link');
      link.rel = 'stylesheet';
      link.href = '/assets/' + path;
      loads.push(new Promise((resolve) => {
        link.onload = link.onerror = resolve;
      }));
      document.head.appendChild(link);
    }
  }
  const ready = () => el.rooms.removeAttribute('aria-busy');
  Promise.race([Promise.all(loads), new Promise((resolve) => setTimeout(resolve, STYLE_WAIT_MS))]).then(ready);
}

function setConn(state, label) {
  el.conn.dataset.state = state;
  el.connText.textContent = label || state;
  // A whoami that failed for a passing reason is asked again once the gateway answers.
  if (state === 'live' && who === null && !whoLoading && getToken() && Date.now() - whoTriedAt > WHOAMI_RETRY_MS) loadWhoami();
}

function showTokenForm(message) {
  el.auth.hidden = false;
  el.tokenForm.hidden = false;
  el.tokenMessage.textContent = message || '';
  el.tokenInput.value = '';
  try {
    el.tokenInput.focus();
  } catch (_e) {
    /* ignore */
  }
}

function hideTokenForm() {
  el.auth.hidden = true;
  el.tokenForm.hidden = true;
  el.tokenMessage.textContent = '';
}

function tokenRejected(message) {
  if (message) {
    clearToken();
    socket.stop();
    setConn('connecting');
    setWho(null);
  }
  showTokenForm(message);
}

// ---- who is signed in -------------------------------------------------------

/** Shows who is signed in (or nobody), sets `body[data-role]`, locks what the role may not do. */
function setWho(next) {
  who = next;
  el.whoami.textContent = whoamiLabel(who);
  el.whoami.hidden = !who;
  if (who) el.whoami.title = 'signed in as ' + who.name + ' (' + who.role + ' role)';
  else el.whoami.removeAttribute('title');
  el.signOut.hidden = !getToken();
  if (who) document.body.dataset.role = who.role;
  else delete document.body.dataset.role;
  setRole(who ? who.role : null, document.body);
  publish('whoami', who);
}

/** Asks the gateway who the token in use is. A 401 goes the rejected-token way (api.js). */
async function loadWhoami() {
  const token = getToken();
  const generation = ++whoGeneration;
  if (!token) {
    setWho(null);
    return;
  }
  whoLoading = true;
  whoTriedAt = Date.now();
  let res;
  try {
    res = await api('/api/whoami');
  } finally {
    if (generation === whoGeneration) whoLoading = false;
  }
  if (generation !== whoGeneration || getToken() !== token) return; // signed out or in again meanwhile
  if (!res.ok) {
    if (res.status !== 401) console.warn('who am I: ' + res.message + ' (asked again when the gateway answers)');
    return;
  }
  const next = normalizeWhoami(res.data);
  if (!next) console.warn('who am I: the gateway answered without a name and role');
  setWho(next);
}

/** A new token is in use (the form, the address): connect with it and ask who it is. */
function signedIn() {
  whoGeneration += 1; // an answer for the token before is no longer wanted
  whoLoading = false;
  setWho(null); // locked until the gateway says what this token may do
  hideTokenForm();
  socket.restart();
  loadWhoami();
}

/** Forgets the token: no socket, nobody signed in, the token form again. */
function signOut() {
  whoGeneration += 1;
  whoLoading = false;
  clearToken();
  socket.stop();
  setConn('signed-out', 'signed out');
  setWho(null);
  showTokenForm('');
}

function onLiveChanges(changes) {
  if (getToken()) hideTokenForm();
  el.nodeCount.textContent = String(live.nodes.size);
  el.eventCount.textContent = String(live.eventCount);
  for (const fn of changeListeners.slice()) deliver(fn, changes, 'live changes');
}

/** Builds the page from the registered rooms, shows the addressed one, connects. */
export function start() {
  if (started) return;
  started = true;
  if (!rooms.has(home)) home = rooms.keys().next().value;
  if (home === undefined) return; // no room loaded: main.js logged why
  el = byIds({
    nav: 'nav',
    rooms: 'rooms',
    conn: 'conn-status',
    auth: 'auth',
    tokenForm: 'token-form',
    tokenInput: 'token-input',
    tokenMessage: 'token-message',
    nodeCount: 'node-count',
    eventCount: 'event-count',
    whoami: 'whoami',
    signOut: 'sign-out',
  });
  el.connText = el.conn.querySelector('.conn-text');
  socket = createSocket(live, {
    changes: onLiveChanges,
    status: setConn,
    rejected: tokenRejected,
    noToken: () => showTokenForm(''),
  });
  onTokenRejected(tokenRejected);

  buildNav();
  const bodies = new Map();
  for (const [id, r] of rooms) bodies.set(id, buildSection(id, r));
  loadStyles();
  for (const [id, r] of rooms) mountRoom(id, r, bodies.get(id));
  watchLocks(el.rooms); // what rooms render later is locked as it appears
  setWho(null); // everything that needs a role is locked until whoami answers

  const { route } = routeFromAddress();
  el.signOut.hidden = !getToken(); // the token may have come with the address just now
  applyRoute(route);
  window.addEventListener('hashchange', onAddressChange);
  window.addEventListener('popstate', onAddressChange);

  el.tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = el.tokenInput.value.trim();
    if (!t) {
      el.tokenMessage.textContent = 'enter a token';
      return;
    }
    setToken(t);
    el.tokenInput.value = '';
    signedIn();
  });
  el.signOut.addEventListener('click', signOut);

  setInterval(() => {
    if (current) call(rooms.get(current.room), 'tick', Date.now());
  }, 1000);
  socket.connect();
  if (getToken()) loadWhoami(); // stored, or just taken from the address
}
