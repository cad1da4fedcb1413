/**
 * Tenant migration runs under stress: a run SIGKILLed half-way and resumed, a crash between a tenant's
 * commit and the catalog update, two runs at once (refused, or waiting), and a tenant stuck behind a
 * lock failing alone. ~30 schema and database tenants, so a run takes long enough to interrupt.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Sql } from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import {
  ADD_COLUMN_SQL, TENANTRY_POLICIES, REPO_ROOT, migrationsDir, removeMigrationDirs, suTo, withSu, rejectsWith, openWith,
  catalogVersions, tenantTruth,
} from './helpers/tenant-migrations.js';
import type { Tenantry, Tenant, MigrateReport } from '../src/index.js';

const SCHEMA_TENANTS = 22;
const DATABASE_TENANTS = 8;
const CHILD_APP = 'tenantry-migrate-kill-child';

let inst: TestInstallation;
let shared: Sql;
const opened: Tenantry[] = [];
const tenants: Tenant[] = [];
let pooled: Tenant;
/** the tenants migrate() visits */
const visited = (): Tenant[] => tenants.filter((t) => t.isolation !== 'pooled');
const dirs: Record<number, string> = {};

async function open(dir: string): Promise<Tenantry> {
  const t = await openWith(inst, dir);
  opened.push(t);
  return t;
}

/** Closes the instances a test opened (the server's connection slots are shared with other suites). */
async function closeAll(): Promise<void> {
  for (const t of opened.splice(0)) await t.close();
}

function assertClean(report: MigrateReport): void {
  assert.deepEqual(report.failed, [], `failures: ${JSON.stringify(report.failed)}`);
  assert.equal(report.migrated, report.planned);
}

/** Every tenant at `version`, in the catalog and in its own record (one row per version), and `column` on agents exactly once. */
async function assertAllAt(version: number, column?: string): Promise<void> {
  const versions = await catalogVersions(inst);
  for (const t of tenants) {
    assert.equal(versions.get(t.slug), version, `${t.slug} in the catalog`);
    const truth = await tenantTruth(inst, shared, t);
    assert.deepEqual(truth.applied, Array.from({ length: version }, (_, i) => i + 1), `${t.slug}: one row per version in its own record`);
    if (column) assert.equal(truth.agentColumns.filter((c) => c === column).length, 1, `${t.slug}: agents.${column}`);
    for (const [table, s] of truth.tables) {
      assert.ok(s.rls && s.forced, `${t.slug}: ${table} has RLS enabled and forced`);
      assert.deepEqual(s.policies, TENANTRY_POLICIES, `${t.slug}: ${table} has Tenantry's policies`);
    }
  }
}

/** A count(*) as n, as the superuser on the catalog database. */
async function count(query: string): Promise<number> {
  const [row] = await inst.su.unsafe<{ n: number }[]>(query);
  return row!.n;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  dirs[1] = migrationsDir();
  inst = await freshInstallation({ tenantMigrations: dirs[1] });
  shared = suTo(inst, `${inst.namespace}_shared`, 2);
  const specs = [
    ...Array.from({ length: SCHEMA_TENANTS }, (_, i) => ({ slug: `run-s${i}`, isolation: 'schema' as const })),
    ...Array.from({ length: DATABASE_TENANTS }, (_, i) => ({ slug: `run-d${i}`, isolation: 'database' as const })),
  ];
  // two at a time: the server's connection slots are shared with the other test files
  for (let i = 0; i < specs.length; i += 2) {
    tenants.push(...await Promise.all(specs.slice(i, i + 2).map((s) => inst.tenantry.tenants.create(s))));
  }
  pooled = await inst.tenantry.tenants.create({ slug: 'run-pooled', isolation: 'pooled' });
  tenants.push(pooled);
});

after(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
  await shared?.end({ timeout: 5 });
  await inst?.cleanup();
  removeMigrationDirs();
});

