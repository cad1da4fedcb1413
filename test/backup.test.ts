import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs } from './helpers/tenant-migrations.js';
import { rejectsWith } from './helpers/assertions.js';
import type { Isolation, Tenant } from '../src/index.js';

/**
 * Per-tenant backup, restore and clone (issue #14): round trips in all nine mode pairs with every
 * awkward type, a pooled archive that holds no other tenant's row, and corrupted, truncated or
 * tampered archives refused with nothing restored.
 */

const MODES: Isolation[] = ['pooled', 'schema', 'database'];

const SCHEMA = `
create table docs (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  title text not null,
  body jsonb,
  tags text[],
  at timestamptz,
  amount numeric(30,10),
  blob bytea,
  note text,
  primary key (tenant_id, id)
);
create table comments (
  tenant_id uuid not null default tenantry.current_tenant(),
  id serial,
  doc_id bigint not null,
  words text,
  primary key (tenant_id, id),
  foreign key (tenant_id, doc_id) references docs (tenant_id, id)
);
`;

let inst: TestInstallation;
let backupDir: string;
before(async () => {
  backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-backups-'));
  const dir = migrationsDir({ '0001_docs.sql': SCHEMA });
  rmSync(path.join(dir, '0001_agent_platform.sql'));
  inst = await freshInstallation({ tenantMigrations: dir, backupDir });
});
after(async () => {
  await inst?.cleanup();
  removeMigrationDirs();
  rmSync(backupDir, { recursive: true, force: true });
});

let seq = 0;
async function tenantWithRows(isolation: Isolation, marker: string): Promise<Tenant> {
  const t = await inst.tenantry.tenants.create({ slug: `bk-${process.pid}-${++seq}`, isolation });
  await inst.tenantry.withTenant(t.id, async (sql) => {
    for (let i = 0; i < 5; i++) {
      const [d] = await sql<{ id: string }[]>`
        insert into docs (title, body, tags, at, amount, blob, note) values (
          ${`${marker} doc ${i} — ünïcødé 🐘 "q" \\ tab\there`},
          ${sql.json({ marker, n: i, nested: { a: [1, 2.5, null, 'x'] }, s: 'line\nbreak' })},
          ${[`${marker}-a`, 'b,c', 'd"e', '']}::text[],
          ${'2024-02-29 23:59:59.123456+05:30'},
          ${'12345678901234567890.0123456789'},
          ${Buffer.from([0, 1, 2, 255, 10, 92])},
          ${i % 2 === 0 ? null : `${marker} note`}
        ) returning id`;
      await sql`insert into comments (doc_id, words) values (${d!.id}, ${`${marker} comment ${i}`})`;
    }
    // a gap in the identity: the next id after a restore must still be past the highest one
    await sql`delete from docs where id = (select min(id) from docs) and not exists (select 1 from comments c where c.doc_id = docs.id)`;
  });
  return t;
}

/** The tenant's rows as JSON, tenant_id left out (it is the one thing that differs between tenants). */
async function rowsOf(id: string): Promise<{ docs: string[]; comments: string[] }> {
  return inst.tenantry.withTenant(id, async (sql) => {
    const docs = await sql<{ r: string }[]>`select (to_jsonb(d) - 'tenant_id')::text as r from docs d order by id`;
    const comments = await sql<{ r: string }[]>`select (to_jsonb(c) - 'tenant_id')::text as r from comments c order by id`;
    return { docs: docs.map((x) => x.r), comments: comments.map((x) => x.r) };
  });
}

test('round trips in all nine mode pairs: every row identical, sequences continue, other tenants untouched', { timeout: 240_000 }, async () => {
  const bystanders = await Promise.all(MODES.map((m) => tenantWithRows(m, `bystander-${m}`)));
  const before = await Promise.all(bystanders.map((b) => rowsOf(b.id)));
  for (const from of MODES) {
    const source = await tenantWithRows(from, `source-${from}`);
    const original = await rowsOf(source.id);
    assert.equal(original.docs.length, 5);
    const backup = await inst.tenantry.backups.create(source.id);
    assert.equal(backup.rows, 10);
    assert.equal(backup.manifest.tenant.isolation, from);
    for (const to of MODES) {
      const { tenant: clone, rows } = await inst.tenantry.backups.clone(backup.id, { slug: `bk-clone-${process.pid}-${++seq}`, isolation: to });
      assert.equal(clone.isolation, to);
      assert.equal(rows, 10);
      assert.deepEqual(await rowsOf(clone.id), original, `${from} -> ${to}`);
      // identity and serial columns continue after the restored rows
      const maxDoc = Math.max(...original.docs.map((d) => Number((JSON.parse(d) as { id: number }).id)));
      const [next] = await inst.tenantry.withTenant(clone.id, (sql) => sql<{ id: string }[]>`insert into docs (title) values ('after restore') returning id`);
      assert.ok(Number(next!.id) > maxDoc, `${from} -> ${to}: new id ${next!.id} after ${maxDoc}`);
      const maxComment = Math.max(...original.comments.map((d) => Number((JSON.parse(d) as { id: number }).id)));
      const [c] = await inst.tenantry.withTenant(clone.id, (sql) => sql<{ id: number }[]>`insert into comments (doc_id, words) values (${next!.id}, 'x') returning id`);
      assert.ok(c!.id > maxComment, `${from} -> ${to}: serial continues`);
      // the source is as it was
      assert.deepEqual(await rowsOf(source.id), original);
    }
  }
  assert.deepEqual(await Promise.all(bystanders.map((b) => rowsOf(b.id))), before, 'other tenants untouched');
});

