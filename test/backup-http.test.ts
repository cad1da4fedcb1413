import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs, suTo } from './helpers/tenant-migrations.js';
import { buildServer } from '../src/server/app.js';
import type { Isolation } from '../src/index.js';

/**
 * The HTTP face of per-tenant backups (issue #14): long operations answer 202 and are polled to their
 * end, a downloaded archive is the stored backup, restore needs its confirmation, a crash of the
 * process running an operation is survived (the job is retried and the half-made backup replaced),
 * who may call what (a tenant key never sees another tenant's backups or operations), and hostile ids
 * and bodies answer 4xx with their codes.
 */

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const SCHEMA = `
create table notes (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  body text not null,
  meta jsonb,
  primary key (tenant_id, id)
);
`;

let inst: TestInstallation;
let app: FastifyInstance;
let backupDir: string;
let migrations: string;

before(async () => {
  backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-backup-http-'));
  migrations = migrationsDir({ '0001_notes.sql': SCHEMA });
  rmSync(path.join(migrations, '0001_agent_platform.sql'));
  inst = await freshInstallation({ adminKey: ADMIN, tenantMigrations: migrations, backupDir, schemaPoolSize: 0, jobTickMs: 200 });
  await inst.tenantry.startJobs({ schedule: false, concurrency: 2 });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  removeMigrationDirs();
  rmSync(backupDir, { recursive: true, force: true });
});

type Res = { status: number; body: any; headers: Record<string, unknown>; raw: Buffer };
async function call(method: string, url: string, opts: { token?: string | null; body?: unknown; headers?: Record<string, string> } = {}): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? ADMIN : opts.token;
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await app.inject({ method: method as 'GET', url, headers, ...(opts.body !== undefined ? { payload: opts.body as object } : {}) });
  let body: unknown = r.body;
  try { body = JSON.parse(r.body); } catch { /* not JSON */ }
  return { status: r.statusCode, body, headers: r.headers, raw: r.rawPayload };
}

let seq = 0;
async function tenantWithNotes(isolation: Isolation, marker: string, n = 4): Promise<{ id: string; slug: string; key: string }> {
  const slug = `bh-${process.pid}-${++seq}`;
  const r = await call('post', '/v1/tenants', { body: { slug, isolation } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  await inst.tenantry.withTenant(r.body.id, async (sql) => {
    for (let i = 0; i < n; i++) await sql`insert into notes (body, meta) values (${`${marker} ${i} ünïcødé 🐘`}, ${sql.json({ marker, i })})`;
  });
  return { id: r.body.id, slug, key: r.body.apiKey };
}

async function notesOf(id: string): Promise<string[]> {
  return inst.tenantry.withTenant(id, async (sql) => (await sql<{ r: string }[]>`select (to_jsonb(n) - 'tenant_id')::text as r from notes n order by id`).map((x) => x.r));
}

/** Polls an operation until it is finished; returns the last answer. */
async function poll(opId: string, ms = 120_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await call('get', `/v1/operations/${opId}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    if (r.body.status === 'succeeded' || r.body.status === 'failed') return r.body;
    if (Date.now() > end) throw new Error(`operation ${opId} still ${r.body.status} after ${ms} ms: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 150));
  }
}

async function backupOf(tenantId: string): Promise<string> {
  const r = await call('post', `/v1/tenants/${tenantId}/backups`);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const done = await poll(r.body.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done));
  return done.result.backupId as string;
}

