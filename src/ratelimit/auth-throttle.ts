import { TenantryError } from '../errors.js';

/** What the throttle reports, so that the library can audit and count (it does no I/O itself). */
export interface AuthThrottleHooks {
  /** every failed authentication, by reason (the error code it got) */
  onFailure?: (e: { reason: string }) => void;
  /** a client address or a key id went over its limit: once per burst, not once per refused request */
  onThrottled?: (e: { scope: 'address' | 'key'; address: string; keyId: string | null; retryAfterSeconds: number }) => void;
  /** a request refused because its address or key id is throttled */
  onRefused?: (e: { scope: 'address' | 'key' }) => void;
}

export interface AuthThrottleRules {
  /** failed authentications allowed per minute from one client address (also the burst) */
  perAddress: number;
  /** failed authentications allowed per minute for one key id, from anywhere (also the burst) */
  perKey: number;
}

interface Entry {
  /** GCRA's theoretical arrival time, ms */
  tat: number;
  /** this burst was reported already */
  reported: boolean;
}

/**
 * Throttles failed authentications (wrong operator tokens, unknown or wrong API keys) per client
 * address and per key id, so that guessing costs the guesser time: 300 wrong tokens in a row were all
 * answered 401 at full speed before (issue 8, finding 7). GCRA in memory: a failure costs one
 * interval (a minute / the limit), and `limit` failures in a row use up the burst.
 *
 * - An address over its limit is refused with RATE_LIMITED before any credential check, so a
 *   throttled guesser learns nothing, not even from a right guess.
 * - A key id over its limit (guessed from many addresses) answers a wrong secret with RATE_LIMITED
 *   instead of 401, but a right secret still passes: key ids are not secret (they show in key lists
 *   and audit entries), and refusing the right secret too would let anyone lock a tenant out of its
 *   own key with a few wrong guesses a minute; the secret itself has 190 random bits.
 *
 * In memory and per process on purpose: counting failures in the catalog would turn every forged key
 * into a catalog write, the very load this exists to refuse; with N processes a guesser gets at most
 * N times the limit. Success never resets a count: one valid key must not buy an address a fresh
 * allowance for guessing others.
 */
export class AuthThrottle {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly rules: AuthThrottleRules,
    private readonly hooks: AuthThrottleHooks = {},
    private readonly now: () => number = () => Date.now(),
    /** bound on remembered addresses and key ids; idle entries go first, then the oldest */
    private readonly maxEntries = 100_000,
  ) {
    for (const [name, v] of Object.entries(rules)) {
      if (!Number.isInteger(v) || v < 1 || v > 1_000_000) throw new TenantryError('INVALID_CONFIG', `The ${name} limit of failed authentications must be an integer from 1 to 1000000, got ${String(v)}.`);
    }
  }

  /**
   * Counts one failed authentication against the address and the key id (when the token named one).
   * Returns the error to answer instead of the failure's own: RATE_LIMITED when the address or the
   * key id was over its limit already. Only failures are refused: a right credential always passes.
   */
  failed(address: string, keyId: string | undefined, reason: string): TenantryError | undefined {
    // a refusal of a throttled address is not counted again (its burst already was), as before any check
    const addressWait = this.waitMs(`a:${address}`, this.rules.perAddress);
    if (addressWait > 0) return this.refusal('address', addressWait);
    this.hooks.onFailure?.({ reason });
    const keyWait = keyId ? this.waitMs(`k:${keyId}`, this.rules.perKey) : 0;
    this.count(address, keyId);
    return keyWait > 0 ? this.refusal('key', keyWait) : undefined;
  }

  private refusal(scope: 'address' | 'key', waitMs: number): TenantryError {
    this.hooks.onRefused?.({ scope });
    const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
    return new TenantryError('RATE_LIMITED', `Too many failed authentications ${scope === 'address' ? 'from this client address' : 'for this API key id'}; retry after ${retryAfterSeconds} s.`, { retryAfterSeconds });
  }

  private count(address: string, keyId: string | undefined): void {
    const now = this.now();
    for (const [scope, key, limit] of this.keys(address, keyId)) {
      const interval = 60_000 / limit;
      let e = this.entries.get(key);
      if (!e || e.tat <= now) {
        // a fresh burst: drained (or never seen)
        if (e) this.entries.delete(key);
        e = { tat: now, reported: false };
        this.remember(key, e, now);
      }
      e.tat = Math.max(e.tat, now) + interval;
      const wait = this.waitMs(key, limit);
      if (wait > 0 && !e.reported) {
        e.reported = true;
        this.hooks.onThrottled?.({ scope, address, keyId: keyId ?? null, retryAfterSeconds: Math.max(1, Math.ceil(wait / 1000)) });
      }
    }
  }

  /** Forgets every count (tests, or an operator clearing a lock-out). */
  clear(): void {
    this.entries.clear();
  }

  private keys(address: string, keyId: string | undefined): ['address' | 'key', string, number][] {
    const out: ['address' | 'key', string, number][] = [['address', `a:${address}`, this.rules.perAddress]];
    if (keyId) out.push(['key', `k:${keyId}`, this.rules.perKey]);
    return out;
  }

  /** Milliseconds until one more failure would fit in the burst (0: it fits now). */
  private waitMs(key: string, limit: number): number {
    const e = this.entries.get(key);
    if (!e) return 0;
    const interval = 60_000 / limit;
    return Math.max(0, Math.ceil(e.tat - this.now() - (limit - 1) * interval));
  }

  private remember(key: string, e: Entry, now: number): void {
    if (this.entries.size >= this.maxEntries) {
      for (const [k, x] of this.entries) if (x.tat <= now) this.entries.delete(k);
      // still full of live entries (a flood from very many addresses): the oldest go
      for (const k of this.entries.keys()) {
        if (this.entries.size < this.maxEntries) break;
        this.entries.delete(k);
      }
    }
    this.entries.set(key, e);
  }
}
