import { test } from 'node:test';
import assert from 'node:assert/strict';

import { domainBody, normalizeDomains } from '../js/state/domains.js';

test('domains by host, with what each half of them did', () => {
  const d = normalizeDomains({ domains: [
    { host: 'shop.example.com', target: { kind: 'app', app: 'shop', port: 8080 }, dns: { zone: 'example.com', content: '203.0.113.1', proxied: true },
      route: { state: 'applied', detail: '10.0.0.5:8080' }, dns_record: { state: 'failed', error: 'cloudflare refused (403): Authentication error' },
      certificate: { state: 'valid', issuer: 'CN=Caddy Local Authority - ECC Intermediate', not_after: '2026-12-08T01:02:03Z', names: ['shop.example.com'] } },
    { host: 'api.example.com', target: { kind: 'upstream', address: '127.0.0.1:9000' }, route: { state: 'failed', error: 'caddy answered 400' } },
    { nope: true },
  ] });
  assert.deepEqual(d.map((x) => x.host), ['api.example.com', 'shop.example.com']);
  assert.equal(d[0].target, 'upstream 127.0.0.1:9000');
  assert.equal(d[0].dns, null);
  assert.equal(d[1].target, 'app shop port 8080');
  assert.equal(d[1].dns.state, 'failed');
  assert.ok(d[1].dns.proxied);
  assert.equal(d[0].certificate, null);
  assert.deepEqual([d[1].certificate.state, d[1].certificate.detail], ['valid', 'Caddy Local Authority - ECC Intermediate, until 2026-12-08']);
  const wrong = normalizeDomains({ domains: [{ host: 'a.test', route: {}, certificate: { state: 'wrong_name', names: ['b.test'] } }] });
  assert.equal(wrong[0].certificate.error, 'it names b.test');
});

test('the add form: an app with its port or an upstream, DNS only with a zone', () => {
  assert.deepEqual(domainBody({ host: ' Shop.Example.com ', app: 'shop', port: '8080' }), { body: { host: 'shop.example.com', app: 'shop', port: 8080 } });
  assert.equal(domainBody({ host: 'x.com', app: 'shop', port: '' }).error, 'the app needs its port (1-65535)');
  assert.equal(domainBody({ host: 'x.com', app: 'a', port: '1', upstream: 'h:1' }).error, 'an app or an upstream, not both');
  assert.deepEqual(domainBody({ host: 'x.com', upstream: 'h:1', zone: 'x.com', content: '203.0.113.9', proxied: true }).body.dns, { zone: 'x.com', content: '203.0.113.9', proxied: true });
  assert.equal(domainBody({ host: 'x.com', upstream: 'h:1', zone: 'x.com' }).error, 'the DNS record needs what it points at (an address or a host)');
  assert.equal(domainBody({}).error, 'a host name is needed');
});
