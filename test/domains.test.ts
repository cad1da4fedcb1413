/**
 * Custom domains (issue #15): claimed per tenant, normalised, verified by a DNS TXT record (dns2 on
 * loopback) or an HTTP token (a server on loopback), one tenant per verified name, resolved from the
 * Host header in the server and the app plugins, dropped at once on removal (in every process), and
 * re-verified on a schedule that notices a domain that moved away.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { tenantryPlugin } from '../src/app-plugins/fastify.js';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { startLoopbackDns, type LoopbackDns } from './helpers/loopback-dns.js';
import { Tenantry, normalizeDomain, isTenantryError } from '../src/index.js';
import { buildServer } from '../src/server/app.js';
import { resolveRequestTenant } from '../src/keys/authorize.js';
import { checkHttp } from '../src/domains/checks.js';

const ADMIN = 'domains-test-operator-token-0123456789abcdef';
let inst: TestInstallation;
let app: FastifyInstance;
let dns: LoopbackDns;
let web: http.Server;
let webPort = 0;
/** path -> body the loopback web server answers with (200); other paths 404 */
const served = new Map<string, string>();
/** path -> where the loopback web server redirects */
const redirects = new Map<string, string>();

before(async () => {
  dns = await startLoopbackDns();
  web = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const to = redirects.get(path);
    if (to) { res.writeHead(302, { location: to }); res.end(); return; }
    const body = served.get(path);
    if (body === undefined) { res.writeHead(404); res.end('not here'); return; }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(body);
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as AddressInfo).port;
  inst = await freshInstallation({
    adminKey: ADMIN, dnsServers: [dns.server], domainVerifyHttpPort: webPort, domainVerifyAllowPrivate: true, domainVerifyTimeoutMs: 2000,
    maxDomainsPerTenant: 5,
  });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  await dns?.close();
  web?.closeAllConnections();
  await new Promise<void>((r) => (web ? web.close(() => r()) : r()));
});

const op = { authorization: `Bearer ${ADMIN}` };

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('domains are normalised: case, trailing dot, IDN to punycode', () => {
  assert.equal(normalizeDomain('Shop.Example.COM.'), 'shop.example.com');
  assert.equal(normalizeDomain('Bücher.example'), 'xn--bcher-kva.example');
  assert.equal(normalizeDomain('xn--bcher-kva.example'), 'xn--bcher-kva.example');
});

test('hostile and malformed domains are refused with DOMAIN_INVALID', () => {
  const bad: unknown[] = [
    '1.2.3.4', '127.0.0.1.', '[::1]', '::1', '0x7f.1', '2130706433', '*.example.com', 'com', 'localhost', 'app.localhost',
    `${'a'.repeat(64)}.com`, `${'abc.'.repeat(70)}com`, 'ex\u0000ample.com', 'a\ud800b.example.com', 'http://x.example.com',
    'x.example.com:8080', 'user@x.example.com', 'x.example.com/path', 'has space.example.com', '-lead.example.com', 'trail-.example.com',
    'a..b.example.com', 'example.123', '', 'x'.repeat(5000), 42, null, { domain: 'x.com' },
  ];
  for (const d of bad) {
    assert.throws(() => normalizeDomain(d), (err: unknown) => isTenantryError(err, 'DOMAIN_INVALID'), `accepted ${JSON.stringify(d)?.slice(0, 60)}`);
  }
});

