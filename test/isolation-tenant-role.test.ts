import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import { freshInstallation, connectAs, signedContext, type TestInstallation } from './helpers/installation.js';
import {
  MODES, SEEDED, allFixtures, assertIntact, createFixtures, inRollbackAsRole, q, qualified, rejectsPg,
  type Fixture, type Fixtures,
} from './helpers/isolation-fixtures.js';
import type { Tenant } from '../src/index.js';

/**
 * Invariants 1 and 4 attacked through untrusted SQL: statements run on a connection whose *session*
 * user is tenant A's own login role (withTenantRole, or a raw login as that role), trying to become
 * another role, borrow another tenant's context, reach other tenants' schemas and databases, or write
 * around row-level security. Every attack ends by reading every tenant's rows back through its own
 * context: they must be exactly as seeded.
 */

let inst: TestInstallation;
let fx: Fixtures;
let ns: string;

before(async () => {
  inst = await freshInstallation();
  ns = inst.namespace;
  fx = await createFixtures(inst, 'role');
});
after(async () => { await inst?.cleanup(); });

/** Untrusted SQL text run as tenant t's own login role. */
function asRole(t: Tenant, text: string, params: unknown[] = [], opts: { readOnly?: boolean; statementTimeoutMs?: number } = {}): Promise<unknown> {
  return inst.tenantry.withTenantRole(t.id, (sql) => sql.unsafe(text, params as never[]) as unknown as Promise<unknown>, opts);
}

function last<T = Record<string, unknown>>(result: unknown): T[] {
  const r = result as unknown[];
  const results = r.length > 0 && Array.isArray(r[0]) ? r : [r];
  return results[results.length - 1] as T[];
}

function others(t: Tenant): Fixture[] {
  return allFixtures(fx).filter((f) => f.tenant.id !== t.id);
}

const groupOf = (t: Tenant): string => ({ pooled: `${ns}_pooled`, schema: `${ns}_schematenant`, database: `${ns}_dbtenant` })[t.isolation];

/** What `<schema>.agents` is to tenant a's own role, from inside a's database. */
function roleReach(a: Tenant, schema: string): 'own' | 'denied' | 'missing' {
  if (schema === a.placement.schema) return 'own';
  if (a.isolation !== 'database' && (schema === 'pooled' || schema.startsWith('t_'))) return 'denied';
  return 'missing';
}

