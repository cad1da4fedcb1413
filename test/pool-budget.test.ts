import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { PoolBudget, connect } from '../src/db/connections.js';
import { silentLogger } from '../src/logger.js';
import { TenantryError } from '../src/errors.js';
import { SUPERUSER_URL, superuser, freshInstallation } from './helpers/installation.js';

/**
 * The connection budget of database-mode pools (issue #10), on a real server: pools are told apart by
 * application_name, so pg_stat_activity shows what the budget really holds open. The least recently
 * used idle pool is closed first; the server never sees more connections than the budget, not even
 * while an evicted pool's connections are on their way out; a caller that cannot get a connection
 * gets CONNECTION_BUDGET_EXHAUSTED at its deadline instead of hanging; and a tenant that holds all of
 * its own connections does not stop the others.
 */

const run = randomBytes(4).toString('hex');
const database = `pools_${run}`;
const appPrefix = `tenantry-pooltest-${run}`;
let su: Sql;

before(async () => {
  su = superuser();
  await su.unsafe(`create database "${database}"`);
});

after(async () => {
  await su?.unsafe(`drop database if exists "${database}" with (force)`);
  await su?.end();
});

function urlOf(db: string): string {
  const u = new URL(SUPERUSER_URL);
  u.pathname = `/${db}`;
  return u.toString();
}

/** A pool on the test database whose connections carry `key` in their application_name. */
const poolFor = (key: string, max: number) => (): Sql => connect(urlOf(database), { max, idle_timeout: 60, connection: { application_name: `${appPrefix}-${key}` } });

async function openByKey(): Promise<Map<string, number>> {
  const rows = await su<{ app: string; n: number }[]>`
    select application_name as app, count(*)::int as n from pg_stat_activity
    where application_name like ${appPrefix + '-%'} group by application_name`;
  return new Map(rows.map((r) => [r.app.slice(appPrefix.length + 1), r.n]));
}

async function totalOpen(): Promise<number> {
  let n = 0;
  for (const v of (await openByKey()).values()) n += v;
  return n;
}

/** Polls until `check` holds (the server notices a closed connection a moment after the client). */
async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

test('LRU eviction: with the budget full, the least recently used idle pool is closed first, not the one just used', async () => {
  const budget = new PoolBudget(3, 60_000, silentLogger, 5_000);
  try {
    for (const key of ['a', 'b', 'c']) await budget.use(key, 1, poolFor(key, 1), (sql) => sql`select 1`);
    // a is used again: b is now the least recently used
    await budget.use('a', 1, poolFor('a', 1), (sql) => sql`select 1`);
    assert.deepEqual([...(await openByKey()).keys()].sort(), ['a', 'b', 'c']);
    await budget.use('d', 1, poolFor('d', 1), (sql) => sql`select 1`);
    assert.equal(budget.stats().evictions, 1);
    assert.ok(await eventually(async () => !(await openByKey()).has('b')), 'the least recently used pool (b) was closed');
    assert.deepEqual([...(await openByKey()).keys()].sort(), ['a', 'c', 'd'], 'a (used recently), c and d stay open');
    // and the next one evicts c, then a: use order, not creation order
    await budget.use('e', 1, poolFor('e', 1), (sql) => sql`select 1`);
    assert.ok(await eventually(async () => !(await openByKey()).has('c')));
    assert.deepEqual([...(await openByKey()).keys()].sort(), ['a', 'd', 'e']);
  } finally {
    await budget.end();
  }
});