/** The files of a tar archive (ustar, as the archive route writes it). */
function untar(buf: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (let at = 0; at + 512 <= buf.length;) {
    const h = buf.subarray(at, at + 512);
    if (h.every((b) => b === 0)) break;
    const str = (o: number, l: number): string => h.subarray(o, o + l).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 12), 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    assert.equal(sum, parseInt(str(148, 8), 8), 'header checksum');
    const name = `${str(345, 155)}/${str(0, 100)}`;
    files.set(name, buf.subarray(at + 512, at + 512 + size));
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

test('backup, list, get, download, restore (confirmed) and delete over HTTP, each long one polled to completion', { timeout: 300_000 }, async () => {
  for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
    const t = await tenantWithNotes(mode, `http-${mode}`);
    const original = await notesOf(t.id);
    const queued = await call('post', `/v1/tenants/${t.slug}/backups`);
    assert.equal(queued.status, 202);
    assert.equal(queued.body.kind, 'backup');
    assert.equal(queued.body.tenantId, t.id);
    assert.ok(['queued', 'running', 'succeeded'].includes(queued.body.status), queued.body.status);
    assert.equal(queued.body.href, `/v1/operations/${queued.body.id}`);
    const done = await poll(queued.body.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.equal(done.error, null);
    assert.equal(done.result.rows, 4);
    const backupId = done.result.backupId as string;

    const list = await call('get', `/v1/tenants/${t.id}/backups`);
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.items.map((b: { id: string }) => b.id), [backupId]);
    const one = await call('get', `/v1/tenants/${t.id}/backups/${backupId}`);
    assert.equal(one.status, 200);
    assert.equal(one.body.isolation, mode);
    assert.deepEqual(one.body.tables, [{ name: 'notes', rows: 4, bytes: one.body.tables[0].bytes }]);

    // the download is the stored backup: its manifest and its files, checksums intact
    const tar = await call('get', `/v1/tenants/${t.id}/backups/${backupId}/archive`);
    assert.equal(tar.status, 200);
    assert.equal(tar.headers['content-type'], 'application/x-tar');
    assert.match(String(tar.headers['content-disposition']), new RegExp(`attachment; filename="tenantry-backup-${t.id}-${backupId}\\.tar"`));
    const files = untar(tar.raw);
    const manifest = JSON.parse(files.get(`${backupId}/manifest.json`)!.toString('utf8'));
    assert.equal(manifest.id, backupId);
    for (const e of manifest.tables) {
      const gz = files.get(`${backupId}/${e.file}`)!;
      assert.equal(createHash('sha256').update(gz).digest('hex'), e.fileSha256);
      assert.match(gunzipSync(gz).toString('utf8'), new RegExp(`http-${mode} 0`));
    }

    await inst.tenantry.withTenant(t.id, async (sql) => { await sql`delete from notes where id = (select min(id) from notes)`; await sql`update notes set body = 'changed'`; });
    const unconfirmed = await call('post', `/v1/tenants/${t.id}/backups/${backupId}/restore`, { body: { confirm: false } });
    assert.equal(unconfirmed.status, 400);
    assert.equal(unconfirmed.body.code, 'RESTORE_CONFIRMATION_REQUIRED');
    assert.notDeepEqual(await notesOf(t.id), original, 'an unconfirmed restore changed nothing');
    const restoring = await call('post', `/v1/tenants/${t.id}/backups/${backupId}/restore`, { body: { confirm: true } });
    assert.equal(restoring.status, 202);
    const restored = await poll(restoring.body.id);
    assert.equal(restored.status, 'succeeded', JSON.stringify(restored));
    assert.equal(restored.result.rows, 4);
    assert.deepEqual(await notesOf(t.id), original, `${mode}: the rows are back`);

    const del = await call('delete', `/v1/tenants/${t.id}/backups/${backupId}`);
    assert.equal(del.status, 204);
    assert.equal((await call('get', `/v1/tenants/${t.id}/backups/${backupId}`)).body.code, 'BACKUP_NOT_FOUND');
    assert.deepEqual(readdirSync(path.join(backupDir, t.id)), [], 'its files are gone too');
  }
});

