import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { Tenantry, isTenantryError, type Tenant, type DoctorCheck } from '../src/index.js';
import { rejectsWith } from './helpers/assertions.js';

let inst: TestInstallation;
/** superuser connection to the shared data database (pooled schema and schema tenants) */
let sharedSu: Sql;
const tenants: Record<'pooled' | 'schema' | 'database' | 'suspended', Tenant> = {} as never;

/** A superuser connection to any database (the helper's urlFor carries no superuser password). */
function suTo(database: string): Sql {
  const su = new URL(SUPERUSER_URL);
  return postgres(inst.urlFor(database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password)), { onnotice: () => {}, max: 1 });
}

async function withSu<T>(database: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = suTo(database);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** URL of the installation's admin user (CREATEDB + CREATEROLE) on another catalog database. */
function adminUrlOn(database: string): string {
  const u = new URL(inst.adminUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

const sharedDb = (): string => `${inst.namespace}_shared`;
const templateDb = (): string => `${inst.namespace}_template`;
const runtimeRole = (): string => `${inst.namespace}_runtime`;

before(async () => {
  inst = await freshInstallation();
  sharedSu = suTo(sharedDb());
  for (const isolation of ['pooled', 'schema', 'database'] as const) {
    tenants[isolation] = await inst.tenantry.tenants.create({ slug: `doc-${isolation}`, isolation });
    await inst.tenantry.withTenant(tenants[isolation].id, (sql) => sql`insert into agents (name, agent_type) values ('a1', 'calculator')`);
  }
  const sleepy = await inst.tenantry.tenants.create({ slug: 'doc-sleepy', isolation: 'schema' });
  tenants.suspended = await inst.tenantry.tenants.suspend(sleepy.id, 'unpaid');
});
after(async () => {
  await sharedSu?.end({ timeout: 5 });
  await inst?.cleanup();
});


async function expectHealthy(tenantry: Tenantry = inst.tenantry): Promise<void> {
  const report = await tenantry.doctor();
  assert.deepEqual(report.checks.filter((c) => !c.ok), [], 'doctor finds nothing wrong');
  assert.equal(report.ok, true);
}

/** Runs doctor and expects exactly one failing check: `check`, naming every string in `mentions`. */
async function expectOnlyFailure(check: string, mentions: string[]): Promise<DoctorCheck> {
  const report = await inst.tenantry.doctor();
  assert.equal(report.ok, false, 'doctor reports the broken invariant');
  const failures = report.checks.filter((c) => !c.ok);
  assert.equal(failures.length, 1, `exactly one failure expected, got ${JSON.stringify(failures, null, 2)}`);
  const [hit] = failures;
  assert.equal(hit!.check, check, hit!.message);
  for (const m of mentions) assert.ok(hit!.message.includes(m), `message ${JSON.stringify(hit!.message)} names ${m}`);
  assert.equal(typeof hit!.fix, 'string');
  assert.ok(hit!.fix!.trim().length > 0, 'a fix is suggested');
  return hit!;
}

/**
 * Breaks one invariant, expects doctor to report it, repairs it (preferably with doctor's own fix)
 * and expects a clean report. `undo` always runs, so a failed case leaves the next one a clean slate.
 */
async function scenario(opts: {
  breakIt: () => Promise<unknown>;
  check: string;
  mentions: string[];
  repair: (hit: DoctorCheck) => Promise<unknown>;
  undo: () => Promise<unknown>;
}): Promise<void> {
  await expectHealthy();
  await opts.breakIt();
  try {
    const hit = await expectOnlyFailure(opts.check, opts.mentions);
    await opts.repair(hit);
    await expectHealthy();
  } finally {
    await opts.undo();
  }
}

test('doctor passes on a fresh installation with tenants in all three modes', async () => {
  const report = await inst.tenantry.doctor();
  assert.deepEqual(report.checks.filter((c) => !c.ok), []);
  assert.equal(report.ok, true);
  const passed = new Set(report.checks.map((c) => c.check));
  for (const check of ['runtime-role', 'database-connect', 'catalog-connect', 'template', 'tenant-objects', 'row-level-security']) {
    assert.ok(passed.has(check), `doctor ran ${check}`);
  }
  const rls = report.checks.filter((c) => c.check === 'row-level-security').map((c) => c.message);
  assert.ok(rls.some((m) => m.startsWith(`${sharedDb()}:`)), 'the shared database was inspected');
  assert.ok(rls.some((m) => m.startsWith(`${tenants.database.placement.database}:`)), 'the database tenant\'s database was inspected');
  assert.match(report.checks.find((c) => c.check === 'tenant-objects')!.message, /All 4 tenants/);
});

test('doctor reports row-level security disabled on a pooled table', async () => {
  await scenario({
    breakIt: () => sharedSu.unsafe('alter table pooled.agents disable row level security'),
    check: 'row-level-security',
    mentions: [`${sharedDb()}: pooled.agents`, 'disabled'],
    repair: (hit) => sharedSu.unsafe(hit.fix!),
    undo: () => sharedSu.unsafe('alter table pooled.agents enable row level security'),
  });
});

test('doctor reports row-level security not forced on a schema tenant\'s table', async () => {
  const s = tenants.schema.placement.schema;
  await scenario({
    breakIt: () => sharedSu.unsafe(`alter table "${s}".executions no force row level security`),
    check: 'row-level-security',
    mentions: [`${sharedDb()}: ${s}.executions`, 'not forced'],
    repair: (hit) => sharedSu.unsafe(hit.fix!),
    undo: () => sharedSu.unsafe(`alter table "${s}".executions force row level security`),
  });
});

test('doctor reports a tenant policy dropped in a database tenant\'s database', async () => {
  const db = tenants.database.placement.database;
  const recreate = `create policy tenantry_isolation on app.memories as restrictive for all to public
    using (tenant_id = (select tenantry.current_tenant())) with check (tenant_id = (select tenantry.current_tenant()))`;
  await withSu(db, (sql) => scenario({
    breakIt: () => sql.unsafe('drop policy tenantry_isolation on app.memories'),
    check: 'tenant-policy',
    mentions: [`${db}: app.memories`, 'tenantry_access:permissive'],
    // the fix names a tenant migration run, which has no library call yet: put the policy back by hand
    repair: () => sql.unsafe(recreate),
    undo: async () => {
      const [p] = await sql`select 1 from pg_policy where polname = 'tenantry_isolation' and polrelid = 'app.memories'::regclass`;
      if (!p) await sql.unsafe(recreate);
    },
  }));
});

test('doctor reports the runtime role given BYPASSRLS', async () => {
  await scenario({
    breakIt: () => inst.su.unsafe(`alter role "${runtimeRole()}" bypassrls`),
    check: 'runtime-role',
    mentions: [runtimeRole(), 'BYPASSRLS'],
    repair: (hit) => inst.su.unsafe(hit.fix!),
    undo: () => inst.su.unsafe(`alter role "${runtimeRole()}" nobypassrls`),
  });
});

test('doctor reports the runtime role made a member of a tenant role', async () => {
  const role = tenants.pooled.placement.role;
  await scenario({
    breakIt: () => inst.su.unsafe(`grant "${role}" to "${runtimeRole()}"`),
    check: 'runtime-role',
    mentions: [runtimeRole(), 'member of 1 role'],
    // the fix is a query that writes the REVOKE statements: run it, then run what it wrote
    repair: async (hit) => {
      const query = hit.fix!.slice(hit.fix!.indexOf('SELECT'));
      const statements = (await inst.su.unsafe(query)).map((r) => Object.values(r)[0] as string);
      assert.equal(statements.length, 1, `one REVOKE expected, got ${JSON.stringify(statements)}`);
      for (const s of statements) await inst.su.unsafe(s);
    },
    undo: () => inst.su.unsafe(`revoke "${role}" from "${runtimeRole()}"`),
  });
});

test('doctor reports CONNECT granted to PUBLIC on a tenant database', async () => {
  const db = tenants.database.placement.database;
  await scenario({
    breakIt: () => inst.su.unsafe(`grant connect on database "${db}" to public`),
    check: 'database-connect',
    mentions: [db],
    repair: (hit) => inst.su.unsafe(hit.fix!),
    undo: () => inst.su.unsafe(`revoke connect on database "${db}" from public`),
  });
});

test('doctor reports CREATE on schema public granted to PUBLIC in the shared database', async () => {
  await scenario({
    breakIt: () => sharedSu.unsafe('grant create on schema public to public'),
    check: 'public-schema',
    mentions: [sharedDb(), 'CREATE'],
    // the fix reads "In database <db>: REVOKE ..."; run the statement in that database
    repair: (hit) => {
      assert.ok(hit.fix!.includes(sharedDb()), 'the fix says which database to run it in');
      return sharedSu.unsafe(hit.fix!.slice(hit.fix!.indexOf('REVOKE')));
    },
    undo: () => sharedSu.unsafe('revoke create on schema public from public'),
  });
});

test('doctor reports the template database accepting connections', async () => {
  await scenario({
    breakIt: () => inst.su.unsafe(`alter database "${templateDb()}" allow_connections true`),
    check: 'template',
    mentions: [templateDb(), 'allows connections'],
    repair: (hit) => inst.su.unsafe(hit.fix!),
    undo: () => inst.su.unsafe(`alter database "${templateDb()}" allow_connections false`),
  });
});

test('doctor reports a schema tenant whose schema was dropped', async () => {
  const doomed = await inst.tenantry.tenants.create({ slug: 'doc-doomed', isolation: 'schema' });
  const hardDelete = async (): Promise<void> => {
    await inst.tenantry.tenants.delete(doomed.id);
    await inst.tenantry.tenants.delete(doomed.id, { hard: true });
  };
  await scenario({
    breakIt: () => sharedSu.unsafe(`drop schema "${doomed.placement.schema}" cascade`),
    check: 'tenant-objects',
    mentions: ['doc-doomed', doomed.id, `schema ${doomed.placement.schema} is missing`],
    // the fix: restore from a backup or hard-delete the tenant
    repair: hardDelete,
    undo: () => hardDelete().catch(() => undefined),
  });
  await rejectsWith(inst.tenantry.tenants.get(doomed.id), 'TENANT_NOT_FOUND');
});

test('doctor reports a table without tenant_id created in the pooled schema by the owner role', async () => {
  await scenario({
    breakIt: () => sharedSu.begin((tx) => tx.unsafe(`set local role "${inst.namespace}_owner"; create table pooled.notes (id int primary key, body text)`)),
    check: 'tenant-id-column',
    mentions: [`${sharedDb()}: pooled.notes`, 'tenant_id'],
    // the fix (a tenant migration adding the column) belongs to the app; a hand-made table is dropped
    repair: () => sharedSu.unsafe('drop table pooled.notes'),
    undo: () => sharedSu.unsafe('drop table if exists pooled.notes'),
  });
});

test('doctor reports a suspended tenant\'s role that can log in', async () => {
  const role = tenants.suspended.placement.role;
  await scenario({
    breakIt: () => inst.su.unsafe(`alter role "${role}" login`),
    check: 'tenant-login',
    mentions: [role, 'doc-sleepy', 'suspended'],
    repair: (hit) => inst.su.unsafe(hit.fix!),
    undo: () => inst.su.unsafe(`alter role "${role}" nologin`),
  });
});

test('opening a second instance on the same catalog reuses the installation and its tenants', async () => {
  const [instRow] = await inst.su<{ id: string }[]>`select id from tenantry_catalog.installation`;
  const countMigrations = async (): Promise<number> => (await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.migrations`)[0]!.n;
  const migrationRows = await countMigrations();
  const second = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace });
  try {
    const rows = await inst.su<{ id: string }[]>`select id from tenantry_catalog.installation`;
    assert.deepEqual(rows.map((r) => r.id), [instRow!.id], 'one installation, the same id');
    assert.equal(await countMigrations(), migrationRows, 'no catalog migration re-applied');
    for (const t of Object.values(tenants)) {
      const seen = await second.tenants.get(t.slug);
      assert.equal(seen.id, t.id);
      assert.equal(seen.status, t.status);
    }
    for (const mode of ['pooled', 'schema', 'database'] as const) {
      assert.equal(await second.query(tenants[mode].id, 'select name from agents', [], 'val'), 'a1', `${mode}: the second instance reads the first's rows`);
    }
    // a tenant made by the second instance, used through the first one on a fresh pool: both still
    // derive the same secret (a re-generated secret would break the first instance's passwords)
    const fresh = await second.tenants.create({ slug: 'doc-second', isolation: 'database' });
    await inst.tenantry.withTenant(fresh.slug, (sql) => sql`insert into agents (name, agent_type) values ('b1', 'x')`);
    assert.equal(await second.query(fresh.id, 'select count(*)::int from agents', [], 'val'), 1);
    await expectHealthy(second);
    await expectHealthy(inst.tenantry);
  } finally {
    await second.close();
  }
});

test('two opens at once on a new catalog both succeed and apply each catalog migration once', async () => {
  const namespace = `${inst.namespace}_b`;
  const catalog = `${namespace}_catalog`;
  const admin = decodeURIComponent(new URL(inst.adminUrl).username);
  await inst.su.unsafe(`create database "${catalog}" owner "${admin}"`);
  const opened = await Promise.allSettled([
    Tenantry.open({ databaseUrl: adminUrlOn(catalog), namespace }),
    Tenantry.open({ databaseUrl: adminUrlOn(catalog), namespace }),
  ]);
  const [a, b] = opened.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
  try {
    assert.deepEqual(opened.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')), ['ok', 'ok']);
    const files = readdirSync(new URL('../migrations/catalog/', import.meta.url)).filter((f) => f.endsWith('.sql'));
    assert.ok(files.length > 0);
    await withSu(catalog, async (sql) => {
      const rows = await sql<{ version: number; n: number }[]>`select version, count(*)::int as n from tenantry_catalog.migrations group by version order by version`;
      assert.equal(rows.length, files.length, 'one row per catalog migration file');
      assert.ok(rows.every((r) => r.n === 1));
      const [inst2] = await sql<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.installation`;
      assert.equal(inst2!.n, 1, 'one installation row');
    });
    const t = await a!.tenants.create({ slug: 'race-one', isolation: 'schema' });
    assert.equal((await b!.tenants.get('race-one')).id, t.id, 'both instances share the installation');
    await b!.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) values ('r1', 'x')`);
    assert.equal(await a!.query(t.id, 'select count(*)::int from agents', [], 'val'), 1);
    await expectHealthy(a);
  } finally {
    await b?.close();
    await a?.uninstall({ confirm: namespace }).catch(() => a.close());
    await inst.su.unsafe(`drop database if exists "${catalog}" with (force)`);
  }
});

test('an edited catalog migration makes open fail with MIGRATION_CHECKSUM_MISMATCH', async () => {
  const saved = await inst.su<{ version: number; checksum: string }[]>`select version, checksum from tenantry_catalog.migrations`;
  assert.ok(saved.length > 0);
  await inst.su`update tenantry_catalog.migrations set checksum = 'x' where version = ${saved[0]!.version}`;
  try {
    await rejectsWith(Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace }), 'MIGRATION_CHECKSUM_MISMATCH');
  } finally {
    for (const r of saved) await inst.su`update tenantry_catalog.migrations set checksum = ${r.checksum} where version = ${r.version}`;
  }
  const again = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace });
  await again.close();
});

