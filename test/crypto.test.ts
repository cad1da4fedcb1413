import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { Tenantry } from '../src/index.js';
import { resolveOptions } from '../src/config.js';
import { masterKeyFingerprint } from '../src/crypto/kms.js';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';

/**
 * Envelope encryption per tenant (issue #15): AES-256-GCM under per-tenant data keys wrapped by the
 * KMS; a ciphertext bound to its tenant, key version and context; rotation of tenant keys and of the
 * master key; crypto-shredding by hard delete, also against backups taken before; Vault transit.
 */

const K1 = randomBytes(32).toString('base64');
const K2 = randomBytes(32).toString('hex');
let inst: TestInstallation;
let backupDir: string;
const extra: Tenantry[] = [];

before(async () => {
  backupDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-crypto-backups-'));
  inst = await freshInstallation({ masterKey: K1, backupDir });
});
// each extra process is closed after its test: the server's connections are shared by many suites
afterEach(async () => {
  for (const t of extra.splice(0)) await t.close().catch(() => undefined);
});
after(async () => {
  await inst?.cleanup();
  rmSync(backupDir, { recursive: true, force: true });
});

const slug = (s: string): string => `cr-${process.pid}-${s}`;
/** Another process of the same installation, with other key settings. */
async function another(opts: Parameters<typeof Tenantry.open>[0]): Promise<Tenantry> {
  const t = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, backupDir, ...opts });
  extra.push(t);
  return t;
}

test('attack: tenant A\'s ciphertext copied into B\'s row does not decrypt as B\'s', async () => {
  const a = await inst.tenantry.tenants.create({ slug: slug('a1'), isolation: 'pooled' });
  const b = await inst.tenantry.tenants.create({ slug: slug('b1'), isolation: 'schema' });
  const secretA = await inst.tenantry.crypto.encryptText(a.id, 'A\'s SSN 123-45-6789', { context: 'users.display_name' });
  await inst.tenantry.withTenant(a.id, (sql) => sql`insert into users (email, display_name) values ('a@example.com', ${secretA})`);
  const secretB = await inst.tenantry.crypto.encryptText(b.id, 'B', { context: 'users.display_name' });
  await inst.tenantry.withTenant(b.id, (sql) => sql`insert into users (email, display_name) values ('b@example.com', ${secretB})`);
  // the attacker copies A's value into B's row and asks B's tenant to decrypt it
  const [rowA] = await inst.tenantry.withTenant(a.id, (sql) => sql<{ display_name: string }[]>`select display_name from users`);
  await inst.tenantry.withTenant(b.id, (sql) => sql`update users set display_name = ${rowA!.display_name}`);
  const [copied] = await inst.tenantry.withTenant(b.id, (sql) => sql<{ display_name: string }[]>`select display_name from users`);
  assert.equal(copied!.display_name, secretA);
  await rejectsWith(inst.tenantry.crypto.decryptText(b.id, copied!.display_name, { context: 'users.display_name' }), 'DECRYPT_FAILED');
  // A itself still reads it; with another context (another column or row) it does not
  assert.equal(await inst.tenantry.crypto.decryptText(a.id, secretA, { context: 'users.display_name' }), 'A\'s SSN 123-45-6789');
  await rejectsWith(inst.tenantry.crypto.decryptText(a.id, secretA, { context: 'users.email' }), 'DECRYPT_FAILED');
  await rejectsWith(inst.tenantry.crypto.decryptText(a.id, secretA), 'DECRYPT_FAILED');
  // every flipped bit is caught (header, nonce, body, tag)
  const raw = Buffer.from(secretA, 'base64url');
  for (const i of [0, 3, 8, 20, raw.length - 1]) {
    const bad = Buffer.from(raw);
    bad[i] = bad[i]! ^ 0x01;
    await rejectsWith(inst.tenantry.crypto.decrypt(a.id, bad, { context: 'users.display_name' }), 'DECRYPT_FAILED');
  }
  // a ciphertext that names A's key version but is re-headed as B's version 1 is still A's: fails
  await rejectsWith(inst.tenantry.crypto.decrypt(b.id, raw, { context: 'users.display_name' }), 'DECRYPT_FAILED');
});

