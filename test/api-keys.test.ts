import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { type Tenant, type Tier } from '../src/index.js';
import { ApiKeyService, parseApiKey, type CreatedApiKey } from '../src/keys/api-keys.js';
import type { Core } from '../src/core.js';
import type { TenantService } from '../src/tenants/tenants.js';
import { rejectsWith } from './helpers/assertions.js';
import { assembleKey as assemble } from './helpers/keys.js';

/**
 * Invariant 8: API key secrets are shown once and stored as hashes; lookup is by key id. Plus the key
 * format and its checksum, revocation, expiry, rotation with grace, tenant status, and last use.
 */

let inst: TestInstallation;
before(async () => { inst = await freshInstallation(); });
after(async () => { await inst?.cleanup(); });


let seq = 0;
async function tenant(tier: Tier = 'starter'): Promise<Tenant & { apiKey?: CreatedApiKey }> {
  return inst.tenantry.tenants.create({ slug: `k-${process.pid}-${++seq}`, tier });
}

const KEY_FORMAT = /^tnt_live_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$/;
const split = (key: string): { keyId: string; secret: string } => {
  const m = KEY_FORMAT.exec(key);
  assert.ok(m, `key format: ${key}`);
  return { keyId: m[1]!, secret: m[2]! };
};

/** Every row of every catalog table, each column as text (bytea also as raw bytes), holding `needle`. */
async function catalogHits(needle: string): Promise<string[]> {
  const cols = await inst.su<{ table_name: string; column_name: string; data_type: string }[]>`
    select c.table_name, c.column_name, c.data_type from information_schema.columns c
    join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
    where c.table_schema = 'tenantry_catalog' and t.table_type = 'BASE TABLE'`;
  assert.ok(cols.some((c) => c.table_name === 'api_keys'));
  assert.ok(cols.some((c) => c.table_name === 'audit_log' && c.column_name === 'details'));
  const hits: string[] = [];
  for (const c of cols) {
    const col = `"${c.column_name}"`;
    const raw = c.data_type === 'bytea' ? `or position(convert_to($1, 'UTF8') in ${col}) > 0` : '';
    const [r] = await inst.su.unsafe<{ n: number }[]>(
      `select count(*)::int as n from tenantry_catalog."${c.table_name}" where position($1 in ${col}::text) > 0 ${raw}`, [needle]);
    if (r!.n > 0) hits.push(`${c.table_name}.${c.column_name}`);
  }
  return hits;
}

test('a new tenant comes with its first key: well-formed, all scopes, verifying to that tenant', async () => {
  const t = await tenant();
  assert.ok(t.apiKey, 'create() returns the first key');
  const k = t.apiKey;
  assert.match(k.key, KEY_FORMAT);
  assert.equal(split(k.key).keyId, k.id);
  assert.equal(k.tenantId, t.id);
  assert.equal(k.name, 'default');
  assert.deepEqual([...k.scopes].sort(), ['admin', 'read', 'sql', 'write']);
  const v = await inst.tenantry.keys.verify(k.key);
  assert.equal(v.tenant.id, t.id);
  assert.equal(v.key.id, k.id);
  assert.deepEqual([...v.permissions].sort(), ['admin', 'read', 'sql', 'write']);
  const actions = (await inst.su<{ action: string; target: string }[]>`
    select action, target from tenantry_catalog.audit_log where tenant_id = ${t.id} order by chain_seq`).map((r) => `${r.action} ${r.target}`);
  assert.deepEqual(actions, [`tenant.created tenant:${t.id}`, `api_key.created api_key:${k.id}`]);
});

