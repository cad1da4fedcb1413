/**
 * Governance: quota debits per second beside a bare `UPDATE ... SET used = used + 1` on the same
 * table; rate-limit decisions per second for the PostgreSQL and Redis stores beside a bare Redis INCR.
 * Each pair runs in this process with the same concurrency.
 */
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { RateLimiter } from '../src/ratelimit/limiter.js';
import { PostgresRateLimitStore } from '../src/ratelimit/postgres-store.js';
import { RedisRateLimitStore } from '../src/ratelimit/redis-store.js';
import { intFromEnv, progress, type BenchContext } from './lib.js';

const OPS = intFromEnv('BENCH_GOV_OPS', 4000, 100);
const CONCURRENCY = 8;

async function opsPerSecond(total: number, op: (worker: number, i: number) => Promise<unknown>): Promise<number> {
  const per = Math.ceil(total / CONCURRENCY);
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, w) => { for (let i = 0; i < per; i++) await op(w, i); }));
  return (per * CONCURRENCY) / ((performance.now() - start) / 1000);
}

/** Runs each side `rounds` times alternately and keeps the median rate of each. */
async function pair(rounds: number, a: () => Promise<number>, b: () => Promise<number>): Promise<[number, number]> {
  const as: number[] = [];
  const bs: number[] = [];
  for (let r = 0; r < rounds; r++) { as.push(await a()); bs.push(await b()); }
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  return [med(as), med(bs)];
}

export async function benchGovernance({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  // one tenant per worker, with room for every debit
  const tenants: { id: string }[] = [];
  for (let w = 0; w < CONCURRENCY; w++) {
    const t = await tenantry.tenants.create({ slug: `gov-${w}`, tier: 'enterprise' });
    await tenantry.quotas.setOverrides(t.id, { llm_tokens_per_day: 1_000_000_000_000 });
    await tenantry.quotas.increment(t.id, 'llm_tokens', 1);
    tenants.push(t);
  }
  const su = new URL(process.env.DATABASE_URL!);
  const plain = postgres(inst.urlFor(`${inst.namespace}_catalog`, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 10 });
  const rows: string[] = [];
  try {
    const [debit, bare] = await pair(3,
      () => opsPerSecond(OPS, (w) => tenantry.quotas.increment(tenants[w]!.id, 'llm_tokens', 1)),
      () => opsPerSecond(OPS, (w) => plain`update tenantry_catalog.usage_counters set used = used + 1 where tenant_id = ${tenants[w]!.id} and metric = 'llm_tokens'`));
    rows.push(`| quota debit (\`increment\`, PostgreSQL) | ${debit.toFixed(0)} /s | bare \`UPDATE ... SET used = used + 1\`: ${bare.toFixed(0)} /s | ${(bare / debit).toFixed(2)}x slower |`);
    progress('governance: debits done');

    const pgLimiter = new RateLimiter(new PostgresRateLimitStore(inst.tenantry.catalog));
    const rule = { limit: 1_000_000_000, periodMs: 60_000 };
    let redis: Redis | undefined;
    try {
      redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { lazyConnect: true, maxRetriesPerRequest: 1 });
      await redis.connect();
    } catch {
      redis = undefined;
    }
    if (redis) {
      const redisLimiter = new RateLimiter(new RedisRateLimitStore(new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'), `tenantry-bench:${inst.namespace}:`));
      const [pgRate, incr] = await pair(3,
        () => opsPerSecond(OPS, (w) => pgLimiter.consume(`bench:${w}`, rule)),
        () => opsPerSecond(OPS, (w) => redis!.incr(`tenantry-bench:${inst.namespace}:incr:${w}`)));
      const [redisRate, incr2] = await pair(3,
        () => opsPerSecond(OPS, (w) => redisLimiter.consume(`bench:${w}`, rule)),
        () => opsPerSecond(OPS, (w) => redis!.incr(`tenantry-bench:${inst.namespace}:incr:${w}`)));
      rows.push(`| limiter decision, PostgreSQL store | ${pgRate.toFixed(0)} /s | bare Redis \`INCR\`: ${incr.toFixed(0)} /s | ${(incr / pgRate).toFixed(2)}x slower |`);
      rows.push(`| limiter decision, Redis store (Lua) | ${redisRate.toFixed(0)} /s | bare Redis \`INCR\`: ${incr2.toFixed(0)} /s | ${(incr2 / redisRate).toFixed(2)}x slower |`);
      const keys = await redis.keys(`tenantry-bench:${inst.namespace}:*`);
      if (keys.length) await redis.del(...keys);
      await redisLimiter.close();
      await redis.quit();
    } else {
      const pgRate = await opsPerSecond(OPS, (w) => pgLimiter.consume(`bench:${w}`, rule));
      rows.push(`| limiter decision, PostgreSQL store | ${pgRate.toFixed(0)} /s | (no Redis reachable: no INCR baseline, no Redis store row) | - |`);
    }
    progress('governance: limiter done');
  } finally {
    await plain.end({ timeout: 5 });
  }
  return [
    '### Governance: metering and rate limiting',
    '',
    `PostgreSQL ${version}; ${OPS} operations per side per round, ${CONCURRENCY} concurrent callers (one tenant or key each), median of 3 alternating rounds.`,
    '',
    '| operation | tenantry | baseline | ratio |',
    '| --- | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
