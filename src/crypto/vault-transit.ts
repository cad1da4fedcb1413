import { TenantryError } from '../errors.js';
import type { Kms, WrappedKey } from './kms.js';

export interface VaultTransitOptions {
  /** Vault's address, e.g. https://vault.internal:8200 */
  address: string;
  /** a token allowed encrypt, decrypt and rewrap on the key, and read on transit/keys/<key> */
  token: string;
  /** the transit key's name */
  key: string;
  /** where the transit engine is mounted; default `transit` */
  mount?: string;
  /** Vault Enterprise namespace (X-Vault-Namespace) */
  namespace?: string;
  /** per-request timeout, ms; default 10000 */
  timeoutMs?: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const MOUNT = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$/;
const VAULT_CIPHERTEXT = /^vault:v([0-9]{1,9}):[A-Za-z0-9+/=]+$/;

/**
 * Vault's transit engine as the KMS, over its plain HTTP API (no client library): the data keys are
 * wrapped by `POST /v1/<mount>/encrypt/<key>`, unwrapped by `/decrypt/<key>`, and re-wrapped under
 * the newest key version by `/rewrap/<key>` without their plaintext leaving Vault. The key-encryption
 * key never leaves Vault. Vault's plain transit keys take no associated data, so the binding to the
 * tenant is the ciphertexts' own (every ciphertext authenticates its tenant id and key version).
 */
export class VaultTransitKms implements Kms {
  readonly kind = 'vault-transit';
  private readonly base: string;
  private readonly kekId: string;
  private readonly timeoutMs: number;

  constructor(private readonly o: VaultTransitOptions) {
    let url: URL;
    try {
      url = new URL(o.address);
    } catch {
      throw new TenantryError('INVALID_CONFIG', `TENANTRY_VAULT_ADDR must be an http(s) URL such as https://vault.internal:8200, got ${JSON.stringify(o.address)}.`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TenantryError('INVALID_CONFIG', `TENANTRY_VAULT_ADDR must be http(s), got ${url.protocol}.`);
    if (!o.token) throw new TenantryError('INVALID_CONFIG', 'TENANTRY_VAULT_TOKEN is needed with TENANTRY_KMS=vault: a token allowed encrypt, decrypt and rewrap on the transit key.');
    if (!NAME.test(o.key)) throw new TenantryError('INVALID_CONFIG', `TENANTRY_VAULT_TRANSIT_KEY must be a transit key name ([A-Za-z0-9_.-]), got ${JSON.stringify(o.key)}.`);
    const mount = (o.mount ?? 'transit').replace(/^\/+|\/+$/g, '');
    if (!MOUNT.test(mount) || mount.includes('..')) throw new TenantryError('INVALID_CONFIG', `TENANTRY_VAULT_TRANSIT_MOUNT must be a mount path, got ${JSON.stringify(o.mount)}.`);
    this.base = `${url.origin}${url.pathname.replace(/\/+$/, '')}/v1/${mount}`;
    this.kekId = `vault:${mount}/${o.key}`;
    this.timeoutMs = o.timeoutMs ?? 10_000;
  }

  private async call(method: 'GET' | 'POST', op: string, body?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const headers: Record<string, string> = { 'x-vault-token': this.o.token, 'content-type': 'application/json' };
    if (this.o.namespace) headers['x-vault-namespace'] = this.o.namespace;
    let res: Response;
    try {
      res = await fetch(`${this.base}/${op}/${encodeURIComponent(this.o.key)}`, {
        method, headers, body: body ? JSON.stringify(body) : undefined, signal: AbortSignal.timeout(this.timeoutMs), redirect: 'error',
      });
    } catch (err) {
      // never the token, never the body: only what failed
      throw new TenantryError('KMS_UNAVAILABLE', `Vault transit (${op}) could not be reached: ${(err as Error).name}; retry shortly.`, { retryAfterSeconds: 2 }, { cause: err });
    }
    const text = await res.text().catch(() => '');
    let json: { data?: Record<string, unknown>; errors?: unknown } = {};
    try { json = text ? JSON.parse(text) as typeof json : {}; } catch { /* an HTML error page */ }
    if (!res.ok) {
      const errors = Array.isArray(json.errors) ? json.errors.filter((e) => typeof e === 'string').join('; ').slice(0, 300) : '';
      if (op === 'decrypt' && res.status === 400) {
        throw new TenantryError('DECRYPT_FAILED', `Vault transit refused to unwrap a data key (${errors || res.status}).`);
      }
      throw new TenantryError('KMS_UNAVAILABLE', `Vault transit ${op} answered ${res.status}${errors ? `: ${errors}` : ''}. Check the token's policy and the key name.`, { status: res.status, retryAfterSeconds: 2 });
    }
    if (!json.data || typeof json.data !== 'object') throw new TenantryError('KMS_UNAVAILABLE', `Vault transit ${op} answered without data.`);
    return json.data;
  }

  private wrapped(data: Record<string, unknown>): WrappedKey {
    const ct = data.ciphertext;
    const m = typeof ct === 'string' ? VAULT_CIPHERTEXT.exec(ct) : null;
    if (!m) throw new TenantryError('KMS_UNAVAILABLE', 'Vault transit answered a ciphertext in an unknown form.');
    return { wrapped: ct as string, kekId: this.kekId, kekVersion: Number(m[1]) };
  }

  async wrap(dataKey: Buffer): Promise<WrappedKey> {
    return this.wrapped(await this.call('POST', 'encrypt', { plaintext: dataKey.toString('base64') }));
  }

  async unwrap(key: WrappedKey): Promise<Buffer> {
    if (key.kekId !== this.kekId) {
      throw new TenantryError('KEY_UNAVAILABLE', `A data key is wrapped by ${key.kekId}; this installation's KMS is ${this.kekId}.`, { kekId: key.kekId });
    }
    const data = await this.call('POST', 'decrypt', { ciphertext: key.wrapped });
    const plain = typeof data.plaintext === 'string' ? Buffer.from(data.plaintext, 'base64') : Buffer.alloc(0);
    if (plain.length !== 32) throw new TenantryError('DECRYPT_FAILED', 'Vault transit unwrapped something that is not a 32-byte data key.');
    return plain;
  }

  async rewrap(key: WrappedKey): Promise<WrappedKey> {
    return this.wrapped(await this.call('POST', 'rewrap', { ciphertext: key.wrapped }));
  }

  private latest: { version: number; at: number } | undefined;

  async isStale(key: WrappedKey): Promise<boolean> {
    if (key.kekId !== this.kekId) return false; // not ours to rewrap: unwrap names the problem
    if (!this.latest || Date.now() - this.latest.at > 30_000) {
      const data = await this.call('GET', 'keys');
      const v = Number(data.latest_version);
      if (!Number.isInteger(v) || v < 1) throw new TenantryError('KMS_UNAVAILABLE', 'Vault transit answered no latest_version for the key.');
      this.latest = { version: v, at: Date.now() };
    }
    return key.kekVersion < this.latest.version;
  }
}
