/**
 * Faults with honest answers, in one process on the test server: connection-class errors are 503
 * DATABASE_UNAVAILABLE with Retry-After (one table), every request meets its deadline, idempotency
 * claims are leases a retry takes over once their holder is gone (a create whose answer was lost is
 * found, a debit is not applied twice), a provisioning whose rollback could not finish says so and is
 * healed in the background, and doctor and repair name and clear what a crash leaves. The real
 * kill -9 of PostgreSQL and of the server is test/chaos.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { buildServer } from '../src/server/app.js';
import { IdempotencyStore, SECRET_NOT_REPLAYED } from '../src/idempotency/idempotency.js';
import { isDatabaseUnavailable, translateDatabaseError, isTenantryError } from '../src/errors.js';
import { DatabaseHealth } from '../src/server/resilience.js';
import type { ProvisionStep } from '../src/config.js';

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
let inst: TestInstallation;
let app: FastifyInstance;
/** the same server with a 1 s request deadline */
let hasty: FastifyInstance;
let failNext: ((step: ProvisionStep, t: { id: string }) => Promise<void>) | undefined;

before(async () => {
  inst = await freshInstallation({
    adminKey: ADMIN,
    onProvisionStep: async (step, t) => { await failNext?.(step, t); },
  });
  // a generous deadline: on a loaded machine a database-mode create must not meet it here
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent', requestTimeoutMs: 120_000 });
  // routes that fail the way a driver or a slow database does, added only in this test
  app.get('/v1/fault/:code', async (req) => {
    const code = (req.params as { code: string }).code;
    throw Object.assign(new Error(`simulated ${code}`), { code });
  });
  hasty = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent', requestTimeoutMs: 1_000 });
  let slowRuns = 0;
  hasty.post('/v1/fault/slow', async () => { slowRuns++; await new Promise((r) => setTimeout(r, 3_000)); return { runs: slowRuns }; });
  hasty.get('/v1/fault/slow-runs', async () => ({ runs: slowRuns }));
});
after(async () => {
  await app?.close();
  await hasty?.close();
  await inst?.cleanup();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(method: string, url: string, body?: unknown, headers: Record<string, string> = {}, on: FastifyInstance = app): Promise<{ status: number; body: any; headers: Record<string, unknown>; ms: number }> {
  const started = Date.now();
  const r = await on.inject({ method: method as 'GET', url, headers: { authorization: `Bearer ${ADMIN}`, ...headers }, ...(body !== undefined ? { payload: body as object } : {}) });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : null, headers: r.headers, ms: Date.now() - started };
}

test('postgres.js is patched at install: a write after its socket closed cannot throw from a timer', () => {
  // node_modules/postgres/cjs/src/index.js -> node_modules/postgres
  const root = path.resolve(path.dirname(createRequire(import.meta.url).resolve('postgres')), '..', '..');
  for (const file of ['src/connection.js', 'cjs/src/connection.js']) {
    const src = readFileSync(path.join(root, file), 'utf8');
    const nextWrite = src.slice(src.indexOf('function nextWrite(fn) {'), src.indexOf('function connectTimedOut'));
    assert.match(nextWrite, /if \(socket === null\) \{/, `${file}: the nextWrite guard of patches/postgres+3.4.9.patch is applied (npm install runs patch-package)`);
    assert.ok(nextWrite.indexOf('if (socket === null)') < nextWrite.indexOf('socket.write('), `${file}: guarded before the write`);
  }
});

test('one table maps connection-class faults to DATABASE_UNAVAILABLE, and nothing else', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  for (const code of ['57P01', '57P02', '57P03', '08006', '08001', '08000', '53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT']) {
    assert.ok(isDatabaseUnavailable(err(code)), code);
    const t = translateDatabaseError(err(code));
    assert.ok(isTenantryError(t, 'DATABASE_UNAVAILABLE') && t.status === 503 && (t.details?.retryAfterSeconds as number) > 0, code);
  }
  // node's happy-eyeballs AggregateError, and a cause chain
  assert.ok(isDatabaseUnavailable(Object.assign(new AggregateError([err('ECONNREFUSED')], 'connect'), { code: undefined })));
  assert.ok(isDatabaseUnavailable(new Error('wrapped', { cause: err('57P01') })));
  for (const code of ['23505', '42P01', '22021', '57014', '40001', 'EACCES', 'CONNECTION_ENDED']) assert.equal(isDatabaseUnavailable(err(code)), false, code);
});

test('a driver or PostgreSQL connection fault answers 503 DATABASE_UNAVAILABLE as problem+json with Retry-After, never a bare 500', async () => {
  for (const code of ['ECONNREFUSED', '57P01', '08006', 'CONNECTION_CLOSED']) {
    const r = await call('GET', `/v1/fault/${code}`);
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.code, 'DATABASE_UNAVAILABLE');
    assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
    assert.ok(Number(r.headers['retry-after']) > 0, 'Retry-After');
    assert.ok(!JSON.stringify(r.body).includes('simulated'), 'the driver message is not passed through as the detail');
  }
  const other = await call('GET', '/v1/fault/XX000');
  assert.equal(other.status, 500);
  assert.equal(other.body.code, 'INTERNAL');
  assert.match(String(other.headers['content-type']), /^application\/problem\+json/);
  // the probe found PostgreSQL reachable: nothing fails fast afterwards
  assert.equal((await call('GET', '/v1/tenants')).status, 200);
});