test('opening as a user without CREATEROLE fails up front with INSUFFICIENT_PRIVILEGE', async () => {
  const weak = `${inst.namespace}_weak`;
  const catalog = `${weak}_catalog`;
  const password = randomBytes(12).toString('hex');
  await inst.su.unsafe(`create role "${weak}" login createdb nocreaterole password '${password}'`);
  await inst.su.unsafe(`create database "${catalog}" owner "${weak}"`);
  try {
    const namespace = `${inst.namespace}_w`;
    await assert.rejects(Tenantry.open({ databaseUrl: inst.urlFor(catalog, weak, password), namespace }), (err: unknown) => {
      assert.ok(isTenantryError(err, 'INSUFFICIENT_PRIVILEGE'), String(err));
      assert.ok(err.message.includes(weak) && err.message.includes('CREATEROLE'), err.message);
      return true;
    });
    const [left] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_roles where left(rolname, ${namespace.length + 1}) = ${namespace + '_'}`;
    assert.equal(left!.n, 0, 'no role was created');
    await withSu(catalog, async (sql) => {
      const schemas = await sql`select 1 from pg_namespace where nspname = 'tenantry_catalog'`;
      assert.equal(schemas.length, 0, 'nothing was written to the catalog database');
    });
  } finally {
    await inst.su.unsafe(`drop database if exists "${catalog}" with (force)`);
    await inst.su.unsafe(`drop role if exists "${weak}"`);
  }
});

test('opening with a namespace whose roles belong to someone else fails with NAMESPACE_IN_USE', async () => {
  const namespace = `${inst.namespace}_c`;
  const catalog = `${namespace}_catalog`;
  const squatter = `${namespace}_owner`;
  const admin = decodeURIComponent(new URL(inst.adminUrl).username);
  // a role made by hand, with no installation comment, and LOGIN (Tenantry's owner role is NOLOGIN)
  await inst.su.unsafe(`create role "${squatter}" login`);
  await inst.su.unsafe(`create database "${catalog}" owner "${admin}"`);
  try {
    await rejectsWith(Tenantry.open({ databaseUrl: adminUrlOn(catalog), namespace }), 'NAMESPACE_IN_USE');
    const [role] = await inst.su<{ rolcanlogin: boolean; comment: string | null }[]>`
      select rolcanlogin, shobj_description(oid, 'pg_authid') as comment from pg_roles where rolname = ${squatter}`;
    assert.deepEqual(role, { rolcanlogin: true, comment: null }, 'the existing role was left alone');
    const others = await inst.su`select rolname from pg_roles where rolname in (${`${namespace}_runtime`}, ${`${namespace}_pooled`})`;
    assert.equal(others.length, 0, 'none of the namespace\'s other roles were created');
  } finally {
    await inst.su.unsafe(`drop database if exists "${catalog}" with (force)`);
    await inst.su.unsafe(`drop role if exists "${squatter}"`);
  }
});

test('a second catalog cannot take over the namespace of a live installation (NAMESPACE_IN_USE)', async () => {
  const catalog = `${inst.namespace}_d_catalog`;
  const admin = decodeURIComponent(new URL(inst.adminUrl).username);
  await inst.su.unsafe(`create database "${catalog}" owner "${admin}"`);
  try {
    await rejectsWith(Tenantry.open({ databaseUrl: adminUrlOn(catalog), namespace: inst.namespace }), 'NAMESPACE_IN_USE');
  } finally {
    await inst.su.unsafe(`drop database if exists "${catalog}" with (force)`);
  }
  // the live installation is untouched: its roles, passwords and tenants still work (a new
  // database tenant means a new runtime pool, so a changed runtime password would show here)
  assert.equal(await inst.tenantry.query(tenants.pooled.id, 'select count(*)::int from agents', [], 'val'), 1);
  const t = await inst.tenantry.tenants.create({ slug: 'doc-after', isolation: 'database' });
  assert.equal(await inst.tenantry.query(t.id, 'select count(*)::int from agents', [], 'val'), 0);
  await expectHealthy();
});
