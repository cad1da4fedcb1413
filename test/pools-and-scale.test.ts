import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';

/**
 * Connections and provisioning under load: database tenants share one connection budget (1,000
 * database tenants must not need 1,000 connections), concurrent clones of the template all succeed,
 * and concurrent schema signups each claim a different pre-created schema.
 */

let inst: TestInstallation;
const BUDGET = 6;
const POOL = 2;
before(async () => { inst = await freshInstallation({ maxConnections: BUDGET, poolSize: POOL, idleTimeoutSeconds: 2, schemaPoolSize: 6 }); });
after(async () => { await inst?.cleanup(); });

test('50 concurrent database-mode creates all succeed (concurrent template clones)', async () => {
  const created = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => inst.tenantry.tenants.create({ slug: `db-burst-${i}`, isolation: 'database' })));
  const failed = created.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  assert.deepEqual(failed.map((f) => String(f.reason?.message ?? f.reason)), [], 'every database-mode create succeeds');
  const [c] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_database where datname like ${inst.namespace + '\\_t\\_%'}`;
  assert.equal(c!.n, 50);
});

test('many database tenants share one connection budget: pools are evicted, never more than the budget is open', async () => {
  const tenants = (await inst.tenantry.tenants.list({ isolation: 'database', limit: 500 })).items;
  assert.ok(tenants.length >= 50);
  let maxSeen = 0;
  const runtime = `${inst.namespace}_runtime`;
  const sample = async (): Promise<void> => {
    const [r] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where usename = ${runtime}`;
    maxSeen = Math.max(maxSeen, r!.n);
  };
  const sampler = setInterval(() => void sample(), 20);
  try {
    // every tenant twice, 8 at a time: more databases than the budget could ever hold open together
    const queue = [...tenants, ...tenants];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let t = queue.pop(); t; t = queue.pop()) {
        const id = t.id;
        await inst.tenantry.withTenant(id, async (sql) => {
          await sql`insert into agents (name, agent_type) values (${'a-' + Math.random()}, 'x')`;
          const [own] = await sql<{ n: number; other: number }[]>`
            select count(*)::int as n, count(*) filter (where tenant_id <> ${id})::int as other from agents`;
          assert.equal(own!.other, 0);
        });
        const stats = inst.tenantry.poolStats();
        assert.ok(stats.reserved <= BUDGET, `reserved ${stats.reserved} > budget ${BUDGET}`);
      }
    }));
    await sample();
  } finally {
    clearInterval(sampler);
  }
  assert.ok(maxSeen <= BUDGET, `${maxSeen} runtime connections were open at once; the budget is ${BUDGET}`);
  const stats = inst.tenantry.poolStats();
  assert.ok(stats.evictions > 0, 'pools were evicted to stay within the budget');
  // every tenant's rows arrived, in its own database
  for (const t of tenants.slice(0, 10)) {
    assert.equal(await inst.tenantry.query(t.id, 'select count(*)::int from agents', [], 'val'), 2);
  }
  // idle pools close
  await new Promise((r) => setTimeout(r, 4500));
  assert.equal(inst.tenantry.poolStats().pools, 0, 'idle pools are closed');
});

