/**
 * The routes the admin console stands on (issue #17), through app.inject(): server-side search and
 * sorting of the tenants list with keyset cursors, a tenant's usage history, the migrations status
 * with the last run's failures, and redelivering a webhook delivery. Each also refuses what a tenant
 * key or a hostile query must not get.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';

const ADMIN = 'console-api-test-operator-token-0123456789abcdef';
let inst: TestInstallation;
let app: FastifyInstance;
let receiver: http.Server;
let base = '';
const received: { path: string; id: string }[] = [];

// JSON bodies of responses, checked field by field below
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
interface Made { id: string; slug: string; name: string; key: string }
const made: Made[] = [];

/** slug, name: names chosen so that name order, slug order and creation order all differ */
const TENANTS: [string, string][] = [
  ['ca-zulu', 'Bravo Widgets'],
  ['ca-alpha', 'delta Foods'],
  ['ca-mike', 'Charlie 100% Cotton'],
  ['ca-echo', 'alpha Logistics'],
  ['ca-kilo', 'Echo Alpha'],
];

before(async () => {
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { received.push({ path: req.url ?? '/', id: String(req.headers['tenantry-id'] ?? '') }); res.writeHead(200); res.end(); });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  inst = await freshInstallation({ adminKey: ADMIN });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  for (const [slug, name] of TENANTS) {
    const r = await call('POST', '/v1/tenants', { slug, name, tier: 'free' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    made.push({ id: r.body.id, slug, name, key: r.body.apiKey });
  }
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  receiver?.closeAllConnections();
  await new Promise<void>((r) => receiver ? receiver.close(() => r()) : r());
});

async function call(method: string, url: string, body?: unknown, token = ADMIN): Promise<{ status: number; body: Json }> {
  const r = await app.inject({ method: method as 'GET', url, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { payload: JSON.stringify(body) } : {}) });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined };
}

