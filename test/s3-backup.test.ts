import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';
import { S3Client, GetObjectCommand, PutObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';

/** Backups kept in an S3-compatible store (s3rver on loopback): round trip, prefix, tampering, delete. */

let inst: TestInstallation;
let server: S3rver;
let dir: string;
let endpoint: string;
let s3: S3Client;
const BUCKET = 'tenantry-backups';
const PREFIX = 'prod/eu';

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-s3rver-'));
  server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: BUCKET }] });
  const { port } = await server.run();
  endpoint = `http://127.0.0.1:${port}`;
  // s3rver's fixed credentials, read by the AWS SDK's own chain as in production
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  s3 = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true });
  inst = await freshInstallation({ backupS3: { bucket: BUCKET, prefix: PREFIX, endpoint } });
});
after(async () => {
  await inst?.cleanup();
  s3?.destroy();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function keys(): Promise<string[]> {
  const r = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET }));
  return (r.Contents ?? []).map((o) => o.Key!).sort();
}

test('a backup goes to the bucket under its prefix and clones back into another mode', async () => {
  const t = await inst.tenantry.tenants.create({ slug: `s3-${process.pid}-a`, isolation: 'pooled' });
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email, display_name) values ('a@example.com', 'Ünï 🐘'), ('b@example.com', null)`);
  const b = await inst.tenantry.backups.create(t.id);
  assert.equal(b.store, 's3');
  const stored = await keys();
  assert.ok(stored.includes(`${PREFIX}/${t.id}/${b.id}/manifest.json`), stored.join(', '));
  assert.ok(stored.every((k) => k.startsWith(`${PREFIX}/`)));
  const { tenant: clone } = await inst.tenantry.backups.clone(b.id, { slug: `s3-${process.pid}-clone`, isolation: 'database' });
  const rows = await inst.tenantry.withTenant(clone.id, (sql) => sql<{ email: string; display_name: string | null }[]>`select email, display_name from users order by email`);
  assert.deepEqual(rows.map((r) => ({ ...r })), [{ email: 'a@example.com', display_name: 'Ünï 🐘' }, { email: 'b@example.com', display_name: null }]);
});

test('an object changed in the bucket is refused and nothing is restored', async () => {
  const t = await inst.tenantry.tenants.create({ slug: `s3-${process.pid}-b`, isolation: 'schema' });
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) values ('keep@example.com')`);
  const b = await inst.tenantry.backups.create(t.id);
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) values ('later@example.com')`);
  const key = (await keys()).find((k) => k.startsWith(`${PREFIX}/${t.id}/${b.id}/`) && k.includes('users.copy.gz'))!;
  const body = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToByteArray());
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body.subarray(0, body.length - 3) }));
  await rejectsWith(inst.tenantry.backups.restore(b.id, { confirm: true }), 'BACKUP_INVALID', /users/);
  const rows = await inst.tenantry.withTenant(t.id, (sql) => sql<{ email: string }[]>`select email from users order by email`);
  assert.deepEqual(rows.map((r) => r.email), ['keep@example.com', 'later@example.com']);
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
  await inst.tenantry.backups.restore(b.id, { confirm: true });
  const after = await inst.tenantry.withTenant(t.id, (sql) => sql<{ email: string }[]>`select email from users order by email`);
  assert.deepEqual(after.map((r) => r.email), ['keep@example.com']);
  await inst.tenantry.backups.delete(b.id);
  assert.deepEqual((await keys()).filter((k) => k.includes(b.id)), []);
});
