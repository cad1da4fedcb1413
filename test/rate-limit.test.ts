import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres, { type Sql } from 'postgres';
import { Redis } from 'ioredis';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { RateLimiter, leaseSize, LEASE_TTL_MS, type RateLimit, type RateLimitStore } from '../src/ratelimit/limiter.js';
import { PostgresRateLimitStore } from '../src/ratelimit/postgres-store.js';
import { RedisRateLimitStore } from '../src/ratelimit/redis-store.js';
import { rejectsWith } from './helpers/assertions.js';

/**
 * The rate limiter (GCRA with burst) behind one seam with two stores. Both stores run the same
 * conformance suite; the Redis one is skipped only when no Redis answers at REDIS_TEST_URL
 * (default redis://127.0.0.1:6379).
 */

const REDIS_URL = process.env.REDIS_TEST_URL ?? 'redis://127.0.0.1:6379';

/** Tries a real connection; the reason to skip when it fails, else undefined. */
async function redisUnreachable(): Promise<string | undefined> {
  const probe = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  let cause: unknown;
  probe.on('error', (err: unknown) => { cause ??= err; });
  try {
    await probe.connect();
    assert.equal(await probe.ping(), 'PONG');
    return undefined;
  } catch (err) {
    const why = cause ?? err;
    return `Redis is unreachable at ${REDIS_URL} (${why instanceof Error ? why.message : String(why)}): the Redis store's conformance suite did not run`;
  } finally {
    probe.disconnect();
  }
}
const redisSkip = await redisUnreachable();

let inst: TestInstallation;
let pgSql: Sql;
let pgLimiter: RateLimiter;
let redis: Redis | undefined;
let redisLimiter: RateLimiter | undefined;
const redisPrefix = `tenantry-test:${randomBytes(6).toString('hex')}:`;

before(async () => {
  inst = await freshInstallation();
  // the installation's own admin user (not a superuser), on the catalog database
  pgSql = postgres(inst.adminUrl, { onnotice: () => {}, max: 10 });
  pgLimiter = new RateLimiter(new PostgresRateLimitStore(pgSql));
  if (!redisSkip) {
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
    redisLimiter = new RateLimiter(new RedisRateLimitStore(redis, redisPrefix));
  }
});
after(async () => {
  if (redis) {
    const keys = await redis.keys(`${redisPrefix}*`);
    if (keys.length) await redis.del(...keys);
    await redisLimiter?.close();
  }
  await pgLimiter?.close();
  await pgSql?.end({ timeout: 5 });
  await inst?.cleanup();
});


let keySeq = 0;
const newKey = (what: string): string => `${what}:${process.pid}:${++keySeq}`;