test('export and clone over HTTP: the export holds JSON Lines and CSV, the clone is a new tenant with the rows in the mode asked', { timeout: 300_000 }, async () => {
  const t = await tenantWithNotes('schema', 'export-clone');
  const original = await notesOf(t.id);
  const exp = await call('post', `/v1/tenants/${t.id}/export`);
  assert.equal(exp.status, 202);
  const exported = await poll(exp.body.id);
  assert.equal(exported.status, 'succeeded', JSON.stringify(exported));
  assert.equal(exported.result.kind, 'export');
  const files = untar((await call('get', `/v1/tenants/${t.id}/backups/${exported.result.backupId}/archive`)).raw);
  const jsonl = [...files].find(([k]) => k.endsWith('.jsonl'))![1].toString('utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(jsonl.map((r) => r.body), original.map((r) => JSON.parse(r).body));
  assert.match([...files].find(([k]) => k.endsWith('.csv'))![1].toString('utf8'), /^id,body,meta\n/);

  for (const isolation of ['pooled', 'database'] as Isolation[]) {
    const slug = `${t.slug}-c-${isolation}`;
    const c = await call('post', `/v1/tenants/${t.id}/clone`, { body: { slug, isolation } });
    assert.equal(c.status, 202, JSON.stringify(c.body));
    const cloned = await poll(c.body.id);
    assert.equal(cloned.status, 'succeeded', JSON.stringify(cloned));
    const copy = await inst.tenantry.tenants.get(slug);
    assert.equal(copy.id, cloned.result.tenantId);
    assert.equal(copy.isolation, isolation);
    assert.deepEqual(await notesOf(copy.id), original, `the ${isolation} clone has the rows`);
  }
  // from a named backup of the tenant
  const c = await call('post', `/v1/tenants/${t.id}/clone`, { body: { slug: `${t.slug}-c-named`, backupId: exported.result.backupId } });
  const cloned = await poll(c.body.id);
  assert.equal(cloned.result.backupId, exported.result.backupId);
  assert.deepEqual(await notesOf(cloned.result.tenantId), original);
});

test('move over HTTP: 202, polled to completion; the tenant is in its new mode with every row', { timeout: 300_000 }, async () => {
  const t = await tenantWithNotes('pooled', 'move', 5);
  const original = await notesOf(t.id);
  const r = await call('post', `/v1/tenants/${t.id}/move`, { body: { to: 'database' } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.kind, 'move');
  const done = await poll(r.body.id, 240_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done));
  assert.equal(done.result.isolation, 'database');
  assert.equal(done.result.from, 'pooled');
  assert.equal((await inst.tenantry.tenants.get(t.id)).isolation, 'database');
  assert.deepEqual(await notesOf(t.id), original);
  // and back, by slug
  const back = await poll((await call('post', `/v1/tenants/${t.slug}/move`, { body: { to: 'schema' } })).body.id, 240_000);
  assert.equal(back.status, 'succeeded', JSON.stringify(back));
  assert.equal((await inst.tenantry.tenants.get(t.id)).isolation, 'schema');
  assert.deepEqual(await notesOf(t.id), original);
});

test('a tampered backup: the restore operation fails with BACKUP_INVALID and the tenant keeps its rows', { timeout: 120_000 }, async () => {
  const t = await tenantWithNotes('pooled', 'tampered');
  const backupId = await backupOf(t.id);
  await inst.tenantry.withTenant(t.id, async (sql) => { await sql`update notes set body = 'after the backup'`; });
  const now = await notesOf(t.id);
  const file = path.join(backupDir, t.id, backupId, 'manifest.json');
  writeFileSync(file, readFileSync(file, 'utf8').replace('"rows": 4', '"rows": 5'));
  const r = await call('post', `/v1/tenants/${t.id}/backups/${backupId}/restore`, { body: { confirm: true } });
  assert.equal(r.status, 202);
  const failed = await poll(r.body.id);
  assert.equal(failed.status, 'failed');
  assert.equal(failed.error.code, 'BACKUP_INVALID');
  assert.match(failed.error.message, /manifest was changed/);
  assert.equal(failed.result, null);
  assert.deepEqual(await notesOf(t.id), now, 'nothing restored');
});

test('an Idempotency-Key makes a retried POST answer the same operation, started once', { timeout: 120_000 }, async () => {
  const t = await tenantWithNotes('schema', 'idem', 1);
  const key = `bk-${randomBytes(4).toString('hex')}`;
  const a = await call('post', `/v1/tenants/${t.id}/backups`, { headers: { 'idempotency-key': key } });
  const b = await call('post', `/v1/tenants/${t.id}/backups`, { headers: { 'idempotency-key': key } });
  assert.equal(a.status, 202);
  assert.equal(b.status, 202);
  assert.equal(b.headers['idempotent-replayed'], 'true');
  assert.equal(b.body.id, a.body.id);
  await poll(a.body.id);
  const [n] = await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.operations where tenant_id = ${t.id}`;
  assert.equal(Number(n!.n), 1);
  assert.equal((await call('get', `/v1/tenants/${t.id}/backups`)).body.items.length, 1, 'one backup taken');
});

test('auth matrix: the operator may do everything; a tenant admin key only looks at its own; other keys and no token are refused', { timeout: 180_000 }, async () => {
  const a = await tenantWithNotes('pooled', 'auth-a', 1);
  const b = await tenantWithNotes('pooled', 'auth-b', 1);
  const readKey = (await inst.tenantry.keys.create(a.id, { name: 'read-only', scopes: ['read', 'write'] })).key;
  const backupId = await backupOf(a.id);
  const opId = (await call('post', `/v1/tenants/${a.id}/export`)).body.id as string;
  await poll(opId);
  const routes: [string, string, unknown?][] = [
    ['post', `/v1/tenants/${a.id}/backups`],
    ['get', `/v1/tenants/${a.id}/backups`],
    ['get', `/v1/tenants/${a.id}/backups/${backupId}`],
    ['get', `/v1/tenants/${a.id}/backups/${backupId}/archive`],
    ['post', `/v1/tenants/${a.id}/backups/${backupId}/restore`, { confirm: true }],
    ['post', `/v1/tenants/${a.id}/export`],
    ['post', `/v1/tenants/${a.id}/clone`, { slug: `${a.slug}-auth` }],
    ['post', `/v1/tenants/${a.id}/move`, { to: 'schema' }],
    ['delete', `/v1/tenants/${a.id}/backups/${backupId}`],
    ['get', `/v1/operations/${opId}`],
  ];
  assert.equal((await call('get', `/v1/tenants/${a.id}/backups`, { token: 'tnt_live_nope' })).status, 401, 'a junk token');
  // tenant A's own admin key (the key a tenant is created with is tenant-wide): looks, never acts
  const adminMay = new Set([`get /v1/tenants/${a.id}/backups`, `get /v1/tenants/${a.id}/backups/${backupId}`, `get /v1/operations/${opId}`]);
  for (const [method, url, body] of routes) {
    const label = `${method} ${url}`;
    assert.equal((await call(method, url, { token: null, body })).status, 401, `no token: ${label}`);
    const own = await call(method, url, { token: a.key, body });
    assert.equal(own.status, adminMay.has(label) ? 200 : 403, `own admin key: ${label} ${JSON.stringify(own.body)}`);
    const narrow = await call(method, url, { token: readKey, body });
    assert.equal(narrow.status, 403, `own key without admin scope: ${label}`);
    // tenant B's key naming tenant A (or A's operation): as if it did not exist
    const other = await call(method, url, { token: b.key, body });
    assert.equal(other.status, 404, `another tenant's key: ${label} ${JSON.stringify(other.body)}`);
  }
  // the operator (last: the delete removes the backup)
  const expected: Record<string, number> = { post: 202, get: 200, delete: 204 };
  for (const [method, url, body] of routes) {
    const r = await call(method, url, { body });
    assert.equal(r.status, expected[method], `operator: ${method} ${url} ${JSON.stringify(r.body)}`);
    if (r.status === 202) await poll(r.body.id);
  }
});