test('DNS TXT verification: refused without the record, verified with it', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-dns', name: 'DNS' });
  const d = await inst.tenantry.domains.add(t.id, 'Shop.Dns-Owner.test.');
  assert.equal(d.domain, 'shop.dns-owner.test');
  assert.equal(d.verified, false);
  assert.equal(d.txtName, '_tenantry-challenge.shop.dns-owner.test');
  await rejectsWith(inst.tenantry.domains.verify(t.id, 'shop.dns-owner.test', { method: 'dns' }), 'DOMAIN_VERIFICATION_FAILED', /TXT record _tenantry-challenge\.shop\.dns-owner\.test/);
  // a record with another value does not verify either
  dns.txt.set('_tenantry-challenge.shop.dns-owner.test', ['someone-elses-token']);
  await rejectsWith(inst.tenantry.domains.verify(t.id, 'shop.dns-owner.test', { method: 'dns' }), 'DOMAIN_VERIFICATION_FAILED');
  assert.equal((await inst.tenantry.domains.get(t.id, 'shop.dns-owner.test')).verified, false);
  dns.txt.set('_tenantry-challenge.shop.dns-owner.test', ['someone-elses-token', d.token]);
  const v = await inst.tenantry.domains.verify(t.id, 'shop.dns-owner.test');
  assert.equal(v.verified, true);
  assert.equal(v.method, 'dns');
  assert.ok(dns.queries.includes('_tenantry-challenge.shop.dns-owner.test'), 'the loopback DNS server was asked');
  const audit = await inst.tenantry.audit(t.id, { limit: 10 });
  assert.ok(audit.some((e) => e.action === 'domain.verified' && e.target === 'domain:shop.dns-owner.test'));
});

test('HTTP token verification against a loopback server; a wrong body or a 404 does not verify', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-http', name: 'HTTP' });
  const d = await inst.tenantry.domains.add(t.id, 'web.http-owner.test');
  dns.a.set('web.http-owner.test', '127.0.0.1');
  const path = `/.well-known/tenantry-challenge/${d.token}`;
  await rejectsWith(inst.tenantry.domains.verify(t.id, d.domain, { method: 'http' }), 'DOMAIN_VERIFICATION_FAILED', /answered 404/);
  served.set(path, 'not-the-token');
  await rejectsWith(inst.tenantry.domains.verify(t.id, d.domain, { method: 'http' }), 'DOMAIN_VERIFICATION_FAILED', /without this domain's token/);
  served.set(path, `${d.token}\n`);
  const v = await inst.tenantry.domains.verify(t.id, d.domain, { method: 'http' });
  assert.equal(v.verified, true);
  assert.equal(v.method, 'http');
});

test('SSRF: the HTTP check never fetches a private address unless allowed, also not through a redirect', async () => {
  dns.a.set('ssrf.attacker.test', '127.0.0.1');
  served.set('/.well-known/tenantry-challenge/tok', 'tok');
  const strict = { dnsServers: [dns.server], timeoutMs: 2000, httpPort: webPort, allowPrivate: false };
  const r = await checkHttp('ssrf.attacker.test', 'tok', strict);
  assert.equal(r.ok, false);
  assert.match((r as { reason: string }).reason, /private, loopback or link-local/);
  const okWhenAllowed = await checkHttp('ssrf.attacker.test', 'tok', { ...strict, allowPrivate: true });
  assert.equal(okWhenAllowed.ok, true, 'the same check passes when private targets are allowed (the test setting)');
  // A redirect is followed only to an address that passes the same rule. Here 127.0.0.1 counts as
  // public and 127.0.0.2 as private: the attacker's public server redirects to the internal one.
  const rule = (a: string): boolean => a !== '127.0.0.1';
  dns.a.set('redirector.attacker.test', '127.0.0.1');
  served.set('/.well-known/tenantry-challenge/tok3', 'tok3');
  redirects.set('/.well-known/tenantry-challenge/tok2', `http://127.0.0.2:${webPort}/.well-known/tenantry-challenge/tok2-internal`);
  served.set('/.well-known/tenantry-challenge/tok2-internal', 'tok2');
  const viaRedirect = await checkHttp('redirector.attacker.test', 'tok2', { ...strict, isPrivate: rule });
  assert.equal(viaRedirect.ok, false, 'a redirect into a private address is not followed');
  assert.match((viaRedirect as { reason: string }).reason, /127\.0\.0\.2, a private/);
  // while a redirect to a public address is followed
  redirects.set('/.well-known/tenantry-challenge/tok3', `http://redirector.attacker.test:${webPort}/.well-known/tenantry-challenge/tok3-moved`);
  served.set('/.well-known/tenantry-challenge/tok3-moved', 'tok3');
  assert.equal((await checkHttp('redirector.attacker.test', 'tok3', { ...strict, isPrivate: rule })).ok, true);
  // a redirect to another scheme is refused
  redirects.set('/.well-known/tenantry-challenge/tok4', 'file:///etc/passwd');
  assert.equal((await checkHttp('redirector.attacker.test', 'tok4', { ...strict, isPrivate: rule })).ok, false);
});