test('pool churn across 12 databases by 16 callers never opens more server connections than the budget (counted in pg_stat_activity)', async () => {
  const BUDGET = 4;
  const budget = new PoolBudget(BUDGET, 60_000, silentLogger, 30_000);
  let maxSeen = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      maxSeen = Math.max(maxSeen, await totalOpen());
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    let k = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = 0; i < 15; i++) {
        const key = `churn${k++ % 12}`;
        // pools may grow to 2: growth must stay inside the budget too
        await budget.use(key, 2, poolFor(key, 2), (sql) => sql`select pg_sleep(0.005)`);
        const s = budget.stats();
        assert.ok(s.reserved + s.closing <= BUDGET, `reserved ${s.reserved} + closing ${s.closing} > ${BUDGET}`);
      }
    }));
    assert.ok(budget.stats().evictions > 10, 'the pools were churned');
  } finally {
    sampling = false;
    await sampler;
    await budget.end();
  }
  assert.ok(maxSeen <= BUDGET, `${maxSeen} connections were open at once; the budget is ${BUDGET}`);
  assert.ok(maxSeen > 0, 'the sampler saw the connections');
});

test('a busy pool grows past its first connection by evicting an idle pool when the budget is full', async () => {
  const budget = new PoolBudget(2, 60_000, silentLogger, 10_000);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  try {
    await budget.use('idle', 1, poolFor('idle', 1), (sql) => sql`select 1`);
    let inside = 0;
    const both = [1, 2].map(() => budget.use('busy', 2, poolFor('busy', 2), async (sql) => { await sql`select 1`; inside++; await held; }));
    assert.ok(await eventually(async () => inside === 2), 'both transactions of the busy pool got a connection');
    assert.equal(budget.stats().evictions, 1);
    assert.ok(await eventually(async () => !(await openByKey()).has('idle')));
    assert.equal((await openByKey()).get('busy'), 2);
    release();
    await Promise.all(both);
  } finally {
    release();
    await budget.end();
  }
});

test('a caller that finds every connection of the budget leased gets CONNECTION_BUDGET_EXHAUSTED at its deadline instead of hanging', async () => {
  const budget = new PoolBudget(2, 60_000, silentLogger, 400);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  try {
    const holders = ['h1', 'h2'].map((key) => budget.use(key, 1, poolFor(key, 1), async (sql) => { await sql`select 1`; await held; }));
    await eventually(async () => budget.stats().leased === 2);
    const started = Date.now();
    const err = await budget.use('late', 1, poolFor('late', 1), (sql) => sql`select 1`).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof TenantryError, `expected a TenantryError, got ${String(err)}`);
    assert.equal(err.code, 'CONNECTION_BUDGET_EXHAUSTED');
    assert.match(err.message, /TENANTRY_MAX_CONNECTIONS/);
    assert.ok(Date.now() - started >= 350, 'it waited for its deadline first');
    assert.equal(budget.stats().waiting, 0, 'no waiter is left behind');
    assert.equal((await openByKey()).has('late'), false, 'no connection was opened past the budget');
    release();
    await Promise.all(holders);
    // with the leases back, the same caller gets in (an idle pool is evicted for it)
    assert.deepEqual([...await budget.use('late', 1, poolFor('late', 1), (sql) => sql<{ n: number }[]>`select 1 as n`)], [{ n: 1 }]);
  } finally {
    release();
    await budget.end();
  }
});

test('a tenant stalling every connection of its own pool does not stall other tenants: they run, and its extra caller fails at the deadline', async () => {
  const budget = new PoolBudget(4, 60_000, silentLogger, 1_000);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  try {
    // the hog holds both connections its pool may have (size 2) and never finishes on its own
    const hog = [1, 2].map(() => budget.use('hog', 2, poolFor('hog', 2), async (sql) => { await sql`select 1`; await held; }));
    await eventually(async () => budget.stats().leased === 2);
    const third = budget.use('hog', 2, poolFor('hog', 2), (sql) => sql`select 1`).then(() => 'ran', (e: unknown) => (e as TenantryError).code);
    // meanwhile other tenants come and go, many times over, while the hog's third caller waits
    for (let i = 0; i < 20; i++) {
      const key = `other${i % 4}`;
      const [row] = await budget.use(key, 2, poolFor(key, 2), (sql) => sql<{ n: number }[]>`select ${i}::int as n`);
      assert.equal(row!.n, i);
    }
    assert.equal(await third, 'CONNECTION_BUDGET_EXHAUSTED', 'the hog\'s third caller got a clear error, not a hang');
    const open = await openByKey();
    assert.ok((open.get('hog') ?? 0) <= 2, 'the hog never got past its pool size');
  } finally {
    release();
    await budget.end();
  }
});

