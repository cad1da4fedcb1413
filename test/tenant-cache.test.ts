import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { Tenantry, JOB_NAMES } from '../src/index.js';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { tcpProxy } from './helpers/tcp-proxy.js';

/**
 * The tenant-scoped Redis cache (issue #15): every key under `t:{<tenant id>}:`, no key a caller
 * passes can reach another tenant's keys; per-tenant Redis ACL users that Redis itself confines; a
 * SCAN purge of one tenant's keys on hard delete that is recorded and retried when Redis is away.
 */

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let redisUp = false;
let raw: Redis;
let inst: TestInstallation;
const tenantIds: string[] = [];
const extra: Tenantry[] = [];

// decided before the tests are declared, so that each can be skipped with the reason
{
  const probe = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
  redisUp = await probe.connect().then(() => probe.ping()).then(() => true, () => false);
  probe.disconnect();
}

before(async () => {
  if (!redisUp) return;
  raw = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  inst = await freshInstallation({ redisUrl: REDIS_URL, cacheAclUsers: true });
});
afterEach(async () => {
  for (const t of extra.splice(0)) await t.close().catch(() => undefined);
});
after(async () => {
  if (!redisUp) return;
  // the installation first (its connections), then this run's keys and ACL users that tests left
  await inst?.cleanup();
  for (const id of tenantIds) {
    for (const k of await raw.keys(`t:{${id}}:*`)) await raw.del(k);
    await raw.call('ACL', 'DELUSER', `t-${id}`).catch(() => undefined);
  }
  raw.disconnect();
});

const skip = (): string | false => (redisUp ? false : `Redis is not reachable at ${REDIS_URL} (set REDIS_URL)`);
let n = 0;
async function tenant(t: Tenantry = inst.tenantry): Promise<string> {
  const c = await t.tenants.create({ slug: `tc-${process.pid}-${n++}`, isolation: 'pooled' });
  tenantIds.push(c.id);
  return c.id;
}

const ATTACK_KEYS = [
  '*', '?', '[a-z]*', '\\*', '..', '../x', '/etc/passwd', ':', '::', '}', '{', '}:x', 'x}:y', '%', '%2A', 'ключ', '🔑', 'e\u0301',
];

test('attack: keys with : * ? [ .. / { } % and unicode never reach another tenant\'s keys (property, both ways)', { skip: skip() }, async () => {
  const a = await tenant();
  const b = await tenant();
  await inst.tenantry.cache(b).set('secret', 'B-only');
  // the attacker builds B's key names out of its own calls
  for (const k of [...ATTACK_KEYS, `}:${b}:secret`, `t:{${b}}:secret`, `../{${b}}:secret`, `{${b}}:secret`, `:{${b}}:secret`]) {
    assert.equal(await inst.tenantry.cache(a).get(k), null, `A reads ${JSON.stringify(k)}`);
    await inst.tenantry.cache(a).set(k, 'from A');
    assert.equal(await inst.tenantry.cache(a).get(k), 'from A');
    await inst.tenantry.cache(a).incr(`${k}#n`, 5);
    await inst.tenantry.cache(a).expire(k, 600);
    await inst.tenantry.cache(a).del(`${k}#gone`);
  }
  assert.equal(await inst.tenantry.cache(b).get('secret'), 'B-only');
  assert.deepEqual(await raw.keys(`t:{${b}}:*`), [`t:{${b}}:secret`], 'B has only its own key');
  // every key A wrote is under A's prefix, and none holds a glob character or brace after it
  const mine = await raw.keys(`t:{${a}}:*`);
  assert.ok(mine.length >= ATTACK_KEYS.length);
  for (const k of mine) assert.match(k.slice(`t:{${a}}:`.length), /^[A-Za-z0-9._~\-/:%]+$/);
  for (const k of mine) assert.doesNotMatch(k.slice(`t:{${a}}:`.length), /[*?[\]\\{}]/);

  // property: for any two keys, A's writes never show under B, and distinct keys never collide
  await fc.assert(fc.asyncProperty(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), async (k1, k2) => {
    fc.pre(!k1.includes('\u0000') && !k2.includes('\u0000'));
    await inst.tenantry.cache(a).set(k1, 'v1');
    assert.notEqual(await inst.tenantry.cache(b).get(k1), 'v1');
    assert.notEqual(await inst.tenantry.cache(b).get(k2), 'v1');
    if (k1.normalize('NFC') !== k2.normalize('NFC')) {
      await inst.tenantry.cache(a).set(k2, 'v2');
      assert.equal(await inst.tenantry.cache(a).get(k1), 'v1');
    }
  }), { numRuns: 60 });
  assert.deepEqual(await raw.keys(`t:{${b}}:*`), [`t:{${b}}:secret`]);
});

