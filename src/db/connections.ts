import postgres, { type Sql, type Options } from 'postgres';
import { TenantryError } from '../errors.js';
import type { Logger } from '../logger.js';

export type PgOptions = Options<Record<string, postgres.PostgresType>> & {
  /** our postgres.js patch (patches/postgres+3.4.9.patch): refuse a query whose rows exceed this many bytes, before buffering them */
  max_result_bytes?: number;
};

/**
 * Startup parameters for connections whose session user runs SQL Tenantry does not control (the
 * runtime role, tenant roles). Any role may ALTER ROLE itself SET defaults; parameters sent at startup
 * take precedence over those, so a default planted by injected SQL cannot slow, break or change the
 * meaning of every later session.
 */
export const PINNED_SESSION: Record<string, string | number | boolean> & { default_transaction_isolation: 'read committed' } = {
  statement_timeout: 0,
  lock_timeout: 0,
  idle_in_transaction_session_timeout: 0,
  default_transaction_read_only: false,
  default_transaction_isolation: 'read committed',
  row_security: 'on',
  transform_null_equals: 'off',
  standard_conforming_strings: 'on',
  bytea_output: 'hex',
  search_path: 'pg_catalog',
  client_min_messages: 'notice',
};

/**
 * PINNED_SESSION for connections behind a transaction pooler, which refuses startup parameters (and
 * with ignore_startup_parameters drops them) and hands each transaction whichever server connection is
 * free, role defaults included. The transaction characteristics go on BEGIN; the rest are set
 * transaction-local by the first statement, so a default planted by injected SQL is overridden in every
 * transaction instead of once per session. (search_path is set there by each caller.)
 */
export function pinnedBegin(readOnly = false): string {
  return `begin isolation level ${PINNED_SESSION.default_transaction_isolation} ${readOnly ? 'read only' : 'read write'}`;
}

/** `set_config(..., true)` for every pinned setting but the transaction characteristics and search_path, as select-list items. */
export const PINNED_LOCAL = Object.entries(PINNED_SESSION)
  .filter(([name]) => !name.startsWith('default_transaction_') && name !== 'search_path')
  .map(([name, value]) => `set_config('${name}', '${typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value)}', true)`)
  .join(', ');

/** Connection settings shared by every pool: the server of DATABASE_URL, another user or database. */
export function connect(url: string, overrides: PgOptions = {}): Sql {
  return postgres(url, {
    onnotice: () => {},
    max: 10,
    idle_timeout: 30,
    connect_timeout: 30,
    // postgres.js waits 3^n/100 s (up to 20 s) before reconnecting after its n-th failed connection in a
    // row, so after a restart of PostgreSQL a pool could stay away for 20 s; at most 1 s here
    backoff: reconnectBackoff,
    ...overrides,
  });
}

/**
 * Lifetime, in seconds, of the privileged pools on data databases (Tenantry.adminTo: schema creates,
 * tenant migrations). While 10,000 schema tenants were being created, the shared database's four admin
 * backends each burned a fifth of a core on small statements and the creates slowed from 55 s to 260 s
 * per 500 (the machine's load rose too). The likely cause: a backend that runs DDL for tenant after
 * tenant keeps catalog cache entries for each (negative ones too: unqualified names are looked up in
 * each tenant's schema first), never freed while it lives, and its invalidation work grows with them.
 * Not yet measured at 10,000 with this bound. postgres.js closes a connection past its lifetime only
 * between transactions, and the next statement opens a fresh one (a few milliseconds a minute). (The
 * runtime pools are recycled by PoolBudget, by transaction count.)
 */
export const DATA_ADMIN_MAX_LIFETIME_SECONDS = 60;

/** Seconds before the n-th reconnect in a row: 0.1, 0.2, 0.4, ... capped at 1, with jitter. */
export function reconnectBackoff(attempt: number): number {
  return Math.min(0.05 * 2 ** attempt, 1) * (0.5 + Math.random() / 2);
}

interface PoolEntry {
  key: string;
  sql: Sql;
  /** the most connections the pool may grow to */
  size: number;
  /** connections of the budget granted to this pool: it starts with one and grows by one on demand */
  granted: number;
  leases: number;
  lastUsed: number;
  closing: boolean;
  /** transactions run on the pool since it was made */
  uses: number;
  /** out of the LRU, taking no new leases: closed when its last lease ends */
  retiring?: boolean;
}