/** The one conformance suite every store must pass. */
function conformance(storeName: string, limiter: () => RateLimiter, skip: string | undefined): void {
  const opts = skip ? { skip } : { timeout: 60_000 };

  test(`${storeName}: a full burst is allowed, then denied; remaining counts down`, opts, async () => {
    const rl = limiter();
    assert.equal(rl.store.name, storeName);
    const key = newKey('burst');
    const rule: RateLimit = { limit: 5, periodMs: 60_000 };
    const remaining: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = await rl.consume(key, rule);
      assert.equal(d.allowed, true, `request ${i + 1} of the burst`);
      assert.equal(d.retryAfterMs, 0);
      assert.equal(d.limit, 5);
      remaining.push(d.remaining);
    }
    assert.deepEqual(remaining, [4, 3, 2, 1, 0]);
    const denied = await rl.consume(key, rule);
    assert.equal(denied.allowed, false);
    assert.equal(denied.remaining, 0);
    assert.ok(denied.retryAfterMs > 0);
    // a denial does not use up anything: still denied, and not later than before
    const again = await rl.consume(key, rule);
    assert.equal(again.allowed, false);
    assert.ok(again.retryAfterMs <= denied.retryAfterMs);
  });

  test(`${storeName}: a burst larger than the sustained rate`, opts, async () => {
    const rl = limiter();
    const key = newKey('bigburst');
    const rule: RateLimit = { limit: 2, periodMs: 60_000, burst: 6 };
    const ds = [];
    for (let i = 0; i < 7; i++) ds.push(await rl.consume(key, rule));
    assert.deepEqual(ds.map((d) => d.allowed), [true, true, true, true, true, true, false]);
    assert.deepEqual(ds.slice(0, 6).map((d) => d.remaining), [5, 4, 3, 2, 1, 0]);
    // the interval is period / limit = 30 s, not period / burst
    assert.ok(ds[6]!.retryAfterMs > 29_000 && ds[6]!.retryAfterMs <= 30_000, `retryAfterMs ${ds[6]!.retryAfterMs}`);
    assert.ok(ds[5]!.resetAfterMs > 179_000 && ds[5]!.resetAfterMs <= 180_000, `resetAfterMs ${ds[5]!.resetAfterMs}`);
  });

  test(`${storeName}: retryAfterMs is about one emission interval`, opts, async () => {
    const rl = limiter();
    const key = newKey('retry');
    const rule: RateLimit = { limit: 5, periodMs: 10_000 }; // interval 2000 ms
    const started = Date.now();
    for (let i = 0; i < 5; i++) assert.equal((await rl.consume(key, rule)).allowed, true);
    const denied = await rl.consume(key, rule);
    const elapsed = Date.now() - started;
    assert.equal(denied.allowed, false);
    assert.ok(denied.retryAfterMs <= 2000, `retryAfterMs ${denied.retryAfterMs} <= 2000`);
    assert.ok(denied.retryAfterMs >= 2000 - elapsed - 50, `retryAfterMs ${denied.retryAfterMs} >= ${2000 - elapsed - 50}`);
    assert.ok(denied.resetAfterMs > 9000 - elapsed - 50 && denied.resetAfterMs <= 10_000, `resetAfterMs ${denied.resetAfterMs}`);
  });

  test(`${storeName}: the limiter refills over time`, opts, async () => {
    const rl = limiter();
    const key = newKey('refill');
    const rule: RateLimit = { limit: 5, periodMs: 1000 }; // one every 200 ms, burst 5
    for (let i = 0; i < 5; i++) assert.equal((await rl.consume(key, rule)).allowed, true);
    const denied = await rl.consume(key, rule);
    assert.equal(denied.allowed, false);
    assert.ok(denied.retryAfterMs <= 200);
    // waiting retryAfterMs admits exactly one more
    await sleep(denied.retryAfterMs + 20);
    assert.equal((await rl.consume(key, rule)).allowed, true, 'allowed after retryAfterMs');
    assert.equal((await rl.consume(key, rule)).allowed, false, 'but only one');
    // a full period restores the whole burst
    await sleep(1100);
    const refilled = [];
    for (let i = 0; i < 6; i++) refilled.push((await rl.consume(key, rule)).allowed);
    assert.deepEqual(refilled, [true, true, true, true, true, false]);
  });

  test(`${storeName}: concurrent consumers never exceed the burst`, opts, async () => {
    const rl = limiter();
    const key = newKey('concurrent');
    const rule: RateLimit = { limit: 20, periodMs: 600_000 }; // 30 s per token: nothing refills during the test
    const ds = await Promise.all(Array.from({ length: 200 }, () => rl.consume(key, rule)));
    assert.equal(ds.filter((d) => d.allowed).length, 20);
    assert.ok(ds.filter((d) => d.allowed).every((d) => d.remaining >= 0 && d.remaining < 20));
    assert.ok(ds.filter((d) => !d.allowed).every((d) => d.remaining === 0 && d.retryAfterMs > 0));
    assert.equal((await rl.consume(key, rule)).allowed, false);
    // and with costs: 100 concurrent requests of cost 3 against a burst of 20 admit 6
    const key2 = newKey('concurrent-cost');
    const ds2 = await Promise.all(Array.from({ length: 100 }, () => rl.consume(key2, rule, 3)));
    assert.equal(ds2.filter((d) => d.allowed).length, 6);
  });

  test(`${storeName}: a request can cost more than one`, opts, async () => {
    const rl = limiter();
    const key = newKey('cost');
    const rule: RateLimit = { limit: 10, periodMs: 600_000 };
    const a = await rl.consume(key, rule, 4);
    assert.equal(a.allowed, true);
    assert.equal(a.remaining, 6);
    const b = await rl.consume(key, rule, 4);
    assert.equal(b.allowed, true);
    assert.equal(b.remaining, 2);
    const c = await rl.consume(key, rule, 4);
    assert.equal(c.allowed, false, 'cost 4 with 2 left is denied');
    assert.ok(c.retryAfterMs > 2 * 60_000 - 5000 && c.retryAfterMs <= 2 * 60_000, `needs two more intervals: ${c.retryAfterMs}`);
    const d = await rl.consume(key, rule, 2);
    assert.equal(d.allowed, true, 'the denied request consumed nothing');
    assert.equal(d.remaining, 0);
    assert.equal((await rl.consume(key, rule, 1)).allowed, false);
    await rejectsWith(rl.consume(key, rule, 11), 'INVALID_INPUT');
    await rejectsWith(rl.consume(key, rule, 0), 'INVALID_INPUT');
  });

  test(`${storeName}: reset restores the full burst`, opts, async () => {
    const rl = limiter();
    const key = newKey('reset');
    const rule: RateLimit = { limit: 3, periodMs: 600_000 };
    for (let i = 0; i < 3; i++) await rl.consume(key, rule);
    assert.equal((await rl.consume(key, rule)).allowed, false);
    await rl.reset(key);
    const after = await rl.consume(key, rule);
    assert.equal(after.allowed, true);
    assert.equal(after.remaining, 2);
    await rl.reset(newKey('never-used')); // resetting an unknown key is harmless
  });

  test(`${storeName}: distinct keys are independent`, opts, async () => {
    const rl = limiter();
    const a = newKey('a');
    const b = newKey('b');
    const rule: RateLimit = { limit: 3, periodMs: 600_000 };
    for (let i = 0; i < 3; i++) await rl.consume(a, rule);
    assert.equal((await rl.consume(a, rule)).allowed, false);
    const db = await rl.consume(b, rule);
    assert.equal(db.allowed, true);
    assert.equal(db.remaining, 2, 'b has its own full burst');
    await rl.reset(b);
    assert.equal((await rl.consume(a, rule)).allowed, false, 'resetting b leaves a alone');
  });

  test(`${storeName}: bad rules are refused before the store is asked`, opts, async () => {
    const rl = limiter();
    await rejectsWith(rl.consume('', { limit: 1, periodMs: 1000 }), 'INVALID_INPUT');
    await rejectsWith(rl.consume('k'.repeat(201), { limit: 1, periodMs: 1000 }), 'INVALID_INPUT');
    await rejectsWith(rl.consume(newKey('bad'), { limit: 0, periodMs: 1000 }), 'INVALID_INPUT');
    await rejectsWith(rl.consume(newKey('bad'), { limit: 1, periodMs: 0 }), 'INVALID_INPUT');
    await rejectsWith(rl.consume(newKey('bad'), { limit: 1, periodMs: 1000, burst: 0 }), 'INVALID_INPUT');
  });
}