test('attack: a wrapped data key copied from A\'s catalog row into B\'s does not unwrap there', async () => {
  const a = await inst.tenantry.tenants.create({ slug: slug('a2'), isolation: 'pooled' });
  const b = await inst.tenantry.tenants.create({ slug: slug('b2'), isolation: 'pooled' });
  const ctA = await inst.tenantry.crypto.encrypt(a.id, 'from A');
  await inst.tenantry.crypto.encrypt(b.id, 'from B');
  const [own] = await inst.su<{ wrapped: string }[]>`select wrapped from tenantry_catalog.tenant_data_keys where tenant_id = ${b.id}`;
  await inst.su`update tenantry_catalog.tenant_data_keys set wrapped = (select wrapped from tenantry_catalog.tenant_data_keys where tenant_id = ${a.id} and version = 1) where tenant_id = ${b.id}`;
  const fresh = await another({ masterKey: K1 });
  await rejectsWith(fresh.crypto.decrypt(b.id, ctA), 'DECRYPT_FAILED');
  await rejectsWith(fresh.crypto.encrypt(b.id, 'x'), 'DECRYPT_FAILED');
  // a master-key rotation reports the altered key and leaves it, re-wrapping the rest
  const rotator = await another({ masterKey: K2, previousMasterKeys: [K1] });
  const report = await rotator.crypto.rotateMasterKey();
  assert.deepEqual(report.failed, [{ tenantId: b.id, version: 1 }]);
  assert.ok(report.rewrapped >= 1);
  // put B's own key back (under K1, as the other tests expect) and rotate back to K1
  await inst.su`update tenantry_catalog.tenant_data_keys set wrapped = ${own!.wrapped}, kek_id = ${own!.wrapped.split(':').slice(0, 2).join(':')} where tenant_id = ${b.id}`;
  const back = await another({ masterKey: K1, previousMasterKeys: [K2] });
  assert.deepEqual((await back.crypto.rotateMasterKey()).failed, []);
});

test('rotating a tenant key: new writes use the new version, old ciphertexts still decrypt, nothing re-encrypted', async () => {
  const t = await inst.tenantry.tenants.create({ slug: slug('rot'), isolation: 'database' });
  const v1 = await inst.tenantry.crypto.encrypt(t.id, Buffer.from([0, 1, 2, 255]), { context: 'c' });
  assert.equal(v1.readUInt32BE(1), 1);
  const [before] = await inst.su<{ wrapped: string }[]>`select wrapped from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id} and version = 1`;
  const r = await inst.tenantry.crypto.rotateTenantKey(t.slug, { actor: 'operator' });
  assert.deepEqual(r, { tenantId: t.id, version: 2 });
  const v2 = await inst.tenantry.crypto.encrypt(t.id, 'after rotation', { context: 'c' });
  assert.equal(v2.readUInt32BE(1), 2);
  assert.deepEqual([...await inst.tenantry.crypto.decrypt(t.id, v1, { context: 'c' })], [0, 1, 2, 255]);
  assert.equal((await inst.tenantry.crypto.decrypt(t.id, v2, { context: 'c' })).toString(), 'after rotation');
  // version 1's wrapped key is untouched; a process that never saw the rotation reads both
  const [after1] = await inst.su<{ wrapped: string }[]>`select wrapped from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id} and version = 1`;
  assert.equal(after1!.wrapped, before!.wrapped);
  const other = await another({ masterKey: K1 });
  assert.equal((await other.crypto.decrypt(t.id, v2, { context: 'c' })).toString(), 'after rotation');
  assert.deepEqual((await inst.tenantry.crypto.keyVersions(t.id)).map((k) => k.version), [1, 2]);
  const audit = await inst.tenantry.audit(t.id);
  assert.ok(audit.some((e) => e.action === 'tenant.key_rotated' && e.details.version === 2));
  // no wrapped or plain key in the audit trail
  assert.ok(!JSON.stringify(audit).includes(before!.wrapped.slice(-20)));
});