test('a pool is replaced after its share of transactions (bounded relation caches), without cutting a transaction still running on it', async () => {
  // size 2, two transactions per connection: the pool retires after its 4th transaction
  const budget = new PoolBudget(3, 60_000, silentLogger, 5_000, 2);
  const pid = (sql: Sql): Promise<number> => sql<{ pid: number }[]>`select pg_backend_pid() as pid`.then((r) => r[0]!.pid);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  try {
    const longPids: number[] = [];
    const long = budget.use('rc', 2, poolFor('rc', 2), async (sql) => {
      longPids.push(await pid(sql));
      await held;
      // still works after its pool was retired under it
      longPids.push(await pid(sql));
    });
    await eventually(async () => longPids.length === 1);
    const before: number[] = [];
    for (let i = 0; i < 4; i++) before.push(await budget.use('rc', 2, poolFor('rc', 2), pid));
    assert.equal(budget.stats().recycled, 1, 'the pool retired after 4 transactions');
    const after = await budget.use('rc', 2, poolFor('rc', 2), pid);
    const old = new Set([...before, longPids[0]!]);
    assert.ok(!old.has(after), 'the next transaction ran on a new connection');
    const s = budget.stats();
    assert.ok(s.reserved + s.closing <= 3, 'the retiring pool still counts against the budget');
    release();
    await long;
    assert.equal(longPids[0], longPids[1], 'the running transaction kept its connection to the end');
    // once its last lease ended, the old pool's connections are gone
    assert.ok(await eventually(async () => {
      const rows = await su<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${appPrefix + '-rc'}`;
      return rows.every((r) => !old.has(r.pid));
    }), 'the retired pool was closed');
  } finally {
    release();
    await budget.end();
  }
});

test('Tenantry: database tenants whose transactions stall hold the whole budget; another tenant fails with CONNECTION_BUDGET_EXHAUSTED at poolWaitMs, then runs once they end', async () => {
  const inst = await freshInstallation({ maxConnections: 2, poolSize: 1, poolWaitMs: 500, schemaPoolSize: 0 });
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  try {
    const [a, b, c] = await Promise.all(['st-a', 'st-b', 'st-c'].map((slug) => inst.tenantry.tenants.create({ slug, isolation: 'database' })));
    const stalls = [a!, b!].map((t) => inst.tenantry.withTenant(t.id, async (sql) => { await sql`select 1`; await held; }));
    await eventually(async () => inst.tenantry.poolStats().leased === 2);
    const err = await inst.tenantry.withTenant(c!.id, (sql) => sql`select 1`).then(() => undefined, (e: unknown) => e);
    assert.equal((err as TenantryError | undefined)?.code, 'CONNECTION_BUDGET_EXHAUSTED');
    const [open] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where usename = ${inst.namespace + '_runtime'} and application_name = 'tenantry-runtime'`;
    assert.ok(open!.n <= 2, `${open!.n} runtime connections; the budget is 2`);
    release();
    await Promise.all(stalls);
    assert.equal(await inst.tenantry.query(c!.id, 'select count(*)::int from agents', [], 'val'), 0);
  } finally {
    release();
    await inst.cleanup();
  }
});

test('poolWaitMs is validated: zero, fractions and huge values are refused with INVALID_CONFIG', async () => {
  const { resolveOptions } = await import('../src/config.js');
  for (const bad of [0, -1, 1.5, 1e12, Number.NaN]) {
    assert.throws(() => resolveOptions({ databaseUrl: SUPERUSER_URL, poolWaitMs: bad }), (e: unknown) => (e as TenantryError).code === 'INVALID_CONFIG', String(bad));
  }
  assert.equal(resolveOptions({ databaseUrl: SUPERUSER_URL }).poolWaitMs, 30_000);
});
