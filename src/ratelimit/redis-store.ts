import type { Redis } from 'ioredis';
import type { RateLimitStore } from './limiter.js';
import { TenantryError } from '../errors.js';

// GCRA as one Lua script: atomic on the Redis server, clocked by the server's TIME so that several
// application servers agree. Returns {allowed, tat, now} in microseconds.
const GCRA = `
local burst = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + cost
if new - burst <= now then
  redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)
  return {1, string.format('%d', new), string.format('%d', now)}
end
return {0, string.format('%d', tat), string.format('%d', now)}
`;

export class RedisRateLimitStore implements RateLimitStore {
  readonly name = 'redis';

  constructor(private readonly redis: Redis, private readonly prefix = 'tenantry:rl:') {
    redis.defineCommand('tenantryGcra', { numberOfKeys: 1, lua: GCRA });
  }

  async decide(key: string, _intervalUs: number, burstUs: number, costUs: number): Promise<{ allowed: boolean; tatUs: number; nowUs: number }> {
    let reply: [number, string, string];
    try {
      reply = await (this.redis as unknown as { tenantryGcra: (k: string, b: string, c: string) => Promise<[number, string, string]> })
        .tenantryGcra(this.prefix + key, String(burstUs), String(costUs));
    } catch (err) {
      // Redis down or unreachable is the server's fault, not the caller's: a retryable 503 with a code,
      // never a bare 500 (ioredis gives up after maxRetriesPerRequest and rejects)
      throw new TenantryError('RATE_LIMITER_UNAVAILABLE', `The rate limiter's Redis is unreachable right now (${(err as Error).message}); retry in a few seconds.`, { retryAfterSeconds: 2 }, { cause: err });
    }
    const [allowed, tat, now] = reply;
    return { allowed: allowed === 1, tatUs: Number(tat), nowUs: Number(now) };
  }

  async reset(key: string): Promise<void> {
    await this.redis.del(this.prefix + key);
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => undefined);
  }
}