test('a request past its deadline gets 503 REQUEST_TIMEOUT at the deadline; its Idempotency-Key stays claimed until the work ends, then a retry takes over', async () => {
  const key = `slow-${randomUUID()}`;
  // warm up: the first request compiles schemas synchronously, which would delay any timer
  await call('GET', '/v1/fault/slow-runs', undefined, {}, hasty);
  const first = await call('POST', '/v1/fault/slow', {}, { 'idempotency-key': key }, hasty);
  assert.equal(first.status, 503, JSON.stringify(first.body));
  assert.equal(first.body.code, 'REQUEST_TIMEOUT');
  assert.ok(first.ms < 2_500, `answered at the 1 s deadline, not after the 3 s work (${first.ms} ms)`);
  assert.ok(Number(first.headers['retry-after']) > 0);
  // the work is still running: a retry must not run it alongside
  const during = await call('POST', '/v1/fault/slow', {}, { 'idempotency-key': key }, hasty);
  assert.equal(during.status, 409, JSON.stringify(during.body));
  assert.equal(during.body.code, 'IDEMPOTENCY_IN_PROGRESS');
  assert.ok(Number(during.headers['retry-after']) > 0);
  await new Promise((r) => setTimeout(r, 3_500));
  assert.equal((await call('GET', '/v1/fault/slow-runs', undefined, {}, hasty)).body.runs, 1, 'one run so far');
  const [row] = await inst.su<{ status: number | null; expired: boolean }[]>`
    select status, locked_until <= now() as expired from tenantry_catalog.http_idempotency where idempotency_key = ${key}`;
  assert.equal(row!.status, null);
  assert.equal(row!.expired, true, 'the lease ended when the work did');
});

test('an Idempotency-Key claim is a lease: kept alive by its holder, taken over once the holder is gone, with the first request id', async () => {
  const store = new IdempotencyStore(inst.su, 1);
  const fp = IdempotencyStore.fingerprint('POST', '/x', { a: 1 });
  const principal = `lease-${randomUUID()}`;
  assert.deepEqual(await store.claim(principal, 'k', 'POST', '/x', fp, 'req-1'), { state: 'new', requestId: 'req-1', takenOver: false });
  const held = await store.claim(principal, 'k', 'POST', '/x', fp, 'req-2');
  assert.equal(held.state, 'in-progress');
  // a heartbeat keeps it
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(await store.heartbeat(principal, 'k'), true);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal((await store.claim(principal, 'k', 'POST', '/x', fp, 'req-3')).state, 'in-progress', 'renewed: still held');
  // the holder dies: no more heartbeats
  await new Promise((r) => setTimeout(r, 1_200));
  const [a, b] = await Promise.all([store.claim(principal, 'k', 'POST', '/x', fp, 'req-4'), store.claim(principal, 'k', 'POST', '/x', fp, 'req-5')]);
  const winners = [a, b].filter((c) => c.state === 'new');
  assert.equal(winners.length, 1, `exactly one retry takes it over: ${JSON.stringify([a, b])}`);
  assert.deepEqual(winners[0], { state: 'new', requestId: 'req-1', takenOver: true });
  await store.complete(principal, 'k', 201, { ok: true });
  assert.deepEqual(await store.claim(principal, 'k', 'POST', '/x', fp, 'req-6'), { state: 'replay', status: 201, response: { ok: true } });
});

