import { createHmac } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import type { TenantService } from '../tenants/tenants.js';
import { textProblem } from '../input/safe-text.js';

/** The longest key (before encoding) a tenant cache call takes. */
export const MAX_CACHE_KEY_LENGTH = 1024;
/** The largest value one set takes (Redis's own limit is 512 MB). */
export const MAX_CACHE_VALUE_BYTES = 16 * 1024 * 1024;
const MAX_TTL_SECONDS = 10 * 365 * 86_400;

/**
 * Every Redis key of a tenant is `t:{<tenant id>}:<encoded key>`. The id is a UUID (hex and hyphens),
 * so the prefix holds no glob character and SCAN MATCH `t:{<id>}:*` matches that tenant's keys only;
 * the braces make it a Redis Cluster hash tag, so one tenant's keys share a slot.
 */
export function tenantKeyPrefix(tenantId: string): string {
  return `t:{${tenantId}}:`;
}

/**
 * The caller's key, encoded: letters, digits and `. _ ~ - / :` stay as they are, every other UTF-8
 * byte becomes %XX. No input can put a glob character (`* ? [ ] \`), a brace or a byte Redis
 * treats specially into the stored key, and two different inputs never encode alike.
 */
export function encodeCacheKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_CACHE_KEY_LENGTH) {
    throw new TenantryError('INVALID_INPUT', `A cache key is a string of 1 to ${MAX_CACHE_KEY_LENGTH} characters.`, { field: 'key' });
  }
  const problem = textProblem(key);
  // NUL would be encoded harmlessly, but every text entering Tenantry passes the one same check
  if (problem) throw new TenantryError('INVALID_INPUT', `The cache key ${problem}.`, { field: 'key' });
  let out = '';
  for (const b of Buffer.from(key.normalize('NFC'), 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._~\-/:]/.test(c) && b < 0x80 ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export interface CacheSetOptions {
  /** expire after this many seconds (1 to 10 years); default: never */
  ttlSeconds?: number;
}

/** One tenant's view of the cache: every call is confined to `t:{<id>}:`. */
export interface ScopedCache {
  readonly tenant: string;
  get(key: string): Promise<string | null>;
  getBuffer(key: string): Promise<Buffer | null>;
  set(key: string, value: string | Buffer, opts?: CacheSetOptions): Promise<void>;
  /** Deletes keys; how many existed. */
  del(...keys: string[]): Promise<number>;
  /** INCRBY: the new value. */
  incr(key: string, by?: number): Promise<number>;
  /** Sets a key's expiry; false when the key does not exist. */
  expire(key: string, seconds: number): Promise<boolean>;
  /** Removes every key of this tenant (SCAN + UNLINK); how many. */
  purge(): Promise<number>;
}

/**
 * The tenant-scoped Redis cache (REDIS_URL). With `cacheAclUsers`, each tenant's calls go over a
 * connection that logs in as the tenant's own Redis ACL user, allowed keys `t:{<id>}:*` only and a
 * handful of commands: even a bug in the app that built another tenant's key name gets NOPERM from
 * Redis itself. The ACL user's password is derived from the installation secret, never stored.
 */
export class TenantCacheService {
  private admin: Redis | undefined;
  private readonly tenantClients = new Map<string, Redis>();
  private readonly ensured = new Set<string>();

  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  get enabled(): boolean {
    return Boolean(this.core.opts.redisUrl);
  }

  /** A tenant's cache. The tenant is resolved on each call, so a suspended or removed tenant's handle stops working. */
  for(idOrSlug: string): ScopedCache {
    if (typeof idOrSlug !== 'string' || idOrSlug.length === 0 || idOrSlug.length > 64) {
      throw new TenantryError('INVALID_INPUT', `A tenant is named by its id (uuid) or slug, got ${JSON.stringify(idOrSlug)}.`);
    }
    const self = this;
    const run = async <T>(fn: (r: Redis, prefix: string) => Promise<T>): Promise<T> => {
      const url = self.requireRedis();
      const t = await self.tenants.resolveForWork(idOrSlug);
      const r = self.core.opts.cacheAclUsers ? await self.tenantClient(url, t.id) : self.adminClient(url);
      try {
        return await fn(r, tenantKeyPrefix(t.id));
      } catch (err) {
        // Redis restarted without its ACL file: the tenant's user is gone; made again on the next call
        if (/WRONGPASS|NOAUTH/.test(String((err as Error)?.message))) self.dropTenantClient(t.id);
        throw unavailable(err);
      }
    };
    return {
      tenant: idOrSlug,
      get: (key) => { const k = encodeCacheKey(key); return run((r, p) => r.get(p + k)); },
      getBuffer: (key) => { const k = encodeCacheKey(key); return run((r, p) => r.getBuffer(p + k)); },
      set: (key, value, opts = {}) => {
        const k = encodeCacheKey(key);
        if (typeof value !== 'string' && !Buffer.isBuffer(value)) throw new TenantryError('INVALID_INPUT', 'A cache value is a string or a Buffer.', { field: 'value' });
        if (Buffer.byteLength(value) > MAX_CACHE_VALUE_BYTES) throw new TenantryError('INVALID_INPUT', `A cache value is at most ${MAX_CACHE_VALUE_BYTES} bytes.`, { field: 'value' });
        const ttl = opts?.ttlSeconds;
        if (ttl !== undefined) checkSeconds(ttl, 'ttlSeconds');
        return run(async (r, p) => { await (ttl === undefined ? r.set(p + k, value) : r.set(p + k, value, 'EX', ttl)); });
      },
      del: (...keys) => {
        if (keys.length === 0 || keys.length > 1000) throw new TenantryError('INVALID_INPUT', 'del() takes 1 to 1000 keys.', { field: 'keys' });
        const ks = keys.map(encodeCacheKey);
        return run((r, p) => r.del(...ks.map((k) => p + k)));
      },
      incr: (key, by = 1) => {
        const k = encodeCacheKey(key);
        if (!Number.isSafeInteger(by)) throw new TenantryError('INVALID_INPUT', 'incr() takes a whole number to add.', { field: 'by' });
        return run((r, p) => r.incrby(p + k, by));
      },
      expire: (key, seconds) => {
        const k = encodeCacheKey(key);
        checkSeconds(seconds, 'seconds');
        return run(async (r, p) => (await r.expire(p + k, seconds)) === 1);
      },
      purge: async () => {
        const t = await self.tenants.get(idOrSlug);
        return self.purgeTenant(t.id);
      },
    };
  }

  /**
   * The Redis login of a tenant's ACL user (cacheAclUsers), created if missing: for a process that
   * should only ever reach one tenant's keys. Its password is derived from the installation secret.
   */
  async aclCredentials(idOrSlug: string): Promise<{ username: string; password: string; keyPattern: string }> {
    const url = this.requireRedis();
    if (!this.core.opts.cacheAclUsers) throw new TenantryError('CACHE_NOT_CONFIGURED', 'Per-tenant Redis users are off: set TENANTRY_CACHE_ACL_USERS=true (cacheAclUsers).');
    const t = await this.tenants.resolveForWork(idOrSlug);
    await this.ensureAclUser(url, t.id);
    return { ...this.aclLogin(t.id), keyPattern: `${tenantKeyPrefix(t.id)}*` };
  }

  /** SCAN + UNLINK of every key `t:{<id>}:*` (over the installation's own login): how many were removed. */
  async purgeTenant(tenantId: string): Promise<number> {
    const r = this.adminClient(this.requireRedis());
    let cursor = '0';
    let removed = 0;
    try {
      do {
        const [next, keys] = await r.scan(cursor, 'MATCH', `${tenantKeyPrefix(tenantId)}*`, 'COUNT', 500);
        cursor = next;
        // SCAN MATCH is a glob: the prefix has none of its special characters, and each key is checked again
        const mine = keys.filter((k) => k.startsWith(tenantKeyPrefix(tenantId)));
        if (mine.length) removed += await r.unlink(...mine);
      } while (cursor !== '0');
    } catch (err) {
      throw unavailable(err);
    }
    return removed;
  }

  private dropTenantClient(tenantId: string): void {
    this.tenantClients.get(tenantId)?.disconnect();
    this.tenantClients.delete(tenantId);
    this.ensured.delete(tenantId);
  }

  /** Removes a tenant's ACL user (hard delete) and closes its connection here. */
  async removeAclUser(tenantId: string): Promise<void> {
    const r = this.adminClient(this.requireRedis());
    const c = this.tenantClients.get(tenantId);
    this.tenantClients.delete(tenantId);
    this.ensured.delete(tenantId);
    c?.disconnect();
    try {
      await r.call('ACL', 'DELUSER', this.aclLogin(tenantId).username);
    } catch (err) {
      throw unavailable(err);
    }
  }

  async close(): Promise<void> {
    for (const c of this.tenantClients.values()) c.disconnect();
    this.tenantClients.clear();
    // disconnect, not QUIT: a QUIT queued while Redis is away would wait for it
    this.admin?.disconnect();
    this.admin = undefined;
  }

  private requireRedis(): string {
    if (!this.core.opts.redisUrl) throw new TenantryError('CACHE_NOT_CONFIGURED', 'The tenant cache needs Redis: set REDIS_URL (redisUrl).');
    return this.core.opts.redisUrl;
  }

  private adminClient(url: string): Redis {
    if (!this.admin) {
      this.admin = new Redis(url, clientOptions());
      // errors surface on the calls (CACHE_UNAVAILABLE); the event would otherwise be unhandled
      this.admin.on('error', (err: Error) => this.core.logger.debug?.({ err: err.message }, 'cache redis connection error'));
    }
    return this.admin;
  }

  private aclLogin(tenantId: string): { username: string; password: string } {
    const password = createHmac('sha256', this.core.signer.purposeKey('redis-acl')).update(tenantId, 'utf8').digest('hex');
    return { username: `t-${tenantId}`, password };
  }

  private async ensureAclUser(url: string, tenantId: string): Promise<void> {
    if (this.ensured.has(tenantId)) return;
    const { username, password } = this.aclLogin(tenantId);
    try {
      // reset first: whatever the user had before, it now has exactly this. No SCAN, KEYS or RANDOMKEY
      // (they would list other tenants' key names), no pub/sub channels, no admin commands.
      await this.adminClient(url).call('ACL', 'SETUSER', username, 'reset', 'on', `>${password}`, `~${tenantKeyPrefix(tenantId)}*`, 'resetchannels',
        '-@all', '+get', '+set', '+del', '+unlink', '+incrby', '+expire', '+ttl', '+pttl', '+exists', '+ping', '+select');
    } catch (err) {
      throw unavailable(err);
    }
    this.ensured.add(tenantId);
  }

  private async tenantClient(url: string, tenantId: string): Promise<Redis> {
    const have = this.tenantClients.get(tenantId);
    if (have) return have;
    await this.ensureAclUser(url, tenantId);
    const { username, password } = this.aclLogin(tenantId);
    // INFO (the ready check) is not among the user's commands
    const c = new Redis(url, { ...clientOptions(), username, password, enableReadyCheck: false });
    c.on('error', (err: Error) => {
      // the user was removed (hard delete elsewhere, a Redis restart): stop reconnecting with it
      if (/WRONGPASS|NOAUTH/.test(err.message) && this.tenantClients.get(tenantId) === c) this.dropTenantClient(tenantId);
      else if (/WRONGPASS|NOAUTH/.test(err.message)) c.disconnect();
    });
    // a bounded set of connections: the oldest tenant's goes first
    if (this.tenantClients.size >= 64) {
      const [oldId, old] = this.tenantClients.entries().next().value as [string, Redis];
      this.tenantClients.delete(oldId);
      old.disconnect();
    }
    this.tenantClients.set(tenantId, c);
    return c;
  }
}

function clientOptions(): { maxRetriesPerRequest: number; connectTimeout: number; commandTimeout: number; lazyConnect: boolean } {
  // every wait bounded: a Redis that is away fails a call in seconds, it never hangs one
  return { maxRetriesPerRequest: 1, connectTimeout: 3000, commandTimeout: 5000, lazyConnect: false };
}

function checkSeconds(v: unknown, field: string): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_TTL_SECONDS) {
    throw new TenantryError('INVALID_INPUT', `${field} must be a whole number of seconds from 1 to ${MAX_TTL_SECONDS}.`, { field });
  }
}

function unavailable(err: unknown): unknown {
  if (err instanceof TenantryError) return err;
  const msg = (err as Error)?.message ?? String(err);
  // NOPERM is Redis refusing a key or command outside the tenant's ACL: a refusal, not an outage
  if (/^NOPERM/.test(msg)) return new TenantryError('FORBIDDEN', `Redis refused the tenant's user: ${msg.slice(0, 200)}`, undefined, { cause: err });
  if (/^(WRONGTYPE|ERR value is not an integer|ERR increment or decrement would overflow)/.test(msg)) {
    return new TenantryError('INVALID_INPUT', `Redis refused the operation on that key: ${msg.slice(0, 200)}`, undefined, { cause: err });
  }
  return new TenantryError('CACHE_UNAVAILABLE', `The cache's Redis is unreachable right now (${msg.slice(0, 200)}); retry in a few seconds.`, { retryAfterSeconds: 2 }, { cause: err });
}
