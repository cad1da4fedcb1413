import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Sql } from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs, suTo, openWith, catalogVersions, runCli } from './helpers/tenant-migrations.js';
import { migrateNothingPending } from '../src/migrations/up-to-date.js';
import type { Tenant, Tenantry } from '../src/index.js';

/**
 * The fast paths of tenant migrations (issue #10): `tenantry migrate` with nothing pending answered from
 * the catalog alone, and a schema tenant's pending files applied in one round trip. Each must give the
 * same answer and leave the same state as the full path, and hand anything doubtful to the full path.
 */

/** A file the one-round-trip path takes: no new table, nothing about row-level security. */
const PRIORITY_SQL = 'alter table agents add column priority integer not null default 0;\ncreate index agents_priority_idx on agents (tenant_id, priority);\n-- a file may end in a comment\n';
/** Fails (division by zero) in exactly one tenant: the one whose only agent is named 'poison'. */
const POISON_SQL = "alter table agents add column weight integer not null default 1;\nselect 1 / (1 - (select count(*)::int from agents where name = 'poison'));\n";

let inst: TestInstallation;
let shared: Sql;
let v1: string;
const opened: Tenantry[] = [];
const schemaTenants: Tenant[] = [];

before(async () => {
  v1 = migrationsDir();
  inst = await freshInstallation({ tenantMigrations: v1 });
  shared = suTo(inst, `${inst.namespace}_shared`, 2);
  for (let i = 0; i < 6; i++) {
    const t = await inst.tenantry.tenants.create({ slug: `fast-s${i}`, isolation: 'schema' });
    await inst.tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) values (${i === 3 ? 'poison' : `a${i}`}, 'calculator')`);
    schemaTenants.push(t);
  }
  await inst.tenantry.tenants.create({ slug: 'fast-p', isolation: 'pooled' });
  await inst.tenantry.tenants.create({ slug: 'fast-d', isolation: 'database' });
});

after(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
  await shared?.end({ timeout: 5 });
  await inst?.cleanup();
  removeMigrationDirs();
});

const options = (dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ databaseUrl: inst.adminUrl, namespace: inst.namespace, tenantMigrations: dir, ...extra });

async function open(dir: string): Promise<Tenantry> {
  const t = await openWith(inst, dir);
  opened.push(t);
  return t;
}

test('nothing pending: answered from the catalog with the same report as migrate(); any doubt hands over to the full open', async () => {
  const quick = await migrateNothingPending(options(v1));
  assert.ok(quick, 'an installation with nothing pending is answered');
  const full = await inst.tenantry.migrate();
  assert.deepEqual({ ...quick, durationMs: 0 }, { ...full, durationMs: 0 });

  // another namespace, a database without a catalog: not this path's to answer
  assert.equal(await migrateNothingPending(options(v1, { namespace: 'elsewhere' })), undefined);
  const noCatalog = new URL(inst.adminUrl);
  noCatalog.pathname = `/${inst.namespace}_shared`;
  assert.equal(await migrateNothingPending(options(v1, { databaseUrl: noCatalog.toString() })), undefined);

  // a new file nobody opened with yet: the template and pooled tables are behind it
  const v2 = migrationsDir({ '0002_priority.sql': PRIORITY_SQL });
  assert.equal(await migrateNothingPending(options(v2)), undefined);
  // an applied file edited on disk: the full path refuses it, so the fast path must not answer
  const edited = migrationsDir();
  writeFileSync(path.join(edited, '0001_agent_platform.sql'), '-- edited\nselect 1;\n');
  assert.equal(await migrateNothingPending(options(edited)), undefined);
  // a schema tenant the catalog says is behind
  await inst.su`update tenantry_catalog.tenants set schema_version = 0 where id = ${schemaTenants[0]!.id}`;
  try {
    assert.equal(await migrateNothingPending(options(v1)), undefined);
  } finally {
    await inst.su`update tenantry_catalog.tenants set schema_version = 1 where id = ${schemaTenants[0]!.id}`;
  }
  assert.ok(await migrateNothingPending(options(v1)));
});

test('the CLI answers a plain `tenantry migrate` with nothing pending the way the full command does', async () => {
  const quick = await runCli(inst, v1, ['migrate', '--json']);
  assert.equal(quick.code, 0, quick.stderr);
  const report = JSON.parse(quick.stdout) as { planned: number; migrated: number; failed: unknown[]; latestVersion: number };
  assert.deepEqual({ planned: report.planned, migrated: report.migrated, failed: report.failed, latestVersion: report.latestVersion }, { planned: 0, migrated: 0, failed: [], latestVersion: 1 });
  const human = await runCli(inst, v1, ['migrate']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^nothing to do: every tenant is at version 1 \(decided from the catalog in \d+ ms\)\n$/);
  // flags the fast path does not know go to the full command, which judges them
  const bad = await runCli(inst, v1, ['migrate', '--concurrency', '0']);
  assert.equal(bad.code, 2, `${bad.stdout} ${bad.stderr}`);
});

test('schema tenants migrated in one round trip each: every file applied and recorded once, the catalog updated, rows kept, the others untouched', async () => {
  const v2 = migrationsDir({ '0002_priority.sql': PRIORITY_SQL });
  const t2 = await open(v2);
  assert.equal(await migrateNothingPending(options(v2)), undefined, 'schema tenants are behind');
  const report = await t2.migrate({ isolation: 'schema' });
  assert.equal(report.planned, schemaTenants.length);
  assert.equal(report.migrated, schemaTenants.length);
  assert.deepEqual(report.failed, []);
  const versions = await catalogVersions(inst);
  for (const t of schemaTenants) {
    assert.equal(versions.get(t.slug), 2, `${t.slug} is at version 2 in the catalog`);
    const [cols] = await shared<{ n: number }[]>`
      select count(*)::int as n from information_schema.columns where table_schema = ${t.placement.schema} and table_name = 'agents' and column_name = 'priority'`;
    assert.equal(cols!.n, 1, `${t.slug} has the column`);
    const recorded = await shared<{ version: number }[]>`select version from tenantry.migrations where schema_name = ${t.placement.schema} order by version`;
    assert.deepEqual(recorded.map((r) => r.version), [1, 2], `${t.slug} recorded each file once`);
    // the tenant still works inside its walls, with its one row
    assert.equal(await t2.query(t.id, 'select count(*)::int from agents where priority = 0', [], 'val'), 1);
  }
  assert.equal((await t2.migrate()).planned, 1, 'only the database tenant was left');
});

test('a file failing in one schema tenant on the one-round-trip path leaves that tenant untouched and names the file; the others move on', async () => {
  const v3 = migrationsDir({ '0002_priority.sql': PRIORITY_SQL, '0003_poison.sql': POISON_SQL });
  const t3 = await open(v3);
  const report = await t3.migrate({ isolation: 'schema' });
  const poisoned = schemaTenants[3]!;
  assert.equal(report.migrated, schemaTenants.length - 1);
  assert.deepEqual(report.failed.map((f) => f.slug), [poisoned.slug]);
  assert.match(report.failed[0]!.error, /0003_poison\.sql.*division by zero/);
  const [weight] = await shared<{ n: number }[]>`
    select count(*)::int as n from information_schema.columns where table_schema = ${poisoned.placement.schema} and table_name = 'agents' and column_name = 'weight'`;
  assert.equal(weight!.n, 0, 'nothing of the failed file is left in the poisoned tenant');
  const recorded = await shared<{ version: number }[]>`select version from tenantry.migrations where schema_name = ${poisoned.placement.schema} order by version`;
  assert.deepEqual(recorded.map((r) => r.version), [1, 2], 'and it is not recorded');
  assert.equal((await catalogVersions(inst)).get(poisoned.slug), 2);
  for (const t of schemaTenants.filter((x) => x !== poisoned)) assert.equal((await catalogVersions(inst)).get(t.slug), 3);
});
