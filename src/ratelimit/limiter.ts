import { TenantryError } from '../errors.js';

export interface RateLimit {
  /** requests allowed per period, sustained */
  limit: number;
  /** the period, in milliseconds (60_000 for a per-minute limit) */
  periodMs: number;
  /** requests allowed at once after a quiet spell; default `limit` */
  burst?: number;
}

export interface RateDecision {
  allowed: boolean;
  /** requests that would still be allowed right now */
  remaining: number;
  /** when denied: milliseconds until this request would be allowed (0 when allowed) */
  retryAfterMs: number;
  /** milliseconds until the limiter is back to a full burst */
  resetAfterMs: number;
  limit: number;
}

/**
 * One seam, two stores (PostgreSQL and Redis), both GCRA: the state per key is one number, the
 * theoretical arrival time, and each decision is one atomic step (one SQL statement, one Lua script).
 */
export interface RateLimitStore {
  readonly name: string;
  /** One decision: emission interval, burst tolerance and cost in microseconds. */
  decide(key: string, intervalUs: number, burstUs: number, costUs: number): Promise<{ allowed: boolean; tatUs: number; nowUs: number }>;
  reset(key: string): Promise<void>;
  close(): Promise<void>;
}

export class RateLimiter {
  constructor(readonly store: RateLimitStore) {}

  async consume(key: string, rule: RateLimit, cost = 1): Promise<RateDecision> {
    if (typeof key !== 'string' || key.length === 0 || key.length > 200) throw new TenantryError('INVALID_INPUT', 'A rate-limit key is 1-200 characters.');
    const limit = rule.limit;
    const burst = rule.burst ?? limit;
    if (!Number.isInteger(limit) || limit < 1) throw new TenantryError('INVALID_INPUT', `Rate limit must be a positive integer, got ${String(limit)}.`);
    if (!Number.isInteger(rule.periodMs) || rule.periodMs < 1) throw new TenantryError('INVALID_INPUT', 'periodMs must be a positive integer.');
    if (!Number.isInteger(burst) || burst < 1) throw new TenantryError('INVALID_INPUT', 'burst must be a positive integer.');
    if (!Number.isInteger(cost) || cost < 1 || cost > burst) throw new TenantryError('INVALID_INPUT', `cost must be an integer from 1 to the burst (${burst}).`);
    const interval = Math.max(1, Math.round((rule.periodMs * 1000) / limit));
    const burstUs = burst * interval;
    const { allowed, tatUs, nowUs } = await this.store.decide(key, interval, burstUs, cost * interval);
    const allowAt = tatUs + (allowed ? 0 : cost * interval) - burstUs;
    return {
      allowed,
      remaining: allowed ? Math.max(0, Math.floor((nowUs - (tatUs - burstUs)) / interval)) : 0,
      retryAfterMs: allowed ? 0 : Math.max(1, Math.ceil((allowAt - nowUs) / 1000)),
      resetAfterMs: Math.max(0, Math.ceil((tatUs - nowUs) / 1000)),
      limit,
    };
  }

  reset(key: string): Promise<void> {
    return this.store.reset(key);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