test('attack: a tenant key guessing, polling or downloading another tenant\'s backups and operations is refused (404, as if they did not exist) and learns nothing', { timeout: 120_000 }, async () => {
  const victim = await tenantWithNotes('schema', 'victim-secret', 2);
  const attacker = await tenantWithNotes('schema', 'attacker', 1);
  const backupId = await backupOf(victim.id);
  const opId = (await call('post', `/v1/tenants/${victim.id}/backups`)).body.id as string;
  await poll(opId);
  const probes: [string, string, number][] = [
    // the victim's ids under the attacker's own tenant path: the backup is not the attacker's
    ['get', `/v1/tenants/${attacker.id}/backups/${backupId}`, 404],
    // downloads are the operator's alone, whichever backup a key names
    ['get', `/v1/tenants/${attacker.id}/backups/${backupId}/archive`, 403],
    ['get', `/v1/tenants/${victim.id}/backups/${backupId}/archive`, 404],
    ['get', `/v1/operations/${opId}`, 404],
    ['get', `/v1/tenants/${victim.slug}/backups`, 404],
    ['get', `/v1/tenants/${victim.id}/backups/${backupId}`, 404],
  ];
  for (const [method, url, status] of probes) {
    const r = await call(method, url, { token: attacker.key });
    assert.equal(r.status, status, `${url}: ${JSON.stringify(r.body)}`);
    assert.doesNotMatch(r.raw.toString('latin1'), /victim-secret/);
  }
  // an unknown operation id and a real one of another tenant answer alike
  const unknown = await call('get', `/v1/operations/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`, { token: attacker.key });
  const real = await call('get', `/v1/operations/${opId}`, { token: attacker.key });
  assert.equal(unknown.body.code, 'OPERATION_NOT_FOUND');
  assert.equal(real.body.code, unknown.body.code);
  // the operator, naming the attacker's tenant with the victim's backup: refused too (no cross-tenant restore)
  const cross = await call('post', `/v1/tenants/${attacker.id}/backups/${backupId}/restore`, { body: { confirm: true } });
  assert.equal(cross.status, 404);
  assert.equal(cross.body.code, 'BACKUP_NOT_FOUND');
  assert.deepEqual((await notesOf(attacker.id)).map((r) => JSON.parse(r).body), ['attacker 0 ünïcødé 🐘']);
});