test('a run SIGKILLed half-way leaves every tenant whole, and running again converges', async () => {
  // slow enough (~0.1 s a tenant, 2 at a time) to be caught half-way
  dirs[2] = migrationsDir({ '0002_add_column.sql': `${ADD_COLUMN_SQL}select pg_sleep(0.1);\n` });
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test', 'helpers', 'migrate-child.ts'), inst.adminUrl, inst.namespace, dirs[2], '2'], {
    cwd: REPO_ROOT, env: { ...process.env, PGAPPNAME: CHILD_APP }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  let exited = false;
  const closed = new Promise<void>((resolve) => child.on('close', () => { exited = true; resolve(); }));

  const total = visited().length;
  const deadline = Date.now() + 60_000;
  let atTwo = 0;
  while (atTwo < 3) {
    assert.ok(!exited, `the child ended before it could be killed: ${output}`);
    assert.ok(Date.now() < deadline, `no tenant reached version 2 in time: ${output}`);
    await sleep(20);
    atTwo = await count(`select count(*)::int as n from tenantry_catalog.tenants where isolation <> 'pooled' and schema_version = 2`);
  }
  child.kill('SIGKILL');
  await closed;
  // the server notices the dead client: its transactions roll back, its sessions (and the run lock) go away
  for (const end = Date.now() + 20_000; ;) {
    if (await count(`select count(*)::int as n from pg_stat_activity where application_name = '${CHILD_APP}'`) === 0) break;
    assert.ok(Date.now() < end, 'the killed child\'s sessions did not go away');
    await sleep(50);
  }

  const versions = await catalogVersions(inst);
  const recorded = visited().filter((t) => versions.get(t.slug) === 2).length;
  assert.ok(recorded >= 3 && recorded < total, `killed half-way: ${recorded} of ${total} at version 2`);
  // each tenant is either fully at 2 or untouched; the catalog never runs ahead of the tenant
  let committed = 0;
  for (const t of visited()) {
    const truth = await tenantTruth(inst, shared, t);
    const has2 = truth.applied.includes(2);
    assert.deepEqual(truth.applied, has2 ? [1, 2] : [1], t.slug);
    assert.equal(truth.agentColumns.includes('priority'), has2, `${t.slug}: column and record agree`);
    assert.equal(truth.tables.has('tags'), has2, `${t.slug}: new table and record agree`);
    if (versions.get(t.slug) === 2) assert.ok(has2, `${t.slug}: the catalog says 2 only after the tenant committed`);
    if (has2) committed++;
  }
  assert.ok(committed < total);

  const t2 = await open(dirs[2]);
  const report = await t2.migrate({ concurrency: 4 });
  assert.equal(report.planned, total - recorded, 'the catalog-behind tenants are planned');
  assertClean(report);
  await assertAllAt(2, 'priority');
  assert.equal((await t2.migrate()).planned, 0);
});

test('a crash between a tenant\'s commit and the catalog update is healed by running again, without re-running the file', async () => {
  const t2 = opened.at(-1)!;
  const victims = [visited().find((t) => t.isolation === 'schema')!, visited().find((t) => t.isolation === 'database')!];
  const appliedAt = async (t: Tenant): Promise<string> => {
    const q = (sql: Sql) => sql<{ at: string }[]>`select applied_at::text as at from tenantry.migrations where schema_name = ${t.placement.schema} and version = 2`;
    const [row] = t.isolation === 'database' ? await withSu(inst, t.placement.database, q) : await q(shared);
    return row!.at;
  };
  const before = await Promise.all(victims.map(appliedAt));
  await inst.su`update tenantry_catalog.tenants set schema_version = 1 where id = any(${victims.map((v) => v.id)}::uuid[])`;
  assert.equal((await t2.migrationStatus()).behind, 2);

  const dry = await t2.migrate({ dryRun: true });
  assert.deepEqual(dry.plan!.map((p) => p.slug).sort(), victims.map((v) => v.slug).sort());
  const report = await t2.migrate({ concurrency: 2 });
  assert.equal(report.planned, 2);
  assertClean(report);
  await assertAllAt(2, 'priority');
  assert.deepEqual(await Promise.all(victims.map(appliedAt)), before, 'the file was not applied again');
  await closeAll();
});

