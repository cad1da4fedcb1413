/**
 * What an outside red team found with one tenant's key and the README (2026-11-29), each as an attack
 * over a real socket: the raw request line reaches the router as the attacker wrote it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
let inst: TestInstallation;
let app: FastifyInstance;
let port = 0;
let A: { id: string; slug: string; key: string };
let V: { id: string; slug: string; key: string };

/** One HTTP/1.1 request written byte for byte as given; the status and body of the answer. */
function raw(requestLine: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { data += d; });
    s.on('error', reject);
    s.on('end', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4) });
    });
    const hs = { host: `127.0.0.1:${port}`, connection: 'close', ...headers, ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) };
    s.write(`${requestLine} HTTP/1.1\r\n${Object.entries(hs).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body ?? ''}`);
  });
}

before(async () => {
  // many bad credentials from one address on purpose: the failed-auth throttle would turn 401s into 429s
  inst = await freshInstallation({ adminKey: ADMIN, maxConnections: 6, schemaPoolSize: 0, authFailuresPerAddress: 1_000_000, authFailuresPerKey: 1_000_000 });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as net.AddressInfo).port;
  for (const [slug, set] of [['rt-attacker', (v: typeof A) => { A = v; }], ['rt-victim', (v: typeof A) => { V = v; }]] as const) {
    const t = await inst.tenantry.tenants.create({ slug, tier: 'enterprise' });
    const k = await inst.tenantry.keys.create(t.id, { name: 'rt', scopes: ['read', 'write', 'sql', 'admin'] });
    set({ id: t.id, slug, key: k.key });
  }
  await inst.tenantry.withTenant(V.id, (sql) => sql`insert into agents (name, agent_type) values ('secret-of-victim', 'calculator')`);
  await inst.tenantry.withTenant(A.id, (sql) => sql`insert into agents (name, agent_type) values ('mine', 'calculator')`);
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
});

test('red team: a percent-encoded or absolute-form path does not skip authentication (no anonymous read of another tenant)', async () => {
  const victimPaths = [`/v1/t/${V.slug}`, `/v1/t/${V.slug}/usage`, '/v1/tenant', '/v1/tenant/usage', `/v1/tenants/${V.id}`, `/v1/tenants/${V.id}/usage`, '/v1/tenants', '/v1/plans', '/v1/webhooks'];
  for (const p of victimPaths) {
    const encoded = p.replace('/v1/', '/%761/');
    const lines = [`GET ${encoded}`, `GET ${p.replace('/v1/', '/%76%31/')}`, `GET http://evil.example${p}`, `GET http://evil.example${encoded}`];
    for (const line of lines) {
      for (const headers of [{}, { 'x-tenant-id': V.slug }, { authorization: 'Bearer nonsense' }] as Record<string, string>[]) {
        const r = await raw(line, headers);
        assert.ok([400, 401, 404].includes(r.status), `${line} ${JSON.stringify(headers)} -> ${r.status} ${r.body.slice(0, 200)}`);
        assert.ok(!r.body.includes(V.id), `${line}: the victim's id leaked`);
      }
    }
  }
  // nor does it write: the SQL endpoint, reached the same way without a key, is refused and runs nothing
  const sqlBody = JSON.stringify({ sql: "insert into agents (name, agent_type) values ('planted', 'calculator')" });
  for (const line of [`POST /%761/t/${V.slug}/sql`, `POST http://evil.example/v1/t/${V.slug}/sql`]) {
    const r = await raw(line, {}, sqlBody);
    assert.ok([400, 401, 404].includes(r.status), `${line} -> ${r.status} ${r.body.slice(0, 200)}`);
  }
  const planted = await inst.tenantry.withTenant(V.id, (sql) => sql`select count(*)::int as n from agents where name = 'planted'`);
  assert.equal(planted[0]!.n, 0);
  // the same routes with a valid key, encoded, still work for the key's own tenant (the router decodes)
  const own = await raw(`GET /%761/tenant`, { authorization: `Bearer ${A.key}` });
  assert.equal(own.status, 200, own.body);
  assert.equal(JSON.parse(own.body).id, A.id);
});

