// What to tell the user when a REST call fails. Pure.

import { fmtBytes, isObj, str } from './format.js';
import { MAX_INPUT_BYTES } from './studio.js';

/** The server's own message: `{"error": "…"}` or `{"error": {"message": "…"}}`; else null. */
export function serverMessage(body) {
  if (!isObj(body)) return null;
  if (typeof body.error === 'string') return body.error || null;
  return isObj(body.error) ? str(body.error.message) : null;
}

/** The message to show for a failed REST call: the server's message, with the status's meaning. */
export function apiErrorMessage(status, body) {
  const message = serverMessage(body);
  switch (status) {
    case 403: // the token is good, its role is not enough (not a rejected token)
      return message || 'not allowed: this needs a higher role than your token has';
    case 429:
      return 'queue full: ' + (message || 'too many render jobs are waiting; try again later');
    case 413:
      return 'too large: ' + (message || 'input images may be at most ' + fmtBytes(MAX_INPUT_BYTES));
    case 415:
      return 'unsupported type: ' + (message || 'images must be PNG or JPEG');
    default:
      if (message) return message;
      return status ? 'request failed (HTTP ' + status + ')' : 'request failed';
  }
}