test('squatting: an unverified claim by another tenant does not block the true owner, and a verified domain cannot be claimed by a second tenant', async () => {
  const squatter = await inst.tenantry.tenants.create({ slug: 'dom-squatter', name: 'Squatter' });
  const owner = await inst.tenantry.tenants.create({ slug: 'dom-owner', name: 'Owner' });
  const late = await inst.tenantry.tenants.create({ slug: 'dom-late', name: 'Late' });
  const early = await inst.tenantry.domains.add(squatter.id, 'brand.owner.test');
  const mine = await inst.tenantry.domains.add(owner.id, 'brand.owner.test');
  assert.notEqual(early.token, mine.token, 'each claim has its own token');
  dns.txt.set('_tenantry-challenge.brand.owner.test', [mine.token]);
  // the squatter cannot verify: the owner's DNS holds the owner's token only
  await rejectsWith(inst.tenantry.domains.verify(squatter.id, 'brand.owner.test'), 'DOMAIN_VERIFICATION_FAILED');
  assert.equal((await inst.tenantry.domains.verify(owner.id, 'brand.owner.test')).verified, true);
  // a second tenant claiming the verified domain is refused, and learns nothing of who holds it
  const taken = await rejectsWith(inst.tenantry.domains.add(late.id, 'BRAND.owner.test.'), 'DOMAIN_TAKEN');
  assert.doesNotMatch(taken.message, new RegExp(`${owner.id}|${owner.slug}`));
  // even with its token published too, the squatter's earlier claim cannot take it over
  dns.txt.set('_tenantry-challenge.brand.owner.test', [mine.token, early.token]);
  await rejectsWith(inst.tenantry.domains.verify(squatter.id, 'brand.owner.test'), 'DOMAIN_TAKEN');
  assert.equal(await inst.tenantry.domains.tenantIdForHost('brand.owner.test'), owner.id);
  // over HTTP: 409 with the code, nothing written
  const before = await inst.su`select count(*)::int as n from tenantry_catalog.tenant_domains where domain = 'brand.owner.test'`;
  const res = await app.inject({ method: 'POST', url: `/v1/tenants/${late.id}/domains`, headers: op, payload: { domain: 'brand.owner.test' } });
  assert.equal(res.statusCode, 409);
  assert.equal(res.json().code, 'DOMAIN_TAKEN');
  const afterRows = await inst.su`select count(*)::int as n from tenantry_catalog.tenant_domains where domain = 'brand.owner.test'`;
  assert.equal(afterRows[0]!.n, before[0]!.n);
});

test('concurrent verification of one name by two tenants: exactly one wins', async () => {
  const a = await inst.tenantry.tenants.create({ slug: 'dom-race-a', name: 'Race A' });
  const b = await inst.tenantry.tenants.create({ slug: 'dom-race-b', name: 'Race B' });
  const da = await inst.tenantry.domains.add(a.id, 'race.shared.test');
  const db = await inst.tenantry.domains.add(b.id, 'race.shared.test');
  dns.txt.set('_tenantry-challenge.race.shared.test', [da.token, db.token]);
  const results = await Promise.allSettled([inst.tenantry.domains.verify(a.id, 'race.shared.test'), inst.tenantry.domains.verify(b.id, 'race.shared.test')]);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(isTenantryError(lost.reason, 'DOMAIN_TAKEN'));
  const rows = await inst.su`select count(*)::int as n from tenantry_catalog.tenant_domains where domain = 'race.shared.test' and verified_at is not null`;
  assert.equal(rows[0]!.n, 1);
});