async function tenantCount(): Promise<number> {
  const [r] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants`;
  return r!.n;
}

function backupFiles(tenantId: string, backupId: string): string[] {
  const dir = path.join(backupDir, tenantId, backupId);
  return readdirSync(dir).map((f) => path.join(dir, f));
}

test('a pooled backup of tenant A holds no row of any other tenant (checked on the archive bytes)', async () => {
  const a = await tenantWithRows('pooled', 'MARK-A-ONLY');
  const b = await tenantWithRows('pooled', 'MARK-B-SECRET');
  const backup = await inst.tenantry.backups.create(a.id);
  const bytes = Buffer.concat(backupFiles(a.id, backup.id).map((f) => {
    const raw = readFileSync(f);
    return f.endsWith('.gz') ? gunzipSync(raw) : raw;
  }));
  const text = bytes.toString('utf8');
  assert.ok(text.includes('MARK-A-ONLY'), 'A\'s own rows are there');
  assert.ok(!text.includes('MARK-B-SECRET'), 'no row of B');
  assert.ok(!text.includes(b.id), 'not even B\'s id');
});

test('restore over the same tenant needs confirmation, then brings its rows back exactly', async () => {
  for (const mode of MODES) {
    const t = await tenantWithRows(mode, `restore-${mode}`);
    const original = await rowsOf(t.id);
    const backup = await inst.tenantry.backups.create(t.id);
    await inst.tenantry.withTenant(t.id, async (sql) => {
      await sql`delete from comments`;
      await sql`update docs set title = 'changed'`;
      await sql`insert into docs (title) values ('new after backup')`;
    });
    const changed = await rowsOf(t.id);
    await rejectsWith(inst.tenantry.backups.restore(backup.id), 'RESTORE_CONFIRMATION_REQUIRED');
    assert.deepEqual(await rowsOf(t.id), changed, 'an unconfirmed restore changed nothing');
    const r = await inst.tenantry.backups.restore(backup.id, { confirm: true });
    assert.equal(r.rows, 10);
    assert.deepEqual(await rowsOf(t.id), original, mode);
  }
});

test('an export adds JSON Lines and CSV per table, readable by a person', async () => {
  const t = await tenantWithRows('schema', 'export-me');
  const e = await inst.tenantry.backups.create(t.id, { kind: 'export' });
  assert.equal(e.kind, 'export');
  const dir = path.join(backupDir, t.id, e.id, 'export');
  const files = readdirSync(dir).sort();
  assert.deepEqual(files, ['000-docs.csv', '000-docs.jsonl', '001-comments.csv', '001-comments.jsonl']);
  const lines = readFileSync(path.join(dir, '000-docs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { title: string; body: { marker: string } });
  assert.equal(lines.length, 5);
  assert.equal(lines[0]!.body.marker, 'export-me');
  assert.match(lines[0]!.title, /ünïcødé 🐘/);
  const csv = readFileSync(path.join(dir, '001-comments.csv'), 'utf8').split('\n');
  assert.equal(csv[0], 'id,doc_id,words');
  assert.equal(csv.filter(Boolean).length, 6);
});

test('corrupted, truncated or tampered backups are refused and nothing is restored', async () => {
  const t = await tenantWithRows('pooled', 'tamper');
  const backup = await inst.tenantry.backups.create(t.id);
  await inst.tenantry.withTenant(t.id, (sql) => sql`update docs set title = 'after backup'`);
  const current = await rowsOf(t.id);
  const tenantsBefore = await tenantCount();
  const files = backupFiles(t.id, backup.id);
  const dataFile = files.find((f) => f.includes('docs.copy.gz'))!;
  const manifestFile = files.find((f) => f.endsWith('manifest.json'))!;
  const good = readFileSync(dataFile);
  const goodManifest = readFileSync(manifestFile, 'utf8');
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

  const attempts: [string, () => void][] = [
    ['a flipped byte', () => { const b = Buffer.from(good); const at = b.length >> 1; b[at] = b[at]! ^ 0xff; writeFileSync(dataFile, b); }],
    ['a truncated file', () => writeFileSync(dataFile, good.subarray(0, good.length - 7))],
    ['a missing file', () => rmSync(dataFile)],
    ['a changed row, recompressed, its checksums fixed in the manifest', () => {
      const raw = gunzipSync(good).toString('utf8').replace('tamper doc 1', 'EVIL doc 1');
      const gz = gzipSync(Buffer.from(raw));
      writeFileSync(dataFile, gz);
      const m = JSON.parse(goodManifest) as { tables: { name: string; sha256: string; fileSha256: string; bytes: number }[] };
      const e = m.tables.find((x) => x.name === 'docs')!;
      e.sha256 = sha(Buffer.from(raw)); e.fileSha256 = sha(gz); e.bytes = gz.length;
      writeFileSync(manifestFile, JSON.stringify(m));
    }],
    ['a changed manifest (row count)', () => {
      const m = JSON.parse(goodManifest) as { tables: { rows: number }[] };
      m.tables[0]!.rows += 1;
      writeFileSync(manifestFile, JSON.stringify(m));
    }],
    ['a manifest that is not JSON', () => writeFileSync(manifestFile, goodManifest.slice(0, 40))],
  ];
  for (const [what, tamper] of attempts) {
    tamper();
    await rejectsWith(inst.tenantry.backups.restore(backup.id, { confirm: true }), 'BACKUP_INVALID', /Nothing was restored/);
    await rejectsWith(inst.tenantry.backups.clone(backup.id, { slug: `bk-never-${process.pid}-${++seq}` }), 'BACKUP_INVALID');
    assert.deepEqual(await rowsOf(t.id), current, `${what}: the tenant is unchanged`);
    assert.equal(await tenantCount(), tenantsBefore, `${what}: no clone was created`);
    writeFileSync(dataFile, good);
    writeFileSync(manifestFile, goodManifest);
  }
  // and the untouched archive still restores
  await inst.tenantry.backups.restore(backup.id, { confirm: true });
  assert.notDeepEqual(await rowsOf(t.id), current);
});

test('backups are listed, fetched and deleted; unknown ids are a 404 code', async () => {
  const t = await tenantWithRows('database', 'listing');
  const a = await inst.tenantry.backups.create(t.id);
  const list = await inst.tenantry.backups.list(t.id);
  assert.deepEqual(list.map((b) => b.id), [a.id]);
  assert.equal((await inst.tenantry.backups.get(a.id)).rows, 10);
  await inst.tenantry.backups.delete(a.id);
  assert.deepEqual(await inst.tenantry.backups.list(t.id), []);
  assert.throws(() => readdirSync(path.join(backupDir, t.id, a.id)), /ENOENT/);
  await rejectsWith(inst.tenantry.backups.get(a.id), 'BACKUP_NOT_FOUND');
  await rejectsWith(inst.tenantry.backups.get('../../etc/passwd'), 'BACKUP_NOT_FOUND');
  const audit = await inst.tenantry.audit(t.id);
  assert.ok(audit.some((e) => e.action === 'tenant.backed_up'));
  assert.ok(audit.some((e) => e.action === 'tenant.backup_deleted'));
});

test('scheduled backups follow the tier policy, and only the newest `keep` are kept', async () => {
  const t = await inst.tenantry.tenants.create({ slug: `bk-sched-${process.pid}`, isolation: 'schema', tier: 'enterprise' });
  await rejectsWith(inst.tenantry.backups.setPolicy('enterprise', { everySeconds: 10, keep: 2 }), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.backups.setPolicy('no-such-tier', { everySeconds: 3600, keep: 2 }), 'INVALID_TIER');
  await inst.tenantry.backups.setPolicy('enterprise', { everySeconds: 3600, keep: 2 });
  const scheduled = async (): Promise<string[]> => (await inst.tenantry.backups.list(t.id)).filter((b) => b.kind === 'scheduled').map((b) => b.id);
  const now = Date.now();
  assert.deepEqual(await inst.tenantry.backups.runScheduled(new Date(now)), { backedUp: 1, removed: 0 });
  assert.equal((await inst.tenantry.backups.runScheduled(new Date(now))).backedUp, 0, 'not due again within the hour');
  await inst.tenantry.backups.runScheduled(new Date(now + 2 * 3600_000));
  const third = await inst.tenantry.backups.runScheduled(new Date(now + 4 * 3600_000));
  assert.deepEqual(third, { backedUp: 1, removed: 1 });
  assert.equal((await scheduled()).length, 2);
  await inst.tenantry.backups.setPolicy('enterprise', null);
  assert.equal((await inst.tenantry.backups.runScheduled(new Date(now + 9 * 3600_000))).backedUp, 0, 'no policy, no backups');
});
