import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { Tenant } from '../tenants/model.js';
import { ROLE_PERMISSIONS, ROLE_RANK, type KeyAuthority, type MemberRole } from '../members/roles.js';

/** Who acts on keys: for a tenant's own API key, the limits of its power (see KeyAuthority). */
export type KeyActor = AuditActor & { authority?: KeyAuthority };

export const SCOPES = ['read', 'write', 'admin', 'sql'] as const;
export type Scope = (typeof SCOPES)[number];

export interface ApiKeyInfo {
  id: string;
  tenantId: string;
  name: string;
  scopes: Scope[];
  memberUserId: string | null;
  createdBy: string;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
  rotatedFrom: string | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** the whole key: shown this once, never stored */
  key: string;
}

export interface VerifiedKey {
  tenant: Tenant;
  key: ApiKeyInfo;
  /** what the key may do: its scopes, intersected with its member's role when tied to a member */
  permissions: Scope[];
  /** the current role of the member the key is tied to (null for a tenant-wide key, or a member since removed) */
  role: MemberRole | null;
}

/** A key row as verify() needs it, with its member's current role. */
type KnownKey = KeyRow & { role: MemberRole | null };

const PREFIX = 'tnt_live_';
/** compared against when a key id is unknown, so that path does the same work as a wrong secret */
const DUMMY_HASH = Buffer.alloc(32);
const B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_FORMAT = /^tnt_live_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$/;

function base62(length: number): string {
  // rejection sampling (248 = 4 x 62) keeps every character uniform
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) if (b < 248 && out.length < length) out += B62[b % 62];
  }
  return out;
}

