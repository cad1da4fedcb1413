import { randomBytes } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { Kms, WrappedKey } from './kms.js';
import { DataKeyCache } from './key-cache.js';
import {
  sealWith, openWith, ciphertextKeyVersion, dataKeyAad, MAX_PLAINTEXT_BYTES, MAX_CONTEXT_BYTES,
} from './envelope.js';

export interface CryptoOptions {
  /**
   * Bound into the ciphertext's authenticated data: decrypting needs the same context. Use what the
   * value belongs to, e.g. `users.ssn:42`, so a ciphertext moved to another row or column fails too.
   */
  context?: string;
}

export interface DataKeyInfo {
  version: number;
  kekId: string;
  kekVersion: number;
  createdAt: Date;
  rewrappedAt: Date | null;
}

export interface MasterRotationReport {
  /** data keys looked at */
  checked: number;
  /** data keys re-wrapped under the current key-encryption key */
  rewrapped: number;
  /** data keys that did not unwrap (altered in the catalog, or wrapped by a key-encryption key this process lacks): left as they were */
  failed: { tenantId: string; version: number }[];
}

interface KeyRow { version: number; wrapped: string; kek_id: string; kek_version: number }

/**
 * Envelope encryption per tenant. Each tenant has data keys (versions), generated here, used with
 * AES-256-GCM, and stored only wrapped by the KMS's key-encryption key. Rotating a tenant's key adds a
 * version (new ciphertexts use it, older ones keep decrypting with theirs: no data is re-encrypted);
 * rotating the master key re-wraps the stored data keys, nothing else. A hard delete removes the
 * tenant's wrapped keys in its own transaction (crypto-shredding, shredTenantKeys), after which no
 * ciphertext of that tenant, wherever a copy survives, can be decrypted.
 */
export class TenantCrypto {
  private readonly cache: DataKeyCache;

  constructor(private readonly core: Core, private readonly tenants: TenantService, private readonly kms: Kms | undefined) {
    this.cache = new DataKeyCache(core.opts.dataKeyCacheTtlMs, core.opts.dataKeyCacheMax);
    // a tenant changed or removed, here or (by the catalog's NOTIFY) in another process: a shredded
    // tenant's keys leave this process's memory at once rather than at the end of their TTL
    core.cache.onInvalidate((id) => this.cache.forget(id));
  }

  /** Whether a KMS is configured (TENANTRY_MASTER_KEY or Vault): without one, encrypt and decrypt refuse. */
  get enabled(): boolean {
    return this.kms !== undefined;
  }

  /** Encrypts `plaintext` (a string is taken as UTF-8) with the tenant's current data key. */
  async encrypt(idOrSlug: string, plaintext: string | Uint8Array, opts: CryptoOptions = {}): Promise<Buffer> {
    const kms = this.requireKms();
    const data = plaintextBytes(plaintext);
    const context = contextBytes(opts);
    const t = await this.tenantFor(idOrSlug);
    const { version, key } = await this.currentKey(kms, t.id);
    try {
      return sealWith(key, version, t.id, data, context);
    } finally {
      key.fill(0);
    }
  }

