import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';

/** A data key wrapped by a key-encryption key, as stored in tenantry_catalog.tenant_data_keys. */
export interface WrappedKey {
  /** the KMS's opaque text */
  wrapped: string;
  /** which key-encryption key wrapped it (local: `local:<fingerprint>`, Vault: `vault:<key name>`) */
  kekId: string;
  /** that key's version at the KMS (local keys: 1) */
  kekVersion: number;
}

/**
 * The seam to a key-management service: it wraps and unwraps tenants' data keys with a
 * key-encryption key that never leaves it (or, for the local KMS, never leaves this process's
 * memory). `aad` binds a wrapped key to the tenant and version it belongs to, where the KMS supports
 * it, so a wrapped key copied into another tenant's row does not unwrap there.
 */
export interface Kms {
  /** `local` or `vault-transit` */
  readonly kind: string;
  wrap(dataKey: Buffer, aad: Buffer): Promise<WrappedKey>;
  unwrap(key: WrappedKey, aad: Buffer): Promise<Buffer>;
  /** The same data key wrapped by the current key-encryption key (its plaintext may never leave the KMS). */
  rewrap(key: WrappedKey, aad: Buffer): Promise<WrappedKey>;
  /** Whether `key` is wrapped by an older key-encryption key than the current one (rotate-master redoes those). */
  isStale(key: WrappedKey): Promise<boolean>;
  close?(): Promise<void>;
}

/** A key's public name: the first 8 bytes of an HMAC under it, so two keys never share a name by accident. */
export function masterKeyFingerprint(key: Buffer): string {
  return createHmac('sha256', key).update('tenantry-kek-id', 'utf8').digest('hex').slice(0, 16);
}

const LOCAL_PREFIX = 'local:';

/**
 * The default KMS: a master key held in this process (TENANTRY_MASTER_KEY), AES-256-GCM. Older master
 * keys (TENANTRY_MASTER_KEY_PREVIOUS) still unwrap what they wrapped until `keys rotate-master` has
 * re-wrapped every data key under the current one; each wrapped key names its master key by fingerprint.
 */
export class LocalKms implements Kms {
  readonly kind = 'local';
  private readonly current: { id: string; key: Buffer };
  private readonly byId = new Map<string, Buffer>();

  constructor(masterKey: Buffer, previous: Buffer[] = []) {
    this.current = { id: `${LOCAL_PREFIX}${masterKeyFingerprint(masterKey)}`, key: Buffer.from(masterKey) };
    this.byId.set(this.current.id, this.current.key);
    for (const k of previous) this.byId.set(`${LOCAL_PREFIX}${masterKeyFingerprint(k)}`, Buffer.from(k));
  }

  async wrap(dataKey: Buffer, aad: Buffer): Promise<WrappedKey> {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.current.key, nonce);
    c.setAAD(aad);
    const body = Buffer.concat([nonce, c.update(dataKey), c.final(), c.getAuthTag()]);
    return { wrapped: `${this.current.id}:${body.toString('base64')}`, kekId: this.current.id, kekVersion: 1 };
  }

  async unwrap(key: WrappedKey, aad: Buffer): Promise<Buffer> {
    const kek = this.byId.get(key.kekId);
    if (!kek) {
      throw new TenantryError('KEY_UNAVAILABLE', `A data key is wrapped by master key ${key.kekId}, which this process does not hold. Set it in TENANTRY_MASTER_KEY_PREVIOUS until \`tenantry keys rotate-master\` has re-wrapped every data key.`, { kekId: key.kekId });
    }
    const prefix = `${key.kekId}:`;
    const body = key.wrapped.startsWith(prefix) ? Buffer.from(key.wrapped.slice(prefix.length), 'base64') : Buffer.alloc(0);
    if (body.length !== 12 + 32 + 16) throw new TenantryError('DECRYPT_FAILED', 'A wrapped data key is malformed; it cannot be unwrapped.');
    try {
      const d = createDecipheriv('aes-256-gcm', kek, body.subarray(0, 12));
      d.setAAD(aad);
      d.setAuthTag(body.subarray(44));
      return Buffer.concat([d.update(body.subarray(12, 44)), d.final()]);
    } catch (err) {
      throw new TenantryError('DECRYPT_FAILED', 'A wrapped data key does not unwrap under its master key (altered, or moved from another tenant\'s row).', undefined, { cause: err });
    }
  }

  async rewrap(key: WrappedKey, aad: Buffer): Promise<WrappedKey> {
    const plain = await this.unwrap(key, aad);
    try {
      return await this.wrap(plain, aad);
    } finally {
      plain.fill(0);
    }
  }

  async isStale(key: WrappedKey): Promise<boolean> {
    return key.kekId !== this.current.id;
  }

  /** The current master key's id (`local:<fingerprint>`). */
  get currentKekId(): string {
    return this.current.id;
  }

  async close(): Promise<void> {
    for (const k of this.byId.values()) k.fill(0);
  }
}