test('a Host header for a verified domain resolves its tenant; an unverified or removed one resolves nothing', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-host', name: 'Host' });
  const d = await inst.tenantry.domains.add(t.id, 'app.host-owner.test');
  const self = (host: string) => app.inject({ method: 'GET', url: '/v1/tenant', headers: { ...op, host } });
  // unverified: names nobody
  let res = await self('app.host-owner.test');
  assert.equal(res.statusCode, 400);
  assert.equal(res.json().code, 'INVALID_INPUT');
  await assert.rejects(resolveRequestTenant(inst.tenantry, null, { host: 'app.host-owner.test' }), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  dns.txt.set('_tenantry-challenge.app.host-owner.test', [d.token]);
  await inst.tenantry.domains.verify(t.id, d.domain);
  res = await self('APP.host-owner.test:8443');
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().id, t.id);
  // the app plugins' resolution (no principal: the app authenticates its own users)
  assert.equal((await resolveRequestTenant(inst.tenantry, null, { host: 'app.host-owner.test' })).id, t.id);
  // through the app plugin (tenantry/fastify) in an app's own server
  const own = Fastify({ logger: false });
  await own.register(tenantryPlugin, { tenantry: inst.tenantry, rateLimit: false });
  own.get('/whoami', async (req) => ({ tenant: req.tenant!.id }));
  try {
    const mine = await own.inject({ method: 'GET', url: '/whoami', headers: { host: 'app.host-owner.test' } });
    assert.equal(mine.statusCode, 200, mine.body);
    assert.equal(mine.json().tenant, t.id);
    const unknown = await own.inject({ method: 'GET', url: '/whoami', headers: { host: 'unverified.host-owner.test' } });
    assert.equal(unknown.statusCode, 400, 'an unknown domain names nobody');
  } finally {
    await own.close();
  }
  // the order decides: without `domain` the host is not read
  await assert.rejects(resolveRequestTenant(inst.tenantry, null, { host: 'app.host-owner.test' }, { order: ['header', 'path'] }), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  // another tenant's key sent to this tenant's domain is refused
  const other = await inst.tenantry.tenants.create({ slug: 'dom-host-other', name: 'Other' });
  res = await app.inject({ method: 'GET', url: '/v1/tenant', headers: { authorization: `Bearer ${other.apiKey!.key}`, host: 'app.host-owner.test' } });
  assert.equal(res.statusCode, 403);
  // removed: resolves nothing at once
  await inst.tenantry.domains.remove(t.id, 'app.host-owner.test');
  res = await self('app.host-owner.test');
  assert.equal(res.statusCode, 400);
  assert.equal(await inst.tenantry.domains.tenantIdForHost('app.host-owner.test'), undefined);
  await assert.rejects(resolveRequestTenant(inst.tenantry, null, { host: 'app.host-owner.test' }), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
});

test('removing a domain stops it resolving in another process at once (NOTIFY)', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-notify', name: 'Notify' });
  const d = await inst.tenantry.domains.add(t.id, 'x.notify-owner.test');
  dns.txt.set('_tenantry-challenge.x.notify-owner.test', [d.token]);
  await inst.tenantry.domains.verify(t.id, d.domain);
  const second = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, schemaPoolSize: 0, rolePoolSize: 0 });
  try {
    // the second process caches the answer (its cache lives for a minute)
    assert.equal(await second.domains.tenantIdForHost('x.notify-owner.test'), t.id);
    await inst.tenantry.domains.remove(t.id, d.domain);
    await until('the other process to drop the domain', async () => (await second.domains.tenantIdForHost('x.notify-owner.test')) === undefined, 10_000);
  } finally {
    await second.close();
  }
});