test('attack: with ACL users on, a raw Redis connection with A\'s credentials cannot read, write, scan or list B\'s keys', { skip: skip() }, async () => {
  const a = await tenant();
  const b = await tenant();
  await inst.tenantry.cache(a).set('mine', 'A');
  await inst.tenantry.cache(b).set('secret', 'B');
  const creds = await inst.tenantry.cacheCredentials(a);
  assert.equal(creds.username, `t-${a}`);
  assert.equal(creds.keyPattern, `t:{${a}}:*`);
  const asA = new Redis(REDIS_URL, { username: creds.username, password: creds.password, enableReadyCheck: false, maxRetriesPerRequest: 1 });
  try {
    assert.equal(await asA.get(`t:{${a}}:mine`), 'A', 'its own key is readable');
    await assert.rejects(asA.get(`t:{${b}}:secret`), /NOPERM/);
    await assert.rejects(asA.set(`t:{${b}}:secret`, 'overwritten'), /NOPERM/);
    await assert.rejects(asA.del(`t:{${b}}:secret`), /NOPERM/);
    await assert.rejects(asA.scan('0', 'MATCH', '*'), /NOPERM/);
    await assert.rejects(asA.keys('*'), /NOPERM/);
    await assert.rejects(asA.call('ACL', 'SETUSER', creds.username, '~*'), /NOPERM/);
    await assert.rejects(asA.call('EVAL', `return redis.call('GET', 't:{${b}}:secret')`, '0'), /NOPERM/);
    await assert.rejects(asA.flushall(), /NOPERM/);
    // a key named like A's prefix but outside it
    await assert.rejects(asA.get(`t:{${a}}`), /NOPERM/);
  } finally {
    asA.disconnect();
  }
  assert.equal(await inst.tenantry.cache(b).get('secret'), 'B');
});

test('purge removes only that tenant\'s keys (SCAN + UNLINK), not B\'s nor keys that merely contain A\'s id', { skip: skip() }, async () => {
  const a = await tenant();
  const b = await tenant();
  for (let i = 0; i < 1200; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => inst.tenantry.cache(a).set(`k${i + j}`, 'x')));
  await inst.tenantry.cache(b).set('k1', 'B');
  await raw.set(`other:t:{${a}}:k1`, 'not a tenant key');
  await raw.set(`t:{${a}}`, 'no trailing colon');
  try {
    assert.equal(await inst.tenantry.cache(a).purge(), 1200);
    assert.deepEqual(await raw.keys(`t:{${a}}:*`), []);
    assert.equal(await inst.tenantry.cache(b).get('k1'), 'B');
    assert.equal(await raw.get(`other:t:{${a}}:k1`), 'not a tenant key');
    assert.equal(await raw.get(`t:{${a}}`), 'no trailing colon');
  } finally {
    await raw.del(`other:t:{${a}}:k1`, `t:{${a}}`);
  }
});

async function redisProxy(): Promise<{ url: string; down(): Promise<void>; up(): Promise<void>; close(): Promise<void> }> {
  const target = new URL(REDIS_URL);
  const p = await tcpProxy(target.hostname, Number(target.port || 6379));
  return { url: `redis://127.0.0.1:${p.port}`, up: p.up, down: p.down, close: p.close };
}

