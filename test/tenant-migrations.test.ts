/**
 * Tenant migrations across the three isolation modes: what `open` migrates (pooled tables, template),
 * what `migrate()` migrates (schema and database tenants behind), dry runs, status, decisions made from
 * the catalog alone, checksum refusal, subsets, the CLI, and re-applying row security.
 * Runs, kills, locks and concurrency are in tenant-migrations-runs.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Sql } from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import {
  ADD_COLUMN_SQL, TENANTRY_POLICIES, migrationsDir, removeMigrationDirs, suTo, withSu, rejectsWith, openWith,
  catalogVersions, tenantTruth, runCli,
} from './helpers/tenant-migrations.js';
import type { Tenantry, Tenant, MigrateReport } from '../src/index.js';

let inst: TestInstallation;
/** superuser on the shared data database (pooled tables and schema tenants) */
let shared: Sql;
let v1: string;
let v2: string;
let v3: string;
let v4: string;
let t2: Tenantry;
const opened: Tenantry[] = [];

type Key = 'p1' | 'p2' | 's1' | 's2' | 'sSusp' | 'sTrial' | 'd1' | 'd2' | 'dDel';
const T = {} as Record<Key, Tenant>;
/** tenants created along the way (after the change, or by the instance on the old folder) */
const extra: Tenant[] = [];
const all = (): Tenant[] => [...Object.values(T), ...extra];
/** the tenants migrate() visits: schema and database, in every visited status */
const visited = (): Tenant[] => all().filter((t) => t.isolation !== 'pooled');

async function open(dir: string): Promise<Tenantry> {
  const t = await openWith(inst, dir);
  opened.push(t);
  return t;
}

before(async () => {
  v1 = migrationsDir();
  inst = await freshInstallation({ tenantMigrations: v1 });
  shared = suTo(inst, `${inst.namespace}_shared`, 2);
  const tn = inst.tenantry.tenants;
  const specs: [Key, Parameters<typeof tn.create>[0]][] = [
    ['p1', { slug: 'mig-p1', isolation: 'pooled' }],
    ['p2', { slug: 'mig-p2', isolation: 'pooled', tier: 'enterprise' }],
    ['s1', { slug: 'mig-s1', isolation: 'schema', tier: 'starter' }],
    ['s2', { slug: 'mig-s2', isolation: 'schema', tier: 'enterprise' }],
    ['sSusp', { slug: 'mig-s-susp', isolation: 'schema' }],
    ['sTrial', { slug: 'mig-s-trial', isolation: 'schema', trialDays: 14 }],
    ['d1', { slug: 'mig-d1', isolation: 'database', tier: 'starter' }],
    ['d2', { slug: 'mig-d2', isolation: 'database', tier: 'enterprise' }],
    ['dDel', { slug: 'mig-d-del', isolation: 'database' }],
  ];
  for (const [k, input] of specs) {
    T[k] = await tn.create(input);
    await inst.tenantry.withTenant(T[k].id, (sql) => sql`insert into agents (name, agent_type) values ('a1', 'calculator')`);
  }
  T.sSusp = await tn.suspend(T.sSusp.id, 'unpaid');
  T.dDel = await tn.delete(T.dDel.id);
  assert.equal(T.sTrial.status, 'trial');
  for (const t of all()) assert.equal(t.schemaVersion, 1);
});

after(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
  await shared?.end({ timeout: 5 });
  await inst?.cleanup();
  removeMigrationDirs();
});

function assertClean(report: MigrateReport): void {
  assert.deepEqual(report.failed, [], `failures: ${JSON.stringify(report.failed)}`);
  assert.equal(report.migrated, report.planned);
}