test('re-verification notices a domain that moved away: unverified, audited, webhook event', async () => {
  await inst.tenantry.webhooks.create({ url: 'http://127.0.0.1:9/domain-events', tenant: null, events: ['domain.unverified'] });
  const t = await inst.tenantry.tenants.create({ slug: 'dom-moved', name: 'Moved' });
  const d = await inst.tenantry.domains.add(t.id, 'old.moved-owner.test');
  dns.txt.set('_tenantry-challenge.old.moved-owner.test', [d.token]);
  await inst.tenantry.domains.verify(t.id, d.domain);
  const stays = await inst.tenantry.tenants.create({ slug: 'dom-stays', name: 'Stays' });
  const s = await inst.tenantry.domains.add(stays.id, 'kept.stays-owner.test');
  dns.txt.set('_tenantry-challenge.kept.stays-owner.test', [s.token]);
  await inst.tenantry.domains.verify(stays.id, s.domain);
  assert.equal(await inst.tenantry.domains.tenantIdForHost('old.moved-owner.test'), t.id);
  // the domain moves to someone else's DNS: the record is gone
  dns.txt.delete('_tenantry-challenge.old.moved-owner.test');
  const r = await inst.tenantry.jobs.runNow('domains.reverify') as { checked: number; unverified: number };
  assert.ok(r.checked >= 2);
  const moved = await inst.tenantry.domains.get(t.id, 'old.moved-owner.test');
  assert.equal(moved.verified, false);
  assert.ok(moved.lastError);
  assert.equal((await inst.tenantry.domains.get(stays.id, 'kept.stays-owner.test')).verified, true, 'a domain still proven stays verified');
  assert.equal(await inst.tenantry.domains.tenantIdForHost('old.moved-owner.test'), undefined);
  const audit = await inst.tenantry.audit(t.id, { limit: 10 });
  assert.ok(audit.some((e) => e.action === 'domain.unverified' && e.actor === 'system'));
  const events = await inst.su`select type, payload from tenantry_catalog.webhook_events where tenant_id = ${t.id} and type = 'domain.unverified'`;
  assert.equal(events.length, 1);
  assert.equal((events[0]!.payload as { data: { domain: string } }).data.domain, 'old.moved-owner.test');
  assert.ok((await inst.tenantry.verifyAudit(t.id)).ok);
});

test('TLS ask endpoint: 200 only for a verified domain, 404 otherwise, with no tenant in the answer', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-tls', name: 'TLS' });
  const d = await inst.tenantry.domains.add(t.id, 'secure.tls-owner.test');
  const ask = (q: string) => app.inject({ method: 'GET', url: `/v1/domains/tls-ask?domain=${encodeURIComponent(q)}` });
  let res = await ask('secure.tls-owner.test');
  assert.equal(res.statusCode, 404, 'unverified');
  dns.txt.set('_tenantry-challenge.secure.tls-owner.test', [d.token]);
  await inst.tenantry.domains.verify(t.id, d.domain);
  res = await ask('secure.tls-owner.test');
  assert.equal(res.statusCode, 200, 'verified; no bearer token needed');
  assert.doesNotMatch(res.body, new RegExp(`${t.id}|${t.slug}`));
  for (const q of ['unknown.tls-owner.test', '127.0.0.1', 'x'.repeat(300), '*.tls-owner.test']) {
    res = await ask(q);
    assert.equal(res.statusCode === 404 || res.statusCode === 400, true, `${q}: ${res.statusCode}`);
    assert.doesNotMatch(res.body, new RegExp(`${t.id}|${t.slug}`));
  }
  assert.equal((await app.inject({ method: 'GET', url: '/v1/domains/tls-ask?domain=a%00b.test' })).statusCode, 400);
});

test('HTTP API: add, list, verify and remove; a tenant key reaches only its own tenant\'s domains', async () => {
  const a = await inst.tenantry.tenants.create({ slug: 'dom-api-a', name: 'API A' });
  const b = await inst.tenantry.tenants.create({ slug: 'dom-api-b', name: 'API B' });
  const keyA = { authorization: `Bearer ${a.apiKey!.key}` };
  let res = await app.inject({ method: 'POST', url: `/v1/tenants/${a.id}/domains`, headers: keyA, payload: { domain: 'api.a-owner.test' } });
  assert.equal(res.statusCode, 201, res.body);
  const token = res.json().token as string;
  res = await app.inject({ method: 'POST', url: `/v1/tenants/${a.id}/domains`, headers: keyA, payload: { domain: '10.0.0.1' } });
  assert.equal(res.statusCode, 400);
  assert.equal(res.json().code, 'DOMAIN_INVALID');
  // A's key on B's domains: 404, as for any other tenant
  res = await app.inject({ method: 'GET', url: `/v1/tenants/${b.id}/domains`, headers: keyA });
  assert.equal(res.statusCode, 404);
  res = await app.inject({ method: 'POST', url: `/v1/tenants/${b.id}/domains`, headers: keyA, payload: { domain: 'steal.b-owner.test' } });
  assert.equal(res.statusCode, 404);
  res = await app.inject({ method: 'POST', url: `/v1/tenants/${a.id}/domains/api.a-owner.test/verify`, headers: keyA, payload: {} });
  assert.equal(res.statusCode, 422);
  assert.equal(res.json().code, 'DOMAIN_VERIFICATION_FAILED');
  dns.txt.set('_tenantry-challenge.api.a-owner.test', [token]);
  res = await app.inject({ method: 'POST', url: `/v1/tenants/${a.id}/domains/api.a-owner.test/verify`, headers: keyA, payload: { method: 'dns' } });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().verified, true);
  res = await app.inject({ method: 'GET', url: `/v1/tenants/${a.id}/domains`, headers: keyA });
  assert.deepEqual((res.json() as { domain: string }[]).map((d) => d.domain), ['api.a-owner.test']);
  res = await app.inject({ method: 'DELETE', url: `/v1/tenants/${a.id}/domains/api.a-owner.test`, headers: keyA });
  assert.equal(res.statusCode, 204);
  res = await app.inject({ method: 'DELETE', url: `/v1/tenants/${a.id}/domains/api.a-owner.test`, headers: keyA });
  assert.equal(res.statusCode, 404);
  assert.equal(res.json().code, 'DOMAIN_NOT_FOUND');
});