test('two runs at once: the second is refused with MIGRATION_IN_PROGRESS, and the lock is released after', async () => {
  dirs[3] = migrationsDir({ '0003_notes.sql': 'create table notes (tenant_id uuid not null default tenantry.current_tenant(), id uuid not null default gen_random_uuid(), body text, primary key (tenant_id, id));\nselect pg_sleep(0.1);\n' }, dirs[2]);
  const a = await open(dirs[3]);
  const b = await open(dirs[3]);
  const results = await Promise.allSettled([a.migrate({ concurrency: 4 }), b.migrate({ concurrency: 4 })]);
  const ok = results.filter((r): r is PromiseFulfilledResult<MigrateReport> => r.status === 'fulfilled');
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.equal(ok.length, 1, JSON.stringify(results.map((r) => r.status === 'rejected' ? String(r.reason) : r.value.migrated)));
  assert.equal(refused.length, 1);
  await rejectsWith(Promise.reject(refused[0]!.reason), 'MIGRATION_IN_PROGRESS');
  assert.equal(ok[0]!.value.planned, visited().length);
  assertClean(ok[0]!.value);
  await assertAllAt(3);

  assert.equal(await count(`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = ${0x74656d67} and database = (select oid from pg_database where datname = current_database())`), 0, 'no run lock is left behind');
  const again = await Promise.all([a.migrate(), b.migrate()]);
  assert.deepEqual(again.map((r) => r.planned), [0, 0], 'nothing pending: decided before any lock is taken');
  await closeAll();
});

test('two runs at once with wait: true both succeed, and every tenant gets each file once', async () => {
  // a data-changing file: applied twice, a tenant would hold two marks
  dirs[4] = migrationsDir({
    '0004_marks.sql': `create table if not exists marks (tenant_id uuid not null default tenantry.current_tenant(), id uuid not null default gen_random_uuid(), primary key (tenant_id, id));
insert into marks (tenant_id) select tenantry.current_tenant() where tenantry.current_tenant() is not null;
select pg_sleep(0.03);
`,
  }, dirs[3]);
  const a = await open(dirs[4]);
  const b = await open(dirs[4]);
  const reports = await Promise.all([a.migrate({ concurrency: 4, wait: true }), b.migrate({ concurrency: 4, wait: true })]);
  for (const r of reports) assertClean(r);
  await assertAllAt(4);
  for (const t of visited()) {
    const count = (sql: Sql) => sql.unsafe(`select count(*)::int as n, count(*) filter (where tenant_id = '${t.id}')::int as own from "${t.placement.schema}".marks`);
    const [row] = t.isolation === 'database' ? await withSu(inst, t.placement.database, count) : await count(shared);
    assert.deepEqual({ ...row }, { n: 1, own: 1 }, `${t.slug}: the file ran once, for this tenant`);
  }
  await closeAll();
});

test('a tenant stuck behind a lock fails alone (lock_timeout), is left untouched, and converges once the lock is gone', async () => {
  dirs[5] = migrationsDir({ '0005_archived.sql': 'alter table agents add column archived boolean not null default false;\n' }, dirs[4]);
  const t5 = await open(dirs[5]);
  const victims = [visited().filter((t) => t.isolation === 'schema')[3]!, visited().filter((t) => t.isolation === 'database')[2]!];
  const victimDb = suTo(inst, victims[1]!.placement.database);
  let report: MigrateReport | undefined;
  try {
    await shared.begin(async (lockShared) => {
      await lockShared.unsafe(`lock table "${victims[0]!.placement.schema}".agents in access exclusive mode`);
      await victimDb.begin(async (lockDb) => {
        await lockDb.unsafe('lock table app.agents in access exclusive mode');
        report = await t5.migrate({ lockTimeoutMs: 300, concurrency: 4 });
      });
    });
  } finally {
    await victimDb.end({ timeout: 5 });
  }
  assert.equal(report!.planned, visited().length);
  assert.deepEqual(report!.failed.map((f) => f.slug).sort(), victims.map((v) => v.slug).sort());
  for (const f of report!.failed) assert.match(f.error, /0005_archived\.sql.*lock timeout/);
  assert.equal(report!.migrated, visited().length - 2);

  const versions = await catalogVersions(inst);
  for (const t of tenants) {
    const truth = await tenantTruth(inst, shared, t);
    const victim = victims.includes(t);
    assert.equal(versions.get(t.slug), victim ? 4 : 5, t.slug);
    assert.equal(truth.applied.at(-1), victim ? 4 : 5, t.slug);
    assert.equal(truth.agentColumns.includes('archived'), !victim, t.slug);
  }
  const status = await t5.migrationStatus();
  assert.equal(status.behind, 2);

  const rerun = await t5.migrate({ lockTimeoutMs: 300, concurrency: 2 });
  assert.equal(rerun.planned, 2);
  assertClean(rerun);
  await assertAllAt(5, 'archived');
  assert.deepEqual((await t5.doctor()).checks.filter((c) => !c.ok), []);
  await closeAll();
});