test('after adding 0002: pooled tables move at open, the others are behind; status, dry run, migrate, then nothing to do', async () => {
  v2 = migrationsDir({ '0002_add_column.sql': ADD_COLUMN_SQL });
  t2 = await open(v2);

  // open migrated the shared pooled tables: pooled tenants have the column at once, through either instance
  for (const k of ['p1', 'p2'] as const) {
    assert.equal(await t2.query(T[k].id, 'select priority from agents', [], 'val'), 0);
    assert.equal(await inst.tenantry.query(T[k].id, 'select count(*)::int from tags', [], 'val'), 0);
  }
  const pooledTruth = await tenantTruth(inst, shared, T.p1);
  assert.deepEqual(pooledTruth.applied, [1, 2]);
  assert.ok(pooledTruth.agentColumns.includes('priority'));

  // schema and database tenants are behind, in the catalog and in fact
  let versions = await catalogVersions(inst);
  for (const t of visited()) {
    assert.equal(versions.get(t.slug), 1, t.slug);
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, [1], t.slug);
    assert.ok(!truth.agentColumns.includes('priority'), t.slug);
    assert.ok(!truth.tables.has('tags'), t.slug);
  }

  const status = await t2.migrationStatus();
  assert.equal(status.latestVersion, 2);
  const byKey = (a: { version: number; isolation: string }, b: { version: number; isolation: string }): number => a.version - b.version || a.isolation.localeCompare(b.isolation);
  assert.deepEqual([...status.versions].sort(byKey), [
    { version: 1, isolation: 'database', tenants: 3 },
    { version: 1, isolation: 'schema', tenants: 4 },
    { version: 2, isolation: 'pooled', tenants: 2 },
  ]);
  assert.equal(status.behind, 7, 'the pooled tenants are not behind: their tables moved at open');

  // a dry run: the plan and the SQL, and nothing changes
  const dry = await t2.migrate({ dryRun: true });
  assert.equal(dry.planned, 7);
  assert.equal(dry.migrated, 0);
  assert.deepEqual(dry.plan!.map((p) => p.slug).sort(), visited().map((t) => t.slug).sort());
  for (const p of dry.plan!) {
    assert.equal(p.from, 1);
    assert.deepEqual(p.files, ['0002_add_column.sql']);
  }
  assert.deepEqual(dry.sql, [{ name: '0002_add_column.sql', sql: ADD_COLUMN_SQL }]);
  assert.deepEqual(await catalogVersions(inst), versions, 'a dry run changes no version');
  for (const t of [T.s1, T.d1]) {
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, [1]);
    assert.ok(!truth.agentColumns.includes('priority'));
  }

  const progress: number[] = [];
  const report = await t2.migrate({ concurrency: 3, onProgress: (p) => { assert.equal(p.total, 7); progress.push(p.done); } });
  assert.equal(report.latestVersion, 2);
  assert.equal(report.planned, 7);
  assertClean(report);
  assert.deepEqual(progress, [1, 2, 3, 4, 5, 6, 7]);

  versions = await catalogVersions(inst);
  for (const t of all()) {
    assert.equal(versions.get(t.slug), 2, `${t.slug} at version 2 in the catalog`);
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, [1, 2], `${t.slug}: its own record`);
    assert.equal(truth.agentColumns.filter((c) => c === 'priority').length, 1, `${t.slug} has the column`);
    const tags = truth.tables.get('tags');
    assert.ok(tags, `${t.slug} has the new table`);
    assert.ok(tags.rls && tags.forced, `${t.slug}: tags has RLS enabled and forced`);
    assert.deepEqual(tags.policies, TENANTRY_POLICIES, `${t.slug}: tags has Tenantry's policies`);
  }
  // the existing rows kept their data and got the default
  for (const t of [T.s1, T.d1, T.p1]) {
    assert.deepEqual([...await t2.withTenant(t.id, (sql) => sql`select name, priority from agents`)], [{ name: 'a1', priority: 0 }]);
  }

  // one tenant cannot see another's tags, in each mode
  for (const [a, b] of [[T.p1, T.p2], [T.s1, T.s2], [T.d1, T.d2]] as const) {
    for (const t of [a, b]) await t2.withTenant(t.id, (sql) => sql`insert into tags (name) values (${`tag-${t.slug}`})`);
    const seen = await t2.withTenant(a.id, (sql) => sql<{ tenant_id: string; name: string }[]>`select tenant_id, name from tags`);
    assert.deepEqual([...seen], [{ tenant_id: a.id, name: `tag-${a.slug}` }], `${a.slug} sees only its own tags`);
    await assert.rejects(t2.withTenant(a.id, (sql) => sql`insert into tags (tenant_id, name) values (${b.id}, 'planted')`),
      /row-level security|violates/, `${a.slug} cannot write a tag for ${b.slug}`);
  }
  // schema mode: naming the other tenant's schema yields nothing either
  const other = await t2.withTenant(T.s1.id, (sql) => sql.unsafe(`select count(*)::int as n from "${T.s2.placement.schema}".tags`)).then(
    (rows) => (rows[0] as unknown as { n: number }).n, () => 0);
  assert.equal(other, 0);

  const again = await t2.migrate();
  assert.equal(again.planned, 0);
  assert.equal(again.migrated, 0);
  assert.deepEqual((await t2.migrationStatus()).behind, 0);
});

