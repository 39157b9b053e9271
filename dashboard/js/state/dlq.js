// Dead letters: what the bus set aside after its consumer gave up on it (`GET /api/dlq`), and
// whether it can be sent back (`POST /api/dlq/{seq}/replay`). Pure.

import { isObj, num, safeJson, str } from './format.js';

export const HISTORY_NOTE = 'events are history \u2014 fix the reader, then rebuild its projection';

function normalizeLetter(raw) {
  if (!isObj(raw) || num(raw.seq) === null) return null;
  return {
    seq: raw.seq,
    subject: str(raw.subject),
    origin: str(raw.origin),
    origin_stream: str(raw.origin_stream),
    origin_subject: str(raw.origin_subject),
    origin_seq: num(raw.origin_seq),
    reason: str(raw.reason),
    dead_lettered_at: str(raw.dead_lettered_at),
    size: num(raw.size),
    payload: raw.payload,
    replayable: raw.replayable === true,
    not_replayable_because: str(raw.not_replayable_because),
  };
}

/** `GET /api/dlq`'s answer as `{ letters, total }`, newest first; junk rows are dropped. */
export function normalizeLetters(data) {
  const list = isObj(data) && Array.isArray(data.letters) ? data.letters.map(normalizeLetter).filter(Boolean) : [];
  list.sort((a, b) => b.seq - a.seq);
  const total = isObj(data) && num(data.total) !== null ? data.total : list.length;
  return { letters: list, total: Math.max(total, list.length) };
}

/** Why a letter cannot be replayed (the server's reason when it gives one), or null when it can. */
export function replayBlocked(letter) {
  if (!letter) return 'unknown dead letter';
  if (letter.replayable) return null;
  if (letter.not_replayable_because) return letter.not_replayable_because;
  if (letter.origin_stream === 'EVENTS') return HISTORY_NOTE;
  return 'not replayable';
}

/** The payload as text: JSON pretty-printed, a string (a payload that was not JSON) as it is. */
export function payloadText(payload) {
  if (typeof payload === 'string') return payload;
  if (payload === undefined) return '';
  return safeJson(payload, 2);
}

/**
 * What a replay answer means: `{ ok, replayed, message }`. A 409 (already replayed) counts as
 * replayed: the letter is back on its subject either way.
 */
export function replayOutcome(status, body, errorMessage) {
  if (status === 202 || status === 200) {
    const to = isObj(body) ? str(body.replayed_to) : null;
    return { ok: true, replayed: true, message: 'replayed' + (to ? ' to ' + to : '') };
  }
  if (status === 409) return { ok: false, replayed: true, message: errorMessage || 'already replayed' };
  return { ok: false, replayed: false, message: errorMessage || 'replay failed' };
}
