import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import type { Isolation } from '../src/index.js';

/**
 * Kill the process at each step of a restore (staging each table, inserting): after repair the tenant
 * is whole (its rows as before the restore began), in one placement, and writable.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let inst: TestInstallation;
let backupDir: string;
before(async () => {
  backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-crash-backups-'));
  inst = await freshInstallation({ backupDir });
});
after(async () => {
  await inst?.cleanup();
  rmSync(backupDir, { recursive: true, force: true });
});

/** Runs a restore in a child and SIGKILLs it when it prints `killAt` (a progress line). */
function restoreAndKill(backupId: string, killAt: string): Promise<{ killed: boolean; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/restore-child.ts', inst.adminUrl, inst.namespace, backupDir, backupId],
      { cwd: ROOT, env: { ...process.env, NODE_TEST_CONTEXT: undefined, LOG_LEVEL: 'silent' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!killed && out.split('\n').includes(killAt)) { killed = true; child.kill('SIGKILL'); }
    });
    child.on('error', reject);
    child.on('close', () => resolve({ killed, out }));
  });
}

const rows = (id: string): Promise<string[]> => inst.tenantry.withTenant(id, async (sql) =>
  (await sql<{ email: string }[]>`select email from users order by email`).map((r) => r.email));

for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
  test(`a restore killed at each step leaves the ${mode} tenant as it was, and writable after repair`, { timeout: 300_000 }, async () => {
    const t = await inst.tenantry.tenants.create({ slug: `crash-${mode}-${process.pid}`, isolation: mode });
    await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) select 'u' || g || '@example.com' from generate_series(1, 200) g`);
    const b = await inst.tenantry.backups.create(t.id);
    const backedUp = await rows(t.id);
    await inst.tenantry.withTenant(t.id, (sql) => sql`delete from users where email like 'u1%'`);
    const current = await rows(t.id);
    for (const step of ['stage users', 'insert users', 'insert executions']) {
      const r = await restoreAndKill(b.id, step);
      assert.ok(r.killed, `the child reached "${step}": ${r.out}`);
      await inst.tenantry.repair({ olderThanSeconds: 0 });
      // all or nothing: the rows as before the restore, or (when the kill landed after its commit, which
      // the last step's short work allows) exactly the backup's, never a mix
      const after = await rows(t.id);
      if (r.out.split('\n').includes('restored')) assert.deepEqual(after, backedUp, `killed at ${step}, after the commit`);
      else assert.ok(JSON.stringify(after) === JSON.stringify(current) || JSON.stringify(after) === JSON.stringify(backedUp), `killed at ${step}: a mix of the old rows and the backup's (${after.length} rows)`);
      if (JSON.stringify(after) === JSON.stringify(backedUp)) await inst.tenantry.withTenant(t.id, (sql) => sql`delete from users where email like 'u1%'`);
      const [tenant] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants where id = ${t.id} and isolation = ${mode} and status = 'active'`;
      assert.equal(tenant!.n, 1, 'one placement, active');
      await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) values (${`after-${step.replace(' ', '-')}@example.com`})`);
      await inst.tenantry.withTenant(t.id, (sql) => sql`delete from users where email like 'after-%'`);
    }
  });
}
