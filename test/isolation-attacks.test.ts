import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import { freshInstallation, connectAs, signedContext, type TestInstallation } from './helpers/installation.js';
import {
  MODES, TABLES, SEEDED, GARBAGE_MAC, allFixtures, assertIntact, createFixtures, inRollback, q, qualified,
  rejectsPg, savepointRejects, suTo, otherUuid, type Fixture, type Fixtures,
} from './helpers/isolation-fixtures.js';
import type { Tenant } from '../src/index.js';
import type { Core } from '../src/core.js';

/**
 * Invariants 1-3 attacked through the library's own path (withTenant / query on the runtime role):
 * SQL that tenant A's code runs, injected or not, tries every way to read, change, delete or plant rows
 * of tenant B, in each isolation mode and across modes. Every attack ends by reading every tenant's
 * rows back through its own context: they must be exactly as seeded.
 */

let inst: TestInstallation;
let fx: Fixtures;
let ns: string;
const sharedDb = (): string => `${ns}_shared`;
const runtime = (): string => `${ns}_runtime`;

before(async () => {
  // one runtime connection per database, so every transaction below shares the same session
  inst = await freshInstallation({ poolSize: 1 });
  ns = inst.namespace;
  fx = await createFixtures(inst, 'atk');
});
after(async () => { await inst?.cleanup(); });

/** Runs SQL text through query() as tenant t (the path where injected SQL lands). */
function run(t: Tenant, text: string, params: unknown[] = []): Promise<unknown> {
  return inst.tenantry.query(t.id, text, params);
}

/**
 * The rows of the last statement of a (possibly multi-statement) simple query. postgres.js starts a new
 * result only at a row description, so smuggled DML says RETURNING to be counted.
 */
function last<T = Record<string, unknown>>(result: unknown): T[] {
  const r = result as unknown[];
  const results = r.length > 0 && Array.isArray(r[0]) ? r : [r];
  return results[results.length - 1] as T[];
}

/** Where `<schema>.agents` leads from inside A's database. */
type Reach = 'own' | 'foreign' | 'missing';
function reach(a: Tenant, schema: string): Reach {
  if (schema === a.placement.schema) return 'own';
  // the shared database holds `pooled` and every schema tenant's schema; a tenant database only `app`
  if (a.isolation !== 'database' && (schema === 'pooled' || schema.startsWith('t_'))) return 'foreign';
  return 'missing';
}

/** The MAC part of a tenant's valid context ('<id>.<mode>.<mac>'). */
async function macOf(t: Tenant): Promise<string> {
  return (await signedContext(inst, t.id)).split('.')[2]!;
}
const modeOf = (t: Tenant): string => t.isolation[0]!;

// ---------------------------------------------------------------- A against B, every pair of modes