/**
 * Transactions per connection of a pool before the pool is replaced. A backend keeps the relation
 * cache entry of every table it has touched for as long as it lives (about 15 kB per table with its
 * policies: 30 MB after two tables of 1,000 tenant schemas, measured), so a connection of the shared
 * database serving reads of random tenants among 10,000 schemas would grow towards 750 MB. Replacing
 * the pool after this many transactions per connection bounds that to the schemas of 5,000
 * transactions (at most about 375 MB with five tables a schema, far less when tenants repeat), for the
 * price of one new connection per 5,000 transactions.
 */
export const RECYCLE_AFTER_PER_CONNECTION = 5000;

/**
 * Runtime pools per database (the shared database, each tenant database) held in an LRU under one
 * connection budget: the connections granted to the pools never exceed `budget`, so 1,000 database
 * tenants never need 1,000 open connections. A pool starts with one connection and is granted one more
 * (up to its size) only when a caller finds all of its connections leased, so a quiet tenant database
 * holds one connection, not five, and forty of them fit the default budget instead of eight. Every
 * lease uses one connection at a time, so the driver never opens more than a pool was granted. Idle
 * pools are closed; when the budget is full the least recently used pool without a lease is closed to
 * make room, and callers wait (up to `waitMs`, then CONNECTION_BUDGET_EXHAUSTED) when every pool is
 * busy. A closed pool's connections count against the budget until they are gone, so the server never
 * sees more than `budget` of them, even for the moment between an eviction and the next open.
 */
export class PoolBudget {
  private readonly pools = new Map<string, PoolEntry>();
  private readonly waiters: (() => void)[] = [];
  private used = 0;
  /** connections of closed pools not yet gone: they count against the budget until they are */
  private closing = 0;
  /** callers waiting for one of the `closing` connections to go (each claims one) */
  private claims = 0;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;
  /** pools replaced after their share of transactions, draining their last leases */
  private readonly retiring = new Set<PoolEntry>();
  evictions = 0;
  recycled = 0;

  constructor(
    private readonly budget: number,
    private readonly idleMs: number,
    private readonly logger: Logger,
    private readonly waitMs = 30_000,
    private readonly recycleAfterPerConnection = RECYCLE_AFTER_PER_CONNECTION,
  ) {
    this.sweeper = setInterval(() => void this.sweepIdle(), Math.max(1000, Math.min(idleMs, 10_000)));
    this.sweeper.unref();
  }

  stats(): { pools: number; budget: number; reserved: number; closing: number; leased: number; waiting: number; evictions: number; recycled: number } {
    let leased = 0;
    for (const p of [...this.pools.values(), ...this.retiring]) leased += p.leases;
    return { pools: this.pools.size, budget: this.budget, reserved: this.used, closing: this.closing, leased, waiting: this.waiters.length, evictions: this.evictions, recycled: this.recycled };
  }

  /** Runs `fn` with the pool for `key`, creating it (within the budget) if needed. */
  async use<T>(key: string, size: number, create: () => Sql, fn: (sql: Sql) => Promise<T>): Promise<T> {
    const entry = await this.acquire(key, Math.min(size, this.budget), create);
    try {
      return await fn(entry.sql);
    } finally {
      entry.leases--;
      entry.lastUsed = Date.now();
      if (++entry.uses >= entry.size * this.recycleAfterPerConnection && !entry.retiring && !entry.closing) this.retire(entry);
      if (entry.retiring && entry.leases === 0) void this.close(entry);
      this.wake();
    }
  }

  /**
   * Takes a pool out of the LRU so that the next caller of its key makes a fresh one; its connections
   * stay counted in the budget until its last lease ends and it is closed (RECYCLE_AFTER_PER_CONNECTION).
   */
  private retire(entry: PoolEntry): void {
    entry.retiring = true;
    if (this.pools.get(entry.key) === entry) this.pools.delete(entry.key);
    this.retiring.add(entry);
    this.recycled++;
  }

