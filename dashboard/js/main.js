// Boot: the dashboard's rooms in nav order, then the shell starts. A new room is one module in
// rooms/ (its shape: see shell.js) and its name in this list; nothing else changes. A room that
// fails to load is left out (and logged): the others still work.

import { registerRoom, start } from './shell.js';

const ROOMS = ['overview', 'setup', 'nodes', 'services', 'containers', 'hosts', 'apps', 'market', 'domains', 'approvals', 'aidev', 'events', 'dlq', 'storage', 'studio', 'video', 'chat', 'streambot', 'access'];

const loaded = await Promise.allSettled(ROOMS.map((name) => import('./rooms/' + name + '.js')));
loaded.forEach((result, i) => {
  try {
    if (result.status !== 'fulfilled') throw result.reason;
    registerRoom(result.value.default);
  } catch (e) {
    console.error('dashboard room ' + ROOMS[i] + ' failed to load', e);
  }
});
start();
