import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, rolePassword, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { Tenantry } from '../src/index.js';
import { existsSync } from 'node:fs';
import { startPgBouncerFrom, PGBOUNCER_BIN } from './helpers/pgbouncer.js';

// Debian's package (.ci/run installs it); without it the file says so and skips
// The test's PgBouncer logs in to the server with the installation's users and no password of the
// server's own superuser: it needs a server that trusts loopback logins, as the PostgreSQL service CI
// runs these on does. The embedded server asks for passwords (SASL fails there), so they run on the
// service only (.ci/run's first suite).
const skip = !existsSync(PGBOUNCER_BIN) ? `PgBouncer not installed at ${PGBOUNCER_BIN} (apt-get install pgbouncer, or PGBOUNCER_BIN)`
  : new URL(SUPERUSER_URL).password ? 'the server asks for passwords (the embedded one): the PgBouncer tests run on a server that trusts loopback logins'
  : false;

/**
 * Tenantry behind PgBouncer (Debian's 1.18) in transaction mode, with ONE server connection per
 * database and user: every transaction of every tenant of a database runs on the same PostgreSQL
 * session, one after another, so anything one transaction left behind (a context, a search_path, a
 * prepared statement, a setting) would be found by the next one of another tenant.
 */

let inst: TestInstallation;
let runtimeProbe: Sql;
const TENANTS = 50;
const TRANSACTIONS = 10_000;
type Mode = 'pooled' | 'schema' | 'database';
const tenants: { id: string; isolation: Mode }[] = [];

before(async () => {
  if (skip) return;
  inst = await freshInstallation({ maxConnections: 24, poolSize: 4 }, { pgbouncer: { poolSize: 1 } });
  const modes: Mode[] = ['pooled', 'schema', 'database'];
  for (let i = 0; i < TENANTS; i++) {
    const isolation = modes[i % 3]!;
    const t = await inst.tenantry.tenants.create({ slug: `bouncer-${i}`, isolation });
    tenants.push({ id: t.id, isolation });
  }
  // the runtime role's own session on the shared database, through the same PgBouncer: with one
  // server connection it sees exactly the state the tenants' transactions left on that connection
  runtimeProbe = postgres(inst.bouncer!.via(inst.urlFor(`${inst.namespace}_shared`, `${inst.namespace}_runtime`, await rolePassword(inst, `${inst.namespace}_runtime`))), { max: 1, prepare: false, onnotice: () => {} });
});
after(async () => {
  await runtimeProbe?.end({ timeout: 5 });
  await inst?.cleanup();
});

async function bouncerStats(): Promise<{ database: string; total_xact_count: number }[]> {
  const admin = postgres(inst.bouncer!.via('postgres://postgres@127.0.0.1/pgbouncer'), { max: 1, prepare: false, fetch_types: false, onnotice: () => {} });
  try {
    return (await admin.unsafe('show stats').simple()) as unknown as { database: string; total_xact_count: number }[];
  } finally {
    await admin.end({ timeout: 5 });
  }
}

async function bouncerPools(): Promise<{ database: string; user: string }[]> {
  const admin = postgres(inst.bouncer!.via('postgres://postgres@127.0.0.1/pgbouncer'), { max: 1, prepare: false, fetch_types: false, onnotice: () => {} });
  try {
    return (await admin.unsafe('show pools').simple()) as unknown as { database: string; user: string }[];
  } finally {
    await admin.end({ timeout: 5 });
  }
}