  private async acquire(key: string, size: number, create: () => Sql): Promise<PoolEntry> {
    const deadline = Date.now() + this.waitMs;
    for (;;) {
      if (this.closed) throw new TenantryError('CLOSED', 'This Tenantry instance has been closed.');
      let claimed = false;
      const existing = this.pools.get(key);
      if (existing) {
        // every granted connection is leased: grow by one if the budget allows
        if (existing.leases >= existing.granted && existing.granted < existing.size) {
          const room = this.makeRoom();
          if (room === true) {
            existing.granted++;
            this.used++;
          } else {
            claimed = room === 'claimed';
          }
        }
        if (existing.leases < existing.granted) {
          if (claimed) this.claims--;
          existing.leases++;
          existing.lastUsed = Date.now();
          // move to the most-recently-used end
          this.pools.delete(key);
          this.pools.set(key, existing);
          return existing;
        }
      } else {
        const room = this.makeRoom();
        if (room === true) {
          const entry: PoolEntry = { key, sql: create(), size, granted: 1, leases: 1, lastUsed: Date.now(), closing: false, uses: 0 };
          this.pools.set(key, entry);
          this.used += 1;
          return entry;
        }
        claimed = room === 'claimed';
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        if (claimed) this.claims--;
        throw new TenantryError('CONNECTION_BUDGET_EXHAUSTED', `All ${this.budget} tenant connections (TENANTRY_MAX_CONNECTIONS) stayed busy for ${this.waitMs} ms (TENANTRY_POOL_WAIT_MS). Raise TENANTRY_MAX_CONNECTIONS, shorten tenant transactions, or retry later.`);
      }
      // woken when a lease ends or a closed pool's connections are gone; the timer bounds the wait
      // even if no wake-up comes, and the deadline above bounds it overall
      await new Promise<void>((resolve) => {
        const waiter = (): void => { clearTimeout(timer); resolve(); };
        const timer = setTimeout(() => {
          // a waiter whose timer fired leaves the queue, or the queue would grow with every timed-out wait
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve();
        }, Math.min(left, 250));
        this.waiters.push(waiter);
      });
      if (claimed) this.claims--;
    }
  }

  /**
   * Whether one more connection fits the budget now. When it does not, the least recently used pool
   * without a lease is closed to make room, and the caller claims one of the connections on their way
   * out ('claimed': it waits for them to go, and other callers close other pools instead of counting on
   * the same ones); false when every pool is leased.
   */
  private makeRoom(): true | 'claimed' | false {
    if (this.used + this.closing + 1 <= this.budget) return true;
    if (this.closing - this.claims <= 0 && !this.evictOne()) return false;
    this.claims++;
    return 'claimed';
  }

  private wake(): void {
    const ws = this.waiters.splice(0);
    for (const w of ws) w();
  }

  /** Closes the least recently used pool that has no lease (the Map keeps use order: oldest first). */
  private evictOne(): boolean {
    for (const entry of this.pools.values()) {
      if (entry.leases === 0 && !entry.closing) {
        void this.close(entry);
        this.evictions++;
        return true;
      }
    }
    return false;
  }

  /** Closes a pool; its connections stay counted against the budget until they are gone. */
  private async close(entry: PoolEntry): Promise<void> {
    if (entry.closing) return;
    entry.closing = true;
    if (this.pools.get(entry.key) === entry) this.pools.delete(entry.key);
    this.retiring.delete(entry);
    this.used -= entry.granted;
    this.closing += entry.granted;
    try {
      await entry.sql.end({ timeout: 5 });
    } catch (err) {
      this.logger.warn({ err, pool: entry.key }, 'closing a tenant pool failed');
    } finally {
      this.closing -= entry.granted;
      this.wake();
    }
  }

  /** Closes the pool for `key` now (a tenant database about to be dropped), waiting for its connections to go. */
  async drop(key: string): Promise<void> {
    const entries = [...this.retiring].filter((e) => e.key === key);
    const entry = this.pools.get(key);
    if (entry) entries.push(entry);
    await Promise.all(entries.map((e) => this.close(e)));
  }

  private async sweepIdle(): Promise<void> {
    const now = Date.now();
    for (const entry of [...this.pools.values()]) {
      if (entry.leases === 0 && now - entry.lastUsed > this.idleMs) void this.close(entry);
    }
  }

  async end(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const all = [...this.pools.values(), ...this.retiring];
    this.pools.clear();
    this.retiring.clear();
    this.used = 0;
    this.wake();
    await Promise.all(all.map((e) => e.sql.end({ timeout: 5 }).catch(() => undefined)));
  }
}