/** Every page of a listing, following nextCursor; fails on a repeated tenant. */
async function allPages(query: string, limit = 2): Promise<Json[]> {
  const out: Json[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const r = await call('GET', `/v1/tenants?limit=${limit}&${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    out.push(...r.body.items);
    cursor = r.body.nextCursor;
    if (!cursor) break;
  }
  assert.equal(new Set(out.map((t) => t.id)).size, out.length, `${query}: a tenant came back on two pages: ${out.map((t) => t.slug).join(' ')}`);
  return out;
}

test('search finds tenants by a case-insensitive prefix of the name or the slug, on the server', async () => {
  // "alpha Logistics" starts with it; "Echo Alpha" and the slug "ca-alpha" only contain it
  assert.deepEqual((await allPages('q=ALPHA')).map((t) => t.slug), ['ca-echo']);
  assert.deepEqual((await allPages('q=echo')).map((t) => t.slug), ['ca-kilo']);
  assert.deepEqual((await allPages('q=CA-M')).map((t) => t.slug), ['ca-mike']);
  assert.deepEqual((await allPages('q=ca-', 2)).map((t) => t.slug).sort(), made.map((m) => m.slug).sort());
  assert.deepEqual((await allPages('q=nobody')).map((t) => t.slug), []);
});

test('a search for LIKE wildcards matches them literally: "%" and "_" are not patterns', async () => {
  assert.deepEqual((await allPages(`q=${encodeURIComponent('%')}`)).map((t) => t.slug), []);
  assert.deepEqual((await allPages(`q=${encodeURIComponent('_a')}`)).map((t) => t.slug), []);
  assert.deepEqual((await allPages(`q=${encodeURIComponent('charlie 100%')}`)).map((t) => t.slug), ['ca-mike']);
});

test('sorting by name, slug and created_at, ascending and descending, pages with stable cursors', async () => {
  const ours = (items: Json[]): string[] => items.filter((t) => t.slug.startsWith('ca-')).map((t) => t.slug);
  const byName = [...made].sort((a, b) => (a.name < b.name ? -1 : 1));
  const nameAsc = ours(await allPages('sort=name&order=asc'));
  // the database's collation decides the order; it must agree with the order of the names it returned
  const rows = await inst.su<{ slug: string }[]>`select slug from tenantry_catalog.tenants where slug like 'ca-%' order by name, seq`;
  assert.deepEqual(nameAsc, rows.map((r) => r.slug));
  assert.equal(nameAsc.length, byName.length);
  assert.deepEqual(ours(await allPages('sort=name&order=desc')), [...nameAsc].reverse());
  assert.deepEqual(ours(await allPages('sort=slug', 1)), ['ca-alpha', 'ca-echo', 'ca-kilo', 'ca-mike', 'ca-zulu']);
  assert.deepEqual(ours(await allPages('sort=slug&order=desc', 3)), ['ca-zulu', 'ca-mike', 'ca-kilo', 'ca-echo', 'ca-alpha']);
  assert.deepEqual(ours(await allPages('sort=created_at&order=desc')), made.map((m) => m.slug).reverse());
  assert.deepEqual(ours(await allPages('sort=created_at')), made.map((m) => m.slug));
  // status and tier sort with seq breaking ties: all five are active free tenants, so creation order
  assert.deepEqual(ours(await allPages('sort=status')), made.map((m) => m.slug));
  assert.deepEqual(ours(await allPages('sort=tier&order=desc')), made.map((m) => m.slug).reverse());
  // search and sort together
  assert.deepEqual((await allPages('q=a&sort=slug&order=desc', 1)).map((t) => t.slug), ['ca-echo']);
});

test('a cursor replayed with another sort or order, or forged, is refused with 400 INVALID_INPUT', async () => {
  const first = await call('GET', '/v1/tenants?limit=1&sort=name');
  assert.equal(first.status, 200);
  const cursor = first.body.nextCursor as string;
  assert.ok(cursor);
  for (const q of [`sort=slug&cursor=${cursor}`, `sort=name&order=desc&cursor=${cursor}`, `cursor=${cursor}`,
    `sort=name&cursor=${Buffer.from(JSON.stringify({ s: 'name', o: 'asc', v: 'x\u0000', n: '1' })).toString('base64url')}`,
    `sort=created_at&cursor=${Buffer.from(JSON.stringify({ s: 'created_at', o: 'asc', v: "'; drop table x; --", n: '1' })).toString('base64url')}`,
    `sort=name&cursor=${encodeURIComponent('not base64!')}`,
    // past bigint's range: refused, not a 5xx from PostgreSQL
    `sort=name&cursor=${Buffer.from(JSON.stringify({ s: 'name', o: 'asc', v: 'x', n: '9999999999999999999' })).toString('base64url')}`,
    'cursor=9999999999999999999', 'order=desc&cursor=9999999999999999999']) {
    const r = await call('GET', `/v1/tenants?${q}`);
    assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'INVALID_INPUT');
  }
});

test('hostile search and sort parameters are refused with 400, never a 500', async () => {
  for (const q of ['q=', `q=${'x'.repeat(101)}`, 'q=%00', 'q=%20%20', 'sort=password', 'sort=seq%3Bdrop', 'order=sideways', 'q=%0A']) {
    const r = await call('GET', `/v1/tenants?${q}`);
    assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.code, /INVALID_INPUT|VALIDATION/);
  }
  // the library refuses the same on its own
  await assert.rejects(async () => inst.tenantry.tenants.list({ q: 'a\u0000' }), { code: 'INVALID_INPUT' });
  await assert.rejects(async () => inst.tenantry.tenants.list({ q: 'a\ud800' }), { code: 'INVALID_INPUT' });
  await assert.rejects(async () => inst.tenantry.tenants.list({ sort: 'id; drop table x' as never }), { code: 'INVALID_INPUT' });
});

test('a tenant key cannot list or search other tenants', async () => {
  const r = await call('GET', '/v1/tenants?q=ca-', undefined, made[0]!.key);
  assert.equal(r.status, 403);
});

test('usage history: recorded usage shows up per day; a tenant key reads its own and not another tenant\'s', async () => {
  const [a, b] = made;
  assert.equal((await call('POST', `/v1/tenants/${a!.id}/usage`, { metric: 'llm_tokens', amount: 7 })).status, 200);
  assert.equal((await call('POST', `/v1/tenants/${a!.id}/usage`, { metric: 'llm_tokens', amount: 5 })).status, 200);
  const today = new Date().toISOString().slice(0, 10);
  const r = await call('GET', `/v1/tenants/${a!.slug}/usage/history?metric=llm_tokens`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.tenantId, a!.id);
  assert.equal(r.body.to, today);
  assert.deepEqual(r.body.points.filter((p: Json) => p.period === today), [{ period: today, metric: 'llm_tokens', amount: 12 }]);
  const own = await call('GET', `/v1/tenants/${a!.id}/usage/history?period=month`, undefined, a!.key);
  assert.equal(own.status, 200);
  assert.equal(own.body.points.find((p: Json) => p.metric === 'llm_tokens')?.amount, 12);
  // another tenant's key is told the tenant does not exist; b has no usage of a's
  assert.equal((await call('GET', `/v1/tenants/${a!.id}/usage/history`, undefined, b!.key)).status, 404);
  assert.deepEqual((await call('GET', `/v1/tenants/${b!.id}/usage/history`)).body.points, []);
});

test('usage history refuses impossible days, reversed and huge spans, and unknown metrics with 400', async () => {
  const id = made[0]!.id;
  for (const q of ['from=2026-02-31', 'to=2026-13-01', 'from=2026-05-02&to=2026-05-01', 'from=1900-01-01&to=2026-01-01', 'metric=gold_bars', 'period=week', 'from=2026-1-1']) {
    const r = await call('GET', `/v1/tenants/${id}/usage/history?${q}`);
    assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
  }
});

test('migrations status: tenants per version, and the last run recorded with its failures', async () => {
  const before = await call('GET', '/v1/migrations');
  assert.equal(before.status, 200, JSON.stringify(before.body));
  assert.equal(typeof before.body.latestVersion, 'number');
  const counted = before.body.versions.reduce((n: number, v: Json) => n + v.tenants, 0);
  assert.ok(counted >= made.length, `versions count ${counted} tenants`);
  await inst.tenantry.migrate();
  const after = await call('GET', '/v1/migrations');
  assert.ok(after.body.lastRun, 'the run was recorded');
  assert.deepEqual(after.body.lastRun.failed, []);
  assert.equal(after.body.lastRun.latestVersion, after.body.latestVersion);
  // a failure is shown as recorded (written the way recordMigrationRun writes it)
  await inst.su`insert into tenantry_catalog.tenant_migration_runs (latest_version, planned, migrated, failed, duration_ms)
    values (${after.body.latestVersion}, 1, 0, ${inst.su.json([{ id: made[1]!.id, slug: made[1]!.slug, isolation: 'schema', error: 'lock timeout' }])}, 12)`;
  const failed = await call('GET', '/v1/migrations');
  assert.deepEqual(failed.body.lastRun.failed.map((f: Json) => [f.slug, f.error]), [[made[1]!.slug, 'lock timeout']]);
  // a dry run is not a run
  await inst.tenantry.migrate({ dryRun: true });
  assert.equal((await call('GET', '/v1/migrations')).body.lastRun.failed.length, 1);
  assert.equal((await call('GET', '/v1/migrations', undefined, made[0]!.key)).status, 403);
});

test('redeliver: a finished delivery goes out again as a new delivery of the same event; pending, foreign or unknown ones are refused', async () => {
  const t = made[2]!;
  const ep = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/redeliver`, events: ['tenant.suspended'] });
  const other = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/other`, events: ['tenant.suspended'] });
  await inst.tenantry.tenants.suspend(t.id, 'redeliver test');
  const [pending] = await inst.tenantry.webhooks.deliveries(ep.id);
  assert.equal(pending?.status, 'pending');
  const early = await call('POST', `/v1/webhooks/${ep.id}/deliveries/${pending!.id}/redeliver`);
  assert.equal(early.status, 409);
  assert.equal(early.body.code, 'WEBHOOK_DELIVERY_PENDING');
  await inst.tenantry.webhooks.drain(`${ep.id}:${t.id}`);
  assert.equal(received.filter((r) => r.path === '/redeliver').length, 1);
  // the tenant itself (even with an admin key) may not make the operator's endpoints send again
  assert.equal((await call('POST', `/v1/webhooks/${ep.id}/deliveries/${pending!.id}/redeliver`, undefined, t.key)).status, 403);
  // a delivery of another endpoint, named under this one, does not exist here
  const [foreign] = await inst.tenantry.webhooks.deliveries(other.id);
  for (const [w, d] of [[ep.id, foreign!.id], [ep.id, '999999999'], [ep.id, '0'], [ep.id, '1e3'], ['not-a-uuid', pending!.id]]) {
    const r = await call('POST', `/v1/webhooks/${w}/deliveries/${d}/redeliver`);
    assert.equal(r.status, 404, `${w}/${d}: ${JSON.stringify(r.body)}`);
  }
  const r = await call('POST', `/v1/webhooks/${ep.id}/deliveries/${pending!.id}/redeliver`);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.status, 'pending');
  assert.equal(r.body.eventId, pending!.eventId);
  assert.notEqual(r.body.id, pending!.id);
  await inst.tenantry.webhooks.drain(`${ep.id}:${t.id}`);
  const sent = received.filter((x) => x.path === '/redeliver');
  assert.equal(sent.length, 2);
  assert.equal(sent[0]!.id, sent[1]!.id, 'the same event id, so a receiver can tell it is a redelivery');
  const list = await inst.tenantry.webhooks.deliveries(ep.id);
  assert.deepEqual(list.map((d) => d.status), ['succeeded', 'succeeded']);
  const [audit] = await inst.su<{ details: Json }[]>`select details from tenantry_catalog.audit_log where action = 'webhook.redelivered'`;
  assert.equal(audit?.details.deliveryId, pending!.id);
});

test('stats overview: a tenant past 90% of a quota is at risk, one past its limit is over quota; provisioning, jobs and webhooks are counted', async () => {
  const [, , , risky, over] = made;
  const usage = (await call('GET', `/v1/tenants/${risky!.id}/usage`)).body;
  const m = usage.metrics.find((x: Json) => x.metric === 'llm_tokens');
  assert.ok(m && m.limit > 0, JSON.stringify(usage));
  assert.equal((await call('POST', `/v1/tenants/${risky!.id}/usage`, { metric: 'llm_tokens', amount: Math.ceil(m.limit * 0.95) })).status, 200);
  assert.equal((await call('POST', `/v1/tenants/${over!.id}/usage`, { metric: 'llm_tokens', amount: 50 })).status, 200);
  // lowering the limit below what was used puts the tenant over it
  assert.equal((await call('PUT', `/v1/tenants/${over!.id}/quotas`, { [m.quota]: 10 })).status, 200);
  const r = await call('GET', '/v1/stats/overview');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body.atRisk.tenants.map((t: Json) => [t.slug, t.metric]), [[risky!.slug, 'llm_tokens']]);
  assert.equal(r.body.atRisk.count, 1);
  assert.ok(r.body.atRisk.tenants[0].utilization > 90 && r.body.atRisk.tenants[0].utilization <= 100);
  assert.deepEqual(r.body.overQuota.tenants.map((t: Json) => [t.slug, t.metric, t.used, t.limit]), [[over!.slug, 'llm_tokens', 50, 10]]);
  assert.equal(r.body.overQuota.count, 1);
  assert.ok(r.body.provisioning.succeeded >= made.length, 'the tenants made today');
  assert.equal(typeof r.body.provisioning.p50Ms, 'number');
  assert.ok(r.body.provisioning.p95Ms >= r.body.provisioning.p50Ms);
  assert.equal(r.body.webhooks.failedLastDay, 0);
  assert.ok(r.body.tenants.total >= made.length);
  // a tenant key learns nothing about other tenants from it
  assert.equal((await call('GET', '/v1/stats/overview', undefined, risky!.key)).status, 403);
});