test('a create whose answer was lost (the server died after the commit) is found by retrying with the same Idempotency-Key', async () => {
  const slug = `lost-${randomBytes(3).toString('hex')}`;
  const key = `create-${slug}`;
  const body = { slug, isolation: 'schema' as const };
  // what a process killed right after its COMMIT leaves: the tenant, audited under the first request's
  // id, and the key's claim in progress with a lease nobody renews
  const t = await inst.tenantry.tenants.create(body, { actor: 'operator', requestId: 'first-attempt' });
  await inst.su`insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, locked_until, request_id)
    values ('operator', ${key}, 'POST', '/v1/tenants', ${IdempotencyStore.fingerprint('POST', '/v1/tenants', body)}, now() - interval '1 second', 'first-attempt')`;
  const retry = await call('POST', '/v1/tenants', body, { 'idempotency-key': key });
  assert.equal(retry.status, 201, JSON.stringify(retry.body));
  assert.equal(retry.body.id, t.id, 'the tenant the first request made');
  assert.equal(retry.body.apiKey, SECRET_NOT_REPLAYED, 'its key was shown to nobody and is not stored: rotate it');
  assert.equal(retry.headers['idempotent-recovered'], 'true');
  const [count] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants where slug = ${slug}`;
  assert.equal(count!.n, 1);
  // and the next retry is a plain replay
  const again = await call('POST', '/v1/tenants', body, { 'idempotency-key': key });
  assert.equal(again.status, 201);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  // without the lost-answer history the same slug is still refused
  const other = await call('POST', '/v1/tenants', body, { 'idempotency-key': `${key}-other` });
  assert.equal(other.status, 409);
  assert.equal(other.body.code, 'SLUG_TAKEN');
});

test('a key, member or invitation create whose answer was lost is not run a second time by a retry with the same Idempotency-Key', async () => {
  const t = await inst.tenantry.tenants.create({ slug: `lost-key-${randomBytes(3).toString('hex')}` });
  const path = `/v1/tenants/${t.id}/api-keys`;
  const body = { name: 'ci', scopes: ['read'] };
  const key = `key-${randomBytes(4).toString('hex')}`;
  // what a process killed right after its COMMIT leaves: the key, audited under the first request's id,
  // and the claim in progress with a lease nobody renews
  await inst.tenantry.keys.create(t.id, body, { actor: 'operator', requestId: `first-${key}` });
  await inst.su`insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, locked_until, request_id)
    values ('operator', ${key}, 'POST', ${path}, ${IdempotencyStore.fingerprint('POST', path, body)}, now() - interval '1 second', ${`first-${key}`})`;
  const keysBefore = (await inst.tenantry.keys.list(t.id)).length;
  const retry = await call('POST', path, body, { 'idempotency-key': key });
  assert.equal(retry.status, 409, JSON.stringify(retry.body));
  assert.equal(retry.body.code, 'IDEMPOTENCY_RESULT_LOST');
  assert.match(retry.body.detail, /api_key\.created/);
  assert.equal((await inst.tenantry.keys.list(t.id)).length, keysBefore, 'no second key');
  // the answer is kept: the next retry replays it, and still makes nothing
  const again = await call('POST', path, body, { 'idempotency-key': key });
  assert.equal(again.status, 409);
  assert.equal((await inst.tenantry.keys.list(t.id)).length, keysBefore);
  // a takeover whose first holder committed nothing runs the request
  const fresh = `key-${randomBytes(4).toString('hex')}`;
  await inst.su`insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, locked_until, request_id)
    values ('operator', ${fresh}, 'POST', ${path}, ${IdempotencyStore.fingerprint('POST', path, body)}, now() - interval '1 second', ${`first-${fresh}`})`;
  const ran = await call('POST', path, body, { 'idempotency-key': fresh });
  assert.equal(ran.status, 201, JSON.stringify(ran.body));
  assert.equal((await inst.tenantry.keys.list(t.id)).length, keysBefore + 1);
});

test('a debit whose answer was lost is applied once when retried with the same Idempotency-Key header', async () => {
  const t = await inst.tenantry.tenants.create({ slug: `debit-${randomBytes(3).toString('hex')}` });
  const key = `debit-${randomUUID()}`;
  const body = { metric: 'llm_tokens', amount: 7 };
  const first = await call('POST', `/v1/tenants/${t.id}/usage`, body, { 'idempotency-key': key });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  // the process died before storing the answer: the claim is back in progress with a dead lease
  await inst.su`update tenantry_catalog.http_idempotency set status = null, response = null, locked_until = now() - interval '1 second' where idempotency_key = ${key}`;
  const retry = await call('POST', `/v1/tenants/${t.id}/usage`, body, { 'idempotency-key': key });
  assert.equal(retry.status, 200, JSON.stringify(retry.body));
  assert.equal(retry.body.used, first.body.used, 'the same debit, not a second one');
  const usage = await call('GET', `/v1/tenants/${t.id}/usage`);
  assert.equal(usage.body.metrics.find((m: { metric: string }) => m.metric === 'llm_tokens').used, 7);
});

test('a provisioning whose rollback cannot finish answers 503 PROVISIONING_INCOMPLETE (never "rolled back"), doctor names it, and the background healer removes it', async (t) => {
  // whatever happens below, the later tests get a catalog whose deletes work
  t.after(() => inst.su.unsafe('drop trigger if exists test_block_delete on tenantry_catalog.tenants; drop function if exists tenantry_catalog.test_block_delete()'));
  const slug = `heal-${randomBytes(3).toString('hex')}`;
  let id: string | undefined;
  // the step fails, and the rollback's last write (deleting the catalog row) fails too, as it would
  // while PostgreSQL is away: a trigger refuses the delete until the test lifts it
  await inst.su.unsafe(`create or replace function tenantry_catalog.test_block_delete() returns trigger language plpgsql as $$ begin raise exception 'simulated outage'; end $$`);
  await inst.su.unsafe(`create trigger test_block_delete before delete on tenantry_catalog.tenants for each row execute function tenantry_catalog.test_block_delete()`);
  failNext = async (step, t) => { if (step === 'migrations') { id = t.id; throw Object.assign(new Error('connection lost'), { code: 'ECONNRESET' }); } };
  try {
    const r = await call('POST', '/v1/tenants', { slug, isolation: 'database' }, { 'idempotency-key': `heal-${slug}` });
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.code, 'PROVISIONING_INCOMPLETE');
    assert.doesNotMatch(r.body.detail, /was rolled back/);
    assert.ok(Number(r.headers['retry-after']) > 0);
  } finally {
    failNext = undefined;
  }
  assert.ok(id);
  const report = await inst.tenantry.doctor();
  const stuck = report.checks.find((c) => c.check === 'stuck-provisioning' && !c.ok);
  assert.ok(stuck, JSON.stringify(report.checks.filter((c) => !c.ok)));
  assert.match(stuck.message, new RegExp(slug));
  assert.match(stuck.fix ?? '', /tenantry repair/);
  // PostgreSQL "comes back": the healer finishes the rollback on its own
  await inst.su.unsafe('drop trigger test_block_delete on tenantry_catalog.tenants; drop function tenantry_catalog.test_block_delete()');
  let left = 1;
  for (let i = 0; i < 40 && left > 0; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const [row] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants where id = ${id}`;
    left = row!.n;
  }
  assert.equal(left, 0, 'the healer removed the half-made tenant');
  const [dbs] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_database where datname = ${`${inst.namespace}_t_${id.replace(/-/g, '')}`}`;
  assert.equal(dbs!.n, 0, 'and its database');
  const [audit] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.audit_log where tenant_id = ${id} and action = 'tenant.provisioning_failed'`;
  assert.equal(audit!.n, 1);
  // the client's retry with the same key now creates the tenant
  const retry = await call('POST', '/v1/tenants', { slug, isolation: 'database' }, { 'idempotency-key': `heal-${slug}` });
  assert.equal(retry.status, 201, JSON.stringify(retry.body));
  assert.ok((await inst.tenantry.doctor()).ok);
});