conformance('postgres', () => pgLimiter, undefined);
conformance('redis', () => redisLimiter!, redisSkip);

// High limits are leased: a process takes 2% of the burst (at most 100) from the store in one decision.
// Two limiters on one store stand for two processes; the store's decisions are counted.
for (const storeName of ['postgres', 'redis'] as const) {
  const skip = storeName === 'redis' ? redisSkip : undefined;
  const process = (calls: { n: number }): RateLimiter => {
    const store: RateLimitStore = storeName === 'postgres' ? new PostgresRateLimitStore(pgSql) : new RedisRateLimitStore(redis!, redisPrefix);
    const decide = store.decide.bind(store);
    store.decide = (...args) => { calls.n++; return decide(...args); };
    return new RateLimiter(store);
  };

  test(`${storeName}: two processes hammering a high limit get no more than the limit plus one lease each, asking the store about once per lease`, skip ? { skip } : { timeout: 180_000 }, async () => {
    const calls = { n: 0 };
    const a = process(calls);
    const b = process(calls);
    const key = newKey('leased');
    const rule: RateLimit = { limit: 5000, periodMs: 3_600_000 }; // one request per 720 ms refills
    const lease = leaseSize(5000);
    assert.equal(lease, 100);
    const started = Date.now();
    let allowed = 0;
    const round = async (): Promise<void> => {
      const ds = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).consume(key, rule)));
      allowed += ds.filter((d) => d.allowed).length;
      for (const d of ds) {
        assert.ok(d.remaining >= 0 && d.remaining <= 5000, `remaining ${d.remaining}`);
        if (!d.allowed) assert.ok(d.retryAfterMs > 0, 'a denial says when to retry');
      }
    };
    for (let i = 0; i < 40; i++) await round();
    assert.equal(allowed, 4000, 'well inside the burst every request is allowed');
    // 4,000 requests, two processes: about 40 leases, not 4,000 store decisions
    assert.ok(calls.n <= 4000 / lease + 10, `store decisions for 4,000 requests: ${calls.n}`);
    for (let i = 0; i < 20; i++) await round();
    const refilled = Math.ceil((Date.now() - started) / 720) + 1;
    // the store counts a lease in full when it is taken: together the processes never get more than it
    // grants; each may leave up to one lease unused (so others are refused that much early)
    assert.ok(allowed <= 5000 + refilled, `allowed ${allowed} of 6,000 against a burst of 5,000 (+${refilled} refilled)`);
    assert.ok(allowed >= 5000 - 2 * lease, `allowed ${allowed}: no more than one lease per process left unused`);
    // past the limit decisions are exact again: a third process, asking the store directly, is refused
    const c = process({ n: 0 });
    const d = await c.consume(key, rule);
    assert.equal(d.allowed, false);
  });

  test(`${storeName}: a lease not used within ${LEASE_TTL_MS} ms is dropped, and reset() forgets it at once`, skip ? { skip } : { timeout: 60_000 }, async () => {
    const calls = { n: 0 };
    const a = process(calls);
    const key = newKey('lease-ttl');
    const rule: RateLimit = { limit: 5000, periodMs: 3_600_000 };
    assert.equal((await a.consume(key, rule)).allowed, true);
    assert.equal((await a.consume(key, rule)).allowed, true);
    assert.equal(calls.n, 1, 'the second request came from the lease');
    await sleep(LEASE_TTL_MS + 100);
    const late = await a.consume(key, rule);
    assert.equal(late.allowed, true);
    assert.equal(calls.n, 2, 'an old lease is not used: a new one is taken');
    // the first lease is counted in full (its 98 unused requests are lost), the second as used once
    assert.ok(late.remaining >= 5000 - 103 && late.remaining <= 5000 - 98, `remaining ${late.remaining}`);
    await a.reset(key);
    const fresh = await a.consume(key, rule);
    assert.equal(calls.n, 3, 'after reset the local lease is gone too');
    assert.equal(fresh.remaining, 4999);
  });
}

