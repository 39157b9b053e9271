// Value checks and formatting shared by every room. Pure: no DOM, loadable in Node.

export const DASH = '\u2014';
export const GIB = 1024 * 1024 * 1024;
const SUMMARY_CHARS = 120;

export function isObj(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A finite number, or null. */
export function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A string (numbers are written out), or null. */
export function str(v) {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return null;
}

/** What to show for a value: the dash when there is none. */
export function text(v) {
  const s = str(v);
  return s === null || s === '' ? DASH : s;
}

/** The value as a string, '' when absent (for data attributes and form values). */
export function plain(v) {
  return v === undefined || v === null ? '' : String(v);
}

/** Milliseconds since the epoch, or null. */
export function parseTime(v) {
  if (typeof v !== 'string' || v === '') return null;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : null;
}

export function fmtBytes(v) {
  const n = num(v);
  if (n === null || n < 0) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let x = n;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  const digits = i === 0 ? 0 : x >= 100 ? 0 : x >= 10 ? 1 : 2;
  return x.toFixed(digits) + ' ' + units[i];
}

export function fmtGiB(v) {
  const n = num(v);
  if (n === null || n < 0) return DASH;
  const g = n / GIB;
  return g >= 100 ? g.toFixed(0) : g.toFixed(1);
}

/** "used / total GiB", or the dash when neither is known. */
export function fmtUsage(used, total) {
  if (num(used) === null && num(total) === null) return DASH;
  return fmtGiB(used) + ' / ' + fmtGiB(total) + ' GiB';
}

export function fmtPercent(v) {
  const n = num(v);
  return n === null ? DASH : n.toFixed(1) + '%';
}

/** used/total as 0..100, or null when it cannot be said. */
export function ratioPercent(used, total) {
  const u = num(used);
  const t = num(total);
  if (u === null || t === null || t <= 0) return null;
  return Math.max(0, Math.min(100, (u / t) * 100));
}

export function fmtAge(ms) {
  if (ms === null || !Number.isFinite(ms)) return DASH;
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + 's ago';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm ago';
  const h = Math.floor(m / 60);
  if (h < 48) return h + 'h ago';
  return Math.floor(h / 24) + 'd ago';
}

/** The age of an ISO time at `now`, e.g. "3m ago". */
export function fmtSince(iso, now) {
  const t = parseTime(iso);
  return t === null ? DASH : fmtAge(now - t);
}

export function fmtUptime(v) {
  const n = num(v);
  if (n === null || n < 0) return DASH;
  const d = Math.floor(n / 86400);
  const h = Math.floor((n % 86400) / 3600);
  const m = Math.floor((n % 3600) / 60);
  if (d > 0) return d + 'd ' + h + 'h';
  if (h > 0) return h + 'h ' + m + 'm';
  return m + 'm';
}

function pad2(n) {
  return n < 10 ? '0' + n : String(n);
}

/** hh:mm:ss in local time. */
export function fmtClock(v) {
  const t = parseTime(v);
  if (t === null) return DASH;
  const d = new Date(t);
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}

export function safeJson(v, indent) {
  try {
    const s = JSON.stringify(v, null, indent);
    return s === undefined ? DASH : s;
  } catch (_e) {
    return DASH;
  }
}

/** One line of JSON, cut at a readable length. */
export function summarize(data) {
  if (data === undefined || data === null) return DASH;
  const s = safeJson(data);
  return s.length > SUMMARY_CHARS ? s.slice(0, SUMMARY_CHARS) + '\u2026' : s;
}

export function shortId(v) {
  const s = str(v);
  return s === null || s === '' ? DASH : s.slice(0, 8);
}

/** The random end of a UUIDv7 (its start is a timestamp, the same for ids made together). */
export function tailId(v) {
  const s = str(v);
  return s === null || s === '' ? DASH : s.slice(-8);
}

export function truncate(v, n) {
  const s = str(v);
  if (s === null) return '';
  return s.length > n ? s.slice(0, Math.max(0, n - 1)) + '\u2026' : s;
}

/** "1 node", "3 nodes". */
export function plural(n, one, many) {
  return n + ' ' + (n === 1 ? one : many || one + 's');
}