test('rotating the master key re-wraps every data key in batches, resumably; data keeps decrypting; the old key is then not needed', async () => {
  const ts = await Promise.all(['m1', 'm2', 'm3'].map((s) => inst.tenantry.tenants.create({ slug: slug(s), isolation: 'pooled' })));
  const cts = await Promise.all(ts.map((t) => inst.tenantry.crypto.encrypt(t.id, `secret of ${t.slug}`)));
  const rotator = await another({ masterKey: K2, previousMasterKeys: [K1] });
  const progress: number[] = [];
  const first = await rotator.crypto.rotateMasterKey({ batchSize: 2, onProgress: (p) => progress.push(p.checked) });
  assert.ok(first.rewrapped >= 3, JSON.stringify(first));
  assert.deepEqual(first.failed, []);
  assert.ok(progress.length >= 2, 'several batches');
  const current = `local:${masterKeyFingerprint(Buffer.from(K2, 'hex'))}`;
  const stale = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_data_keys where kek_id <> ${current}`;
  assert.equal(stale[0]!.n, 0, 'every data key is wrapped by the new master key');
  // resumable: a second run finds nothing left to do
  assert.equal((await rotator.crypto.rotateMasterKey({ batchSize: 2 })).rewrapped, 0);
  // only the new key now: everything decrypts; the old key alone cannot unwrap anything any more
  const onlyNew = await another({ masterKey: K2 });
  for (let i = 0; i < ts.length; i++) assert.equal((await onlyNew.crypto.decrypt(ts[i]!.id, cts[i]!)).toString(), `secret of ${ts[i]!.slug}`);
  const onlyOld = await another({ masterKey: K1 });
  await rejectsWith(onlyOld.crypto.decrypt(ts[0]!.id, cts[0]!), 'KEY_UNAVAILABLE', /TENANTRY_MASTER_KEY_PREVIOUS/);
});

test('crypto-shredding: after hard delete A\'s ciphertexts (in its rows and in a backup taken before) never decrypt; B\'s do; audit chains verify', async () => {
  const a = await inst.tenantry.tenants.create({ slug: slug('shred-a'), isolation: 'schema' });
  const b = await inst.tenantry.tenants.create({ slug: slug('shred-b'), isolation: 'pooled' });
  const ctA = await inst.tenantry.crypto.encryptText(a.id, 'A private', { context: 'users' });
  const ctB = await inst.tenantry.crypto.encryptText(b.id, 'B private', { context: 'users' });
  await inst.tenantry.crypto.rotateTenantKey(a.id);
  const ctA2 = await inst.tenantry.crypto.encryptText(a.id, 'A private v2', { context: 'users' });
  await inst.tenantry.withTenant(a.id, (sql) => sql`insert into users (email, display_name) values ('1@a', ${ctA}), ('2@a', ${ctA2})`);
  const backup = await inst.tenantry.backups.create(a.id);
  const [{ wrapped }] = await inst.su<{ wrapped: string }[]>`select wrapped from tenantry_catalog.tenant_data_keys where tenant_id = ${a.id} and version = 1` as unknown as [{ wrapped: string }];
  // the backup never held A's wrapped keys: only its rows (the ciphertexts)
  const archive = readTree(path.join(backupDir, a.id, backup.id));
  assert.ok(archive.includes(ctA), 'the backup holds the ciphertext');
  assert.ok(!archive.includes(wrapped.split(':').pop()!), 'the backup holds no wrapped key');

  await inst.tenantry.tenants.delete(a.id, { hard: true, force: true, actor: 'operator' });
  const left = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_data_keys where tenant_id = ${a.id}`;
  assert.equal(left[0]!.n, 0, 'the wrapped keys are destroyed');
  await rejectsWith(inst.tenantry.crypto.decryptText(a.id, ctA, { context: 'users' }), 'TENANT_NOT_FOUND');
  // a process that had A's key cached drops it when told of the delete (the catalog's NOTIFY)
  const other = await another({ masterKey: K1 });
  await rejectsWith(other.crypto.decryptText(a.id, ctA2, { context: 'users' }), 'TENANT_NOT_FOUND');

  // the backup taken before still restores its rows into a clone, but A's ciphertexts stay sealed
  const { tenant: clone } = await inst.tenantry.backups.clone(backup.id, { slug: slug('shred-clone'), isolation: 'pooled' });
  const rows = await inst.tenantry.withTenant(clone.id, (sql) => sql<{ display_name: string }[]>`select display_name from users order by email`);
  assert.deepEqual(rows.map((r) => r.display_name), [ctA, ctA2]);
  for (const r of rows) await rejectsWith(inst.tenantry.crypto.decryptText(clone.id, r.display_name, { context: 'users' }), 'DECRYPT_FAILED');
  // nothing in the catalog can bring A's key back: no row names A at all
  const anyA = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_data_keys where tenant_id = ${a.id} or wrapped = ${wrapped}`;
  assert.equal(anyA[0]!.n, 0);

  assert.equal(await inst.tenantry.crypto.decryptText(b.id, ctB, { context: 'users' }), 'B private');
  const va = await inst.tenantry.verifyAudit(a.id);
  assert.equal(va.ok, true, JSON.stringify(va));
  assert.equal((await inst.tenantry.verifyAudit(b.id)).ok, true);
  const hard = (await inst.tenantry.audit(a.id)).find((e) => e.action === 'tenant.hard_deleted');
  assert.equal(hard?.details.dataKeysDestroyed, 2);
});

test('a hard delete that fails before its last transaction keeps the keys; re-running it shreds them (nothing half-done)', async () => {
  const t = await inst.tenantry.tenants.create({ slug: slug('half'), isolation: 'pooled' });
  const ct = await inst.tenantry.crypto.encrypt(t.id, 'still mine');
  // the final transaction refuses: the audit insert fails (a trigger the test adds for one tenant)
  await inst.su.unsafe(`create function tenantry_catalog.test_refuse_${process.pid}() returns trigger language plpgsql as $$ begin if new.tenant_id = '${t.id}' and new.action = 'tenant.hard_deleted' then raise exception 'refused by test'; end if; return new; end $$`);
  await inst.su.unsafe(`create trigger test_refuse before insert on tenantry_catalog.audit_log for each row execute function tenantry_catalog.test_refuse_${process.pid}()`);
  try {
    await assert.rejects(inst.tenantry.tenants.delete(t.id, { hard: true, force: true }));
  } finally {
    await inst.su.unsafe('drop trigger test_refuse on tenantry_catalog.audit_log');
    await inst.su.unsafe(`drop function tenantry_catalog.test_refuse_${process.pid}()`);
  }
  const keys = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id}`;
  assert.equal(keys[0]!.n, 1, 'the shred rolled back with the delete');
  assert.equal((await inst.tenantry.crypto.decrypt(t.id, ct)).toString(), 'still mine');
  await inst.tenantry.tenants.delete(t.id, { hard: true, force: true });
  const gone = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id}`;
  assert.equal(gone[0]!.n, 0);
});

test('hostile input: bad context, ciphertext and plaintext types are refused with INVALID_INPUT or DECRYPT_FAILED, never a 500', async () => {
  const t = await inst.tenantry.tenants.create({ slug: slug('hostile'), isolation: 'pooled' });
  // refused by the one input check before anything runs (synchronously, as every public call's text)
  assert.throws(() => inst.tenantry.crypto.encrypt(t.id, 'x', { context: 'a\u0000b' }), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => inst.tenantry.crypto.encrypt(t.id, 'x', { context: '\ud800' }), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.crypto.encrypt(t.id, 'x', { context: 'x'.repeat(2000) }), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.crypto.encrypt(t.id, 42 as never), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.crypto.decrypt(t.id, 'abc' as never), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.crypto.decrypt(t.id, Buffer.alloc(10)), 'DECRYPT_FAILED');
  await rejectsWith(inst.tenantry.crypto.decrypt(t.id, Buffer.from([1, 0, 0, 0, 9, ...randomBytes(40)])), 'DECRYPT_FAILED');
  await rejectsWith(inst.tenantry.crypto.decryptText(t.id, '!!not base64url!!'), 'DECRYPT_FAILED');
  await rejectsWith(inst.tenantry.crypto.encrypt('no-such-tenant', 'x'), 'TENANT_NOT_FOUND');
});

test('config: a malformed TENANTRY_MASTER_KEY is INVALID_CONFIG; without any key, encryption refuses with ENCRYPTION_NOT_CONFIGURED', async () => {
  for (const bad of ['short', 'x'.repeat(44), randomBytes(16).toString('base64'), randomBytes(31).toString('hex')]) {
    assert.throws(() => resolveOptions({ masterKey: bad }), (e: { code?: string; message: string }) => e.code === 'INVALID_CONFIG' && /TENANTRY_MASTER_KEY/.test(e.message) && !e.message.includes(bad));
  }
  assert.equal(resolveOptions({ masterKey: K2 }).kms.kind, 'local');
  // the key is never enumerable: options logged or serialised do not carry it
  const o = resolveOptions({ masterKey: K1 });
  assert.ok(!JSON.stringify(o).includes(Buffer.from(K1, 'base64').toString('hex')));
  assert.ok(!JSON.stringify(o.kms).includes('masterKey'));
  const none = await another({ masterKey: undefined });
  const t = await inst.tenantry.tenants.create({ slug: slug('nokey'), isolation: 'pooled' });
  await rejectsWith(none.crypto.encrypt(t.id, 'x'), 'ENCRYPTION_NOT_CONFIGURED', /TENANTRY_MASTER_KEY/);
});

// ---- Vault transit, against a loopback stand-in of its HTTP API ----

function vaultStandIn(token: string): { server: Server; rotate(): void; calls: string[] } {
  const versions: Buffer[] = [randomBytes(32)];
  const calls: string[] = [];
  const seal = (v: number, plain: Buffer): string => {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', versions[v - 1]!, nonce);
    return `vault:v${v}:${Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()]).toString('base64')}`;
  };
  const open = (ct: string): Buffer => {
    const m = /^vault:v(\d+):(.+)$/.exec(ct);
    if (!m || !versions[Number(m[1]) - 1]) throw new Error('invalid ciphertext');
    const raw = Buffer.from(m[2]!, 'base64');
    const d = createDecipheriv('aes-256-gcm', versions[Number(m[1]) - 1]!, raw.subarray(0, 12));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
  };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const send = (status: number, json: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(json)); };
      if (req.headers['x-vault-token'] !== token) return send(403, { errors: ['permission denied'] });
      const m = /^\/v1\/transit\/(encrypt|decrypt|rewrap|keys)\/tenantry-kek$/.exec(req.url ?? '');
      if (!m) return send(404, { errors: [] });
      calls.push(m[1]!);
      const input = body ? JSON.parse(body) as { plaintext?: string; ciphertext?: string } : {};
      try {
        switch (m[1]) {
          case 'encrypt': return send(200, { data: { ciphertext: seal(versions.length, Buffer.from(input.plaintext!, 'base64')), key_version: versions.length } });
          case 'decrypt': return send(200, { data: { plaintext: open(input.ciphertext!).toString('base64') } });
          case 'rewrap': return send(200, { data: { ciphertext: seal(versions.length, open(input.ciphertext!)), key_version: versions.length } });
          default: return send(200, { data: { latest_version: versions.length, min_decryption_version: 1 } });
        }
      } catch {
        return send(400, { errors: ['cipher: message authentication failed'] });
      }
    });
  });
  return { server, calls, rotate: () => { versions.push(randomBytes(32)); } };
}

test('Vault transit KMS (loopback stand-in): data keys wrapped by Vault; after a Vault key rotation rotate-master re-wraps them; a wrong token is KMS_UNAVAILABLE', async () => {
  const token = randomBytes(16).toString('hex');
  const v = vaultStandIn(token);
  await new Promise<void>((r) => v.server.listen(0, '127.0.0.1', r));
  try {
    const address = `http://127.0.0.1:${(v.server.address() as { port: number }).port}`;
    const vault = await another({ kms: 'vault', vault: { address, token, key: 'tenantry-kek' }, dataKeyCacheTtlMs: 0 });
    const t = await vault.tenants.create({ slug: slug('vault'), isolation: 'pooled' });
    const ct = await vault.crypto.encrypt(t.id, 'in vault', { context: 'k' });
    const [row] = await inst.su<{ wrapped: string; kek_id: string; kek_version: number }[]>`select wrapped, kek_id, kek_version from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id}`;
    assert.match(row!.wrapped, /^vault:v1:/);
    assert.equal(row!.kek_id, 'vault:transit/tenantry-kek');
    assert.ok(v.calls.includes('encrypt') && v.calls.includes('decrypt'));
    v.rotate();
    const report = await vault.crypto.rotateMasterKey();
    assert.ok(report.rewrapped >= 1);
    assert.ok(v.calls.includes('rewrap'));
    const [after1] = await inst.su<{ wrapped: string; kek_version: number }[]>`select wrapped, kek_version from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id}`;
    assert.match(after1!.wrapped, /^vault:v2:/);
    assert.equal(after1!.kek_version, 2);
    assert.equal((await vault.crypto.decrypt(t.id, ct, { context: 'k' })).toString(), 'in vault');
    // another tenant's ciphertext still fails under Vault as well
    const u = await vault.tenants.create({ slug: slug('vault2'), isolation: 'pooled' });
    await rejectsWith(vault.crypto.decrypt(u.id, ct, { context: 'k' }), 'DECRYPT_FAILED');
    const wrongToken = await another({ kms: 'vault', vault: { address, token: 'wrong', key: 'tenantry-kek' }, dataKeyCacheTtlMs: 0 });
    const err = await rejectsWith(wrongToken.crypto.decrypt(t.id, ct, { context: 'k' }), 'KMS_UNAVAILABLE', /403/);
    assert.ok(!err.message.includes('wrong') && !JSON.stringify(err.toJSON()).includes(token));
    // a local-key process meets Vault-wrapped keys: rotate-master reports them and goes on
    const local = await another({ masterKey: K2, previousMasterKeys: [K1] });
    const mixed = await local.crypto.rotateMasterKey();
    assert.ok(mixed.failed.some((f) => f.tenantId === t.id), JSON.stringify(mixed));
    // the Vault tenants leave (shredded) so that the other tests see local keys only
    for (const id of [t.id, u.id]) await vault.tenants.delete(id, { hard: true, force: true });
  } finally {
    await new Promise<void>((r) => v.server.close(() => r()));
  }
});