test('10,000 interleaved transactions of 50 tenants in all three modes through PgBouncer with one server connection: no row of another tenant, no leaked context, no error', { skip }, async () => {
  const before = (await bouncerStats()).reduce((n, s) => n + Number(s.total_xact_count), 0);
  let wrongRows = 0;
  let wrongContext = 0;
  let leaked = 0;
  const errors: string[] = [];
  const inserted = new Map<string, number>();
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < TRANSACTIONS; i = next++) {
      const t = tenants[(i * 7919) % TENANTS]!;
      try {
        switch (i % 4) {
          case 0: {
            // awaited form, with a write
            const rows = await inst.tenantry.withTenant(t.id, async (sql) => {
              const [ctx] = await sql<{ c: string; iso: string; timeout: string }[]>`select current_setting('tenantry.ctx') as c, current_setting('transaction_isolation') as iso, current_setting('statement_timeout') as timeout`;
              if (!ctx!.c.startsWith(`${t.id}.`) || ctx!.iso !== 'read committed' || ctx!.timeout !== '0') wrongContext++;
              await sql`insert into users (email) values (${`u${i}@example.com`})`;
              return sql<{ tenant_id: string }[]>`select tenant_id from users`;
            });
            inserted.set(t.id, (inserted.get(t.id) ?? 0) + 1);
            wrongRows += rows.filter((r) => r.tenant_id !== t.id).length;
            break;
          }
          case 1: {
            // batch form: statements handed back unawaited, one round trip
            const [rows, [ctx]] = await inst.tenantry.withTenant(t.id, (sql) => [
              sql<{ tenant_id: string }[]>`select tenant_id from users`,
              sql<{ c: string }[]>`select current_setting('tenantry.ctx') as c`,
            ] as never) as unknown as [{ tenant_id: string }[], { c: string }[]];
            wrongRows += rows.filter((r) => r.tenant_id !== t.id).length;
            if (!ctx!.c.startsWith(`${t.id}.`)) wrongContext++;
            break;
          }
          case 2: {
            const rows = await inst.tenantry.query<{ tenant_id: string }>(t.id, 'select tenant_id from users where email like $1', ['u%']) as { tenant_id: string }[];
            wrongRows += rows.filter((r) => r.tenant_id !== t.id).length;
            break;
          }
          default: {
            // a transaction that leaves session state behind on purpose: the reset must clear it
            await inst.tenantry.withTenant(t.id, async (sql) => {
              await sql.unsafe(`prepare leftover as select tenant_id from users`);
              await sql.unsafe(`select set_config('tenantry.ctx', current_setting('tenantry.ctx'), false), set_config('search_path', 'pooled', false)`);
            });
          }
        }
      } catch (err) {
        errors.push(`${t.isolation}: ${(err as Error).message}`);
      }
      if (i % 97 === 0) {
        // between transactions, the shared server connection carries no context and no rows
        const [s] = await runtimeProbe.unsafe(`select coalesce(current_setting('tenantry.ctx', true), '') as c, current_setting('search_path') as p,
          (select count(*)::int from pooled.users) as pooled_rows, (select count(*)::int from pg_prepared_statements) as prepared`) as unknown as { c: string; p: string; pooled_rows: number; prepared: number }[];
        if (s!.c !== '' || s!.pooled_rows !== 0 || s!.prepared !== 0 || s!.p.includes('pooled')) leaked++;
      }
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  assert.deepEqual(errors.slice(0, 5), [], `${errors.length} transactions failed`);
  assert.equal(wrongRows, 0, 'rows of another tenant');
  assert.equal(wrongContext, 0, 'transactions that ran without their own context and pinned settings');
  assert.equal(leaked, 0, 'context, search_path, prepared statements or rows seen between transactions');
  // the traffic really went through PgBouncer
  const after = (await bouncerStats()).reduce((n, s) => n + Number(s.total_xact_count), 0);
  assert.ok(after - before >= TRANSACTIONS, `PgBouncer counted ${after - before} transactions`);
  // every tenant's writes arrived, all of them and in its own walls
  assert.ok(inserted.size >= TENANTS / 2);
  for (const t of tenants) {
    const n = await inst.tenantry.query(t.id, 'select count(*)::int from users', [], 'val') as number;
    assert.equal(n, inserted.get(t.id) ?? 0, `tenant ${t.id} (${t.isolation}) sees exactly the rows it wrote`);
  }
});

test('role defaults planted on the runtime role are overridden in every transaction behind PgBouncer (which refuses startup parameters)', { skip }, async () => {
  const runtime = `${inst.namespace}_runtime`;
  const t = tenants.find((x) => x.isolation === 'schema')!;
  try {
    // long enough for the pinning statement itself to run on a busy machine, short enough to cancel the sleep below
    await inst.su.unsafe(`alter role "${runtime}" set statement_timeout = '200ms'`);
    await inst.su.unsafe(`alter role "${runtime}" set default_transaction_read_only = on`);
    await inst.su.unsafe(`alter role "${runtime}" set default_transaction_isolation = 'serializable'`);
    await inst.su.unsafe(`alter role "${runtime}" set row_security = off`);
    // PgBouncer's server connections pick the defaults up when they are made again
    await inst.su`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${runtime}`;
    const got = await inst.tenantry.withTenant(t.id, async (sql) => {
      await sql`insert into users (email) values ('planted@example.com')`;
      const [s] = await sql<{ ro: string; iso: string; timeout: string; rs: string }[]>`
        select current_setting('transaction_read_only') as ro, current_setting('transaction_isolation') as iso,
               current_setting('statement_timeout') as timeout, current_setting('row_security') as rs, pg_sleep(0.4)`;
      return s!;
    });
    assert.deepEqual({ ...got, pg_sleep: undefined }, { ro: 'off', iso: 'read committed', timeout: '0', rs: 'on', pg_sleep: undefined });
  } finally {
    await inst.su.unsafe(`alter role "${runtime}" reset all`);
    await inst.su`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${runtime}`;
  }
});