test('red team: system columns read as fields of a whole-row reference ((a).ctid, (a).xmin) are refused like plain ones', async () => {
  const forms = [
    'select (a).ctid, a.name from agents a',
    'select (a).xmin from agents a',
    'select (a).xmax, (a).tableoid from agents a',
    'select ((a)).cmin from agents a',
    'select (x.a).ctid from (select a from agents a) x',
  ];
  for (const sql of forms) {
    const r = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${A.key}` }, JSON.stringify({ sql }));
    assert.equal(r.status, 403, `${sql} -> ${r.status} ${r.body.slice(0, 300)}`);
    assert.equal(JSON.parse(r.body).code, 'SQL_NOT_ALLOWED', sql);
  }
  // an ordinary column through the same notation still works
  const ok = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${A.key}` }, JSON.stringify({ sql: 'select (a).name from agents a' }));
  assert.equal(ok.status, 200, ok.body);
});

test('red team: an audit cursor past the 64-bit range is a 400, not a 500', async () => {
  for (const cursor of ['9223372036854775808', '18446744073709551616', '-9223372036854775809']) {
    const r = await raw(`GET /v1/tenants/${A.id}/audit?cursor=${cursor}`, { authorization: `Bearer ${A.key}` });
    assert.equal(r.status, 400, `cursor ${cursor} -> ${r.status} ${r.body.slice(0, 200)}`);
  }
});

test('red team: one huge SQL result is refused with SQL_RESULT_TOO_LARGE before it is buffered, and the tenant can go on', async () => {
  const before = process.memoryUsage().rss;
  for (const sql of [
    "select string_agg(repeat('x', 1000000), '') as s from generate_series(1, 40)", // one 40 MB value
    "select repeat('y', 100000) as s from generate_series(1, 400)", // 40 MB over many rows
  ]) {
    const r = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${A.key}` }, JSON.stringify({ sql }));
    assert.equal(r.status, 422, `${sql} -> ${r.status} ${r.body.slice(0, 300)}`);
    assert.equal(JSON.parse(r.body).code, 'SQL_RESULT_TOO_LARGE');
  }
  // far less than the 80 MB asked for stayed in this process (the server runs in it)
  assert.ok(process.memoryUsage().rss - before < 64 * 1024 * 1024, `rss grew by ${Math.round((process.memoryUsage().rss - before) / 1e6)} MB`);
  const ok = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${A.key}` }, JSON.stringify({ sql: "select repeat('z', 1000) as s" }));
  assert.equal(ok.status, 200, ok.body);
  assert.equal(JSON.parse(ok.body).rows[0].s.length, 1000);
});

test('red team: a tenant flooding the SQL endpoint with large statements to parse gets 429 after its share of the thread; another tenant is not refused', async () => {
  const big = JSON.stringify({ sql: `select ${Array.from({ length: 8_000 }, (_, i) => `c${i}`).join(',')} from pg_class` });
  let limited: { status: number; body: string } | undefined;
  for (let i = 0; i < 600 && !limited; i++) {
    const r = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${A.key}` }, big);
    if (r.status === 429) limited = r;
    else assert.equal(r.status, 403, r.body.slice(0, 200)); // refused by the guard, after parsing
  }
  assert.ok(limited, 'the flood was never limited');
  assert.equal(JSON.parse(limited.body).code, 'RATE_LIMITED');
  // the victim's statements are still judged and run
  const v = await raw('POST /v1/tenant/sql', { authorization: `Bearer ${V.key}` }, JSON.stringify({ sql: 'select count(*)::int as n from agents' }));
  assert.equal(v.status, 200, v.body);
  assert.equal(JSON.parse(v.body).rows[0].n, 1);
});
