import { test } from 'node:test';
import assert from 'node:assert/strict';

import { installBody, normalizeMarket, resourceWords } from '../js/state/market.js';

test('templates by category, broken catalogs kept, odd links dropped', () => {
  const m = normalizeMarket({
    templates: [
      { id: 'plex', title: 'Plex', category: 'media', docs: 'https://plex.tv', resources: { memory_mib: 2048, vram_mib: 1024 }, inputs: [{ name: 'PLEX_CLAIM', prompt: 'claim', secret: true }] },
      { id: 'ollama', title: 'Ollama', category: 'ai', docs: 'javascript:alert(1)' },
      { title: 'no id' },
    ],
    broken: [{ catalog: 'http://x', template: 'bad', error: 'no image' }, { catalog: 'http://y', error: 'unreachable' }],
  });
  assert.deepEqual(m.templates.map((t) => t.id), ['ollama', 'plex']);
  assert.equal(m.templates[0].docs, null);
  assert.equal(resourceWords(m.templates[1]), 'needs 2 GiB RAM \u00b7 1 GiB VRAM');
  assert.equal(resourceWords(m.templates[0]), '');
  assert.equal(m.broken.length, 2);
  assert.equal(m.broken[1].template, null);
});

test('the install body: defaults left to the server, required inputs named', () => {
  const t = { inputs: [{ name: 'PORT', default: '8080' }, { name: 'CLAIM', default: null, secret: true }] };
  assert.deepEqual(installBody(t, '', ['n1'], { PORT: '' }), { body: { nodes: ['n1'], inputs: {} }, missing: ['CLAIM'] });
  assert.deepEqual(installBody(t, ' site ', ['n1'], { PORT: '9090', CLAIM: 'c' }), { body: { nodes: ['n1'], inputs: { PORT: '9090', CLAIM: 'c' }, name: 'site' }, missing: [] });
});
