// What the caller's role may not do, locked in the page: every element with `data-needs="<role>"`
// (a button, a form, an input) whose role is above the caller's is disabled with the controls
// inside it, gets the class `locked` and the title "needs the <role> role". An element with
// `data-needs-mode="hide"` (a nav entry) is hidden instead. Markup a room renders later is
// locked as it appears (a MutationObserver), and a click or submit that reaches a locked
// element anyway is stopped. Only what this module disabled or hid is given back when the role
// allows it again; what a room disabled for its own reasons stays so.

import { needsLabel, roleAllows } from './state/access.js';

const CONTROLS = 'button, input, select, textarea, fieldset';
let role = null; // the caller's role; null: not known (everything locked)
let watching = null; // the MutationObserver, once started
let guarded = false;

function controlsOf(target) {
  const list = target.matches(CONTROLS) ? [target] : [];
  for (const c of target.querySelectorAll(CONTROLS)) list.push(c);
  return list;
}

function lockControl(c) {
  if (c.disabled) return;
  c.disabled = true;
  c.dataset.lockDisabled = '1';
}

function unlockControl(c) {
  if (c.dataset.lockDisabled === undefined) return;
  delete c.dataset.lockDisabled;
  c.disabled = false;
}

function setLockTitle(target, label) {
  if (target.dataset.lockTitle === undefined) target.dataset.lockTitle = target.getAttribute('title') === null ? '' : target.getAttribute('title');
  if (target.getAttribute('title') !== label) target.setAttribute('title', label);
}

function restoreTitle(target) {
  if (target.dataset.lockTitle === undefined) return;
  const before = target.dataset.lockTitle;
  delete target.dataset.lockTitle;
  if (before === '') target.removeAttribute('title');
  else target.setAttribute('title', before);
}

/** Locks or unlocks one `[data-needs]` element for the current role. */
function applyOne(target) {
  const needed = target.dataset.needs;
  const hide = target.dataset.needsMode === 'hide';
  if (roleAllows(role, needed)) {
    if (!target.classList.contains('locked')) return;
    target.classList.remove('locked');
    restoreTitle(target);
    if (hide) {
      if (target.dataset.lockHidden !== undefined) target.hidden = false;
      delete target.dataset.lockHidden;
    } else {
      for (const c of controlsOf(target)) if (!c.closest('.locked')) unlockControl(c); // a locked ancestor still holds it
    }
    return;
  }
  if (!target.classList.contains('locked')) target.classList.add('locked');
  setLockTitle(target, needsLabel(needed));
  if (hide) {
    if (!target.hidden) {
      target.hidden = true;
      target.dataset.lockHidden = '1';
    }
  } else {
    for (const c of controlsOf(target)) lockControl(c);
  }
}

/** Applies the current role to every `[data-needs]` element in `root`, inside or around it. */
export function applyLocks(root) {
  if (!root || typeof root.querySelectorAll !== 'function') return;
  const targets = [];
  for (let e = root.closest ? root.closest('[data-needs]') : null; e; e = e.parentElement ? e.parentElement.closest('[data-needs]') : null) targets.push(e);
  targets.reverse(); // outermost first: an inner element unlocks only once no ancestor locks it
  for (const e of root.querySelectorAll('[data-needs]')) targets.push(e);
  for (const t of targets) applyOne(t);
}

/** Sets the caller's role (null: unknown) and applies it to the whole page. */
export function setRole(next, root) {
  role = next || null;
  applyLocks(root || document.body);
}

function onMutations(records) {
  const roots = new Set();
  for (const r of records) {
    if (r.type === 'childList') {
      for (const n of r.addedNodes) if (n.nodeType === 1) roots.add(n);
    } else if (r.type === 'attributes' && r.target.nodeType === 1) {
      const t = r.target;
      if (r.attributeName === 'data-needs') roots.add(t);
      // A room enabled a control that a lock holds (its busy state ended): disable it again.
      else if (r.attributeName === 'disabled' && !t.disabled && t.closest('.locked')) roots.add(t);
    }
  }
  for (const n of roots) if (n.isConnected) applyLocks(n);
}

function guard(ev) {
  const t = ev.target instanceof Element ? ev.target.closest('.locked') : null;
  if (!t || t.dataset.needsMode === 'hide') return;
  ev.preventDefault();
  ev.stopImmediatePropagation();
}

/** Keeps `root` locked as it changes (rooms re-render their lists). Once. */
export function watchLocks(root) {
  if (!guarded) {
    guarded = true;
    document.addEventListener('click', guard, true);
    document.addEventListener('submit', guard, true);
  }
  if (watching || typeof MutationObserver !== 'function') return;
  watching = new MutationObserver(onMutations);
  watching.observe(root, { childList: true, subtree: true, attributes: true, attributeFilter: ['disabled', 'data-needs'] });
}