  /** Decrypts a ciphertext of this tenant; DECRYPT_FAILED for anything else (another tenant's, altered, another context). */
  async decrypt(idOrSlug: string, ciphertext: Uint8Array, opts: CryptoOptions = {}): Promise<Buffer> {
    const kms = this.requireKms();
    if (!(ciphertext instanceof Uint8Array)) throw new TenantryError('INVALID_INPUT', 'decrypt() takes the ciphertext as a Buffer (or Uint8Array), as encrypt() returned it.', { field: 'ciphertext' });
    if (ciphertext.length > MAX_PLAINTEXT_BYTES + 64) throw new TenantryError('INVALID_INPUT', `A ciphertext is at most ${MAX_PLAINTEXT_BYTES + 64} bytes.`, { field: 'ciphertext' });
    const ct = Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.byteLength);
    const context = contextBytes(opts);
    const version = ciphertextKeyVersion(ct);
    const t = await this.tenantFor(idOrSlug);
    const key = await this.keyVersion(kms, t.id, version);
    try {
      return openWith(key, t.id, ct, context);
    } finally {
      key.fill(0);
    }
  }

  /** encrypt() of UTF-8 text, as base64url text (for text columns and JSON). */
  async encryptText(idOrSlug: string, plaintext: string, opts: CryptoOptions = {}): Promise<string> {
    if (typeof plaintext !== 'string') throw new TenantryError('INVALID_INPUT', 'encryptText() takes a string.', { field: 'plaintext' });
    return (await this.encrypt(idOrSlug, plaintext, opts)).toString('base64url');
  }

  /** decrypt() of what encryptText() returned, as UTF-8 text. */
  async decryptText(idOrSlug: string, ciphertext: string, opts: CryptoOptions = {}): Promise<string> {
    if (typeof ciphertext !== 'string' || !/^[A-Za-z0-9_-]*$/.test(ciphertext)) {
      throw new TenantryError('DECRYPT_FAILED', 'decryptText() takes the base64url text encryptText() returned; nothing was decrypted.');
    }
    return (await this.decrypt(idOrSlug, Buffer.from(ciphertext, 'base64url'), opts)).toString('utf8');
  }

  /**
   * A new data-key version for the tenant: new ciphertexts use it, older ones still decrypt with
   * their own version. Nothing is re-encrypted. Audited on the tenant's chain.
   */
  async rotateTenantKey(idOrSlug: string, who: AuditActor = {}): Promise<{ tenantId: string; version: number }> {
    const kms = this.requireKms();
    const t = await this.tenantFor(idOrSlug);
    const version = await this.core.admin.begin(async (tx) => {
      // the tenant's row lock serialises rotations (and a concurrent hard delete) of one tenant
      const [row] = await tx<{ id: string }[]>`select id from tenantry_catalog.tenants where id = ${t.id} for update`;
      if (!row) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(idOrSlug)}.`);
      const [m] = await tx<{ v: number }[]>`select coalesce(max(version), 0)::int as v from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id}`;
      const next = m!.v + 1;
      const key = randomBytes(32);
      try {
        const w = await kms.wrap(key, dataKeyAad(t.id, next));
        await insertKey(tx, t.id, next, w);
        await appendAudit(tx, {
          tenantId: t.id, actor: who.actor ?? this.core.opts.actor, requestId: who.requestId, action: 'tenant.key_rotated',
          target: `tenant:${t.id}`, details: { version: next, kekId: w.kekId, kekVersion: w.kekVersion },
        });
        return next;
      } finally {
        key.fill(0);
      }
    });
    this.cache.setCurrentVersion(t.id, version);
    return { tenantId: t.id, version };
  }

  /** The tenant's data-key versions (wrapped keys are never shown). */
  async keyVersions(idOrSlug: string): Promise<DataKeyInfo[]> {
    const t = await this.tenantFor(idOrSlug);
    const rows = await this.core.admin<{ version: number; kek_id: string; kek_version: number; created_at: Date; rewrapped_at: Date | null }[]>`
      select version, kek_id, kek_version, created_at, rewrapped_at from tenantry_catalog.tenant_data_keys where tenant_id = ${t.id} order by version`;
    return rows.map((r) => ({ version: r.version, kekId: r.kek_id, kekVersion: r.kek_version, createdAt: r.created_at, rewrappedAt: r.rewrapped_at }));
  }

  /**
   * Re-wraps every tenant's data keys that an older key-encryption key wrapped (after a new
   * TENANTRY_MASTER_KEY with the old one in TENANTRY_MASTER_KEY_PREVIOUS, or a Vault key rotation), in
   * batches of `batchSize`, each batch one transaction. Resumable: a run that stops half-way is run
   * again and skips what is already current. The data itself is never touched.
   */
  async rotateMasterKey(opts: AuditActor & { batchSize?: number; onProgress?: (p: MasterRotationReport) => void } = {}): Promise<MasterRotationReport> {
    const kms = this.requireKms();
    const batchSize = opts.batchSize ?? 100;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new TenantryError('INVALID_INPUT', 'batchSize must be an integer from 1 to 10000.', { field: 'batchSize' });
    const report: MasterRotationReport = { checked: 0, rewrapped: 0, failed: [] };
    let after: { tenant: string; version: number } = { tenant: '00000000-0000-0000-0000-000000000000', version: 0 };
    for (;;) {
      const rows = await this.core.admin<(KeyRow & { tenant_id: string })[]>`
        select tenant_id, version, wrapped, kek_id, kek_version from tenantry_catalog.tenant_data_keys
        where (tenant_id, version) > (${after.tenant}::uuid, ${after.version}::int)
        order by tenant_id, version limit ${batchSize}`;
      if (rows.length === 0) break;
      const redone: { tenantId: string; version: number; old: string; w: WrappedKey }[] = [];
      for (const r of rows) {
        const w = asWrapped(r);
        if (!(await kms.isStale(w))) continue;
        try {
          redone.push({ tenantId: r.tenant_id, version: r.version, old: r.wrapped, w: await kms.rewrap(w, dataKeyAad(r.tenant_id, r.version)) });
        } catch (err) {
          // a key that does not unwrap (altered in the catalog, or wrapped by a master key this
          // process lacks) is reported and left as it is; the rest are re-wrapped. An unreachable KMS
          // stops the run (run it again later: it resumes).
          if (!(err instanceof TenantryError) || (err.code !== 'DECRYPT_FAILED' && err.code !== 'KEY_UNAVAILABLE')) throw err;
          report.failed.push({ tenantId: r.tenant_id, version: r.version });
        }
      }
      if (redone.length) {
        await this.core.admin.begin(async (tx) => {
          for (const x of redone) {
            // only if unchanged since read: a concurrent run or a shred wins, never a stale overwrite
            const done = await tx`
              update tenantry_catalog.tenant_data_keys set wrapped = ${x.w.wrapped}, kek_id = ${x.w.kekId}, kek_version = ${x.w.kekVersion}, rewrapped_at = now()
              where tenant_id = ${x.tenantId} and version = ${x.version} and wrapped = ${x.old}`;
            report.rewrapped += done.count;
          }
        });
      }
      report.checked += rows.length;
      const last = rows[rows.length - 1]!;
      after = { tenant: last.tenant_id, version: last.version };
      opts.onProgress?.({ ...report, failed: [...report.failed] });
    }
    await appendAudit(this.core.admin, {
      tenantId: null, actor: opts.actor ?? this.core.opts.actor, requestId: opts.requestId, action: 'keys.master_rotated',
      target: `kms:${kms.kind}`, details: { checked: report.checked, rewrapped: report.rewrapped, failed: report.failed.length },
    });
    return report;
  }

  /** Drops cached data keys (one tenant's, or all), zeroing them. */
  forget(tenantId?: string): void {
    this.cache.forget(tenantId);
  }

  async close(): Promise<void> {
    this.cache.close();
    await this.kms?.close?.();
  }

  private requireKms(): Kms {
    if (!this.kms) {
      throw new TenantryError('ENCRYPTION_NOT_CONFIGURED', 'Encryption needs a key-encryption key: set TENANTRY_MASTER_KEY to 32 random bytes in base64 or hex (`openssl rand -base64 32`), or TENANTRY_KMS=vault with TENANTRY_VAULT_ADDR, TENANTRY_VAULT_TOKEN and TENANTRY_VAULT_TRANSIT_KEY. Nothing was encrypted.');
    }
    return this.kms;
  }

  /** Any tenant that still exists, whatever its status: a suspended or soft-deleted tenant's data stays readable to the app. */
  private async tenantFor(idOrSlug: string): Promise<{ id: string }> {
    // the tenant cache of the hot path (withTenant's), dropped on every change and in every process by NOTIFY
    let t = typeof idOrSlug === 'string' ? this.core.cache.get(idOrSlug) : undefined;
    if (!t) {
      t = await this.tenants.get(idOrSlug);
      this.core.cache.set(t);
    }
    if (t.status === 'provisioning') throw new TenantryError('TENANT_NOT_READY', `Tenant "${t.slug}" is still being provisioned.`, { tenantId: t.id });
    return t;
  }

  private async currentKey(kms: Kms, tenantId: string): Promise<{ version: number; key: Buffer }> {
    const cachedVersion = this.cache.currentVersion(tenantId);
    if (cachedVersion !== undefined) {
      const key = this.cache.get(tenantId, cachedVersion);
      if (key) return { version: cachedVersion, key: Buffer.from(key) };
    }
    let [row] = await this.core.admin<KeyRow[]>`
      select version, wrapped, kek_id, kek_version from tenantry_catalog.tenant_data_keys where tenant_id = ${tenantId} order by version desc limit 1`;
    if (!row) {
      // the first encryption creates version 1; two racing processes both wrap one, the first insert wins
      const key = randomBytes(32);
      try {
        const w = await kms.wrap(key, dataKeyAad(tenantId, 1));
        await insertKey(this.core.admin, tenantId, 1, w, true);
      } finally {
        key.fill(0);
      }
      [row] = await this.core.admin<KeyRow[]>`
        select version, wrapped, kek_id, kek_version from tenantry_catalog.tenant_data_keys where tenant_id = ${tenantId} order by version desc limit 1`;
      if (!row) throw new TenantryError('TENANT_NOT_FOUND', `Tenant ${tenantId} was removed.`);
    }
    const key = await this.unwrapRow(kms, tenantId, row);
    this.cache.setCurrentVersion(tenantId, row.version);
    return { version: row.version, key };
  }

  private async keyVersion(kms: Kms, tenantId: string, version: number): Promise<Buffer> {
    const hit = this.cache.get(tenantId, version);
    if (hit) return Buffer.from(hit);
    const [row] = await this.core.admin<KeyRow[]>`
      select version, wrapped, kek_id, kek_version from tenantry_catalog.tenant_data_keys where tenant_id = ${tenantId} and version = ${version}`;
    // the same answer as a failed tag: whether a version exists is not told to someone guessing
    if (!row) throw new TenantryError('DECRYPT_FAILED', 'The ciphertext does not decrypt for this tenant and context: it was altered, belongs to another tenant, or its key was destroyed.');
    return this.unwrapRow(kms, tenantId, row);
  }

  private async unwrapRow(kms: Kms, tenantId: string, row: KeyRow): Promise<Buffer> {
    const plain = await kms.unwrap(asWrapped(row), dataKeyAad(tenantId, row.version));
    // the cache keeps its own copy, and the caller gets one it zeroes after use: an eviction (which
    // zeroes the cached bytes) between here and the cipher can never hand it an all-zero key
    this.cache.set(tenantId, row.version, plain);
    return plain;
  }
}

function asWrapped(r: KeyRow): WrappedKey {
  return { wrapped: r.wrapped, kekId: r.kek_id, kekVersion: r.kek_version };
}

async function insertKey(sql: Sql | TransactionSql, tenantId: string, version: number, w: WrappedKey, ifAbsent = false): Promise<void> {
  try {
    await sql`
      insert into tenantry_catalog.tenant_data_keys (tenant_id, version, wrapped, kek_id, kek_version)
      values (${tenantId}, ${version}, ${w.wrapped}, ${w.kekId}, ${w.kekVersion})
      ${ifAbsent ? sql`on conflict (tenant_id, version) do nothing` : sql``}`;
  } catch (err) {
    // 23503: the tenant's row is gone (hard-deleted meanwhile): no key outlives its tenant
    if ((err as { code?: string }).code === '23503') throw new TenantryError('TENANT_NOT_FOUND', `Tenant ${tenantId} was removed.`, { tenantId });
    throw err;
  }
}

/**
 * Crypto-shredding: removes every wrapped data key of a tenant, inside the hard delete's transaction.
 * Returns how many were destroyed (recorded in the hard delete's audit entry).
 */
export async function shredTenantKeys(tx: TransactionSql, tenantId: string): Promise<number> {
  const r = await tx`delete from tenantry_catalog.tenant_data_keys where tenant_id = ${tenantId}`;
  return r.count;
}

function plaintextBytes(p: unknown): Buffer {
  if (typeof p === 'string') {
    const b = Buffer.from(p, 'utf8');
    if (b.length > MAX_PLAINTEXT_BYTES) throw new TenantryError('INVALID_INPUT', `A plaintext is at most ${MAX_PLAINTEXT_BYTES} bytes; keep larger values in object storage.`, { field: 'plaintext' });
    return b;
  }
  if (p instanceof Uint8Array) {
    if (p.length > MAX_PLAINTEXT_BYTES) throw new TenantryError('INVALID_INPUT', `A plaintext is at most ${MAX_PLAINTEXT_BYTES} bytes; keep larger values in object storage.`, { field: 'plaintext' });
    return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  }
  throw new TenantryError('INVALID_INPUT', 'encrypt() takes the plaintext as a string or a Buffer.', { field: 'plaintext' });
}

function contextBytes(opts: CryptoOptions | undefined): Buffer {
  if (opts === undefined || opts === null) return Buffer.alloc(0);
  if (typeof opts !== 'object') throw new TenantryError('INVALID_INPUT', 'The options are { context?: string }.');
  const c = opts.context;
  if (c === undefined) return Buffer.alloc(0);
  if (typeof c !== 'string') throw new TenantryError('INVALID_INPUT', 'context must be a string.', { field: 'context' });
  const b = Buffer.from(c, 'utf8');
  if (b.length > MAX_CONTEXT_BYTES) throw new TenantryError('INVALID_INPUT', `context is at most ${MAX_CONTEXT_BYTES} bytes of UTF-8.`, { field: 'context' });
  return b;
}