async function withConnection<T>(role: string, database: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = await connectAs(inst, role, database);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function assertOnlyOwn(rows: { tenant_id: string }[], t: Tenant, what: string): void {
  assert.equal(rows.length, SEEDED.agents, `${what}: rows visible`);
  assert.ok(rows.every((r) => r.tenant_id === t.id), `${what}: a row of another tenant is visible`);
}

for (const am of MODES) {
  const A = (): Tenant => fx[am].a.tenant;

  test(`${am} A's role: SET ROLE / SET SESSION AUTHORIZATION to other tenants, the owner, the runtime role or other groups are refused`, async () => {
    const t = A();
    const [who] = last<{ session_user: string; current_user: string; tenant: string }>(await asRole(t, `select session_user, current_user, tenantry.current_tenant()::text as tenant`));
    assert.deepEqual(who, { session_user: t.placement.role, current_user: t.placement.role, tenant: t.id });
    const targets = [
      ...others(t).map((f) => f.tenant.placement.role),
      `${ns}_owner`, `${ns}_runtime`, `${ns}_admin`, 'postgres',
      ...[`${ns}_pooled`, `${ns}_schematenant`, `${ns}_dbtenant`].filter((g) => g !== groupOf(t)),
    ];
    for (const role of targets) {
      await rejectsPg(asRole(t, `set role ${q(role)}`), '42501', /permission denied to set role/, role);
      await rejectsPg(asRole(t, `set local role ${q(role)}; select * from agents`), '42501', /permission denied to set role/, role);
      await rejectsPg(asRole(t, `select set_config('role', $1, false)`, [role]), '42501', /permission denied to set role/, role);
      await rejectsPg(asRole(t, `set session authorization ${q(role)}`), '42501', /permission denied to set session authorization/, role);
    }
    // its own group: still A, session user decides
    const own = qualified(t, 'agents');
    if (t.isolation === 'schema') {
      // the schema tenant's grants are on its own role, not on the group
      await rejectsPg(asRole(t, `set role ${q(groupOf(t))}; select * from ${own}`), '42501', /permission denied for schema/);
    } else {
      const rows = last<{ tenant_id: string; tenant: string }>(await asRole(t, `set role ${q(groupOf(t))}; select tenant_id::text, tenantry.current_tenant()::text as tenant from ${own}`));
      assertOnlyOwn(rows, t, 'as its group');
      assert.ok(rows.every((r) => r.tenant === t.id));
    }
    for (const reset of ['reset role', 'set role none', 'reset session authorization', 'reset all']) {
      assertOnlyOwn(last(await asRole(t, `${reset}; select tenant_id::text from ${own}`)), t, reset);
    }
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: another tenant's VALID signed context changes nothing`, async () => {
    const t = A();
    const own = qualified(t, 'agents');
    await withConnection(t.placement.role, t.placement.database, async (raw) => {
      for (const f of others(t)) {
        const ctx = await signedContext(inst, f.tenant.id);
        // transaction-local, through withTenantRole
        const rows = last<{ tenant_id: string; tenant: string }>(await asRole(t, `select set_config('tenantry.ctx', '${ctx}', true); select tenant_id::text, tenantry.current_tenant()::text as tenant from agents`));
        assertOnlyOwn(rows, t, f.tenant.slug);
        assert.ok(rows.every((r) => r.tenant === t.id));
        await rejectsPg(asRole(t, `select set_config('tenantry.ctx', '${ctx}', true); insert into agents (tenant_id, name, agent_type) values ('${f.tenant.id}', 'planted', 'x')`), '42501', /row-level security/, f.tenant.slug);
        // session-level, on a raw login as A's role
        await raw`select set_config('tenantry.ctx', ${ctx}, false)`;
        assertOnlyOwn(await raw.unsafe(`select tenant_id::text from ${own}`), t, `${f.tenant.slug} (session)`);
        assert.equal((await raw.unsafe(`update ${own} set status = status where tenant_id = $1`, [f.tenant.id])).count, 0);
        assert.equal((await raw.unsafe(`delete from ${own} where tenant_id <> $1`, [t.id])).count, 0);
      }
    });
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: other tenants' tables are denied or missing, by schema-qualified name, search_path or database name`, async () => {
    const t = A();
    for (const f of others(t)) {
      const schema = f.tenant.placement.schema;
      const rel = `${q(schema)}.agents`;
      const where = roleReach(t, schema);
      if (where === 'own') {
        // the same shared table (two pooled tenants) or the same-named table in A's own database
        await inRollbackAsRole(inst, t, async (sql) => {
          assertOnlyOwn(await sql.unsafe(`select tenant_id::text from ${rel}`), t, rel);
          assert.equal((await sql.unsafe(`select 1 from ${rel} where tenant_id = $1 or id = any($2::uuid[])`, [f.tenant.id, f.agentIds])).length, 0);
          assert.equal((await sql.unsafe(`update ${rel} set status = 'pwned' where tenant_id = $1`, [f.tenant.id])).count, 0);
          assert.equal((await sql.unsafe(`delete from ${rel} where id = any($1::uuid[])`, [f.agentIds])).count, 0);
          assert.equal((await sql.unsafe(`delete from ${rel}`)).count, SEEDED.agents);
        });
      } else {
        const [code, message] = where === 'denied' ? ['42501', /permission denied for schema/] as const : ['42P01', /does not exist/] as const;
        await rejectsPg(asRole(t, `select * from ${rel}`), code, message, rel);
        await rejectsPg(asRole(t, `update ${rel} set status = 'pwned'`), code, message, rel);
        await rejectsPg(asRole(t, `delete from ${rel}`), code, message, rel);
        await rejectsPg(asRole(t, `insert into ${rel} (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [f.tenant.id]), code, message, rel);
        // a schema without USAGE is skipped in the search_path
        await rejectsPg(asRole(t, `set search_path to ${q(schema)}; select * from memories`), '42P01', /relation "memories" does not exist/, `search_path ${schema}`);
      }
      if (f.tenant.isolation === 'database') {
        await rejectsPg(asRole(t, `select * from ${q(f.tenant.placement.database)}.app.agents`), '0A000', /cross-database references are not implemented/);
      }
    }
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: no CREATE anywhere and no temporary tables`, async () => {
    const t = A();
    const own = q(t.placement.schema);
    const refusals: [string, RegExp][] = [
      [`create table public.stash (a text)`, /permission denied for schema public/],
      [`create table ${own}.stash (a text)`, /permission denied for schema/],
      [`create table stash as select * from agents`, /permission denied for schema/],
      [`create view ${own}.leak as select * from agents`, /permission denied for schema/],
      [`create view public.leak as select 1`, /permission denied for schema public/],
      [`create function public.leak() returns int language sql as 'select 1'`, /permission denied for schema public/],
      [`create temp table stash (a text)`, /permission denied to create temporary tables/],
      [`create function pg_temp.leak() returns int language sql as 'select 1'`, /permission denied to create temporary tables/],
      [`create schema evil`, /permission denied for database/],
      [`create index on agents (name)`, /must be owner of table agents/],
      [`create policy open_door on agents using (true)`, /must be owner of table agents/],
    ];
    for (const [sql, message] of refusals) await rejectsPg(asRole(t, sql), '42501', message, sql);
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: the HMAC key and the catalog are out of reach; pg_stat_activity hides other sessions' SQL`, async () => {
    const t = A();
    await rejectsPg(asRole(t, `select * from tenantry.settings`), '42501', /permission denied for table settings/);
    await rejectsPg(asRole(t, `select * from tenantry.migrations`), '42501', /permission denied for table migrations/);
    await rejectsPg(asRole(t, `select * from tenantry_catalog.tenants`), '42P01', /does not exist/);
    await rejectsPg(asRole(t, `select * from ${q(`${ns}_catalog`)}.tenantry_catalog.tenants`), '0A000', /cross-database references/);
    await rejectsPg(asRole(t, `alter role current_user set tenantry.ctx = 'x'`), '42501', /permission denied to set parameter "tenantry.ctx"/);
    // other tenants' sessions, each having just run SQL with a secret literal in it
    const open: Sql[] = [];
    try {
      for (const f of others(t)) {
        const sql = await connectAs(inst, f.tenant.placement.role, f.tenant.placement.database);
        open.push(sql);
        await sql.unsafe(`select 'probe-secret-${f.tenant.slug}' as s`);
      }
      const rows = last<{ usename: string | null; query: string | null }>(await asRole(t, `select usename::text, query from pg_stat_activity where usename is distinct from session_user`));
      assert.ok(rows.length >= others(t).length, 'the other sessions are listed');
      for (const r of rows) assert.equal(r.query, '<insufficient privilege>', `A sees the SQL of ${String(r.usename)}`);
    } finally {
      await Promise.all(open.map((s) => s.end({ timeout: 5 })));
    }
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: connecting to other tenants' databases, the catalog and the template is refused`, async () => {
    const t = A();
    const attempts: [string, string, RegExp][] = [
      ...allFixtures(fx).filter((f) => f.tenant.isolation === 'database' && f.tenant.id !== t.id)
        .map((f): [string, string, RegExp] => [f.tenant.placement.database, '42501', /permission denied for database/]),
      [`${ns}_catalog`, '42501', /permission denied for database/],
      [`${ns}_template`, '55000', /is not currently accepting connections/],
    ];
    if (t.isolation === 'database') attempts.push([`${ns}_shared`, '42501', /permission denied for database/]);
    for (const [database, code, message] of attempts) {
      await withConnection(t.placement.role, database, (sql) => rejectsPg(sql`select 1`, code, message, database));
    }
    // its own database it can reach, and there it is A
    const [me] = await withConnection(t.placement.role, t.placement.database, (sql) => sql<{ tenant: string }[]>`select tenantry.current_tenant()::text as tenant`);
    assert.equal(me!.tenant, t.id);
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: row-level security cannot be switched off, dropped, truncated around or copied around`, async () => {
    const t = A();
    const refusals: [string, string, RegExp][] = [
      [`set row_security = off; select * from agents`, '42501', /query would be affected by row-level security policy for table "agents"/],
      [`alter table agents disable row level security`, '42501', /must be owner of table agents/],
      [`alter table agents no force row level security`, '42501', /must be owner of table agents/],
      [`drop policy tenantry_isolation on agents`, '42501', /must be owner of relation agents/],
      [`alter policy tenantry_access on agents using (true)`, '42501', /must be owner of table agents/],
      [`truncate agents cascade`, '42501', /permission denied for table agents/],
      [`copy agents (name, agent_type) from stdin`, '0A000', /COPY FROM not supported with row-level security/],
    ];
    for (const [sql, code, message] of refusals) await rejectsPg(asRole(t, sql), code, message, sql);
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: INSERT with another tenant's tenant_id and UPDATE setting it are refused (42501)`, async () => {
    const t = A();
    const rls = /new row violates row-level security policy/;
    for (const f of others(t)) {
      const id = f.tenant.id;
      await rejectsPg(asRole(t, `insert into agents (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [id]), '42501', rls, f.tenant.slug);
      await rejectsPg(asRole(t, `insert into users (tenant_id, email) values ($1, 'planted@evil.example')`, [id]), '42501', rls, f.tenant.slug);
      await rejectsPg(asRole(t, `update agents set tenant_id = $1`, [id]), '42501', rls, f.tenant.slug);
      await rejectsPg(asRole(t, `update data_sources set tenant_id = $1`, [id]), '42501', rls, f.tenant.slug);
    }
    // what it may write is its own
    const [row] = await inRollbackAsRole(inst, t, (sql) => sql<{ tenant_id: string }[]>`insert into agents (name, agent_type) values ('mine', 'x') returning tenant_id::text`);
    assert.equal(row!.tenant_id, t.id);
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: readOnly refuses writes (25006) and statementTimeoutMs cancels long statements (57014)`, async () => {
    const t = A();
    const ro = { readOnly: true };
    const readOnly = /cannot execute (INSERT|UPDATE|DELETE) in a read-only transaction/;
    await rejectsPg(asRole(t, `insert into agents (name, agent_type) values ('ro', 'x')`, [], ro), '25006', readOnly);
    await rejectsPg(asRole(t, `update agents set status = 'pwned'`, [], ro), '25006', readOnly);
    await rejectsPg(asRole(t, `delete from memories`, [], ro), '25006', readOnly);
    await rejectsPg(asRole(t, `set transaction read write`, [], ro), '25001', /transaction read-write mode must be set before any query/);
    await rejectsPg(asRole(t, `select set_config('transaction_read_only', 'off', true)`, [], ro), '25001', /transaction read-write mode must be set before any query/);
    await rejectsPg(asRole(t, `set session characteristics as transaction read write; delete from memories`, [], ro), '25006', readOnly);
    // reads still work
    assertOnlyOwn(last(await asRole(t, `select tenant_id::text from agents`, [], ro)), t, 'read-only read');
    await rejectsPg(asRole(t, `select pg_sleep(5)`, [], { statementTimeoutMs: 150 }), '57014', /statement timeout/);
    await assertIntact(inst, fx);
  });

  test(`${am} A's role: role defaults it plants cannot make its next session another role or tenant`, async () => {
    const t = A();
    const victim = fx[am].b.tenant;
    await withConnection(t.placement.role, t.placement.database, async (sql) => {
      await sql.unsafe(`alter role current_user set role = '${victim.placement.role}'`);
      await sql.unsafe(`alter role current_user set search_path = ${q(victim.placement.schema)}`);
      await rejectsPg(sql.unsafe(`alter role current_user set tenantry.ctx = '${await signedContext(inst, victim.id)}'`), '42501', /permission denied to set parameter/);
    });
    try {
      await withConnection(t.placement.role, t.placement.database, async (sql) => {
        const [who] = await sql<{ session_user: string; current_user: string; tenant: string }[]>`select session_user, current_user, tenantry.current_tenant()::text as tenant`;
        assert.deepEqual(who, { session_user: t.placement.role, current_user: t.placement.role, tenant: t.id });
        if (roleReach(t, victim.placement.schema) === 'own') {
          assertOnlyOwn(await sql`select tenant_id::text from agents`, t, 'with the planted search_path');
        } else {
          await rejectsPg(sql`select tenant_id::text from agents`, '42P01', /relation "agents" does not exist/);
        }
      });
    } finally {
      await withConnection(t.placement.role, t.placement.database, (sql) => sql.unsafe('alter role current_user reset all'));
    }
    await assertIntact(inst, fx);
  });
}