function crc32(s: string): number {
  let c = ~0;
  for (const byte of Buffer.from(s, 'utf8')) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function checksum(body: string): string {
  let n = crc32(body);
  let out = '';
  for (let i = 0; i < 6; i++) { out = B62[n % 62] + out; n = Math.floor(n / 62); }
  return out;
}

/** Parses a key and checks its checksum, before any database work; undefined when malformed. */
export function parseApiKey(key: unknown): { keyId: string; secret: string } | undefined {
  if (typeof key !== 'string' || key.length > 100) return undefined;
  const m = KEY_FORMAT.exec(key);
  if (!m) return undefined;
  const [, keyId, secret, crc] = m as unknown as [string, string, string, string];
  if (checksum(`${PREFIX}${keyId}_${secret}`) !== crc) return undefined;
  return { keyId, secret };
}

function validateScopes(scopes: unknown): Scope[] {
  if (!Array.isArray(scopes) || scopes.length === 0 || scopes.some((s) => !(SCOPES as readonly unknown[]).includes(s))) {
    throw new TenantryError('INVALID_INPUT', `scopes must be a non-empty list of ${SCOPES.join(', ')}; got ${JSON.stringify(scopes)}.`);
  }
  return [...new Set(scopes as Scope[])];
}

interface KeyRow {
  id: string; tenant_id: string; name: string; scopes: Scope[]; secret_hash: Buffer; member_user_id: string | null;
  created_by: string; created_at: Date; expires_at: Date | null; revoked_at: Date | null; last_used_at: Date | null; rotated_from: string | null;
}

const toInfo = (r: KeyRow): ApiKeyInfo => ({
  id: r.id, tenantId: r.tenant_id, name: r.name, scopes: r.scopes, memberUserId: r.member_user_id, createdBy: r.created_by,
  createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at, lastUsedAt: r.last_used_at, rotatedFrom: r.rotated_from,
});

/**
 * Tenant API keys: `tnt_live_<key id>_<secret><checksum>`. The secret (190 random bits) is shown once;
 * the catalog keeps only SHA-256 of it (HMAC-SHA-256 with TENANTRY_KEY_PEPPER when set). Lookup is by
 * key id, comparison in constant time. Last use is recorded in memory and written in batches, so
 * checking a key costs no write.
 */
export class ApiKeyService {
  private readonly lastUsed = new Map<string, Date>();
  /**
   * Every key of the installation by key id (hashes only, as in the catalog), loaded at start and
   * kept fresh per tenant through the catalog's NOTIFY on every key and membership change. Why all of
   * them, not the keys recently used: a forged key id is then refused without a catalog query (a
   * flood of forged keys costs the catalog nothing), and a wrong secret for a real key id and an
   * unknown key id do the same work (one map lookup, one hash, one constant-time compare, no query),
   * so neither the answer nor its timing says whether a key id exists (issue 8, finding 8).
   */
  private readonly known = new Map<string, KnownKey>();
  private readonly knownByTenant = new Map<string, Set<string>>();
  /**
   * Per tenant: the sequence number and time of the load last applied, and of the last change
   * announced; the tenant's rows are stale while a change is newer than the load (loads and changes
   * draw from one sequence, taken when a load starts or a change is heard).
   */
  private readonly freshness = new Map<string, { seq: number; at: number; changed: number }>();
  private seq = 0;
  private loaded = false;
  private initial: Promise<void> | undefined;
  private readonly pending = new Map<string, { seq: number; promise: Promise<void> }>();
  /**
   * When each key's row was last read from the catalog for a matching secret: a key is trusted from
   * memory for at most the cache time (5 s) after that, as if cached on use, so a change made behind
   * Tenantry's back (or whose NOTIFY is still on its way) is seen as soon as it was before.
   */
  private readonly confirmed = new Map<string, number>();
  private readonly cacheTtlMs: number;
  private readonly flusher: NodeJS.Timeout;
  private readonly refresher: NodeJS.Timeout;
  /** the work verify() did, for tests and benchmarks: catalog lookups on its path, hashes, compares */
  readonly work = { lookups: 0, hashes: 0, compares: 0 };

  constructor(private readonly core: Core, private readonly tenants: TenantService, private readonly pepper: string | undefined) {
    this.cacheTtlMs = Math.min(core.opts.tenantCacheTtlMs, 5000);
    this.flusher = setInterval(() => void this.flushLastUsed(), 15_000);
    this.flusher.unref();
    // a safety net under the NOTIFY (a notification lost while the listening connection was down)
    this.refresher = setInterval(() => { if (this.loaded) void this.reloadAll().catch(() => undefined); }, 300_000);
    this.refresher.unref();
  }

  private hash(secret: string): Buffer {
    return this.pepper ? createHmac('sha256', this.pepper).update(secret).digest() : createHash('sha256').update(secret).digest();
  }

  async create(idOrSlug: string, input: { name: string; scopes?: string[]; expiresAt?: Date | null; memberUserId?: string | null }, who: KeyActor = {}): Promise<CreatedApiKey> {
    const t = await this.tenants.get(idOrSlug);
    if (t.status === 'deleted') throw new TenantryError('TENANT_DELETED', `Tenant "${t.slug}" is deleted; restore it before issuing keys.`);
    const a = who.authority;
    if (a) {
      // A key made with a tenant's own key can do no more than the key that made it, and one made with
      // a member-bound key is bound to the same member, so removing or demoting that member removes or
      // lowers it too (the attack: a member-bound admin key minting an unbound all-scope key that
      // outlived the member).
      const scopes = validateScopes(input?.scopes ?? ['read', 'write']);
      const beyond = scopes.filter((x) => !a.permissions.includes(x));
      if (beyond.length > 0) throw new TenantryError('FORBIDDEN', `This API key cannot create a key with scopes it does not have itself (${beyond.join(', ')}; it has: ${a.permissions.join(', ') || 'none'}).`);
      if (a.memberUserId && input.memberUserId != null && input.memberUserId !== a.memberUserId) {
        throw new TenantryError('FORBIDDEN', 'A key bound to a member can only create keys bound to the same member.');
      }
      if (a.memberUserId) input = { ...input, memberUserId: a.memberUserId };
    }
    const created = await this.core.admin.begin((tx) => this.createIn(tx, t, input, who));
    await this.refresh(t.id).catch(() => undefined);
    return created;
  }

  /** Inside a caller's transaction: provisioning issues the first key in the transaction that activates the tenant. */
  async createIn(tx: TransactionSql | Sql, t: Pick<Tenant, 'id'>, input: { name: string; scopes?: string[]; expiresAt?: Date | null; memberUserId?: string | null; rotatedFrom?: string }, who: AuditActor): Promise<CreatedApiKey> {
    if (!input || typeof input.name !== 'string' || input.name.trim() === '' || input.name.length > 100) {
      throw new TenantryError('INVALID_INPUT', 'An API key needs a name of 1-100 characters.');
    }
    const scopes = validateScopes(input.scopes ?? ['read', 'write']);
    const expiresAt = input.expiresAt ?? null;
    if (expiresAt !== null && (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= Date.now())) {
      throw new TenantryError('INVALID_INPUT', 'expiresAt must be a date in the future.');
    }
    const memberUserId = input.memberUserId ?? null;
    if (memberUserId !== null) {
      const m = await tx`select 1 from tenantry_catalog.memberships where tenant_id = ${t.id} and user_id = ${memberUserId}`;
      if (m.length === 0) throw new TenantryError('MEMBER_NOT_FOUND', `User ${memberUserId} is not a member of this tenant; a key can only be tied to a member.`);
    }
    const keyId = base62(12);
    const secret = base62(32);
    const body = `${PREFIX}${keyId}_${secret}`;
    const key = `${body}${checksum(body)}`;
    const actor = who.actor ?? this.core.opts.actor;
    const inserted = tx<KeyRow[]>`
      insert into tenantry_catalog.api_keys (id, tenant_id, name, scopes, secret_hash, member_user_id, created_by, expires_at, rotated_from)
      values (${keyId}, ${t.id}, ${input.name.trim()}, ${scopes}, ${this.hash(secret)}, ${memberUserId}, ${actor}, ${expiresAt}, ${input.rotatedFrom ?? null})
      returning *`.execute();
    // the audit entry follows the insert without waiting for its answer (same transaction, one round
    // trip); the insert is awaited first, so its error is the one reported
    const audited = appendAudit(tx, {
      tenantId: t.id, actor, action: input.rotatedFrom ? 'api_key.rotated' : 'api_key.created', target: `api_key:${keyId}`, requestId: who.requestId,
      details: { name: input.name.trim(), scopes, memberUserId, expiresAt, rotatedFrom: input.rotatedFrom ?? null },
    });
    audited.catch(() => undefined);
    const [row] = await inserted;
    await audited;
    return { ...toInfo(row!), key };
  }

  async list(idOrSlug: string): Promise<ApiKeyInfo[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<KeyRow[]>`select * from tenantry_catalog.api_keys where tenant_id = ${t.id} order by created_at, id`;
    return rows.map((r) => ({ ...toInfo(r), lastUsedAt: this.lastUsed.get(r.id) ?? r.last_used_at }));
  }

  async revoke(idOrSlug: string, keyId: string, who: KeyActor = {}): Promise<ApiKeyInfo> {
    const t = await this.tenants.get(idOrSlug);
    const result = await this.core.admin.begin(async (tx) => {
      const a = who.authority;
      if (a) {
        // an admin's key may not switch off the keys of an owner (nobody acts on a role above their own)
        const [target] = await tx<{ role: MemberRole | null }[]>`
          select m.role from tenantry_catalog.api_keys k
          left join tenantry_catalog.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.member_user_id
          where k.id = ${String(keyId)} and k.tenant_id = ${t.id} for update of k`;
        if (target?.role && ROLE_RANK[target.role] > ROLE_RANK[a.role]) {
          throw new TenantryError('FORBIDDEN', `This API key acts as ${a.memberUserId ? `a member with role ${a.role}` : 'a tenant-wide admin'} and cannot revoke the key of a member with role ${target.role}.`);
        }
      }
      const [row] = await tx<KeyRow[]>`
        update tenantry_catalog.api_keys set revoked_at = coalesce(revoked_at, now())
        where id = ${String(keyId)} and tenant_id = ${t.id} returning *`;
      if (!row) throw new TenantryError('API_KEY_NOT_FOUND', `Tenant "${t.slug}" has no API key ${JSON.stringify(keyId)}.`);
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'api_key.revoked', target: `api_key:${row.id}`, requestId: who.requestId, details: { name: row.name } });
      return toInfo(row);
    });
    await this.refresh(t.id).catch(() => undefined);
    return result;
  }

  /** A new key with the same name, scopes and member; the old one stays valid for `graceSeconds` (default 0). */
  async rotate(idOrSlug: string, keyId: string, opts: { graceSeconds?: number } = {}, who: KeyActor = {}): Promise<CreatedApiKey> {
    const grace = opts.graceSeconds ?? 0;
    if (!Number.isInteger(grace) || grace < 0 || grace > 30 * 86_400) throw new TenantryError('INVALID_INPUT', 'graceSeconds must be an integer from 0 to 2592000 (30 days).');
    const t = await this.tenants.get(idOrSlug);
    const created = await this.core.admin.begin(async (tx) => {
      const [old] = await tx<KeyRow[]>`select * from tenantry_catalog.api_keys where id = ${String(keyId)} and tenant_id = ${t.id} for update`;
      if (!old) throw new TenantryError('API_KEY_NOT_FOUND', `Tenant "${t.slug}" has no API key ${JSON.stringify(keyId)}.`);
      if (old.revoked_at) throw new TenantryError('API_KEY_REVOKED', `API key ${old.id} is revoked; create a new key instead.`);
      // rotating hands out a new secret with the old key's powers: only to a key that could have made it
      const a = who.authority;
      if (a) {
        const beyond = old.scopes.filter((x) => !a.permissions.includes(x));
        if (beyond.length > 0) throw new TenantryError('FORBIDDEN', `This API key cannot rotate a key with scopes it does not have itself (${beyond.join(', ')}).`);
        if (a.memberUserId && old.member_user_id !== a.memberUserId) throw new TenantryError('FORBIDDEN', 'A key bound to a member can only rotate keys bound to the same member.');
      }
      await tx`
        update tenantry_catalog.api_keys
        set expires_at = least(coalesce(expires_at, 'infinity'::timestamptz), now() + make_interval(secs => ${grace}))
        where id = ${old.id}`;
      return this.createIn(tx, t, {
        name: old.name, scopes: old.scopes, memberUserId: old.member_user_id, rotatedFrom: old.id,
        expiresAt: old.expires_at && old.expires_at.getTime() > Date.now() ? old.expires_at : null,
      }, who);
    });
    await this.refresh(t.id).catch(() => undefined);
    return created;
  }

  /**
   * Checks a presented key. Malformed keys and bad checksums are refused before any other work; then
   * the key id is looked up in memory and the secret's hash compared in constant time, against a dummy
   * when the id is unknown: the same work, the same answer and no catalog query whether the id exists
   * or not. Only a matching secret may refresh the key's row from the catalog (when a change was
   * announced, or when this key's row was last read over the cache time ago), so that work reveals
   * nothing to a guesser.
   * Distinct codes for revoked and expired keys and for suspended or deleted tenants.
   */
  async verify(presented: string): Promise<VerifiedKey> {
    const parsed = parseApiKey(presented);
    if (!parsed) throw new TenantryError('INVALID_API_KEY', 'The API key is malformed or mistyped (checksum mismatch). Keys look like tnt_live_<id>_<secret>.');
    if (!this.loaded) await this.loadAllOnce();
    let row = this.known.get(parsed.keyId);
    const presentedHash = this.hash(parsed.secret);
    this.work.hashes++;
    this.work.compares++;
    const match = timingSafeEqual(presentedHash, row?.secret_hash ?? DUMMY_HASH);
    if (!row || !match) throw new TenantryError('INVALID_API_KEY', 'The API key is not valid.');
    const f = this.freshness.get(row.tenant_id);
    if (!f || f.changed > f.seq || Date.now() - (this.confirmed.get(row.id) ?? 0) >= this.cacheTtlMs) {
      this.work.lookups++;
      const readAt = Date.now();
      // a load begun from now on (not one already running, which may predate the change)
      await this.reloadTenant(row.tenant_id, this.seq);
      row = this.known.get(parsed.keyId);
      if (!row) throw new TenantryError('INVALID_API_KEY', 'The API key is not valid.');
      this.confirmed.set(row.id, readAt);
    }
    if (row.revoked_at) throw new TenantryError('API_KEY_REVOKED', `API key ${row.id} was revoked; ask the tenant's admin for a new one.`);
    if (row.expires_at && row.expires_at.getTime() <= Date.now()) throw new TenantryError('API_KEY_EXPIRED', `API key ${row.id} expired at ${row.expires_at.toISOString()}; rotate or create a new one.`);
    let tenant: Tenant;
    try {
      tenant = await this.tenants.resolveForWork(row.tenant_id);
    } catch (err) {
      // a hard-deleted tenant's keys are gone with it (the announcement may still be on its way)
      if (err instanceof TenantryError && err.code === 'TENANT_NOT_FOUND') {
        this.markChanged(row.tenant_id);
        throw new TenantryError('INVALID_API_KEY', 'The API key is not valid.');
      }
      throw err;
    }
    let permissions = row.scopes;
    if (row.member_user_id) {
      const allowed = row.role ? ROLE_PERMISSIONS[row.role] : [];
      permissions = row.scopes.filter((s) => (allowed as readonly string[]).includes(s));
    }
    this.lastUsed.set(row.id, new Date());
    return { tenant, key: toInfo(row), permissions, role: row.member_user_id ? row.role : null };
  }

  /** The tenant of a key id, from memory (no query): for attributing a throttled key id in the audit log. */
  tenantOfKeyId(keyId: string): string | undefined {
    return this.known.get(keyId)?.tenant_id;
  }

  /**
   * A change to a tenant's keys or members was announced (here, or by another process through the
   * catalog's NOTIFY): its rows are reloaded now, and until then a matching secret reloads them
   * itself before it is trusted. No argument: every tenant (the listening connection was re-made).
   */
  invalidate(tenantId?: string): void {
    const warn = (err: unknown): void => this.core.logger.warn({ err, tenantId }, 'reloading API keys failed');
    if (!tenantId) {
      for (const id of this.freshness.keys()) this.markChanged(id);
      if (this.loaded) void this.reloadAll().catch(warn);
      return;
    }
    // new keys (made in another process) must be known here before anyone presents them
    void this.refresh(tenantId).catch(warn);
  }

  /**
   * Records a change to a tenant's keys or members and reloads them. Callers that create keys in a
   * transaction of their own (provisioning) call it after the commit.
   */
  refresh(tenantId: string): Promise<void> {
    return this.reloadTenant(tenantId, this.markChanged(tenantId));
  }

  private markChanged(tenantId: string): number {
    const changed = ++this.seq;
    const f = this.freshness.get(tenantId);
    if (f) f.changed = changed;
    else this.freshness.set(tenantId, { seq: 0, at: 0, changed });
    return changed;
  }

  /** Starts loading every key (verify() waits for it; a failed load is retried by the next verify()). */
  preload(): void {
    void this.loadAllOnce().catch((err: unknown) => this.core.logger.warn({ err }, 'loading API keys failed'));
  }

  private loadAllOnce(): Promise<void> {
    this.initial ??= this.reloadAll().then(() => { this.loaded = true; }, (err: unknown) => { this.initial = undefined; throw err; });
    return this.initial;
  }

  /** Loads every key of the installation. */
  private async reloadAll(): Promise<void> {
    const seq = ++this.seq;
    const rows = await this.core.admin<KnownKey[]>`
      select k.*, m.role from tenantry_catalog.api_keys k
      left join tenantry_catalog.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.member_user_id`;
    const byTenant = new Map<string, KnownKey[]>();
    for (const r of rows) {
      const list = byTenant.get(r.tenant_id);
      if (list) list.push(r); else byTenant.set(r.tenant_id, [r]);
    }
    for (const tenantId of new Set([...this.knownByTenant.keys(), ...byTenant.keys()])) this.apply(tenantId, byTenant.get(tenantId) ?? [], seq);
  }

  /** Reloads one tenant's keys; callers share a load that began after the change they need to see. */
  private reloadTenant(tenantId: string, after: number): Promise<void> {
    const running = this.pending.get(tenantId);
    if (running && running.seq > after) return running.promise;
    const seq = ++this.seq;
    const promise = (async () => {
      const rows = await this.core.admin<KnownKey[]>`
        select k.*, m.role from tenantry_catalog.api_keys k
        left join tenantry_catalog.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.member_user_id
        where k.tenant_id = ${tenantId}`;
      this.apply(tenantId, rows, seq);
    })().finally(() => { if (this.pending.get(tenantId)?.seq === seq) this.pending.delete(tenantId); });
    this.pending.set(tenantId, { seq, promise });
    return promise;
  }

  /** Replaces a tenant's keys with a load's result, unless a load begun later was applied already. */
  private apply(tenantId: string, rows: KnownKey[], seq: number): void {
    const f = this.freshness.get(tenantId);
    if (f && f.seq > seq) return;
    const ids = new Set(rows.map((r) => r.id));
    for (const id of this.knownByTenant.get(tenantId) ?? []) {
      this.known.delete(id);
      if (!ids.has(id)) this.confirmed.delete(id);
    }
    if (rows.length > 0) this.knownByTenant.set(tenantId, ids);
    else this.knownByTenant.delete(tenantId);
    for (const r of rows) this.known.set(r.id, r);
    this.freshness.set(tenantId, { seq, at: Date.now(), changed: f?.changed ?? 0 });
  }

  /** Writes the batched last-use times: one UPDATE for all keys used since the last flush. */
  /** The job runner of this process flushes from now on (its tick), instead of this service's own timer. */
  flushOnRunnerTick(): void {
    clearInterval(this.flusher);
  }

  async flushLastUsed(): Promise<void> {
    if (this.lastUsed.size === 0) return;
    const entries = [...this.lastUsed.entries()];
    this.lastUsed.clear();
    await this.core.admin`
      update tenantry_catalog.api_keys k set last_used_at = greatest(coalesce(k.last_used_at, u.at), u.at)
      from (select unnest(${entries.map(([id]) => id)}::text[]) as id, unnest(${entries.map(([, at]) => at.toISOString())}::timestamptz[]) as at) u
      where k.id = u.id`.catch((err: unknown) => this.core.logger.warn({ err }, 'recording API key last use failed'));
  }

  async stop(): Promise<void> {
    clearInterval(this.flusher);
    clearInterval(this.refresher);
    await this.flushLastUsed();
  }
}
