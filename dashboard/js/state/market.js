// The marketplace as `GET /api/marketplace` answers it: templates by category and title, and
// what could not be used (a catalog, or one template of it). Pure: no DOM.

import { isObj, num, str } from './format.js';

/** `{ templates: [{ id, catalog, title, description, docs, category, version, memory, vram, inputs }], broken }` */
export function normalizeMarket(data) {
  const d = isObj(data) ? data : {};
  const templates = (Array.isArray(d.templates) ? d.templates : [])
    .filter((t) => isObj(t) && str(t.id))
    .map((t) => {
      const resources = isObj(t.resources) ? t.resources : {};
      return {
        id: str(t.id),
        catalog: str(t.catalog) || 'builtin',
        title: str(t.title) || str(t.id),
        description: str(t.description) || '',
        docs: /^https:\/\//.test(str(t.docs) || '') ? str(t.docs) : null,
        category: str(t.category) || 'other',
        version: num(t.version),
        memory: num(resources.memory_mib) || 0,
        vram: num(resources.vram_mib) || 0,
        inputs: (Array.isArray(t.inputs) ? t.inputs : []).filter((i) => isObj(i) && str(i.name)).map((i) => ({
          name: str(i.name),
          prompt: str(i.prompt) || '',
          default: str(i.default),
          secret: !!i.secret,
        })),
      };
    })
    .sort((a, b) => (a.category + a.title < b.category + b.title ? -1 : 1));
  const broken = (Array.isArray(d.broken) ? d.broken : []).filter(isObj).map((b) => ({
    catalog: str(b.catalog) || '?',
    template: str(b.template),
    error: str(b.error) || '?',
  }));
  return { templates: templates, broken: broken };
}

/** "needs 8 GiB RAM · 8 GiB VRAM" (empty when it says nothing). */
export function resourceWords(t) {
  const gib = (mib) => (mib >= 1024 ? (mib / 1024).toFixed(mib % 1024 ? 1 : 0) + ' GiB' : mib + ' MiB');
  const parts = [];
  if (t.memory) parts.push(gib(t.memory) + ' RAM');
  if (t.vram) parts.push(gib(t.vram) + ' VRAM');
  return parts.length ? 'needs ' + parts.join(' \u00b7 ') : '';
}

/**
 * The install body from the form's values: inputs left empty fall back to their defaults (left
 * out); a required one left empty is named in `missing`.
 */
export function installBody(template, name, nodes, values) {
  const inputs = {};
  const missing = [];
  for (const input of template.inputs) {
    const v = (values[input.name] || '').trim();
    if (v) inputs[input.name] = v;
    else if (input.default === null || input.default === undefined) missing.push(input.name);
  }
  const body = { nodes: nodes, inputs: inputs };
  if (name && name.trim()) body.name = name.trim();
  return { body: body, missing: missing };
}
