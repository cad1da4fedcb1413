import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';

/**
 * The ciphertext format of tenantry.crypto (version 1), all integers big-endian:
 *
 *   [0]       format version (1)
 *   [1..4]    the tenant's data-key version that encrypted it
 *   [5..16]   96-bit random nonce
 *   [17..n-16] AES-256-GCM ciphertext
 *   [n-16..n] GCM tag (128 bits)
 *
 * The additional authenticated data is the 5-byte header, the tenant's id (16 bytes) and the caller's
 * context (length-prefixed UTF-8): a ciphertext copied into another tenant's row, or decrypted with
 * another context or a rewritten key version, fails its tag instead of decrypting.
 */
export const CIPHERTEXT_VERSION = 1;
const HEADER = 5;
const NONCE = 12;
const TAG = 16;
export const CIPHERTEXT_OVERHEAD = HEADER + NONCE + TAG;
/** The largest plaintext one call takes (64 MiB): bigger values belong in object storage. */
export const MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;
/** The longest context (UTF-8 bytes). */
export const MAX_CONTEXT_BYTES = 1024;

function uuidBytes(id: string): Buffer {
  return Buffer.from(id.replace(/-/g, ''), 'hex');
}

export function additionalData(header: Buffer, tenantId: string, context: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(context.length);
  return Buffer.concat([header, uuidBytes(tenantId), len, context]);
}

/** What a wrapped data key is bound to at the KMS: its tenant and version. */
export function dataKeyAad(tenantId: string, version: number): Buffer {
  return Buffer.from(`tenantry-dek:v1:${tenantId}:${version}`, 'utf8');
}

export function sealWith(key: Buffer, keyVersion: number, tenantId: string, plaintext: Buffer, context: Buffer): Buffer {
  const header = Buffer.alloc(HEADER);
  header[0] = CIPHERTEXT_VERSION;
  header.writeUInt32BE(keyVersion, 1);
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(additionalData(header, tenantId, context));
  return Buffer.concat([header, nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** The key version a ciphertext names, or DECRYPT_FAILED when it is not a ciphertext of this format. */
export function ciphertextKeyVersion(ct: Buffer): number {
  if (ct.length < CIPHERTEXT_OVERHEAD || ct[0] !== CIPHERTEXT_VERSION) {
    throw new TenantryError('DECRYPT_FAILED', `Not a Tenantry ciphertext (format ${CIPHERTEXT_VERSION}, at least ${CIPHERTEXT_OVERHEAD} bytes); nothing was decrypted.`);
  }
  const v = ct.readUInt32BE(1);
  if (v < 1) throw new TenantryError('DECRYPT_FAILED', 'The ciphertext names no key version; nothing was decrypted.');
  return v;
}

export function openWith(key: Buffer, tenantId: string, ct: Buffer, context: Buffer): Buffer {
  const header = ct.subarray(0, HEADER);
  try {
    const d = createDecipheriv('aes-256-gcm', key, ct.subarray(HEADER, HEADER + NONCE));
    d.setAAD(additionalData(header, tenantId, context));
    d.setAuthTag(ct.subarray(ct.length - TAG));
    return Buffer.concat([d.update(ct.subarray(HEADER + NONCE, ct.length - TAG)), d.final()]);
  } catch (err) {
    throw new TenantryError('DECRYPT_FAILED', 'The ciphertext does not decrypt for this tenant and context: it was altered, belongs to another tenant, or was sealed with another context.', undefined, { cause: err });
  }
}