for (const am of MODES) {
  for (const bm of MODES) {
    const label = `${am} A vs ${bm} B`;
    const pair = (): { A: Fixture; B: Fixture } => ({ A: fx[am].a, B: fx[bm].b });

    test(`${label}: SELECT, UPDATE and DELETE of every row reach only A's rows`, async () => {
      const { A, B } = pair();
      await inRollback(inst, A.tenant, async (sql) => {
        for (const table of TABLES) {
          const rows = await sql.unsafe<{ tenant_id: string }[]>(`select tenant_id::text from ${table}`);
          assert.equal(rows.length, SEEDED[table], `${table}: A sees only its own rows`);
          assert.ok(rows.every((r) => r.tenant_id === A.tenant.id), `${table}: a row of another tenant is visible`);
          assert.equal((await sql.unsafe(`select 1 from ${table} where tenant_id = $1`, [B.tenant.id])).length, 0, `${table}: B's rows are visible`);
        }
        assert.equal((await sql`select 1 from agents where id in ${sql(B.agentIds)} or name in ${sql(B.agentNames)}`).length, 0);
        assert.equal((await sql`select 1 from users where id = ${B.userId}`).length, 0);
        assert.equal((await sql`update agents set status = 'pwned' where tenant_id = ${B.tenant.id}`).count, 0);
        assert.equal((await sql`update agents set status = 'pwned' where id in ${sql(B.agentIds)}`).count, 0);
        assert.equal((await sql`delete from agents where tenant_id = ${B.tenant.id} or id in ${sql(B.agentIds)}`).count, 0);
        assert.equal((await sql`delete from users where id = ${B.userId}`).count, 0);
        // and without any WHERE: exactly A's rows, none of B's
        assert.equal((await sql`update data_sources set kind = 'pwned'`).count, SEEDED.data_sources);
        assert.equal((await sql`update agents set status = 'pwned'`).count, SEEDED.agents);
        assert.equal((await sql`delete from memories`).count, SEEDED.memories);
        assert.equal((await sql`delete from executions`).count, SEEDED.executions);
        assert.equal((await sql`delete from agents`).count, SEEDED.agents);
        assert.equal((await sql`delete from users`).count, SEEDED.users);
      });
      await assertIntact(inst, fx);
    });

    test(`${label}: INSERT with tenant_id = B and UPDATE setting tenant_id = B are refused (42501)`, async () => {
      const { A, B } = pair();
      const b = B.tenant.id;
      const rls = /new row violates row-level security policy/;
      await rejectsPg(run(A.tenant, `insert into agents (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [b]), '42501', rls, 'insert agents');
      await rejectsPg(run(A.tenant, `insert into users (tenant_id, email) values ($1, 'planted@evil.example')`, [b]), '42501', rls, 'insert users');
      await rejectsPg(run(A.tenant, `insert into memories (tenant_id, agent_id, key, content) values ($1, $2, 'k', 'planted')`, [b, B.agentIds[0]]), '42501', rls, 'insert memories');
      await rejectsPg(run(A.tenant, `insert into data_sources (tenant_id, name, kind) select $1::uuid, name || '-copy', kind from data_sources`, [b]), '42501', rls, 'insert ... select');
      await rejectsPg(run(A.tenant, `insert into agents (tenant_id, name, agent_type) values ($1, $2, 'x') on conflict (tenant_id, name) do update set status = 'pwned'`, [b, B.agentNames[0]]), '42501', rls, 'upsert');
      await rejectsPg(run(A.tenant, `update agents set tenant_id = $1`, [b]), '42501', rls, 'update agents');
      await rejectsPg(run(A.tenant, `update users set tenant_id = $1`, [b]), '42501', rls, 'update users');
      await rejectsPg(run(A.tenant, `update data_sources set tenant_id = $1, name = 'moved'`, [b]), '42501', rls, 'update data_sources');
      await assertIntact(inst, fx);
    });

    test(`${label}: schema-qualified names of B's tables reach none of B's rows`, async () => {
      const { A, B } = pair();
      const schema = B.tenant.placement.schema;
      const where = reach(A.tenant, schema);
      const rel = `${q(schema)}.agents`;
      if (where === 'missing') {
        await rejectsPg(run(A.tenant, `select * from ${rel}`), '42P01', /does not exist/, rel);
        await rejectsPg(run(A.tenant, `update ${rel} set status = 'pwned'`), '42P01', /does not exist/, rel);
        await rejectsPg(run(A.tenant, `delete from ${rel}`), '42P01', /does not exist/, rel);
        await rejectsPg(run(A.tenant, `insert into ${rel} (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [B.tenant.id]), '42P01', /does not exist/, rel);
      } else {
        const own = where === 'own' ? SEEDED.agents : 0;
        await inRollback(inst, A.tenant, async (sql) => {
          const rows = await sql.unsafe<{ tenant_id: string }[]>(`select tenant_id::text from ${rel}`);
          assert.equal(rows.length, own, `${rel}: rows visible to A`);
          assert.ok(rows.every((r) => r.tenant_id === A.tenant.id));
          assert.equal((await sql.unsafe(`select 1 from ${rel} where tenant_id = $1`, [B.tenant.id])).length, 0);
          assert.equal((await sql.unsafe(`update ${rel} set status = 'pwned' where id = any($1::uuid[])`, [B.agentIds])).count, 0);
          assert.equal((await sql.unsafe(`delete from ${rel} where tenant_id = $1`, [B.tenant.id])).count, 0);
          await savepointRejects(sql, (sp) => sp.unsafe(`insert into ${rel} (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [B.tenant.id]), '42501', /row-level security/, rel);
          if (schema.startsWith('t_') && where === 'foreign') {
            // a schema tenant's tables also pin tenant_id to that tenant: A cannot even put its own rows there
            await savepointRejects(sql, (sp) => sp.unsafe(`insert into ${rel} (name, agent_type) values ('planted', 'x')`), '42501', /"tenantry_isolation"/, rel);
          }
          assert.equal((await sql.unsafe(`update ${rel} set status = 'pwned'`)).count, own);
          assert.equal((await sql.unsafe(`delete from ${rel}`)).count, own);
        });
      }
      if (B.tenant.isolation === 'database') {
        // B's database by name: PostgreSQL has no cross-database references
        await rejectsPg(run(A.tenant, `select * from ${q(B.tenant.placement.database)}.app.agents`), '0A000', /cross-database references are not implemented/);
        await rejectsPg(run(A.tenant, `delete from ${q(B.tenant.placement.database)}.app.agents`), '0A000', /cross-database references/);
      }
      await assertIntact(inst, fx);
    });

    test(`${label}: search_path switched to B's schema reaches none of B's rows`, async () => {
      const { A, B } = pair();
      const schema = B.tenant.placement.schema;
      const where = reach(A.tenant, schema);
      const switches = [
        `set search_path to ${q(schema)}`,
        `set local search_path to ${q(schema)}, public`,
        `select set_config('search_path', '${q(schema)}', true)`,
        `select set_config('search_path', '${q(schema)}', false)`,
      ];
      for (const sw of switches) {
        if (where === 'missing') {
          await rejectsPg(run(A.tenant, `${sw}; select * from agents`), '42P01', /relation "agents" does not exist/, sw);
          await rejectsPg(run(A.tenant, `${sw}; delete from agents`), '42P01', /relation "agents" does not exist/, sw);
          continue;
        }
        const own = where === 'own' ? SEEDED.agents : 0;
        await inRollback(inst, A.tenant, async (sql) => {
          await sql.unsafe(sw);
          const rows = await sql.unsafe<{ tenant_id: string; schema: string }[]>(`select tenant_id::text, current_schema() as schema from agents`);
          assert.equal(rows.length, own, `${sw}: rows visible to A`);
          assert.ok(rows.every((r) => r.tenant_id === A.tenant.id));
          assert.equal((await sql.unsafe(`update agents set status = 'pwned' where tenant_id = $1`, [B.tenant.id])).count, 0);
          assert.equal((await sql.unsafe(`update memories set content = 'pwned'`)).count, where === 'own' ? SEEDED.memories : 0);
          assert.equal((await sql.unsafe(`delete from agents`)).count, own);
          await savepointRejects(sql, (sp) => sp.unsafe(`insert into agents (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [B.tenant.id]), '42501', /row-level security/, sw);
        });
      }
      await assertIntact(inst, fx);
    });

    test(`${label}: SET ROLE and SET SESSION AUTHORIZATION to B's role are refused (42501)`, async () => {
      const { A, B } = pair();
      const role = q(B.tenant.placement.role);
      await rejectsPg(run(A.tenant, `set role ${role}`), '42501', /permission denied to set role/);
      await rejectsPg(run(A.tenant, `set local role ${role}; delete from agents`), '42501', /permission denied to set role/);
      await rejectsPg(run(A.tenant, `select set_config('role', $1, true)`, [B.tenant.placement.role]), '42501', /permission denied to set role/);
      await rejectsPg(run(A.tenant, `set session authorization ${role}`), '42501', /permission denied to set session authorization/);
      await assertIntact(inst, fx);
    });

    test(`${label}: forged contexts naming B raise (42501); look-alike settings change nothing`, async () => {
      const { A, B } = pair();
      const b = B.tenant.id;
      const aMac = await macOf(A.tenant);
      const bm = modeOf(B.tenant);
      const forged: [string, RegExp][] = [
        [`${b}.${bm}.${GARBAGE_MAC}`, /signature is invalid/],
        [`${b}.${bm}.${aMac}`, /signature is invalid/],
        [`${b}.${bm}.${aMac.toUpperCase()}`, /signature is invalid/],
        // A's own id and MAC with another mode letter: the mode is signed too
        ...['p', 's', 'd'].filter((m) => m !== modeOf(A.tenant)).map((m) => [`${A.tenant.id}.${m}.${aMac}`, /signature is invalid/] as [string, RegExp]),
        [b, /malformed tenant context/],
        [`${b}.${aMac}`, /malformed tenant context/],
        [`${b}.${bm}.${aMac}.x`, /malformed tenant context/],
        [`${b}.x.${aMac}`, /malformed tenant context/],
        [`${b.toUpperCase()}.${bm}.${aMac}`, /malformed tenant context/],
      ];
      for (const [ctx, message] of forged) {
        for (const local of [true, false]) {
          await rejectsPg(run(A.tenant, `select set_config('tenantry.ctx', '${ctx}', ${local}); select * from agents`), '42501', message, ctx);
          await rejectsPg(run(A.tenant, `select set_config('tenantry.ctx', '${ctx}', ${local}); delete from agents`), '42501', message, ctx);
          await rejectsPg(run(A.tenant, `select set_config('tenantry.ctx', '${ctx}', ${local}); insert into agents (name, agent_type) values ('planted', 'x')`), '42501', message, ctx);
        }
        await rejectsPg(run(A.tenant, `set tenantry.ctx = '${ctx}'; update agents set status = 'pwned'`), '42501', message, ctx);
      }
      // settings other designs key on are nothing here
      for (const name of ['app.current_tenant_id', 'app.tenant_id', 'tenantry.tenant_id', 'tenantry.tenant']) {
        const rows = last<{ tenant_id: string }>(await run(A.tenant, `select set_config('${name}', '${b}', true); select tenant_id::text from agents`));
        assert.equal(rows.length, SEEDED.agents, name);
        assert.ok(rows.every((r) => r.tenant_id === A.tenant.id), name);
      }
      if (A.tenant.isolation === 'database') {
        // even B's VALID context is refused inside A's database
        const bCtx = await signedContext(inst, b);
        await rejectsPg(run(A.tenant, `select set_config('tenantry.ctx', '${bCtx}', true); select * from agents`), '42501', /this database belongs to another tenant/);
        await rejectsPg(run(A.tenant, `select set_config('tenantry.ctx', '${bCtx}', true); delete from agents`), '42501', /this database belongs to another tenant/);
      }
      await assertIntact(inst, fx);
    });

    test(`${label}: statements smuggled after ';' or after COMMIT reach none of B's rows`, async () => {
      const { A, B } = pair();
      const b = B.tenant.id;
      const aCtxMac = await macOf(A.tenant);
      // a second statement in the same text still runs in A's context
      assert.equal(last(await run(A.tenant, `select 1; delete from agents where tenant_id = '${b}' returning id`)).length, 0);
      assert.equal(last(await run(A.tenant, `select 1; update agents set name = 'pwned' where name = '${B.agentNames[0]}' returning id`)).length, 0);
      assert.equal(last(await run(A.tenant, `select 1; update users set email = 'pwned' where id = '${B.userId}' returning id`)).length, 0);
      // after COMMIT the context and the search_path are gone
      await rejectsPg(run(A.tenant, `commit; delete from agents`), '42P01', /relation "agents" does not exist/);
      await rejectsPg(run(A.tenant, `commit; select * from memories`), '42P01', /relation "memories" does not exist/);
      // ... so even A's own tables, named in full, show nothing and lose nothing (no context: no rows, never all rows)
      assert.equal(last(await run(A.tenant, `commit; select * from ${qualified(A.tenant, 'agents')}`)).length, 0);
      assert.equal(last(await run(A.tenant, `commit; delete from ${qualified(A.tenant, 'memories')} returning id`)).length, 0);
      assert.equal(last(await run(A.tenant, `commit; update ${qualified(A.tenant, 'agents')} set status = 'pwned' returning id`)).length, 0);
      const rel = `${q(B.tenant.placement.schema)}.agents`;
      if (reach(A.tenant, B.tenant.placement.schema) === 'missing') {
        await rejectsPg(run(A.tenant, `commit; delete from ${rel}`), '42P01', /does not exist/);
      } else {
        assert.equal(last(await run(A.tenant, `commit; delete from ${rel} returning id`)).length, 0);
        assert.equal(last(await run(A.tenant, `commit; select * from ${rel}`)).length, 0);
        await rejectsPg(run(A.tenant, `commit; select set_config('tenantry.ctx', '${b}.${modeOf(B.tenant)}.${aCtxMac}', false); delete from ${rel}`), '42501', /signature is invalid/);
        await rejectsPg(run(A.tenant, `commit; insert into ${rel} (tenant_id, name, agent_type) values ('${b}', 'planted', 'x')`), '42501', /row-level security/);
      }
      await assertIntact(inst, fx);
    });

    test(`${label}: foreign and unique keys are no oracle for B's rows`, async () => {
      const { A, B } = pair();
      await inRollback(inst, A.tenant, async (sql) => {
        // a reference to B's user or agent fails exactly like a reference to nothing
        const fk = /violates foreign key constraint/;
        await savepointRejects(sql, (sp) => sp`insert into agents (name, agent_type, created_by) values ('probe', 'x', ${B.userId})`, '23503', fk, 'B user');
        await savepointRejects(sql, (sp) => sp`insert into agents (name, agent_type, created_by) values ('probe', 'x', ${otherUuid()})`, '23503', fk, 'no user');
        await savepointRejects(sql, (sp) => sp`insert into executions (agent_id) values (${B.agentIds[0]!})`, '23503', fk, 'B agent');
        await savepointRejects(sql, (sp) => sp`insert into memories (agent_id, key, content) values (${B.agentIds[0]!}, 'k', 'v')`, '23503', fk, 'B agent');
        // B's names and emails are free for A: uniqueness is per tenant
        const [agent] = await sql<{ tenant_id: string }[]>`insert into agents (name, agent_type) values (${B.agentNames[0]!}, 'x') returning tenant_id::text`;
        assert.equal(agent!.tenant_id, A.tenant.id);
        await sql`insert into users (email) values (${`owner@${B.tenant.slug}.example`})`;
        // and an upsert on B's key creates A's row instead of touching B's
        const up = await sql<{ tenant_id: string }[]>`
          insert into data_sources (name, kind) values (${`${B.tenant.slug}-warehouse`}, 'x')
          on conflict (tenant_id, name) do update set kind = 'pwned' returning tenant_id::text`;
        assert.deepEqual(up.map((r) => r.tenant_id), [A.tenant.id]);
      });
      await assertIntact(inst, fx);
    });
  }
}

// ---------------------------------------------------------------- A alone, in each mode

for (const am of MODES) {
  const A = (): Fixture => fx[am].a;

  test(`${am} A: SET ROLE to the owner, the groups or the admin, and SET SESSION AUTHORIZATION are refused; RESET ROLE changes nothing`, async () => {
    const t = A().tenant;
    for (const role of [`${ns}_owner`, `${ns}_pooled`, `${ns}_schematenant`, `${ns}_dbtenant`, `${ns}_admin`, 'postgres']) {
      await rejectsPg(run(t, `set role ${q(role)}`), '42501', /permission denied to set role/, role);
      await rejectsPg(run(t, `set session authorization ${q(role)}`), '42501', /permission denied to set session authorization/, role);
    }
    for (const reset of ['reset role', 'set role none', 'reset session authorization', 'set session authorization default', 'reset all', 'discard plans']) {
      // none of them can widen what A sees
      const rows = last<{ tenant_id: string }>(await run(t, `${reset}; select tenant_id::text from ${qualified(t, 'agents')}`));
      assert.ok(rows.every((r) => r.tenant_id === t.id), reset);
      assert.ok(rows.length <= SEEDED.agents, reset);
    }
    const [who] = (await run(t, `select current_user, session_user, tenantry.current_tenant()::text as tenant`)) as { current_user: string; session_user: string; tenant: string }[];
    assert.deepEqual(who, { current_user: runtime(), session_user: runtime(), tenant: t.id });
    await assertIntact(inst, fx);
  });

  test(`${am} A: no CREATE anywhere (view, function, table, index, policy, temp table, schema)`, async () => {
    const t = A().tenant;
    const own = q(t.placement.schema);
    const refusals: [string, RegExp][] = [
      [`create view leak as select * from agents`, /permission denied for schema/],
      [`create view ${own}.leak as select * from agents`, /permission denied for schema/],
      [`create view public.leak as select * from agents`, /permission denied for schema public/],
      [`create table ${own}.stash (a text)`, /permission denied for schema/],
      [`create table public.stash (a text)`, /permission denied for schema public/],
      [`create table stash as select * from agents`, /permission denied for schema/],
      [`create function public.leak() returns setof text language sql as 'select name from agents'`, /permission denied for schema public/],
      [`create function ${own}.leak() returns int language sql as 'select 1'`, /permission denied for schema/],
      [`create sequence ${own}.s`, /permission denied for schema/],
      [`create temp table stash (a text)`, /permission denied to create temporary tables/],
      [`create temp view leak as select * from agents`, /permission denied to create temporary tables/],
      [`create function pg_temp.leak() returns int language sql as 'select 1'`, /permission denied to create temporary tables/],
      [`create schema evil`, /permission denied for database/],
      [`create index on agents (name)`, /must be owner of table agents/],
      [`create policy open_door on agents using (true)`, /must be owner of table agents/],
      [`create trigger t before insert on agents for each row execute function tenantry.current_tenant()`, /permission denied for table agents|must be owner/],
    ];
    for (const [sql, message] of refusals) await rejectsPg(run(t, sql), '42501', message, sql);
    await assertIntact(inst, fx);
  });

  test(`${am} A: the HMAC key, the tenant migrations table and the catalog are out of reach`, async () => {
    const t = A().tenant;
    await rejectsPg(run(t, `select * from tenantry.settings`), '42501', /permission denied for table settings/);
    await rejectsPg(run(t, `select k_inner, k_outer from tenantry.settings`), '42501', /permission denied for table settings/);
    await rejectsPg(run(t, `update tenantry.settings set namespace = 'x'`), '42501', /permission denied for table settings/);
    await rejectsPg(run(t, `select * from tenantry.migrations`), '42501', /permission denied for table migrations/);
    await rejectsPg(run(t, `alter function tenantry.current_tenant() security invoker`), '42501', /must be owner of function/);
    await rejectsPg(run(t, `create or replace function tenantry.current_tenant() returns uuid language sql as 'select null::uuid'`), '42501', /permission denied for schema tenantry/);
    await rejectsPg(run(t, `select * from tenantry_catalog.tenants`), '42P01', /does not exist/);
    await rejectsPg(run(t, `select * from tenantry_catalog.installation`), '42P01', /does not exist/);
    await rejectsPg(run(t, `select * from ${q(`${ns}_catalog`)}.tenantry_catalog.tenants`), '0A000', /cross-database references/);
    // the function itself answers only A
    assert.equal(last<{ t: string }>(await run(t, `select tenantry.current_tenant()::text as t`))[0]!.t, t.id);
    // column statistics of tables under row-level security are hidden, even after ANALYZE
    const su = suTo(inst, t.placement.database);
    try {
      await su.unsafe(`analyze ${q(t.placement.schema)}.agents; analyze ${q(t.placement.schema)}.memories`);
      if (t.isolation !== 'database') await su.unsafe(`analyze pooled.agents; analyze ${q(fx.schema.b.tenant.placement.schema)}.agents`);
    } finally {
      await su.end({ timeout: 5 });
    }
    const stats = last<{ n: number }>(await run(t, `select count(*)::int as n from pg_stats where tablename in ('agents', 'memories')`));
    assert.equal(stats[0]!.n, 0, 'pg_stats shows values of a table under row-level security');
    await assertIntact(inst, fx);
  });

  test(`${am} A: row-level security cannot be switched off, dropped, truncated around or copied around`, async () => {
    const t = A().tenant;
    const refusals: [string, string, RegExp][] = [
      [`set row_security = off; select * from agents`, '42501', /query would be affected by row-level security policy for table "agents"/],
      [`set local row_security = off; delete from agents`, '42501', /query would be affected by row-level security policy/],
      [`alter table agents disable row level security`, '42501', /must be owner of table agents/],
      [`alter table agents no force row level security`, '42501', /must be owner of table agents/],
      [`drop policy tenantry_isolation on agents`, '42501', /must be owner of relation agents/],
      [`alter policy tenantry_access on agents using (true)`, '42501', /must be owner of table agents/],
      [`truncate agents cascade`, '42501', /permission denied for table agents/],
      [`truncate memories`, '42501', /permission denied for table memories/],
      [`copy agents (name, agent_type) from stdin`, '0A000', /COPY FROM not supported with row-level security/],
      [`lock table tenantry.settings in access share mode`, '42501', /permission denied for table settings/],
    ];
    for (const [sql, code, message] of refusals) await rejectsPg(run(t, sql), code, message, sql);
    // clearing the context leaves zero rows, never all rows
    for (const clear of [`select set_config('tenantry.ctx', '', true)`, `reset tenantry.ctx`, `set tenantry.ctx to default`, `reset all`]) {
      assert.equal(last(await run(t, `${clear}; select * from ${qualified(t, 'agents')}`)).length, 0, clear);
      assert.equal(last(await run(t, `${clear}; delete from ${qualified(t, 'data_sources')} returning id`)).length, 0, clear);
      await rejectsPg(run(t, `${clear}; insert into ${qualified(t, 'agents')} (name, agent_type) values ('planted', 'x')`), '42501', /row-level security/, clear);
    }
    await assertIntact(inst, fx);
  });
}

// ---------------------------------------------------------------- the runtime role without a context

test('a schema tenant cannot read or plant rows in the shared pooled tables (its context is signed for schema mode)', async () => {
  const A = fx.schema.a.tenant;
  // its own id as tenant_id, and the default: both refused, since the pooled policies admit pooled contexts only
  await rejectsPg(run(A, `insert into pooled.agents (name, agent_type) values ('planted', 'x')`), '42501', /row-level security/);
  await rejectsPg(run(A, `insert into pooled.agents (tenant_id, name, agent_type) values ('${A.id}', 'planted', 'x')`), '42501', /row-level security/);
  assert.equal((last(await run(A, 'select * from pooled.agents'))).length, 0, 'pooled rows visible to a schema tenant');
  assert.equal((last(await run(A, 'delete from pooled.agents returning id'))).length, 0);
  await assertIntact(inst, fx);
});

test('runtime role without a context sees zero rows in every tenant table of every data database, and cannot insert', async () => {
  const targets: { database: string; relations: string[]; owner: string }[] = [];
  for (const f of allFixtures(fx)) {
    targets.push({ database: f.tenant.placement.database, relations: TABLES.map((t) => qualified(f.tenant, t)), owner: f.tenant.id });
  }
  for (const { database, relations, owner } of targets) {
    const sql = await connectAs(inst, runtime(), database);
    try {
      const [who] = await sql<{ tenant: string | null; ctx: string | null }[]>`select tenantry.current_tenant()::text as tenant, current_setting('tenantry.ctx', true) as ctx`;
      assert.deepEqual(who, { tenant: null, ctx: null });
      for (const rel of relations) {
        const [{ n }] = await sql.unsafe<[{ n: number }]>(`select count(*)::int as n from ${rel}`);
        assert.equal(n, 0, `${database} ${rel}: rows visible without a context`);
        assert.equal((await sql.unsafe(`delete from ${rel}`)).count, 0, `${database} ${rel}: delete without a context`);
      }
      const agents = relations.find((r) => r.endsWith('.agents'))!;
      assert.equal((await sql.unsafe(`update ${agents} set status = 'pwned'`)).count, 0);
      await rejectsPg(sql.unsafe(`insert into ${agents} (name, agent_type) values ('planted', 'x')`), '42501', /row-level security/, agents);
      await rejectsPg(sql.unsafe(`insert into ${agents} (tenant_id, name, agent_type) values ($1, 'planted', 'x')`, [owner]), '42501', /row-level security/, agents);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
  await assertIntact(inst, fx);
});

test('database mode: inside a tenant database another tenant\'s VALID context raises (42501); its own works', async () => {
  for (const side of ['a', 'b'] as const) {
    const owner = fx.database[side].tenant;
    const sql = await connectAs(inst, runtime(), owner.placement.database);
    try {
      for (const other of allFixtures(fx).filter((f) => f.tenant.id !== owner.id)) {
        const ctx = await signedContext(inst, other.tenant.id);
        await rejectsPg(sql.begin(async (tx) => {
          await tx`select set_config('tenantry.ctx', ${ctx}, true)`;
          return tx`select * from app.agents`;
        }), '42501', /this database belongs to another tenant/, other.tenant.slug);
        await rejectsPg(sql.begin(async (tx) => {
          await tx`select set_config('tenantry.ctx', ${ctx}, true)`;
          return tx`insert into app.agents (tenant_id, name, agent_type) values (${other.tenant.id}, 'planted', 'x')`;
        }), '42501', /this database belongs to another tenant/, other.tenant.slug);
      }
      const ownCtx = await signedContext(inst, owner.id);
      const rows = await sql.begin(async (tx) => {
        await tx`select set_config('tenantry.ctx', ${ownCtx}, true)`;
        return tx<{ tenant_id: string }[]>`select tenant_id::text from app.agents`;
      });
      assert.equal(rows.length, SEEDED.agents);
      assert.ok(rows.every((r) => r.tenant_id === owner.id));
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
  await assertIntact(inst, fx);
});

test('runtime role cannot connect to the catalog database (42501) or the template (55000)', async () => {
  const attempts: [string, string, RegExp][] = [
    [`${ns}_catalog`, '42501', /permission denied for database/],
    [`${ns}_template`, '55000', /is not currently accepting connections/],
  ];
  for (const [database, code, message] of attempts) {
    const sql = await connectAs(inst, runtime(), database);
    try {
      await rejectsPg(sql`select 1`, code, message, database);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
});

test('ALTER ROLE defaults planted by A cannot make the runtime role the owner or another tenant', async () => {
  const t = fx.pooled.a.tenant;
  try {
    await run(t, `alter role current_user set role = '${ns}_owner'`);
    await run(t, `alter role current_user in database ${q(sharedDb())} set session_authorization = '${fx.pooled.b.tenant.placement.role}'`);
    const sql = await connectAs(inst, runtime(), sharedDb());
    try {
      const [who] = await sql<{ current_user: string; session_user: string }[]>`select current_user, session_user`;
      assert.deepEqual(who, { current_user: runtime(), session_user: runtime() });
      await rejectsPg(sql`select * from tenantry.settings`, '42501', /permission denied for table settings/);
      assert.equal((await sql`select * from pooled.agents`).length, 0);
    } finally {
      await sql.end({ timeout: 5 });
    }
  } finally {
    await run(t, `alter role current_user reset all`);
    await run(t, `alter role current_user in database ${q(sharedDb())} reset all`);
  }
  await assertIntact(inst, fx);
});

// ---------------------------------------------------------------- pool hygiene (invariant 2)

function core(): Core {
  return (inst.tenantry as unknown as { core: Core }).core;
}

interface SessionState {
  pid: number;
  ctx: string | null;
  evil: string | null;
  search_path: string;
  row_security: string;
  read_only: string;
  statement_timeout: string;
  prepared: number;
  cursors: number;
  channels: number;
  advisory: number;
  tenant: string | null;
  agents: number;
}

/** A plain query, outside withTenant, on the runtime pool of the shared database: what the next user of the connection inherits. */
async function sessionState(): Promise<SessionState> {
  const [s] = await core().runtimeOn(sharedDb(), (sql: Sql) => sql<SessionState[]>`
    select pg_backend_pid() as pid,
           nullif(current_setting('tenantry.ctx', true), '') as ctx,
           nullif(current_setting('evil.ctx', true), '') as evil,
           current_setting('search_path') as search_path,
           current_setting('row_security') as row_security,
           current_setting('default_transaction_read_only') as read_only,
           current_setting('statement_timeout') as statement_timeout,
           (select count(*)::int from pg_prepared_statements where from_sql) as prepared,
           (select count(*)::int from pg_cursors where is_holdable) as cursors,
           (select count(*)::int from pg_listening_channels()) as channels,
           (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as advisory,
           tenantry.current_tenant()::text as tenant,
           (select count(*)::int from pooled.agents) as agents`);
  return s!;
}

test('pool hygiene: 1,000 interleaved transactions of four tenants on one connection each see only their own rows and leave no context behind', async () => {
  const tenants = [fx.pooled.a, fx.pooled.b, fx.schema.a, fx.schema.b].map((f) => f.tenant);
  const clean = await sessionState();
  assert.equal(clean.ctx, null);
  assert.equal(clean.tenant, null);
  const pids = new Set<number>([clean.pid]);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < 1000; i = next++) {
      const t = tenants[i % tenants.length]!;
      const rows = await inst.tenantry.withTenant(t.id, (sql) => sql<{ tenant_id: string; pid: number; ctx: string }[]>`
        select tenant_id::text, pg_backend_pid() as pid, current_setting('tenantry.ctx') as ctx from agents`);
      assert.equal(rows.length, SEEDED.agents, `transaction ${i} (${t.slug})`);
      for (const r of rows) {
        assert.equal(r.tenant_id, t.id, `transaction ${i} saw a row of another tenant`);
        assert.ok(r.ctx.startsWith(`${t.id}.`), `transaction ${i} ran with another tenant's context`);
        pids.add(r.pid);
      }
      if (i % 4 === 0) {
        const after = await sessionState();
        assert.equal(after.ctx, null, `a context survived transaction ${i}`);
        assert.equal(after.tenant, null);
        assert.equal(after.agents, 0);
        pids.add(after.pid);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.equal(pids.size, 1, 'every transaction ran on the one pooled connection');
  assert.deepEqual({ ...(await sessionState()), pid: clean.pid }, clean);
});

test('pool hygiene: session-level state planted by A (set_config(..., false), SET, PREPARE, cursors, LISTEN, locks) never reaches the next user', async () => {
  const A = fx.pooled.a.tenant;
  const B = fx.pooled.b;
  const clean = await sessionState();
  const keepCtx = `select set_config('evil.ctx', current_setting('tenantry.ctx'), false)`;
  const plant = `select set_config('tenantry.ctx', current_setting('evil.ctx'), false);
    set search_path = pooled; set row_security = off; set default_transaction_read_only = on; set statement_timeout = '1h';
    prepare evil_stmt as select 1; declare evil_cursor cursor with hold for select 1; listen evil_channel;
    select pg_advisory_lock(4242)`;
  const attacks: [string, string, string | null][] = [
    ['inside the transaction', `${keepCtx}; ${plant}`, null],
    ['after COMMIT', `${keepCtx}; commit; ${plant}`, null],
    ['after COMMIT, then failing in a transaction of its own', `${keepCtx}; commit; ${plant}; commit; begin; select 1/0`, '22012'],
  ];
  for (const [name, text, code] of attacks) {
    if (code) await rejectsPg(run(A, text), code, undefined, name);
    else await run(A, text);
    const state = await sessionState();
    assert.equal(state.pid, clean.pid, 'the same connection');
    assert.deepEqual(state, clean, `${name}: the connection kept A's session state`);
    // the next tenant's transaction on it: its own context, writable, its own rows only
    await inRollback(inst, B.tenant, async (sql) => {
      const [s] = await sql<{ ctx: string; evil: string | null; ro: string }[]>`
        select current_setting('tenantry.ctx') as ctx, nullif(current_setting('evil.ctx', true), '') as evil, current_setting('transaction_read_only') as ro`;
      assert.ok(s!.ctx.startsWith(`${B.tenant.id}.`));
      assert.equal(s!.evil, null, `${name}: A's value reached B's transaction`);
      assert.equal(s!.ro, 'off');
      await rejectsPg(sql`fetch all from evil_cursor`, '34000', /cursor "evil_cursor" does not exist/, name);
    });
    assert.deepEqual((await inst.tenantry.withTenant(B.tenant.id, (sql) => sql<{ tenant_id: string }[]>`select tenant_id::text from agents`)).map((r) => r.tenant_id), [B.tenant.id, B.tenant.id]);
  }
  await assertIntact(inst, fx);
});

test('pool hygiene: A cannot swap a prepared statement on the shared connection to run its SQL in B\'s transaction', async () => {
  const A = fx.pooled.a.tenant;
  const B = fx.pooled.b;
  const bQuery = (): Promise<string[]> => inst.tenantry.withTenant(B.tenant.id, async (sql) =>
    (await sql<{ name: string }[]>`select name from agents where agent_type = ${'calculator'} or agent_type = ${'search'} order by name`).map((r) => r.name));
  assert.deepEqual(await bQuery(), [...B.agentNames].sort());
  // A looks for statements the driver prepared for other tenants on this connection, and replaces each
  // with one that copies the current tenant's rows into a session setting A can read later
  const seen = (await run(A, `select name, statement, array_to_string(parameter_types::text[], ',') as types from pg_prepared_statements where not from_sql`)) as { name: string; statement: string; types: string }[];
  for (const s of seen) {
    await run(A, `deallocate ${q(s.name)}; prepare ${q(s.name)}${s.types ? `(${s.types})` : ''} as
      select 'pwned:' || coalesce(set_config('evil.loot', (select string_agg(name, ',') from agents), false), '') as name`);
  }
  assert.deepEqual(await bQuery(), [...B.agentNames].sort(), 'B\'s query ran A\'s statement');
  const [loot] = (await run(A, `select current_setting('evil.loot', true) as loot`)) as { loot: string | null }[];
  assert.ok(!loot!.loot, `A read B's rows: ${loot!.loot}`);
  assert.deepEqual(seen.filter((s) => s.statement.includes('agent_type')), [], 'B\'s statement text is visible to A');
  await assertIntact(inst, fx);
});

test('A cannot read the signed context of B\'s open transaction from pg_stat_activity (it is sent as a bound parameter)', async () => {
  const A = fx.pooled.a.tenant;
  const B = fx.database.b.tenant; // its own database, so its own runtime pool: B's transaction stays open meanwhile
  const bMac = await macOf(B);
  const seen = await inst.tenantry.withTenant(B.id, async () => {
    // B's context statement has been sent; give it time to complete, then look from A's side
    for (let i = 0; i < 50; i++) {
      const rows = (await run(A, `select query from pg_stat_activity where usename = current_user and datname = $1 and state = 'idle in transaction'`, [B.placement.database])) as { query: string }[];
      if (rows.some((r) => r.query.includes('tenantry.ctx'))) return rows;
      await new Promise((r) => setTimeout(r, 20));
    }
    return [];
  });
  // the statement itself is visible to every session of the runtime role, so the test sees it ...
  assert.ok(seen.some((r) => r.query.includes('tenantry.ctx')), 'B\'s context statement was not observed');
  // ... but never the context's MAC, nor B's id
  for (const r of seen) {
    assert.ok(!r.query.includes(bMac), 'B\'s signed context is readable by A');
    assert.ok(!r.query.includes(B.id), 'B\'s id is readable by A');
  }
  await assertIntact(inst, fx);
});