test('doctor names orphaned claims and half-made objects; repair clears both', async () => {
  await inst.su`insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, locked_until, request_id)
    values ('operator', ${`orphan-${randomUUID()}`}, 'POST', '/v1/tenants', 'x', now() - interval '2 hours', 'dead')`;
  const orphanSchema = `t_${randomBytes(16).toString('hex')}`;
  // the superuser of SUPERUSER_URL, password included (the embedded server asks for one)
  const su = new URL(SUPERUSER_URL);
  const shared = inst.urlFor(`${inst.namespace}_shared`, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password));
  const postgres = (await import('postgres')).default;
  const s = postgres(shared, { max: 1, onnotice: () => {} });
  await s.unsafe(`create schema "${orphanSchema}" authorization "${inst.namespace}_owner"`);
  await s.end();
  const before = await inst.tenantry.doctor();
  const failing = before.checks.filter((c) => !c.ok);
  assert.ok(failing.some((c) => c.check === 'idempotency-claims' && /tenantry repair/.test(c.fix ?? '')), JSON.stringify(failing));
  assert.ok(failing.some((c) => c.check === 'half-made-objects' && c.message.includes(orphanSchema) && /tenantry repair/.test(c.fix ?? '')), JSON.stringify(failing));
  const report = await inst.tenantry.repair({ olderThanSeconds: 60 });
  assert.equal(report.orphanedClaims, 1);
  assert.deepEqual(report.orphanSchemas, [orphanSchema]);
  const after = await inst.tenantry.doctor();
  assert.ok(after.ok, JSON.stringify(after.checks.filter((c) => !c.ok)));
});