function readTree(dir: string): string {
  let out = '';
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out += readTree(p);
    else out += (name.endsWith('.gz') ? gunzipSync(readFileSync(p)) : readFileSync(p)).toString('utf8');
  }
  return out;
}

test('CLI: tenantry keys rotate-master re-wraps under the new master key and a second run has nothing left (resumable)', { timeout: 240_000 }, async () => {
  const t = await inst.tenantry.tenants.create({ slug: slug('cli'), isolation: 'pooled' });
  const ct = await inst.tenantry.crypto.encrypt(t.id, 'via the CLI');
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const run = (): Promise<{ code: number; out: string; err: string }> => new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'keys', 'rotate-master', '--batch', '2', '--json'], {
      cwd: root, timeout: 200_000,
      env: { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_MASTER_KEY: K2, TENANTRY_MASTER_KEY_PREVIOUS: K1, TENANTRY_CONFIG: '', LOG_LEVEL: 'silent' },
    }, (err, out, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out, err: stderr }));
  });
  const first = await run();
  assert.equal(first.code, 0, first.err);
  const r1 = JSON.parse(first.out) as { checked: number; rewrapped: number; failed: unknown[] };
  assert.ok(r1.rewrapped >= 1 && r1.failed.length === 0, first.out);
  const second = await run();
  assert.equal(second.code, 0, second.err);
  assert.equal((JSON.parse(second.out) as { rewrapped: number }).rewrapped, 0);
  // the key material never reaches the output
  assert.ok(!first.out.includes(K1) && !first.out.includes(K2) && !first.err.includes(K2));
  const onlyNew = await another({ masterKey: K2 });
  assert.equal((await onlyNew.crypto.decrypt(t.id, ct)).toString(), 'via the CLI');
});
