import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freshInstallation, VIA_PGBOUNCER, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs } from './helpers/tenant-migrations.js';
import { rejectsWith } from './helpers/assertions.js';
import { Tenantry, type Isolation } from '../src/index.js';

/**
 * Backups across tenant migration versions (issue #14): a backup taken at version N restores into an
 * installation that has since added migration N+1 (the rows come back intact, the new column holds
 * its default), in every mode, over the same tenant and as a clone; a backup taken at a newer version
 * than the installation has is refused with BACKUP_TOO_NEW and nothing is restored.
 */

const V1 = `
create table notes (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  body text not null,
  primary key (tenant_id, id)
);
`;
const V2 = 'alter table notes add column priority integer not null default 7;\n';
const MODES: Isolation[] = ['pooled', 'schema', 'database'];

const backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-backup-migrations-'));
const opened: Tenantry[] = [];
let inst: TestInstallation | undefined;
after(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
  await inst?.cleanup();
  removeMigrationDirs();
  rmSync(backupDir, { recursive: true, force: true });
});

/** The same installation opened again with another folder of tenant migrations (a deploy of new code). */
async function reopen(dir: string): Promise<Tenantry> {
  const t = await Tenantry.open({ ...(VIA_PGBOUNCER ? { databaseUrl: inst!.bouncer!.via(inst!.adminUrl), directUrl: inst!.adminUrl } : { databaseUrl: inst!.adminUrl }), namespace: inst!.namespace, tenantMigrations: dir, backupDir, maxConnections: 12, schemaPoolSize: 0 });
  opened.push(t);
  return t;
}

const bodies = (tenantry: Tenantry, id: string): Promise<{ body: string; priority?: number }[]> =>
  tenantry.withTenant(id, async (sql) => [...await sql<{ body: string; priority?: number }[]>`select * from notes order by id`].map((r) => ({ ...r, tenant_id: undefined }) as never));

test('a backup from an older migration version is restored and brought forward: rows intact, the new column at its default; a newer one is refused', { timeout: 300_000 }, async () => {
  const dirV1 = migrationsDir({ '0001_notes.sql': V1 });
  rmSync(path.join(dirV1, '0001_agent_platform.sql'));
  inst = await freshInstallation({ tenantMigrations: dirV1, backupDir, schemaPoolSize: 0 });
  const v1 = inst.tenantry;
  const taken: { mode: Isolation; tenantId: string; backupId: string; rows: string[] }[] = [];
  for (const mode of MODES) {
    const t = await v1.tenants.create({ slug: `fwd-${mode}-${process.pid}`, isolation: mode });
    await v1.withTenant(t.id, async (sql) => { for (let i = 0; i < 3; i++) await sql`insert into notes (body) values (${`${mode} note ${i} ✓`})`; });
    const b = await v1.backups.create(t.id);
    assert.equal(b.migrationVersion, 1);
    taken.push({ mode, tenantId: t.id, backupId: b.id, rows: (await bodies(v1, t.id)).map((r) => r.body) });
  }
  await v1.close();

  // the new code adds migration 0002; the tenants are migrated to it
  const dirV2 = migrationsDir({ '0001_notes.sql': V1, '0002_priority.sql': V2 });
  rmSync(path.join(dirV2, '0001_agent_platform.sql'));
  const v2 = await reopen(dirV2);
  await v2.migrate();
  for (const { mode, tenantId, backupId, rows } of taken) {
    assert.equal((await v2.tenants.get(tenantId)).schemaVersion, 2, `${mode} tenant migrated`);
    await v2.withTenant(tenantId, async (sql) => { await sql`delete from notes`; await sql`insert into notes (body, priority) values ('written at v2', 1)`; });
    const r = await v2.backups.restore(backupId, { confirm: true });
    assert.equal(r.rows, 3);
    const now = await bodies(v2, tenantId);
    assert.deepEqual(now.map((x) => x.body), rows, `${mode}: the v1 rows are back, and only they`);
    assert.deepEqual(now.map((x) => x.priority), [7, 7, 7], `${mode}: the column v1 did not have holds its default`);
    // and as a clone into another mode
    const other = MODES[(MODES.indexOf(mode) + 1) % 3]!;
    const c = await v2.backups.clone(backupId, { slug: `fwd-clone-${mode}-${process.pid}`, isolation: other });
    assert.deepEqual((await bodies(v2, c.tenant.id)).map((x) => [x.body, x.priority]), rows.map((b) => [b, 7]), `${mode} -> ${other} clone`);
    // writes go on after it (the identity continues past the restored rows)
    await v2.withTenant(tenantId, (sql) => sql`insert into notes (body) values ('after the restore')`);
  }

  // a backup taken at version 2 is refused by code that only knows version 1
  const newer = await v2.backups.create(taken[1]!.tenantId);
  assert.equal(newer.migrationVersion, 2);
  const before = await bodies(v2, taken[1]!.tenantId);
  await v2.close();
  const old = await reopen(dirV1);
  await rejectsWith(old.backups.restore(newer.id, { confirm: true }), 'BACKUP_TOO_NEW', /migration 2.*up to 1/);
  await rejectsWith(old.backups.clone(newer.id, { slug: `fwd-too-new-${process.pid}` }), 'BACKUP_TOO_NEW');
  assert.equal(await old.tenants.find(`fwd-too-new-${process.pid}`), undefined, 'no clone tenant was left behind');
  await old.close();
  const again = await reopen(dirV2);
  assert.deepEqual(await bodies(again, taken[1]!.tenantId), before, 'nothing was restored');
});