test('database-mode creates through PgBouncer: PgBouncer never holds a connection to the template', { skip }, async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'bouncer-late-db', isolation: 'database' });
  assert.equal(await inst.tenantry.query(t.id, 'select count(*)::int from users', [], 'val'), 0);
  const pools = await bouncerPools();
  assert.ok(pools.some((p) => p.database === `${inst.namespace}_shared`), 'the runtime traffic went through PgBouncer');
  assert.deepEqual(pools.filter((p) => p.database === `${inst.namespace}_template`), []);
});

test('a tenant suspended in one process is refused at once in another behind PgBouncer (LISTEN over the direct URL)', { skip }, async () => {
  const other = await Tenantry.open({
    databaseUrl: inst.tenantry.options.databaseUrl!, directUrl: inst.tenantry.options.directUrl!,
    namespace: inst.namespace, tenantCacheTtlMs: 600_000, schemaPoolSize: 0, maxConnections: 4,
  });
  try {
    const t = tenants.find((x) => x.isolation === 'pooled')!;
    // cached in the other process
    await other.withTenant(t.id, async (sql) => sql`select 1`);
    await inst.tenantry.tenants.suspend(t.id, 'bouncer test');
    let refused = false;
    for (let i = 0; i < 40 && !refused; i++) {
      await new Promise((r) => setTimeout(r, 50));
      refused = await other.withTenant(t.id, async (sql) => sql`select 1`).then(() => false, (err: { code?: string }) => err.code === 'TENANT_SUSPENDED');
    }
    assert.ok(refused, 'the other process saw the suspension within 2 s (its cache lives 10 minutes)');
    await inst.tenantry.tenants.activate(t.id);
  } finally {
    await other.close();
  }
});

test('`pgbouncer-config` writes a pgbouncer.ini and userlist that PgBouncer starts with and Tenantry works through (SCRAM to PgBouncer, every mode, untrusted SQL too)', { skip }, async () => {
  const port = await freeLoopbackPort();
  const out = await inst.tenantry.pgbouncerConfig({ listenPort: port, poolSize: 2, authFile: 'userlist.txt' });
  assert.match(out.ini, /pool_mode = transaction/);
  assert.ok(!out.ini.includes(new URL(inst.adminUrl).password) && !out.userlist.includes(new URL(inst.adminUrl).password), 'no password of the configured user in either file');
  assert.ok(out.userlist.includes(`"${inst.namespace}_runtime" "SCRAM-SHA-256$`), 'the runtime role by its SCRAM verifier');
  const bouncer = await startPgBouncerFrom(out.ini, out.userlist);
  const other = await Tenantry.open({ databaseUrl: bouncer.via(inst.adminUrl), directUrl: inst.adminUrl, namespace: inst.namespace, schemaPoolSize: 0, maxConnections: 6 });
  try {
    for (const mode of ['pooled', 'schema', 'database'] as const) {
      const t = tenants.find((x) => x.isolation === mode)!;
      await other.withTenant(t.id, (sql) => sql`insert into users (email) values ('via-generated-config@example.com')`);
      const ids = await other.withTenant(t.id, (sql) => sql<{ tenant_id: string }[]>`select distinct tenant_id::text from users`);
      assert.deepEqual(ids.map((r) => r.tenant_id), [t.id], `${mode}: own rows only`);
      const viaRole = await other.runTenantSql(t.id, { sql: 'select count(*)::int as n from users' });
      assert.ok((viaRole.rows[0] as { n: number }).n > 0, `${mode}: untrusted SQL as the tenant's own role through PgBouncer`);
    }
  } finally {
    await other.close();
    await bouncer.stop();
  }
});

async function freeLoopbackPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
}