test('hostile ids and bodies answer 4xx with their codes, and start nothing', { timeout: 120_000 }, async () => {
  const t = await tenantWithNotes('pooled', 'hostile', 1);
  const other = await tenantWithNotes('pooled', 'hostile-other', 1);
  const otherBackup = await backupOf(other.id);
  const before = await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.operations`;
  const cases: [string, string, unknown, number, string][] = [
    ['get', `/v1/tenants/${t.id}/backups/not-a-uuid`, undefined, 404, 'BACKUP_NOT_FOUND'],
    ['get', `/v1/tenants/${t.id}/backups/..%2F..%2Fetc%2Fpasswd/archive`, undefined, 404, 'BACKUP_NOT_FOUND'],
    ['get', `/v1/tenants/${t.id}/backups/%00`, undefined, 400, 'INVALID_INPUT'],
    ['get', `/v1/tenants/${t.id}/backups/${'a'.repeat(5000)}`, undefined, 400, 'INVALID_INPUT'],
    ['get', '/v1/operations/%ED%A0%80', undefined, 400, 'INVALID_INPUT'],
    ['get', '/v1/operations/nope', undefined, 404, 'OPERATION_NOT_FOUND'],
    ['get', `/v1/operations/${otherBackup.toUpperCase()}`, undefined, 404, 'OPERATION_NOT_FOUND'],
    ['post', `/v1/tenants/${t.id}/backups/${otherBackup}/restore`, { confirm: true }, 404, 'BACKUP_NOT_FOUND'],
    ['post', `/v1/tenants/${t.id}/backups/${otherBackup}/restore`, { confirm: 'true' }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/backups/${otherBackup}/restore`, {}, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'X' }, 400, 'INVALID_SLUG'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: other.slug }, 409, 'SLUG_TAKEN'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine-slug-x', tier: 'platinum' }, 400, 'INVALID_TIER'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine-slug-x', isolation: 'galaxy' }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine-slug-x', backupId: otherBackup }, 404, 'BACKUP_NOT_FOUND'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine-slug-x', sneaky: true }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine\u0000slug' }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/clone`, { slug: 'fine-slug-x', name: '\ud800' }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/move`, { to: 'galaxy' }, 400, 'INVALID_INPUT'],
    ['post', `/v1/tenants/${t.id}/move`, { to: 'pooled' }, 409, 'INVALID_TRANSITION'],
    ['post', `/v1/tenants/${t.id}/move`, [], 400, 'INVALID_INPUT'],
    ['post', '/v1/tenants/no-such-tenant/backups', undefined, 404, 'TENANT_NOT_FOUND'],
    ['post', `/v1/tenants/${t.id}/export`, { x: 'y'.repeat(300 * 1024) }, 413, 'PAYLOAD_TOO_LARGE'],
  ];
  for (const [method, url, body, status, code] of cases) {
    const r = await call(method, url, { body });
    assert.equal(r.status, status, `${method} ${url.slice(0, 80)} ${JSON.stringify(body)?.slice(0, 80)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, code, `${method} ${url.slice(0, 80)}`);
  }
  const after = await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.operations`;
  assert.equal(after[0]!.n, before[0]!.n, 'no operation was started by a refused request');
});

