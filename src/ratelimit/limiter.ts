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

/** At most this many requests are leased at once (see RateLimiter). */
export const MAX_LEASE = 100;
/** A lease is at most this share of the burst: 1/50, so 2% of a limit per process. */
export const LEASE_SHARE = 50;
/** Leased requests not used within this long are dropped (never carried into a later period). */
export const LEASE_TTL_MS = 1000;

/** Requests one process takes from the shared store at once for a burst: 1 (no lease) below 100. */
export function leaseSize(burst: number): number {
  return Math.max(1, Math.min(MAX_LEASE, Math.floor(burst / LEASE_SHARE)));
}

interface Lease {
  intervalUs: number;
  burstUs: number;
  /** leased, not yet used (µs of emission time) */
  leftUs: number;
  /** the store's TAT once the whole lease was taken, and the store's clock then */
  tatUs: number;
  nowUs: number;
  /** Date.now() when the store answered */
  at: number;
}

/**
 * GCRA decisions against a shared store (PostgreSQL or Redis), with leases for high limits. Under a
 * limit of 100 per period every decision is one store call, exact across processes. From 100 on, a
 * process takes `leaseSize(burst)` requests (2% of the burst, at most 100) from the store in one
 * decision and hands them out from memory for up to a second, so a busy tenant costs one store round
 * trip per lease rather than per request. The store counts a lease in full when it is taken, so all
 * processes together never get more than the store grants: across N processes, a limit holds to
 * within N leases (a request served from a lease up to a second after the store counted it), and a
 * process's unused lease is lost after a second (other processes may be refused up to that many
 * requests early). Near the limit, when a whole lease no longer fits, decisions go to the store one by
 * one again, exact.
 */
export class RateLimiter {
  private readonly leases = new Map<string, Lease>();
  /** a lease taken, or being taken, per key: concurrent requests wait for it instead of each asking */
  private readonly taking = new Map<string, Promise<boolean>>();
  /** keys where a whole lease did not fit, until when (Date.now()): decided one by one meanwhile */
  private readonly short = new Map<string, number>();

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
    const lease = leaseSize(burst);
    if (lease > cost) {
      for (;;) {
        const l = this.leases.get(key);
        const now = Date.now();
        if (l && l.intervalUs === interval && l.burstUs === burstUs && now - l.at < LEASE_TTL_MS && l.leftUs >= cost * interval) {
          l.leftUs -= cost * interval;
          return decision(true, l.tatUs - l.leftUs, l.nowUs + (now - l.at) * 1000, cost, interval, burstUs, limit);
        }
        if ((this.short.get(key) ?? 0) > now) break;
        const pending = this.taking.get(key);
        if (pending) {
          if (await pending) continue;
          break;
        }
        const taken = this.takeLease(key, interval, burstUs, lease);
        this.taking.set(key, taken);
        try {
          if (!(await taken)) break;
        } finally {
          this.taking.delete(key);
        }
      }
    }
    const { allowed, tatUs, nowUs } = await this.store.decide(key, interval, burstUs, cost * interval);
    return decision(allowed, tatUs, nowUs, cost, interval, burstUs, limit);
  }

  /** Takes `lease` requests from the store at once; false (and one-by-one decisions for a while) when they do not fit. */
  private async takeLease(key: string, interval: number, burstUs: number, lease: number): Promise<boolean> {
    this.leases.delete(key);
    // bounded memory whatever the keys: past 10,000, forget every lease and mark that has run out
    if (this.leases.size + this.short.size > 10_000) {
      const now = Date.now();
      for (const [k, l] of this.leases) if (now - l.at >= LEASE_TTL_MS) this.leases.delete(k);
      for (const [k, until] of this.short) if (until <= now) this.short.delete(k);
    }
    const r = await this.store.decide(key, interval, burstUs, lease * interval);
    if (!r.allowed) {
      // until a whole lease has refilled
      this.short.set(key, Date.now() + Math.ceil((lease * interval) / 1000));
      return false;
    }
    this.short.delete(key);
    this.leases.set(key, { intervalUs: interval, burstUs, leftUs: lease * interval, tatUs: r.tatUs, nowUs: r.nowUs, at: Date.now() });
    return true;
  }

  reset(key: string): Promise<void> {
    this.leases.delete(key);
    this.short.delete(key);
    return this.store.reset(key);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

function decision(allowed: boolean, tatUs: number, nowUs: number, cost: number, interval: number, burstUs: number, limit: number): RateDecision {
  const allowAt = tatUs + (allowed ? 0 : cost * interval) - burstUs;
  return {
    allowed,
    remaining: allowed ? Math.max(0, Math.floor((nowUs - (tatUs - burstUs)) / interval)) : 0,
    retryAfterMs: allowed ? 0 : Math.max(1, Math.ceil((allowAt - nowUs) / 1000)),
    resetAfterMs: Math.max(0, Math.ceil((tatUs - nowUs) / 1000)),
    limit,
  };
}