test('tenants created after the change are at version 2 at once, in every mode; ones made by an instance on the old folder are caught up', async () => {
  const made: Tenant[] = [];
  for (const isolation of ['pooled', 'schema', 'database'] as const) {
    const t = await t2.tenants.create({ slug: `mig-new-${isolation}`, isolation });
    made.push(t);
    assert.equal(t.schemaVersion, 2, `${isolation}: created at version 2`);
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, [1, 2], isolation);
    assert.ok(truth.agentColumns.includes('priority'), isolation);
    assert.deepEqual(truth.tables.get('tags')?.policies, TENANTRY_POLICIES, isolation);
    await t2.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type, priority) values ('n', 'calculator', 5)`);
    assert.equal(await t2.query(t.id, 'select priority from agents', [], 'val'), 5);
  }
  assert.equal((await catalogVersions(inst)).get('mig-new-schema'), 2);

  // the first instance still runs with only 0001: what it creates is brought to 2 by the next run
  const oldSchema = await inst.tenantry.tenants.create({ slug: 'mig-old-schema', isolation: 'schema' });
  const oldDb = await inst.tenantry.tenants.create({ slug: 'mig-old-db', isolation: 'database' });
  const report = await t2.migrate();
  assertClean(report);
  const versions = await catalogVersions(inst);
  for (const t of [oldSchema, oldDb]) {
    assert.equal(versions.get(t.slug), 2, t.slug);
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, [1, 2], t.slug);
    assert.ok(truth.agentColumns.includes('priority'), t.slug);
  }
  extra.push(...made, oldSchema, oldDb);
  assert.equal((await t2.migrate()).planned, 0);
});

test('nothing pending is decided from the catalog alone: an unreachable tenant database is not visited', async () => {
  const db = T.d1.placement.database;
  await inst.su.unsafe(`alter database "${db}" allow_connections false`);
  try {
    const started = Date.now();
    const report = await t2.migrate();
    assert.equal(report.planned, 0);
    assert.equal(report.migrated, 0);
    assert.deepEqual(report.failed, []);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    // and the database really was unreachable: selecting it explicitly visits it and fails there alone
    const forced = await t2.migrate({ tenants: [T.d1.slug, T.s1.slug] });
    assert.equal(forced.planned, 2);
    assert.equal(forced.migrated, 1);
    assert.deepEqual(forced.failed.map((f) => f.slug), [T.d1.slug]);
    assert.match(forced.failed[0]!.error, /not currently accepting connections|allow/i);
    assert.equal((await catalogVersions(inst)).get(T.d1.slug), 2);
  } finally {
    await inst.su.unsafe(`alter database "${db}" allow_connections true`);
  }
  assert.equal(await t2.query(T.d1.id, 'select count(*)::int from agents', [], 'val'), 1);
});

test('an edited, already-applied migration is refused with MIGRATION_CHECKSUM_MISMATCH and changes nothing', async () => {
  const snapshot = async (): Promise<unknown> => ({
    files: [...await inst.su`select version, name, checksum from tenantry_catalog.tenant_migrations order by version`],
    template: [...await inst.su`select value from tenantry_catalog.settings where key = 'template_migrations'`],
    versions: [...await catalogVersions(inst)].sort(),
    pooled: [...await shared`select version, checksum from tenantry.migrations where schema_name = 'pooled' order by version`],
    pooledColumns: (await tenantTruth(inst, shared, T.p1)).agentColumns,
  });
  const before = await snapshot();

  const edited = migrationsDir({}, v2);
  const first = path.join(edited, '0001_agent_platform.sql');
  writeFileSync(first, `${readFileSync(first, 'utf8')}\nalter table users add column nickname text;\n`);
  await rejectsWith(openWith(inst, edited), 'MIGRATION_CHECKSUM_MISMATCH', /0001_agent_platform\.sql/);

  // the newest file edited (and a new one added next to it): refused as well, the new one not recorded
  const edited2 = migrationsDir({ '0002_add_column.sql': `${ADD_COLUMN_SQL}\n-- touched\n`, '0003_more.sql': 'create table more_things (tenant_id uuid not null default tenantry.current_tenant(), id int, primary key (tenant_id, id));' });
  await rejectsWith(openWith(inst, edited2), 'MIGRATION_CHECKSUM_MISMATCH', /0002_add_column\.sql/);

  assert.deepEqual(await snapshot(), before);
  assert.ok(!(await tenantTruth(inst, shared, T.p1)).agentColumns.includes('nickname'));
  assert.equal((await t2.migrate()).planned, 0);
});

test('subsets: tenants, tier and isolation migrate only those; unknown ones are refused', async () => {
  v3 = migrationsDir({ '0003_notes.sql': 'create table notes (tenant_id uuid not null default tenantry.current_tenant(), id uuid not null default gen_random_uuid(), body text not null, primary key (tenant_id, id));' }, v2);
  const t3 = await open(v3);
  const at3 = async (): Promise<string[]> => [...await catalogVersions(inst)].filter(([, v]) => v === 3).map(([s]) => s).sort();
  const pooledSlugs = all().filter((t) => t.isolation === 'pooled').map((t) => t.slug);

  await rejectsWith(t3.migrate({ tenants: [T.s1.slug, 'no-such-tenant'] }), 'TENANT_NOT_FOUND', /no-such-tenant/);
  await rejectsWith(t3.migrate({ tier: 'platinum' as never }), 'INVALID_TIER');
  await rejectsWith(t3.migrate({ isolation: 'cluster' as never }), 'INVALID_ISOLATION');
  await rejectsWith(t3.migrate({ tenants: [] }), 'INVALID_INPUT');
  assert.deepEqual(await at3(), [...pooledSlugs].sort(), 'refused runs migrated nothing');

  const one = await t3.migrate({ tenants: [T.s1.slug] });
  assert.equal(one.planned, 1);
  assertClean(one);
  assert.deepEqual(await at3(), [...pooledSlugs, T.s1.slug].sort());
  assert.ok((await tenantTruth(inst, shared, T.s1)).tables.has('notes'));
  assert.ok(!(await tenantTruth(inst, shared, T.s2)).tables.has('notes'));

  const byId = await t3.migrate({ tenants: [T.d1.id], dryRun: true });
  assert.deepEqual(byId.plan!.map((p) => [p.slug, p.from, p.files]), [[T.d1.slug, 2, ['0003_notes.sql']]]);

  const enterprise = await t3.migrate({ tier: 'enterprise' });
  assertClean(enterprise);
  assert.equal(enterprise.planned, 2);
  assert.deepEqual(await at3(), [...pooledSlugs, T.s1.slug, T.s2.slug, T.d2.slug].sort());

  const behindSchema = visited().filter((t) => t.isolation === 'schema' && ![T.s1, T.s2].includes(t)).map((t) => t.slug).sort();
  const schemas = await t3.migrate({ isolation: 'schema' });
  assertClean(schemas);
  assert.equal(schemas.planned, behindSchema.length);
  const versions = await catalogVersions(inst);
  for (const t of all()) {
    const expected = t.isolation === 'database' && t !== T.d2 ? 2 : 3;
    assert.equal(versions.get(t.slug), expected, t.slug);
  }

  const dry = await t3.migrate({ dryRun: true });
  const behindDb = visited().filter((t) => t.isolation === 'database' && t !== T.d2).map((t) => t.slug).sort();
  assert.deepEqual(dry.plan!.map((p) => p.slug).sort(), behindDb);
  const rest = await t3.migrate();
  assertClean(rest);
  assert.equal(rest.planned, behindDb.length);
  assert.equal((await t3.migrationStatus()).behind, 0);
  assert.ok((await tenantTruth(inst, shared, T.dDel)).tables.has('notes'), 'a soft-deleted tenant is migrated too');
  await t3.close();
});

test('CLI: migrate --json, exit 7 with a failing tenant, plain progress lines when not a TTY, migrate status --json', async () => {
  v4 = migrationsDir({ '0004_labels.sql': 'create table labels (tenant_id uuid not null default tenantry.current_tenant(), id uuid not null default gen_random_uuid(), label text not null, primary key (tenant_id, id));' }, v3);
  const behind = visited().length;
  const dbCount = visited().filter((t) => t.isolation === 'database').length;

  const dbOnly = await runCli(inst, v4, ['migrate', '--isolation', 'database', '--json', '--concurrency', '2']);
  assert.equal(dbOnly.code, 0, dbOnly.stderr);
  const r1 = JSON.parse(dbOnly.stdout) as MigrateReport;
  assert.equal(r1.latestVersion, 4);
  assert.equal(r1.planned, dbCount);
  assert.equal(r1.migrated, dbCount);
  assert.deepEqual(r1.failed, []);
  assert.doesNotMatch(dbOnly.stderr, /progress:/, 'no progress output with --json');

  // one schema tenant already has a table named labels: it fails, the others go on
  await shared.unsafe(`create table "${T.s2.placement.schema}".labels (x int)`);
  try {
    const partial = await runCli(inst, v4, ['migrate', '--concurrency', '3']);
    assert.equal(partial.code, 7, partial.stderr);
    const planned = behind - dbCount;
    assert.match(partial.stdout, new RegExp(`^migrated ${planned - 1} of ${planned} tenant\\(s\\) to version 4`, 'm'));
    assert.match(partial.stdout, new RegExp(`FAILED ${T.s2.slug} \\(${T.s2.id}, schema\\): .*0004_labels\\.sql.*already exists`));
    // not a TTY: plain lines on stderr, no progress bar
    assert.match(partial.stderr, new RegExp(`^failed: ${T.s2.slug}: `, 'm'));
    assert.match(partial.stderr, new RegExp(`^progress: ${planned}/${planned} tenants \\(100%\\), `, 'm'));
    assert.doesNotMatch(partial.stderr, /\x1b\[/, 'no terminal escapes when stderr is not a TTY');
    const truth = await tenantTruth(inst, shared, T.s2);
    assert.deepEqual(truth.applied, [1, 2, 3], 'the failed tenant is untouched');
    assert.equal((await catalogVersions(inst)).get(T.s2.slug), 3);
  } finally {
    await shared.unsafe(`drop table if exists "${T.s2.placement.schema}".labels`);
  }

  const fixed = await runCli(inst, v4, ['migrate', '--json']);
  assert.equal(fixed.code, 0, fixed.stderr);
  const r3 = JSON.parse(fixed.stdout) as MigrateReport;
  assert.deepEqual([r3.planned, r3.migrated, r3.failed], [1, 1, []]);

  const status = await runCli(inst, v4, ['migrate', 'status', '--json']);
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout) as { latestVersion: number; behind: number; versions: { version: number; isolation: string; tenants: number }[] };
  assert.equal(st.latestVersion, 4);
  assert.equal(st.behind, 0);
  assert.deepEqual(st.versions.map((v) => [v.version, v.isolation]).sort(), [[4, 'database'], [4, 'pooled'], [4, 'schema']]);
  assert.equal(st.versions.reduce((n, v) => n + v.tenants, 0), all().length);
  for (const [slug, v] of await catalogVersions(inst)) assert.equal(v, 4, slug);
});

test('reapplySecurity restores a dropped policy and a removed FORCE, and doctor is ok again', async () => {
  const t4 = await open(v4);
  assert.deepEqual((await t4.doctor()).checks.filter((c) => !c.ok), [], 'doctor is ok before');

  await shared.unsafe(`drop policy tenantry_isolation on "${T.s1.placement.schema}".agents`);
  await shared.unsafe('alter table pooled.labels no force row level security');
  await withSu(inst, T.d1.placement.database, (sql) => sql.unsafe('drop policy tenantry_access on app.tags'));
  const broken = await t4.doctor();
  assert.equal(broken.ok, false);
  const failing = broken.checks.filter((c) => !c.ok).map((c) => c.message).join('\n');
  assert.match(failing, new RegExp(`${T.s1.placement.schema}\\.agents lacks Tenantry's policies`));
  assert.match(failing, /pooled\.labels: row-level security is enabled but not forced/);
  assert.match(failing, /app\.tags lacks Tenantry's policies/);

  // a plain run has nothing to do: every tenant is at the latest version
  assert.equal((await t4.migrate()).planned, 0);
  assert.equal((await t4.doctor()).ok, false);

  const report = await t4.migrate({ reapplySecurity: true, concurrency: 3 });
  assert.equal(report.planned, visited().length, 'every schema and database tenant is visited');
  assertClean(report);
  for (const t of [T.s1, T.d1, T.p1]) {
    const truth = await tenantTruth(inst, shared, t);
    for (const [table, s] of truth.tables) {
      assert.ok(s.rls && s.forced, `${t.slug}: ${table}`);
      assert.deepEqual(s.policies, TENANTRY_POLICIES, `${t.slug}: ${table}`);
    }
    assert.deepEqual(truth.applied, [1, 2, 3, 4], `${t.slug}: no migration re-run`);
  }
  const healthy = await t4.doctor();
  assert.deepEqual(healthy.checks.filter((c) => !c.ok), []);
  assert.equal(healthy.ok, true);
});