test('many keys per tenant, each with its name, scopes, expiry and creator; the secret is never listed', async () => {
  const t = await tenant();
  const keys = inst.tenantry.keys;
  const expiresAt = new Date(Date.now() + 3_600_000);
  const ro = await keys.create(t.id, { name: 'read only', scopes: ['read'] }, { actor: 'user:alice' });
  const ci = await keys.create(t.slug, { name: 'ci', scopes: ['read', 'write', 'sql'], expiresAt }, { actor: 'operator' });
  const dflt = await keys.create(t.id, { name: '  spaced  ' });
  assert.deepEqual(ro.scopes, ['read']);
  assert.equal(ro.createdBy, 'user:alice');
  assert.equal(ci.expiresAt?.getTime(), expiresAt.getTime());
  assert.equal(ci.createdBy, 'operator');
  assert.deepEqual(dflt.scopes, ['read', 'write'], 'default scopes');
  assert.equal(dflt.name, 'spaced');
  assert.equal(dflt.createdBy, 'system');
  assert.equal(new Set([t.apiKey!.key, ro.key, ci.key, dflt.key]).size, 4);

  const listed = await keys.list(t.id);
  assert.deepEqual(listed.map((k) => k.name), ['default', 'read only', 'ci', 'spaced']);
  for (const k of listed) {
    assert.equal('key' in k, false, 'list never shows a key');
    assert.equal('secret_hash' in k || 'secretHash' in k, false);
  }
  assert.deepEqual((await keys.verify(ro.key)).permissions, ['read']);
  assert.deepEqual([...(await keys.verify(ci.key)).permissions].sort(), ['read', 'sql', 'write']);

  await rejectsWith(keys.create(t.id, { name: '' }), 'INVALID_INPUT');
  await rejectsWith(keys.create(t.id, { name: 'x'.repeat(101) }), 'INVALID_INPUT');
  await rejectsWith(keys.create(t.id, { name: 'bad', scopes: ['root'] }), 'INVALID_INPUT');
  await rejectsWith(keys.create(t.id, { name: 'bad', scopes: [] }), 'INVALID_INPUT');
  await rejectsWith(keys.create(t.id, { name: 'bad', expiresAt: new Date(Date.now() - 1000) }), 'INVALID_INPUT');
  await rejectsWith(keys.create(t.id, { name: 'bad', memberUserId: '00000000-0000-4000-8000-000000000000' }), 'MEMBER_NOT_FOUND');
  assert.equal((await keys.list(t.id)).length, 4, 'refused creations wrote nothing');
});

test('the catalog stores only a hash: neither the secret nor the key appears anywhere in it', async () => {
  const t = await tenant();
  const k = await inst.tenantry.keys.create(t.id, { name: 'needle', scopes: ['read', 'admin'] });
  await inst.tenantry.keys.verify(k.key);
  await inst.tenantry.keys.flushLastUsed();
  await inst.tenantry.keys.rotate(t.id, k.id, { graceSeconds: 60 });
  const { secret } = split(k.key);
  const first = split(t.apiKey!.key).secret;
  for (const needle of [k.key, secret, Buffer.from(secret).toString('hex'), Buffer.from(secret).toString('base64'), t.apiKey!.key, first]) {
    assert.deepEqual(await catalogHits(needle), [], `found ${needle.slice(0, 12)}... in the catalog`);
  }
  // the key id is stored (it is the lookup), and what is stored is SHA-256 of the secret
  // (the search itself works: the key id, which is stored as the lookup, is found)
  const idHits = await catalogHits(k.id);
  assert.ok(idHits.includes('api_keys.id') && idHits.includes('audit_log.target'), idHits.join(', '));
  const [row] = await inst.su<{ secret_hash: Buffer }[]>`select secret_hash from tenantry_catalog.api_keys where id = ${k.id}`;
  assert.deepEqual(row!.secret_hash, createHash('sha256').update(secret).digest());
  assert.equal(row!.secret_hash.length, 32);
});