test('an operation whose process kept dying is failed with OPERATION_INTERRUPTED after its last start, its partial backup removed', { timeout: 120_000 }, async () => {
  const t = await tenantWithNotes('schema', 'interrupted', 1);
  const id = randomUUID();
  const backupId = randomUUID();
  // the state three dead runs leave: the operation running, a table file of the backup and no manifest
  await inst.su`insert into tenantry_catalog.operations (id, kind, tenant_id, status, state, attempts, actor)
                values (${id}, 'backup', ${t.id}, 'running', ${inst.su.json({ backupId })}, 3, 'operator')`;
  mkdirSync(path.join(backupDir, t.id, backupId), { recursive: true });
  writeFileSync(path.join(backupDir, t.id, backupId, '000-notes.copy.gz'), 'partial');
  const op = await inst.tenantry.operations.run(id);
  assert.equal(op.status, 'failed');
  assert.equal(op.error?.code, 'OPERATION_INTERRUPTED');
  assert.equal(op.attempts, 4);
  assert.match(op.error!.message, /undone.*start it again/);
  assert.equal(existsSync(path.join(backupDir, t.id, backupId)), false, 'the partial backup is gone');
  const polled = await call('get', `/v1/operations/${id}`);
  assert.equal(polled.body.status, 'failed');
  assert.equal(polled.body.error.code, 'OPERATION_INTERRUPTED');
  assert.deepEqual((await call('get', `/v1/tenants/${t.id}/backups`)).body.items, []);
  // finished is finished: running it again changes nothing
  assert.equal((await inst.tenantry.operations.run(id)).attempts, 4);
});