test('postgres store: its state is one row per key in the catalog', async () => {
  const key = newKey('row');
  await pgLimiter.consume(key, { limit: 3, periodMs: 600_000 });
  const [row] = await inst.su<{ tat_us: string; allowed: boolean }[]>`select tat_us, allowed from tenantry_catalog.rate_limits where key = ${key}`;
  assert.ok(row);
  assert.equal(row.allowed, true);
  await pgLimiter.reset(key);
  assert.equal((await inst.su`select 1 from tenantry_catalog.rate_limits where key = ${key}`).length, 0);
});

test('tenantry.rateLimit(tenant) holds a tenant to its api_calls_per_minute', async () => {
  const { tenantry } = inst;
  const free = await tenantry.tenants.create({ slug: `rl-free-${process.pid}`, tier: 'free' });
  const d = await tenantry.rateLimit(free.id);
  assert.equal(d.allowed, true);
  assert.equal(d.limit, 100, 'free: 100 calls per minute');
  assert.equal(d.remaining, 99);

  const t = await tenantry.tenants.create({ slug: `rl-small-${process.pid}`, tier: 'starter' });
  await tenantry.quotas.setOverrides(t.id, { api_calls_per_minute: 3 });
  const ds = [];
  for (let i = 0; i < 4; i++) ds.push(await tenantry.rateLimit(t.slug));
  assert.deepEqual(ds.map((x) => x.allowed), [true, true, true, false]);
  assert.ok(ds.every((x) => x.limit === 3));
  assert.ok(ds[3]!.retryAfterMs > 15_000 && ds[3]!.retryAfterMs <= 20_000, `one call per 20 s: ${ds[3]!.retryAfterMs}`);
  // the neighbour is unaffected
  assert.equal((await tenantry.rateLimit(free.id)).allowed, true);
  // the limit follows the quota
  await tenantry.quotas.setOverrides(t.id, { api_calls_per_minute: null });
  assert.equal((await tenantry.rateLimit(t.id)).limit, 1000);
  await tenantry.rateLimiter.reset(`tenant:${t.id}`);
  const raised = await tenantry.rateLimit(t.id);
  assert.equal(raised.allowed, true);
  assert.equal(raised.remaining, 999);

  // and follows a tier change at once
  await tenantry.tenants.update(free.id, { tier: 'professional' });
  assert.equal((await tenantry.rateLimit(free.id)).limit, 10_000, 'the new tier\'s api_calls_per_minute');

  await tenantry.tenants.suspend(free.id, 'abuse');
  await rejectsWith(tenantry.rateLimit(free.id), 'TENANT_SUSPENDED');
});