test('concurrent schema signups each claim a different pre-created schema, and the pool refills', async () => {
  const shared = `${inst.namespace}_shared`;
  const su = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  const postgres = (await import('postgres')).default;
  const sharedSu = postgres(inst.urlFor(shared, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 1 });
  try {
    // wait for the background fill
    for (let i = 0; i < 100; i++) {
      const [p] = await sharedSu<{ n: number }[]>`select count(*)::int as n from tenantry.schema_pool where version > 0`;
      if (p!.n >= 6) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const pooled = (await sharedSu<{ schema_name: string }[]>`select schema_name from tenantry.schema_pool`).map((r) => r.schema_name);
    assert.equal(pooled.length, 6, 'the pool is full before the burst');
    const created = await Promise.all(Array.from({ length: 10 }, (_, i) => inst.tenantry.tenants.create({ slug: `sch-burst-${i}`, isolation: 'schema' })));
    // distinct schemas, each named for its tenant, each usable and isolated
    assert.equal(new Set(created.map((t) => t.placement.schema)).size, 10);
    for (const t of created) {
      await inst.tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) values ('mine', 'x')`);
    }
    for (const t of created) {
      const rows = await inst.tenantry.query<{ tenant_id: string }>(t.id, 'select tenant_id::text from agents', [], 'all') as { tenant_id: string }[];
      assert.deepEqual(rows.map((r) => r.tenant_id), [t.id]);
    }
    // the pool schemas were consumed by renaming (none left under their old names), at most 6 of them
    const [left] = await sharedSu<{ n: number }[]>`select count(*)::int as n from pg_namespace where nspname = any(${pooled})`;
    const [stillPooled] = await sharedSu<{ n: number }[]>`select count(*)::int as n from tenantry.schema_pool where schema_name = any(${pooled})`;
    assert.equal(left!.n, stillPooled!.n, 'a claimed pool schema is gone from the pool');
    assert.ok(stillPooled!.n <= 6 - 1, 'the burst claimed pool schemas');
    // each claimed schema carries its tenant's policies pinned to it, and grants for its own role only
    for (const t of created) {
      const [pol] = await sharedSu<{ n: number }[]>`
        select count(*)::int as n from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = ${t.placement.schema} and p.polname = 'tenantry_isolation' and pg_get_expr(p.polqual, p.polrelid) like ${'%' + t.id + '%'}`;
      assert.equal(pol!.n, 5, `${t.slug}: the five tables' policies are pinned to the tenant`);
    }
    // refilled in the background
    let refilled = 0;
    for (let i = 0; i < 100 && refilled < 6; i++) {
      await new Promise((r) => setTimeout(r, 100));
      refilled = (await sharedSu<{ n: number }[]>`select count(*)::int as n from tenantry.schema_pool where version > 0`)[0]!.n;
    }
    assert.equal(refilled, 6, 'the pool refills after claims');
    assert.ok((await inst.tenantry.doctor()).ok);
  } finally {
    await sharedSu.end();
  }
});

/** Runs one transaction per entry at once, each waiting inside until all are inside (or `ms` pass). */
async function allInsideAtOnce(ids: string[], ms: number): Promise<boolean> {
  let inside = 0;
  let release!: () => void;
  const all = new Promise<void>((r) => { release = r; });
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; release(); }, ms);
  let together = false;
  await Promise.all(ids.map((id) => inst.tenantry.withTenant(id, async (sql) => {
    await sql`select 1`;
    if (++inside === ids.length && !timedOut) { together = true; release(); }
    await all;
  })));
  clearTimeout(timer);
  return together;
}

test('database pools start with one connection and grow on demand: as many tenant databases as the budget hold a transaction open at once', async () => {
  const tenants = (await inst.tenantry.tenants.list({ isolation: 'database', limit: 500 })).items.slice(0, BUDGET);
  assert.equal(tenants.length, BUDGET);
  // each pool may grow to POOL (2) connections; had each reserved all of them from the budget, only
  // BUDGET / POOL databases could be open at once and the others would wait for these to end
  assert.ok(await allInsideAtOnce(tenants.map((t) => t.id), 10_000), `${BUDGET} tenant databases were not open at once within a budget of ${BUDGET}`);
  const stats = inst.tenantry.poolStats();
  assert.ok(stats.reserved <= BUDGET, `reserved ${stats.reserved} > budget ${BUDGET}`);
});

test('a busy database pool grows to its size: two transactions of one tenant run at once, a third waits within the pool size', async () => {
  const [t] = (await inst.tenantry.tenants.list({ isolation: 'database', limit: 1 })).items;
  assert.ok(await allInsideAtOnce([t!.id, t!.id], 10_000), 'the pool grew to a second connection');
  const runtime = `${inst.namespace}_runtime`;
  const [open] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where usename = ${runtime} and datname = ${t!.placement.database}`;
  assert.ok(open!.n <= POOL, `${open!.n} connections to one tenant database; the pool size is ${POOL}`);
  // three at once cannot all be inside a pool of two
  assert.equal(await allInsideAtOnce([t!.id, t!.id, t!.id], 1_000), false);
});