test('restart mid-operation: the worker running a backup is SIGKILLed; another process retries it, replaces the partial files and finishes', { timeout: 300_000 }, async () => {
  // an installation of its own whose test process runs no jobs: the children do
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-backup-restart-'));
  const own = await freshInstallation({ adminKey: ADMIN, tenantMigrations: migrations, backupDir: dir, schemaPoolSize: 0 });
  const server = await buildServer({ tenantry: own.tenantry, logLevel: 'silent' });
  const children: ChildProcess[] = [];
  const stderr: string[] = [];
  const worker = (env: Record<string, string> = {}): ChildProcess => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'worker', '--no-schedule'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: {
        ...process.env, DATABASE_URL: own.adminUrl, TENANTRY_NAMESPACE: own.namespace, TENANTRY_ADMIN_KEY: ADMIN, LOG_LEVEL: 'error',
        TENANTRY_SCHEMA_POOL_SIZE: '0', TENANTRY_MAX_CONNECTIONS: '6', TENANTRY_JOB_CONCURRENCY: '2', TENANTRY_JOB_TICK_MS: '200',
        TENANTRY_TENANT_MIGRATIONS: migrations, TENANTRY_BACKUP_DIR: dir, ...env,
      },
    });
    child.stderr!.on('data', (b: Buffer) => { stderr.push(b.toString('utf8')); });
    children.push(child);
    return child;
  };
  const exited = (c: ChildProcess): Promise<void> => new Promise((r) => { if (c.exitCode !== null || c.signalCode !== null) r(); else c.once('exit', () => r()); });
  const opRow = async (id: string) => (await own.su<{ status: string; attempts: number; state: { backupId: string }; result: { backupId: string; rows: number } | null }[]>`select status, attempts, state, result from tenantry_catalog.operations where id = ${id}`)[0]!;
  const until = async <T>(what: string, fn: () => Promise<T | undefined | false>, ms = 120_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await fn();
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; the workers said:\n${stderr.join('').slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  };
  const t = await own.tenantry.tenants.create({ slug: `restart-${process.pid}`, isolation: 'schema' });
  await own.tenantry.withTenant(t.id, async (sql) => { for (let i = 0; i < 3; i++) await sql`insert into notes (body) values (${`restart ${i}`})`; });
  const placement = (await own.tenantry.tenants.get(t.id)).placement;
  // the backup's COPY waits behind this lock: the worker is mid-operation when it is killed
  const data = suTo(own, placement.database, 1);
  const hold = await data.reserve();
  try {
    await hold`begin`;
    await hold.unsafe(`lock table "${placement.schema}".notes in access exclusive mode`);
    const r = await server.inject({ method: 'POST', url: `/v1/tenants/${t.id}/backups`, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.statusCode, 202);
    const opId = JSON.parse(r.body).id as string;
    assert.equal((await opRow(opId)).status, 'queued', 'nothing runs it while no worker is up');
    const a = worker();
    await until('worker A to start the backup', async () => (await opRow(opId)).status === 'running');
    await new Promise((res) => setTimeout(res, 700));
    a.kill('SIGKILL');
    await exited(a);
    await hold`rollback`;
    const mid = await opRow(opId);
    assert.equal(mid.status, 'running', 'the dead run left it running');
    assert.equal(mid.attempts, 1);
    worker({ TENANTRY_JOB_DEAD_AFTER_SECONDS: '3' });
    const done = await until('worker B to finish the operation', async () => { const o = await opRow(opId); return o.status === 'succeeded' || o.status === 'failed' ? o : undefined; });
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.equal(done.attempts, 2, 'retried once');
    assert.equal(done.result!.backupId, mid.state.backupId, 'the retry wrote the backup the first run began');
    assert.equal(done.result!.rows, 3);
    assert.deepEqual(readdirSync(path.join(dir, t.id)), [mid.state.backupId], 'one backup folder, no leftovers');
    // and it restores
    await own.tenantry.withTenant(t.id, async (sql) => { await sql`delete from notes`; });
    await own.tenantry.backups.restore(done.result!.backupId, { confirm: true });
    assert.equal((await own.tenantry.withTenant(t.id, (sql) => sql`select count(*)::int as n from notes`))[0]!.n, 3);
  } finally {
    await hold`rollback`.catch(() => undefined);
    hold.release();
    await data.end();
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map(exited));
    await server.close();
    await own.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});
