// Small DOM helpers every room uses.

/** An element with a class and text content. */
export function h(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined && content !== null) e.textContent = String(content);
  return e;
}

/** `h` plus children (elements or strings). */
export function hc(tag, cls, children) {
  const e = h(tag, cls);
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

/** A button of the dashboard's style. */
export function button(label, cls, title) {
  const b = h('button', 'btn' + (cls ? ' ' + cls : ''), label);
  b.type = 'button';
  if (title) {
    b.title = title;
    b.setAttribute('aria-label', title);
  }
  return b;
}

/** A link into another room (`href` is its deep link). */
export function roomLink(href, label, cls) {
  const a = h('a', cls || 'room-link', label);
  a.href = href;
  return a;
}

/** A thin usage bar, 0..100 (null: unknown); amber from 75, red from 90. */
export function bar(percent) {
  const wrap = h('div', 'bar');
  const fill = h('div', 'bar-fill');
  if (percent === null) {
    wrap.classList.add('bar-empty');
  } else {
    fill.style.width = percent.toFixed(1) + '%';
    if (percent >= 90) wrap.classList.add('crit');
    else if (percent >= 75) wrap.classList.add('warn');
  }
  wrap.appendChild(fill);
  return wrap;
}

/** Shows `message` in an error box, or hides it when there is none. */
export function showError(target, message) {
  target.textContent = message || '';
  target.hidden = !message;
}

/**
 * A list's placeholder line (`.empty-note`, a div, first in `container`): shown with
 * `message`, or removed when the message is null (the list has items).
 */
export function emptyNote(container, message) {
  let note = container.querySelector(':scope > .empty-note');
  if (message === null) {
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = h(container.tagName === 'OL' || container.tagName === 'UL' ? 'li' : 'div', 'empty-note');
    container.insertBefore(note, container.firstChild);
  }
  note.textContent = message;
}

/**
 * Keeps `container`'s children in the order of `items`, one element per key. `entries` maps a
 * key to its `{ el, … }`; `make(item, entry)` returns the entry to show (the one given, to keep
 * it as it is, or a new one to replace it). Entries whose key is gone are removed, and handed
 * to `drop` when given.
 */
export function reconcile(container, items, keyOf, entries, make, drop) {
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    seen.add(key);
    const old = entries.get(key);
    const entry = make(item, old);
    if (old && old !== entry) old.el.replaceWith(entry.el);
    entries.set(key, entry);
    const expected = prev ? prev.nextSibling : container.firstChild;
    if (expected !== entry.el) container.insertBefore(entry.el, expected);
    prev = entry.el;
  }
  for (const [key, entry] of entries) {
    if (seen.has(key)) continue;
    entry.el.remove();
    entries.delete(key);
    if (drop) drop(entry);
  }
}

/** Elements by id: `byIds({ form: 'studio-form' })` -> `{ form: <form> }`. */
export function byIds(ids) {
  const out = {};
  for (const key of Object.keys(ids)) out[key] = document.getElementById(ids[key]);
  return out;
}

/** The closest element matching `selector` from an event's target, or null. */
export function closest(ev, selector) {
  return ev.target instanceof Element ? ev.target.closest(selector) : null;
}

/** Calls `fn(el)` on Enter or Space on an element matching `selector` (a keyboard "click"). */
export function onActivateKey(container, selector, fn) {
  container.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter' && ev.key !== ' ') return;
    if (ev.target instanceof Element && ev.target.matches(selector)) {
      ev.preventDefault();
      fn(ev.target);
    }
  });
}

const SVG = 'http://www.w3.org/2000/svg';

/** A 16px line icon from an SVG path. */
export function icon(path) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const p = document.createElementNS(SVG, 'path');
  p.setAttribute('d', path);
  svg.appendChild(p);
  return svg;
}

/**
 * Makes `select`'s options exactly `values` (rebuilt only when they differ) and selects
 * `chosen`, or the first value when `chosen` is null. Returns what is selected (null when none).
 */
export function syncSelect(select, values, chosen) {
  const have = Array.from(select.options).map((o) => o.value);
  if (have.join('\n') !== values.join('\n')) {
    select.textContent = '';
    for (const value of values) select.appendChild(h('option', null, value));
  }
  const picked = chosen === null && values.length ? values[0] : chosen;
  if (picked !== null) select.value = picked;
  return picked;
}
