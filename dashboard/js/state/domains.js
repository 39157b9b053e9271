// Domains as `GET /api/domains` answers them, and the add form's body. Pure: no DOM.

import { isObj, num, str } from './format.js';

function applied(a) {
  if (!isObj(a)) return null;
  return { state: str(a.state) || 'pending', detail: str(a.detail) || '', error: str(a.error) || '', at: str(a.at) };
}

/**
 * A certificate as seen (`valid`, `expired`, `wrong_name`, `missing`) → the cell's part: its
 * state, and in words who issued it and until when (or what went wrong).
 */
function certificate(c) {
  if (!isObj(c)) return null;
  const until = str(c.not_after) ? 'until ' + str(c.not_after).slice(0, 10) : '';
  const issuer = str(c.issuer) ? str(c.issuer).replace(/^CN=/, '') : '';
  return {
    state: str(c.state) || 'missing',
    detail: [issuer, until].filter(Boolean).join(', '),
    error: str(c.error) || (c.state === 'wrong_name' ? 'it names ' + (Array.isArray(c.names) ? c.names.map(str).join(', ') : '?') : ''),
    at: str(c.at),
  };
}

/** `[{ host, target (words), route, dns (null without a record), certificate (null: not looked at) }]` by host. */
export function normalizeDomains(data) {
  const list = isObj(data) && Array.isArray(data.domains) ? data.domains : [];
  return list
    .filter((d) => isObj(d) && str(d.host))
    .map((d) => {
      const t = isObj(d.target) ? d.target : {};
      const target = t.kind === 'app' ? 'app ' + (str(t.app) || '?') + ' port ' + (num(t.port) || '?') : 'upstream ' + (str(t.address) || '?');
      const dns = isObj(d.dns) ? d.dns : null;
      return {
        host: str(d.host),
        target: target,
        route: applied(d.route) || { state: 'pending', detail: '', error: '', at: null },
        certificate: certificate(d.certificate),
        dns: dns ? Object.assign({ zone: str(dns.zone) || '?', content: str(dns.content) || '?', proxied: !!dns.proxied }, applied(d.dns_record) || { state: 'pending', detail: '', error: '' }) : null,
      };
    })
    .sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
}

/**
 * The add form → `{ body }` or `{ error }`: a host, then an app with its port or an upstream,
 * and a DNS record only when a zone is given.
 */
export function domainBody(form) {
  const host = (form.host || '').trim().toLowerCase();
  if (!host) return { error: 'a host name is needed' };
  const body = { host: host };
  const app = (form.app || '').trim();
  const upstream = (form.upstream || '').trim();
  if (app && upstream) return { error: 'an app or an upstream, not both' };
  if (app) {
    const port = Number(form.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return { error: 'the app needs its port (1-65535)' };
    body.app = app;
    body.port = port;
  } else if (upstream) {
    body.upstream = upstream;
  } else {
    return { error: 'choose an app (and its port) or give an upstream host:port' };
  }
  const zone = (form.zone || '').trim().toLowerCase();
  if (zone) {
    const content = (form.content || '').trim();
    if (!content) return { error: 'the DNS record needs what it points at (an address or a host)' };
    body.dns = { zone: zone, content: content, proxied: !!form.proxied };
  }
  return { body: body };
}
