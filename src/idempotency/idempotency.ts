import { createHash } from 'node:crypto';
import type { Sql } from 'postgres';
import { TenantryError } from '../errors.js';

export const SECRET_NOT_REPLAYED = '[shown once: not stored for replays]';
const SECRET_FIELDS = new Set(['key', 'apiKey', 'token', 'secret', 'password']);

function withoutSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutSecrets);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) =>
      [k, SECRET_FIELDS.has(k) && typeof v === 'string' ? SECRET_NOT_REPLAYED : withoutSecrets(v)]));
  }
  return value;
}

export type IdempotencyClaim =
  | { state: 'new' }
  | { state: 'replay'; status: number; response: unknown }
  | { state: 'in-progress' };

const TTL = '24 hours';

/**
 * Request idempotency for the HTTP API: the first request with a key claims it, its response is
 * stored, and a replay within 24 hours gets that response without doing anything twice. A key reused
 * with a different request is refused rather than silently answered with another request's result.
 */
export class IdempotencyStore {
  constructor(private readonly sql: Sql) {}

  static validateKey(key: string): string {
    if (key.length < 1 || key.length > 255 || !/^[\x21-\x7e]+$/.test(key)) {
      throw new TenantryError('INVALID_INPUT', 'Idempotency-Key must be 1-255 printable ASCII characters without spaces.');
    }
    return key;
  }

  static fingerprint(method: string, path: string, body: unknown): string {
    return createHash('sha256').update(`${method} ${path}\n${JSON.stringify(body ?? null)}`).digest('hex');
  }

  async claim(principal: string, key: string, method: string, path: string, bodySha256: string): Promise<IdempotencyClaim> {
    // an expired entry is released first, so the key can be used again
    await this.sql`delete from tenantry_catalog.http_idempotency where principal = ${principal} and idempotency_key = ${key} and created_at < now() - ${TTL}::interval`;
    const inserted = await this.sql`
      insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256)
      values (${principal}, ${key}, ${method}, ${path}, ${bodySha256}) on conflict do nothing returning 1`;
    if (inserted.length) return { state: 'new' };
    const [row] = await this.sql<{ method: string; path: string; body_sha256: string; status: number | null; response: unknown }[]>`
      select method, path, body_sha256, status, response from tenantry_catalog.http_idempotency
      where principal = ${principal} and idempotency_key = ${key}`;
    if (!row) return this.claim(principal, key, method, path, bodySha256);
    if (row.method !== method || row.path !== path || row.body_sha256 !== bodySha256) {
      throw new TenantryError('IDEMPOTENCY_KEY_REUSED', `Idempotency-Key ${JSON.stringify(key)} was used for a different request (${row.method} ${row.path}); use a new key.`);
    }
    if (row.status === null) return { state: 'in-progress' };
    return { state: 'replay', status: row.status, response: row.response };
  }

  /**
   * Stores the response for replays, without its secrets: a new API key or invitation token is shown
   * once and kept nowhere in plaintext, so a replay returns the rest of the response with the secret
   * replaced by a marker (rotate the key if the first response was lost).
   */
  async complete(principal: string, key: string, status: number, response: unknown): Promise<void> {
    await this.sql`
      update tenantry_catalog.http_idempotency set status = ${status}, response = ${this.sql.json((withoutSecrets(response) ?? null) as never)}
      where principal = ${principal} and idempotency_key = ${key}`;
  }

  /** A request that failed on the server side releases its key, so the client can retry. */
  async release(principal: string, key: string): Promise<void> {
    await this.sql`delete from tenantry_catalog.http_idempotency where principal = ${principal} and idempotency_key = ${key} and status is null`;
  }

  async purgeExpired(): Promise<number> {
    const rows = await this.sql`delete from tenantry_catalog.http_idempotency where created_at < now() - ${TTL}::interval returning 1`;
    return rows.length;
  }
}
