import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';

/** tenantry backup|backups|export|restore|clone: --json output and the exit codes scripts rely on. */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let inst: TestInstallation;
let backupDir: string;

before(async () => {
  backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-cli-backups-'));
  inst = await freshInstallation({ backupDir });
});
after(async () => {
  await inst?.cleanup();
  rmSync(backupDir, { recursive: true, force: true });
});

interface Run { code: number | null; stdout: string; stderr: string }
function cli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_BACKUP_DIR: backupDir, LOG_LEVEL: 'silent' };
  for (const k of ['NODE_TEST_CONTEXT', 'TENANTRY_ADMIN_KEY', 'REDIS_URL', 'TENANTRY_BACKUP_S3_BUCKET']) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('backup, list, export, restore and clone from the CLI, with --json and exit codes', { timeout: 600_000 }, async () => {
  const t = await inst.tenantry.tenants.create({ slug: `cli-bk-${process.pid}`, isolation: 'schema' });
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) values ('one@example.com'), ('two@example.com')`);

  const b = await cli(['--json', 'backup', t.slug]);
  assert.equal(b.code, 0, b.stderr);
  const backup = JSON.parse(b.stdout) as { id: string; rows: number; tenantId: string };
  assert.equal(backup.tenantId, t.id);
  assert.ok(backup.rows >= 2);

  const l = await cli(['--json', 'backups', t.slug]);
  assert.equal(l.code, 0, l.stderr);
  assert.deepEqual((JSON.parse(l.stdout) as { id: string }[]).map((x) => x.id), [backup.id]);

  const e = await cli(['--json', 'export', t.slug]);
  assert.equal(e.code, 0, e.stderr);
  const exp = JSON.parse(e.stdout) as { id: string; kind: string };
  assert.equal(exp.kind, 'export');
  assert.ok(readdirSync(path.join(backupDir, t.id, exp.id, 'export')).some((f) => f.endsWith('users.jsonl')));

  await inst.tenantry.withTenant(t.id, (sql) => sql`delete from users`);
  const refused = await cli(['--json', 'restore', backup.id]);
  assert.equal(refused.code, 2, 'no --yes: a usage error');
  assert.match(refused.stderr + refused.stdout, /RESTORE_CONFIRMATION_REQUIRED/);
  assert.equal((await inst.tenantry.withTenant(t.id, (sql) => sql`select 1 from users`)).length, 0);

  const r = await cli(['--json', 'restore', backup.id, '--yes']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await inst.tenantry.withTenant(t.id, (sql) => sql`select 1 from users`)).length, 2);

  const c = await cli(['--json', 'clone', t.slug, `cli-bk-clone-${process.pid}`, '--isolation', 'database']);
  assert.equal(c.code, 0, c.stderr);
  const clone = JSON.parse(c.stdout) as { tenant: { id: string; isolation: string }; rows: number };
  assert.equal(clone.tenant.isolation, 'database');
  assert.equal((await inst.tenantry.withTenant(clone.tenant.id, (sql) => sql`select 1 from users`)).length, 2);

  const missing = await cli(['--json', 'restore', '00000000-0000-4000-8000-000000000000', '--yes']);
  assert.equal(missing.code, 3, 'unknown backup: not found');
});
