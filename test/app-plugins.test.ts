/**
 * tenantry/fastify, tenantry/express and tenantry/hono inside an app's own server: the example apps in
 * examples/ started on real ports, each run through the same matrix: who may call (no key, a bad key,
 * a key, a key naming another tenant), tenant resolution by key, header, subdomain and path in the
 * configured order, withTenant bound to the request's tenant, the rate limit's 429, and errors as
 * problem+json.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import type { Tenant } from '../src/index.js';
import type { TenantryAppOptions } from '../src/app-plugins/request-tenant.js';
import { start as startFastify } from '../examples/fastify-app.js';
import { start as startExpress } from '../examples/express-app.js';
import { start as startHono } from '../examples/hono-app.js';

type Start = typeof startFastify;
const APPS: [string, Start][] = [['fastify', startFastify], ['express', startExpress], ['hono', startHono]];

let inst: TestInstallation;
let a: Tenant & { apiKey?: { key: string } };
let b: Tenant & { apiKey?: { key: string } };

before(async () => {
  inst = await freshInstallation();
  const tag = randomBytes(2).toString('hex');
  a = await inst.tenantry.tenants.create({ slug: `plug-a-${tag}`, isolation: 'schema' });
  b = await inst.tenantry.tenants.create({ slug: `plug-b-${tag}`, isolation: 'pooled' });
});
after(async () => { await inst?.cleanup(); });

async function call(url: string, init: { token?: string; headers?: Record<string, string>; method?: string; body?: unknown } = {}): Promise<{ status: number; type: string; body: Record<string, unknown> & { code?: string }; headers: Headers }> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
  const text = await res.text();
  return { status: res.status, type: (res.headers.get('content-type') ?? '').split(';')[0]!, body: text ? JSON.parse(text) : {}, headers: res.headers };
}

/** fetch will not send another Host header: node:http does. */
function getWithHost(url: string, host: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { host } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
    });
    req.on('error', reject);
  });
}

async function withApp<T>(startApp: Start, opts: Omit<TenantryAppOptions, 'tenantry'>, fn: (url: string) => Promise<T>): Promise<T> {
  const app = await startApp(inst.tenantry, opts);
  try { return await fn(app.url); } finally { await app.close(); }
}

for (const [name, startApp] of APPS) {
  test(`${name}: the auth matrix, and errors as problem+json`, async () => {
    await withApp(startApp, {}, async (url) => {
      const none = await call(`${url}/me`);
      assert.equal(none.status, 400, 'no key and nothing naming a tenant');
      assert.equal(none.type, 'application/problem+json');
      assert.equal(none.body.code, 'INVALID_INPUT');
      const bad = await call(`${url}/me`, { token: `tnt_live_${'x'.repeat(12)}_${'y'.repeat(40)}` });
      assert.equal(bad.status, 401);
      assert.equal(bad.type, 'application/problem+json');
      const ok = await call(`${url}/me`, { token: a.apiKey!.key });
      assert.equal(ok.status, 200);
      assert.equal(ok.body.tenant, a.slug, 'the key names its tenant');
      assert.ok(ok.headers.get('ratelimit-limit'), 'RateLimit-* headers');
      const crossing = await call(`${url}/me`, { token: a.apiKey!.key, headers: { 'x-tenant-id': b.slug } });
      assert.equal(crossing.status, 403, "a key naming another tenant's header is refused");
      assert.equal(crossing.body.code, 'FORBIDDEN');
      const boom = await call(`${url}/boom`, { token: a.apiKey!.key });
      assert.equal(boom.status, 403);
      assert.equal(boom.type, 'application/problem+json', 'a TenantryError from a handler is problem+json');
      assert.equal(boom.body.code, 'FORBIDDEN');
      assert.equal((await call(`${url}/healthz`)).status, 200);
    });
    await withApp(startApp, { requireApiKey: true }, async (url) => {
      const r = await call(`${url}/me`, { headers: { 'x-tenant-id': a.slug } });
      assert.equal(r.status, 401, 'requireApiKey: a header alone is not enough');
      assert.equal(r.body.code, 'UNAUTHORIZED');
    });
  });

  test(`${name}: tenant resolution by header, subdomain and path, in the configured order`, async () => {
    await withApp(startApp, { baseDomain: 'example.test' }, async (url) => {
      assert.equal((await call(`${url}/me`, { headers: { 'x-tenant-id': b.slug } })).body.tenant, b.slug, 'by header');
      assert.equal((await getWithHost(`${url}/me`, `${a.slug}.example.test`)).tenant, a.slug, 'by subdomain');
      assert.equal((await call(`${url}/t/${b.slug}/me`)).body.tenant, b.slug, 'by path');
      const disagree = await call(`${url}/t/${b.slug}/me`, { headers: { 'x-tenant-id': a.slug } });
      assert.equal(disagree.status, 400, 'header and path naming different tenants');
      assert.equal((await call(`${url}/me`, { headers: { 'x-tenant-id': 'no-such-tenant' } })).status, 404);
    });
    // order: only the path counts; the header is not consulted at all
    await withApp(startApp, { order: ['path'] }, async (url) => {
      assert.equal((await call(`${url}/t/${a.slug}/me`, { headers: { 'x-tenant-id': b.slug } })).body.tenant, a.slug, 'the header is ignored');
      assert.equal((await call(`${url}/me`, { headers: { 'x-tenant-id': b.slug } })).status, 400, 'no path, no tenant');
      assert.equal((await call(`${url}/t/${a.slug}/me`, { token: b.apiKey!.key })).body.tenant, a.slug, 'keys are not a source in this order');
    });
  });

  test(`${name}: withTenant is bound to the request's tenant`, async () => {
    await withApp(startApp, {}, async (url) => {
      const mark = `${name}-${randomBytes(2).toString('hex')}`;
      assert.equal((await call(`${url}/agents`, { method: 'POST', token: a.apiKey!.key, body: { name: mark } })).status, 201);
      const own = await call(`${url}/agents`, { token: a.apiKey!.key });
      assert.ok((own.body as unknown as { name: string }[]).some((r) => r.name === mark));
      const other = await call(`${url}/agents`, { token: b.apiKey!.key });
      assert.ok(!(other.body as unknown as { name: string }[]).some((r) => r.name === mark), "the other tenant does not see it");
    });
  });

  test(`${name}: the tenant's rate limit answers 429 with Retry-After`, async () => {
    const t = await inst.tenantry.tenants.create({ slug: `plug-rl-${name}-${randomBytes(2).toString('hex')}` });
    await inst.tenantry.quotas.setOverrides(t.id, { api_calls_per_minute: 1 });
    await withApp(startApp, {}, async (url) => {
      const statuses: number[] = [];
      let limited: Awaited<ReturnType<typeof call>> | undefined;
      for (let i = 0; i < 4; i++) {
        const r = await call(`${url}/me`, { token: t.apiKey!.key });
        statuses.push(r.status);
        if (r.status === 429) limited = r;
      }
      assert.ok(limited, `a 429 among ${statuses.join(', ')}`);
      assert.equal(limited.type, 'application/problem+json');
      assert.equal(limited.body.code, 'RATE_LIMITED');
      assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    });
  });
}