test('hard delete purges the tenant\'s keys and ACL user; with Redis away the purge is recorded, and the retry (the job runner\'s task) finishes it', { skip: skip(), timeout: 180_000 }, async () => {
  assert.ok(JOB_NAMES.includes('tenants.purge_external'));
  // at once, with Redis up
  const gone = await tenant();
  const kept = await tenant();
  await inst.tenantry.cache(gone).set('a', '1');
  await inst.tenantry.cache(kept).set('a', '2');
  await inst.tenantry.cacheCredentials(gone);
  await inst.tenantry.tenants.delete(gone, { hard: true, force: true });
  assert.deepEqual(await raw.keys(`t:{${gone}}:*`), []);
  assert.equal(await raw.call('ACL', 'GETUSER', `t-${gone}`), null, 'the ACL user is removed');
  assert.equal(await inst.tenantry.cache(kept).get('a'), '2');
  assert.deepEqual((await inst.tenantry.pendingPurges()).filter((p) => p.tenantId === gone), []);

  // Redis away at the moment of the hard delete
  const proxy = await redisProxy();
  try {
    const viaProxy = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, redisUrl: proxy.url, cacheAclUsers: true });
    extra.push(viaProxy);
    const t = await tenant(viaProxy);
    await viaProxy.cache(t).set('left', 'behind');
    await viaProxy.cacheCredentials(t);
    await proxy.down();
    await rejectsWith(viaProxy.cache(t).get('left'), 'CACHE_UNAVAILABLE');
    // the hard delete itself succeeds: PostgreSQL's part is done, the Redis part is owed
    await viaProxy.tenants.delete(t, { hard: true, force: true });
    const owed = (await viaProxy.pendingPurges()).filter((p) => p.tenantId === t);
    assert.deepEqual(owed.map((p) => p.target).sort(), ['cache', 'cache_acl']);
    assert.ok(owed.every((p) => p.attempts >= 1 && p.lastError));
    assert.equal(await raw.get(`t:{${t}}:left`), 'behind', 'still in Redis while it is away');
    // a retry while Redis is still away keeps the record
    assert.equal((await viaProxy.purgeExternal()).done, 0);
    await proxy.up();
    // what the scheduled task tenants.purge_external runs
    let done = 0;
    for (let i = 0; i < 30 && done < 2; i++) {
      done += (await viaProxy.purgeExternal()).done;
      if (done < 2) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(done, 2);
    assert.deepEqual(await raw.keys(`t:{${t}}:*`), []);
    assert.equal(await raw.call('ACL', 'GETUSER', `t-${t}`), null);
    assert.deepEqual((await viaProxy.pendingPurges()).filter((p) => p.tenantId === t), []);
    assert.equal((await viaProxy.verifyAudit(t)).ok, true);
  } finally {
    await proxy.close();
  }
});

test('hostile input is refused with INVALID_INPUT; no Redis configured is CACHE_NOT_CONFIGURED', { skip: skip() }, async () => {
  const a = await tenant();
  const c = inst.tenantry.cache(a);
  assert.throws(() => c.get('a\u0000b'), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.get(String.fromCharCode(0xdc00)), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.get(''), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.get('k'.repeat(1025)), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.set('k', 42 as never), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.set('k', 'v', { ttlSeconds: 0 }), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.expire('k', 1.5), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.incr('k', 2 ** 60), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  assert.throws(() => c.del(), (e: { code?: string }) => e.code === 'INVALID_INPUT');
  await c.set('text', 'not a number');
  await rejectsWith(c.incr('text'), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.cache('no-such-tenant').get('k'), 'TENANT_NOT_FOUND');
  const noRedis = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, redisUrl: '' });
  extra.push(noRedis);
  await rejectsWith(noRedis.cache(a).get('k'), 'CACHE_NOT_CONFIGURED', /REDIS_URL/);
});
