import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { Tenant } from '../tenants/model.js';
import { ROLE_PERMISSIONS, type MemberRole } from '../members/roles.js';

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
}

const PREFIX = 'tnt_live_';
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
   * Verified key rows by key id, for a few seconds: the hot path of every API request then needs no
   * query. Dropped at once on revoke, rotate and member changes (here, and in other processes through
   * the catalog's NOTIFY); the secret is still compared, in constant time, on every use.
   */
  private readonly cache = new Map<string, { row: KeyRow & { role: MemberRole | null }; at: number }>();
  private readonly cacheTtlMs: number;
  private readonly flusher: NodeJS.Timeout;

  constructor(private readonly core: Core, private readonly tenants: TenantService, private readonly pepper: string | undefined) {
    this.cacheTtlMs = Math.min(core.opts.tenantCacheTtlMs, 5000);
    this.flusher = setInterval(() => void this.flushLastUsed(), 15_000);
    this.flusher.unref();
  }

  private hash(secret: string): Buffer {
    return this.pepper ? createHmac('sha256', this.pepper).update(secret).digest() : createHash('sha256').update(secret).digest();
  }

  async create(idOrSlug: string, input: { name: string; scopes?: string[]; expiresAt?: Date | null; memberUserId?: string | null }, who: AuditActor = {}): Promise<CreatedApiKey> {
    const t = await this.tenants.get(idOrSlug);
    if (t.status === 'deleted') throw new TenantryError('TENANT_DELETED', `Tenant "${t.slug}" is deleted; restore it before issuing keys.`);
    return this.core.admin.begin((tx) => this.createIn(tx, t, input, who));
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
    const [row] = await tx<KeyRow[]>`
      insert into tenantry_catalog.api_keys (id, tenant_id, name, scopes, secret_hash, member_user_id, created_by, expires_at, rotated_from)
      values (${keyId}, ${t.id}, ${input.name.trim()}, ${scopes}, ${this.hash(secret)}, ${memberUserId}, ${actor}, ${expiresAt}, ${input.rotatedFrom ?? null})
      returning *`;
    await appendAudit(tx, {
      tenantId: t.id, actor, action: input.rotatedFrom ? 'api_key.rotated' : 'api_key.created', target: `api_key:${keyId}`, requestId: who.requestId,
      details: { name: input.name.trim(), scopes, memberUserId, expiresAt, rotatedFrom: input.rotatedFrom ?? null },
    });
    return { ...toInfo(row!), key };
  }

  async list(idOrSlug: string): Promise<ApiKeyInfo[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<KeyRow[]>`select * from tenantry_catalog.api_keys where tenant_id = ${t.id} order by created_at, id`;
    return rows.map((r) => ({ ...toInfo(r), lastUsedAt: this.lastUsed.get(r.id) ?? r.last_used_at }));
  }

  async revoke(idOrSlug: string, keyId: string, who: AuditActor = {}): Promise<ApiKeyInfo> {
    const t = await this.tenants.get(idOrSlug);
    const result = await this.core.admin.begin(async (tx) => {
      const [row] = await tx<KeyRow[]>`
        update tenantry_catalog.api_keys set revoked_at = coalesce(revoked_at, now())
        where id = ${String(keyId)} and tenant_id = ${t.id} returning *`;
      if (!row) throw new TenantryError('API_KEY_NOT_FOUND', `Tenant "${t.slug}" has no API key ${JSON.stringify(keyId)}.`);
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'api_key.revoked', target: `api_key:${row.id}`, requestId: who.requestId, details: { name: row.name } });
      return toInfo(row);
    });
    this.invalidate(t.id);
    return result;
  }

  /** A new key with the same name, scopes and member; the old one stays valid for `graceSeconds` (default 0). */
  async rotate(idOrSlug: string, keyId: string, opts: { graceSeconds?: number } = {}, who: AuditActor = {}): Promise<CreatedApiKey> {
    const grace = opts.graceSeconds ?? 0;
    if (!Number.isInteger(grace) || grace < 0 || grace > 30 * 86_400) throw new TenantryError('INVALID_INPUT', 'graceSeconds must be an integer from 0 to 2592000 (30 days).');
    const t = await this.tenants.get(idOrSlug);
    const created = await this.core.admin.begin(async (tx) => {
      const [old] = await tx<KeyRow[]>`select * from tenantry_catalog.api_keys where id = ${String(keyId)} and tenant_id = ${t.id} for update`;
      if (!old) throw new TenantryError('API_KEY_NOT_FOUND', `Tenant "${t.slug}" has no API key ${JSON.stringify(keyId)}.`);
      if (old.revoked_at) throw new TenantryError('API_KEY_REVOKED', `API key ${old.id} is revoked; create a new key instead.`);
      await tx`
        update tenantry_catalog.api_keys
        set expires_at = least(coalesce(expires_at, 'infinity'::timestamptz), now() + make_interval(secs => ${grace}))
        where id = ${old.id}`;
      return this.createIn(tx, t, {
        name: old.name, scopes: old.scopes, memberUserId: old.member_user_id, rotatedFrom: old.id,
        expiresAt: old.expires_at && old.expires_at.getTime() > Date.now() ? old.expires_at : null,
      }, who);
    });
    this.invalidate(t.id);
    return created;
  }

  /**
   * Checks a presented key. Malformed keys and bad checksums are refused before any database work;
   * then lookup by key id and a constant-time comparison of hashes. Distinct codes for revoked and
   * expired keys and for suspended or deleted tenants.
   */
  async verify(presented: string): Promise<VerifiedKey> {
    const parsed = parseApiKey(presented);
    if (!parsed) throw new TenantryError('INVALID_API_KEY', 'The API key is malformed or mistyped (checksum mismatch). Keys look like tnt_live_<id>_<secret>.');
    let row: (KeyRow & { role: MemberRole | null }) | undefined;
    const hit = this.cache.get(parsed.keyId);
    if (hit && Date.now() - hit.at < this.cacheTtlMs) {
      row = hit.row;
    } else {
      [row] = await this.core.admin<(KeyRow & { role: MemberRole | null })[]>`
        select k.*, m.role from tenantry_catalog.api_keys k
        left join tenantry_catalog.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.member_user_id
        where k.id = ${parsed.keyId}`;
      if (row && this.cacheTtlMs > 0) this.cache.set(parsed.keyId, { row, at: Date.now() });
    }
    // compare against a dummy when the id is unknown, so timing does not reveal which ids exist
    const stored = row?.secret_hash ?? Buffer.alloc(32);
    const match = timingSafeEqual(this.hash(parsed.secret), stored);
    if (!row || !match) throw new TenantryError('INVALID_API_KEY', 'The API key is not valid.');
    if (row.revoked_at) throw new TenantryError('API_KEY_REVOKED', `API key ${row.id} was revoked; ask the tenant's admin for a new one.`);
    if (row.expires_at && row.expires_at.getTime() <= Date.now()) throw new TenantryError('API_KEY_EXPIRED', `API key ${row.id} expired at ${row.expires_at.toISOString()}; rotate or create a new one.`);
    const tenant = await this.tenants.resolveForWork(row.tenant_id);
    let permissions = row.scopes;
    if (row.member_user_id) {
      const allowed = row.role ? ROLE_PERMISSIONS[row.role] : [];
      permissions = row.scopes.filter((s) => (allowed as readonly string[]).includes(s));
    }
    this.lastUsed.set(row.id, new Date());
    return { tenant, key: toInfo(row), permissions };
  }

  /** Drops cached verifications of one tenant's keys (or all). */
  invalidate(tenantId?: string): void {
    if (!tenantId) return this.cache.clear();
    for (const [id, e] of this.cache) if (e.row.tenant_id === tenantId) this.cache.delete(id);
  }

  /** Writes the batched last-use times: one UPDATE for all keys used since the last flush. */
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
    await this.flushLastUsed();
  }
}