test('a tenant cannot hoard names: past maxDomainsPerTenant a claim is refused', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-hoard', name: 'Hoard' });
  for (let i = 0; i < 5; i++) await inst.tenantry.domains.add(t.id, `n${i}.hoard.test`);
  await rejectsWith(inst.tenantry.domains.add(t.id, 'n5.hoard.test'), 'DOMAIN_LIMIT_REACHED');
  // adding one it already holds is not a new claim
  assert.equal((await inst.tenantry.domains.add(t.id, 'N0.hoard.test')).domain, 'n0.hoard.test');
});

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

/** One CLI command against this installation: its exit code and parsed --json output. */
function cli(args: string[]): Promise<{ code: number; out: unknown; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, '--json', ...args], {
      env: {
        ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_ADMIN_KEY: ADMIN, LOG_LEVEL: 'error',
        TENANTRY_SCHEMA_POOL_SIZE: '0', TENANTRY_ROLE_POOL_SIZE: '0', TENANTRY_MAX_CONNECTIONS: '4', TENANTRY_DNS_SERVERS: dns.server,
      },
      timeout: 120_000,
    }, (error, stdout, stderr) => {
      let out: unknown = null;
      try { out = JSON.parse(stdout); } catch { out = stdout; }
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, out, err: stderr });
    });
  });
}

test('CLI: tenantry domains add, verify (exit 5 until the record is there), list and remove', { timeout: 300_000 }, async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'dom-cli', name: 'CLI' });
  const added = await cli(['domains', 'add', 'dom-cli', 'Cli.Owner.test.']);
  assert.equal(added.code, 0, added.err);
  const d = added.out as { domain: string; token: string; verified: boolean };
  assert.equal(d.domain, 'cli.owner.test');
  assert.equal(d.verified, false);
  const bad = await cli(['domains', 'add', 'dom-cli', '10.1.2.3']);
  assert.equal(bad.code, 2, 'DOMAIN_INVALID is a usage error');
  const early = await cli(['domains', 'verify', 'dom-cli', 'cli.owner.test', '--method', 'dns']);
  assert.equal(early.code, 5, early.err);
  dns.txt.set('_tenantry-challenge.cli.owner.test', [d.token]);
  const verified = await cli(['domains', 'verify', 'dom-cli', 'cli.owner.test', '--method', 'dns']);
  assert.equal(verified.code, 0, verified.err);
  assert.equal((verified.out as { verified: boolean }).verified, true);
  const listed = await cli(['domains', 'list', 'dom-cli']);
  assert.deepEqual((listed.out as { domain: string }[]).map((x) => x.domain), ['cli.owner.test']);
  assert.equal(await inst.tenantry.domains.tenantIdForHost('cli.owner.test'), t.id);
  assert.equal((await cli(['domains', 'remove', 'dom-cli', 'cli.owner.test'])).code, 0);
  assert.equal((await cli(['domains', 'remove', 'dom-cli', 'cli.owner.test'])).code, 3, 'DOMAIN_NOT_FOUND');
  // the NOTIFY from the CLI's process dropped this process's cached answer
  await until('this process to forget the removed domain', async () => (await inst.tenantry.domains.tenantIdForHost('cli.owner.test')) === undefined, 10_000);
});