test('a mistyped key is refused by its checksum, before any database work', async () => {
  const t = await tenant();
  const key = t.apiKey!.key;
  assert.deepEqual(parseApiKey(key), split(key));
  // every single-character change, at every position, is caught by the format or the checksum
  let variants = 0;
  for (let i = 0; i < key.length; i++) {
    for (const alt of ['0', 'Z', 'a', '_']) {
      if (key[i] === alt) continue;
      const typo = key.slice(0, i) + alt + key.slice(i + 1);
      assert.equal(parseApiKey(typo), undefined, `typo at ${i}: ${typo}`);
      variants++;
    }
  }
  assert.ok(variants > 200);
  for (const bad of [key.slice(0, -1), `${key}x`, key.toUpperCase(), '', 'tnt_live_', `Bearer ${key}`, undefined, 42]) {
    assert.equal(parseApiKey(bad), undefined);
  }
  // and the service refuses it without touching the database: a service whose database throws
  const touched: string[] = [];
  const trap = new Proxy(() => undefined, {
    apply() { touched.push('query'); throw new Error('the database was touched'); },
    get(_t, p) { touched.push(String(p)); throw new Error('the database was touched'); },
  });
  const offline = new ApiKeyService({ admin: trap, opts: { actor: 'test' } } as unknown as Core, {
    resolveForWork: () => { touched.push('tenants'); throw new Error('tenants were looked up'); },
  } as unknown as TenantService, undefined);
  try {
    const typo = key.slice(0, 20) + (key[20] === 'a' ? 'b' : 'a') + key.slice(21);
    await rejectsWith(offline.verify(typo), 'INVALID_API_KEY');
    await rejectsWith(offline.verify('not a key at all'), 'INVALID_API_KEY');
    assert.deepEqual(touched, [], 'no database work for a malformed key');
    // (the trap works: a well-formed key does reach the database)
    await assert.rejects(offline.verify(key), /the database was touched/);
    assert.ok(touched.length > 0);
  } finally {
    await offline.stop();
  }
  // through the real service the typo is INVALID_API_KEY too, and the real key still works
  await rejectsWith(inst.tenantry.keys.verify(key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A')), 'INVALID_API_KEY');
  assert.equal((await inst.tenantry.keys.verify(key)).tenant.id, t.id);
});

test('a key verifies to its own tenant only; ids and secrets do not mix across tenants', async () => {
  const a = await tenant();
  const b = await tenant();
  const ka = split(a.apiKey!.key);
  const kb = split(b.apiKey!.key);
  assert.equal((await inst.tenantry.keys.verify(a.apiKey!.key)).tenant.id, a.id);
  assert.equal((await inst.tenantry.keys.verify(b.apiKey!.key)).tenant.id, b.id);
  // well-formed (valid checksum) but mismatched: refused as an invalid key
  await rejectsWith(inst.tenantry.keys.verify(assemble(ka.keyId, kb.secret)), 'INVALID_API_KEY');
  await rejectsWith(inst.tenantry.keys.verify(assemble(kb.keyId, ka.secret)), 'INVALID_API_KEY');
  // right id, wrong secret; unknown id
  const wrong = (ka.secret[0] === 'a' ? 'b' : 'a') + ka.secret.slice(1);
  await rejectsWith(inst.tenantry.keys.verify(assemble(ka.keyId, wrong)), 'INVALID_API_KEY');
  await rejectsWith(inst.tenantry.keys.verify(assemble('AAAAAAAAAAAA', ka.secret)), 'INVALID_API_KEY');
  // B cannot manage A's keys
  await rejectsWith(inst.tenantry.keys.revoke(b.id, ka.keyId), 'API_KEY_NOT_FOUND');
  await rejectsWith(inst.tenantry.keys.rotate(b.id, ka.keyId), 'API_KEY_NOT_FOUND');
  assert.equal((await inst.tenantry.keys.verify(a.apiKey!.key)).tenant.id, a.id, 'still valid');
  assert.ok(!(await inst.tenantry.keys.list(b.id)).some((k) => k.id === ka.keyId));
});

test('last use is recorded in memory by verify() and written by flushLastUsed()', async () => {
  const t = await tenant();
  const k = await inst.tenantry.keys.create(t.id, { name: 'usage' });
  const lastUsed = async (): Promise<Date | null> =>
    (await inst.su<{ last_used_at: Date | null }[]>`select last_used_at from tenantry_catalog.api_keys where id = ${k.id}`)[0]!.last_used_at;
  assert.equal(await lastUsed(), null);
  const before0 = Date.now();
  await inst.tenantry.keys.verify(k.key);
  await inst.tenantry.keys.verify(k.key);
  assert.equal(await lastUsed(), null, 'verify() alone writes nothing');
  const listed = (await inst.tenantry.keys.list(t.id)).find((x) => x.id === k.id);
  assert.ok(listed?.lastUsedAt && listed.lastUsedAt.getTime() >= before0 - 1000, 'list() shows the pending last use');
  await inst.tenantry.keys.flushLastUsed();
  const written = await lastUsed();
  assert.ok(written, 'flushLastUsed() wrote it');
  assert.ok(written.getTime() >= before0 - 1000 && written.getTime() <= Date.now() + 1000);
  await inst.tenantry.keys.flushLastUsed(); // nothing pending: harmless
  assert.equal((await lastUsed())?.getTime(), written.getTime());
});

test('a revoked key is refused with API_KEY_REVOKED; revocation is audited', async () => {
  const t = await tenant();
  const k = await inst.tenantry.keys.create(t.id, { name: 'to revoke' });
  const other = await inst.tenantry.keys.create(t.id, { name: 'stays' });
  await inst.tenantry.keys.verify(k.key);
  const revoked = await inst.tenantry.keys.revoke(t.id, k.id, { actor: 'operator' });
  assert.ok(revoked.revokedAt);
  await rejectsWith(inst.tenantry.keys.verify(k.key), 'API_KEY_REVOKED');
  assert.equal((await inst.tenantry.keys.verify(other.key)).key.id, other.id, 'other keys unaffected');
  await rejectsWith(inst.tenantry.keys.rotate(t.id, k.id), 'API_KEY_REVOKED');
  await rejectsWith(inst.tenantry.keys.revoke(t.id, 'AAAAAAAAAAAA'), 'API_KEY_NOT_FOUND');
  const [e] = await inst.su<{ actor: string }[]>`
    select actor from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'api_key.revoked' and target = ${`api_key:${k.id}`}`;
  assert.equal(e?.actor, 'operator');
});

test('an expired key is refused with API_KEY_EXPIRED', async () => {
  const t = await tenant();
  const k = await inst.tenantry.keys.create(t.id, { name: 'short', expiresAt: new Date(Date.now() + 1000) });
  assert.equal((await inst.tenantry.keys.verify(k.key)).tenant.id, t.id, 'valid before it expires');
  await sleep(1200);
  await rejectsWith(inst.tenantry.keys.verify(k.key), 'API_KEY_EXPIRED');
});

test('keys of a suspended or soft-deleted tenant are refused with the tenant\'s status', async () => {
  const t = await tenant();
  const key = t.apiKey!.key;
  await inst.tenantry.tenants.suspend(t.id, 'unpaid');
  await rejectsWith(inst.tenantry.keys.verify(key), 'TENANT_SUSPENDED');
  await inst.tenantry.tenants.activate(t.id);
  assert.equal((await inst.tenantry.keys.verify(key)).tenant.id, t.id, 'valid again once active');
  await inst.tenantry.tenants.delete(t.id);
  await rejectsWith(inst.tenantry.keys.verify(key), 'TENANT_DELETED');
  await rejectsWith(inst.tenantry.keys.create(t.id, { name: 'after delete' }), 'TENANT_DELETED');
  await inst.tenantry.tenants.restore(t.id);
  assert.equal((await inst.tenantry.keys.verify(key)).tenant.id, t.id);
});

test('rotation: a new key with the same name and scopes; the old one lasts the grace period, or not at all', async () => {
  const t = await tenant();
  const keys = inst.tenantry.keys;
  const old = await keys.create(t.id, { name: 'svc', scopes: ['read', 'sql'] });
  const fresh = await keys.rotate(t.id, old.id, { graceSeconds: 2 }, { actor: 'operator' });
  assert.notEqual(fresh.id, old.id);
  assert.notEqual(fresh.key, old.key);
  assert.match(fresh.key, KEY_FORMAT);
  assert.equal(fresh.name, 'svc');
  assert.deepEqual(fresh.scopes, ['read', 'sql']);
  assert.equal(fresh.rotatedFrom, old.id);
  assert.equal((await keys.verify(old.key)).key.id, old.id, 'old key valid during the grace period');
  assert.equal((await keys.verify(fresh.key)).key.id, fresh.id);
  await sleep(2300);
  await rejectsWith(keys.verify(old.key), 'API_KEY_EXPIRED');
  assert.equal((await keys.verify(fresh.key)).tenant.id, t.id, 'the new key lives on');

  // no grace: the old key stops at once
  const again = await keys.rotate(t.id, fresh.id, { graceSeconds: 0 });
  await rejectsWith(keys.verify(fresh.key), 'API_KEY_EXPIRED');
  assert.equal((await keys.verify(again.key)).key.rotatedFrom, fresh.id);
  await rejectsWith(keys.rotate(t.id, again.id, { graceSeconds: -1 }), 'INVALID_INPUT');

  const rotations = await inst.su<{ target: string; details: { rotatedFrom: string } }[]>`
    select target, details from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'api_key.rotated' order by chain_seq`;
  assert.deepEqual(rotations.map((r) => [r.target, r.details.rotatedFrom]), [[`api_key:${fresh.id}`, old.id], [`api_key:${again.id}`, fresh.id]]);
});