test('the failed-authentication throttle: limit failures in a burst, Retry-After to the next slot, one report per burst, bounded memory', async () => {
  const { AuthThrottle } = await import('../src/ratelimit/auth-throttle.js');
  let now = 1_000_000;
  const reports: { scope: string; retryAfterSeconds: number }[] = [];
  const refused: string[] = [];
  const failures: string[] = [];
  const th = new AuthThrottle({ perAddress: 6, perKey: 3 }, {
    onThrottled: (e) => reports.push({ scope: e.scope, retryAfterSeconds: e.retryAfterSeconds }),
    onRefused: (e) => refused.push(e.scope),
    onFailure: (e) => failures.push(e.reason),
  }, () => now, 50);
  // an address: 6 failures answer their own 401, the 7th failure is answered RATE_LIMITED, retry after one slot (10 s)
  for (let i = 0; i < 6; i++) assert.equal(th.failed('10.0.0.1', undefined, 'UNAUTHORIZED'), undefined);
  await rejectsWith(Promise.reject(th.failed('10.0.0.1', undefined, 'UNAUTHORIZED')), 'RATE_LIMITED', (err) => assert.equal(err.details?.retryAfterSeconds, 10));
  assert.deepEqual(reports, [{ scope: 'address', retryAfterSeconds: 10 }]);
  assert.equal(th.failed('10.0.0.2', undefined, 'UNAUTHORIZED'), undefined, 'another address is free');
  // one slot later one more failure is answered as itself; failing again does not report again (the same burst)
  now += 10_000;
  assert.equal(th.failed('10.0.0.1', undefined, 'UNAUTHORIZED'), undefined);
  assert.match(th.failed('10.0.0.1', undefined, 'UNAUTHORIZED')?.message ?? '', /retry after 10 s/);
  assert.equal(reports.length, 1, 'one report per burst');
  // fully drained: a new burst, reported again when it overflows
  now += 60_000;
  for (let i = 0; i < 6; i++) th.failed('10.0.0.1', undefined, 'UNAUTHORIZED');
  assert.equal(reports.length, 2);

  // a key id, from many addresses: after 3 failures a wrong secret answers RATE_LIMITED instead of 401
  const answers = Array.from({ length: 5 }, (_, i) => th.failed(`10.1.0.${i}`, 'KEYID0000001', 'INVALID_API_KEY')?.code ?? 'INVALID_API_KEY');
  assert.deepEqual(answers, ['INVALID_API_KEY', 'INVALID_API_KEY', 'INVALID_API_KEY', 'RATE_LIMITED', 'RATE_LIMITED']);
  assert.equal(reports.filter((r) => r.scope === 'key').length, 1);
  assert.ok(refused.includes('address') && refused.includes('key'));
  assert.equal(failures.length, 6 + 1 + 1 + 6 + 5);

  // bounded: a flood from many addresses keeps at most maxEntries entries
  for (let i = 0; i < 500; i++) th.failed(`10.2.${i >> 8}.${i & 255}`, undefined, 'UNAUTHORIZED');
  assert.ok((th as unknown as { entries: Map<string, unknown> }).entries.size <= 50);
  assert.throws(() => new AuthThrottle({ perAddress: 0, perKey: 1 }), /integer from 1/);
});


test('Redis down: a limiter decision fails with RATE_LIMITER_UNAVAILABLE (503, Retry-After), not a bare error that becomes a 500', async () => {
  // port 1 on loopback: nothing listens, so every connection attempt is refused
  const dead = new Redis('redis://127.0.0.1:1', { maxRetriesPerRequest: 0, enableOfflineQueue: true, retryStrategy: () => 50, lazyConnect: false });
  dead.on('error', () => undefined);
  const limiter = new RateLimiter(new RedisRateLimitStore(dead, 'tenantry-test-dead:'));
  try {
    const err = await rejectsWith(limiter.consume('tenant:x', { limit: 10, periodMs: 60_000, burst: 10 }), 'RATE_LIMITER_UNAVAILABLE');
    assert.equal(err.status, 503);
    assert.equal(err.details?.retryAfterSeconds, 2);
  } finally {
    dead.disconnect();
  }
});