test('an instance still on the old folder never moves a tenant\'s catalog version backwards', async () => {
  // inst.tenantry was opened with 0001 only; the tenants are at 4
  const before = await catalogVersions(inst);
  const forced = await inst.tenantry.migrate({ tenants: [T.s1.slug, T.d1.slug], concurrency: 2 });
  assertClean(forced);
  const security = await inst.tenantry.migrate({ reapplySecurity: true, concurrency: 3 });
  assertClean(security);
  assert.deepEqual(await catalogVersions(inst), before);
  const t4 = await open(v4);
  assert.equal((await t4.migrationStatus()).behind, 0);
  assert.deepEqual((await t4.doctor()).checks.filter((c) => !c.ok), []);
});

test('a progress callback that throws does not cut the run short', async () => {
  const v5 = migrationsDir({ '0005_flags.sql': 'alter table agents add column flagged boolean not null default false;\n' }, v4);
  const t5 = await open(v5);
  let calls = 0;
  const report = await t5.migrate({ concurrency: 2, onProgress: () => { calls++; throw new Error('progress display broke'); } });
  assertClean(report);
  assert.equal(report.planned, visited().length);
  assert.equal(calls, visited().length);
  for (const [slug, v] of await catalogVersions(inst)) assert.equal(v, 5, slug);
});