test('the health probe: fails fast while PostgreSQL is unreachable, recovers without a restart, and the last resort marks unready', async () => {
  let reachable = false;
  const health = new DatabaseHealth(async () => { if (!reachable) throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }); }, { warn: () => {}, info: () => {} }, 50);
  try {
    health.reportFault();
    await health.recheck();
    assert.equal(health.available, false);
    assert.equal(health.ready, false);
    reachable = true;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(health.available, true, 'the background probe ended the outage');
    // an answer that is an error still means reachable
    const sick = new DatabaseHealth(async () => { throw Object.assign(new Error('no table'), { code: '42P01' }); }, { warn: () => {}, info: () => {} }, 50);
    assert.equal(await sick.recheck(), true);
    sick.stop();
    health.markUnready('uncaught exception');
    assert.equal(health.ready, false);
    assert.equal(health.available, true, 'unready, but still serving');
  } finally {
    health.stop();
  }
});

test('a create that fails for a database fault after rolling back says DATABASE_UNAVAILABLE (retryable), not a 500', async () => {
  failNext = async (step) => { if (step === 'placement') throw Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }); };
  try {
    await rejectsWith(inst.tenantry.tenants.create({ slug: `blip-${randomBytes(3).toString('hex')}`, isolation: 'schema' }), 'DATABASE_UNAVAILABLE', /nothing of it was kept/);
  } finally {
    failNext = undefined;
  }
});
