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
  /**
   * This request holds the key. `requestId` is the request that first claimed it (run the work under
   * it); `takenOver` says an earlier holder's lease ran out, so its work may have committed already.
   */
  | { state: 'new'; requestId: string; takenOver: boolean }
  | { state: 'replay'; status: number; response: unknown }
  | { state: 'in-progress'; retryAfterSeconds: number };

const TTL = '24 hours';
/** Seconds an in-progress claim lives without a heartbeat from its holder. */
export const DEFAULT_LEASE_SECONDS = 15;

/**
 * Request idempotency for the HTTP API: the first request with a key claims it, its response is
 * stored, and a replay within 24 hours gets that response without doing anything twice. A key reused
 * with a different request is refused rather than silently answered with another request's result.
 *
 * An in-progress claim is a lease that its holder renews (`heartbeat`) while the request runs. A holder
 * that died (kill -9, PostgreSQL gone when it tried to release) stops renewing, and once the lease has
 * run out the next retry takes the claim over instead of being told IDEMPOTENCY_IN_PROGRESS for a day.
 */
export class IdempotencyStore {
  constructor(private readonly sql: Sql, readonly leaseSeconds = DEFAULT_LEASE_SECONDS) {}

  static validateKey(key: string): string {
    if (key.length < 1 || key.length > 255 || !/^[\x21-\x7e]+$/.test(key)) {
      throw new TenantryError('INVALID_INPUT', 'Idempotency-Key must be 1-255 printable ASCII characters without spaces.');
    }
    return key;
  }

  static fingerprint(method: string, path: string, body: unknown): string {
    return createHash('sha256').update(`${method} ${path}\n${JSON.stringify(body ?? null)}`).digest('hex');
  }

  async claim(principal: string, key: string, method: string, path: string, bodySha256: string, requestId: string): Promise<IdempotencyClaim> {
    for (let attempt = 0; ; attempt++) {
      // an expired entry is released first, so the key can be used again
      await this.sql`delete from tenantry_catalog.http_idempotency where principal = ${principal} and idempotency_key = ${key} and created_at < now() - ${TTL}::interval`;
      const inserted = await this.sql`
        insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, locked_until, request_id)
        values (${principal}, ${key}, ${method}, ${path}, ${bodySha256}, now() + make_interval(secs => ${this.leaseSeconds}), ${requestId})
        on conflict do nothing returning 1`;
      if (inserted.length) return { state: 'new', requestId, takenOver: false };
      const [row] = await this.sql<{ method: string; path: string; body_sha256: string; status: number | null; response: unknown; left: number | null; request_id: string | null }[]>`
        select method, path, body_sha256, status, response, request_id,
               extract(epoch from locked_until - now())::float8 as left
        from tenantry_catalog.http_idempotency
        where principal = ${principal} and idempotency_key = ${key}`;
      if (!row) { if (attempt < 3) continue; throw new TenantryError('IDEMPOTENCY_IN_PROGRESS', 'The Idempotency-Key is being claimed and released concurrently; retry shortly.', { retryAfterSeconds: 1 }); }
      if (row.method !== method || row.path !== path || row.body_sha256 !== bodySha256) {
        throw new TenantryError('IDEMPOTENCY_KEY_REUSED', `Idempotency-Key ${JSON.stringify(key)} was used for a different request (${row.method} ${row.path}); use a new key.`);
      }
      if (row.status !== null) return { state: 'replay', status: row.status, response: row.response };
      if (row.left !== null && row.left > 0) return { state: 'in-progress', retryAfterSeconds: Math.max(1, Math.ceil(row.left)) };
      // The holder stopped renewing its lease: it is gone. Take the claim over (one taker wins).
      const [taken] = await this.sql<{ request_id: string | null }[]>`
        update tenantry_catalog.http_idempotency set locked_until = now() + make_interval(secs => ${this.leaseSeconds})
        where principal = ${principal} and idempotency_key = ${key} and status is null
          and (locked_until is null or locked_until <= now())
        returning request_id`;
      if (taken) return { state: 'new', requestId: taken.request_id ?? requestId, takenOver: true };
      if (attempt >= 3) return { state: 'in-progress', retryAfterSeconds: 1 };
    }
  }

  /** Renews the holder's lease; false when the claim is no longer in progress. */
  async heartbeat(principal: string, key: string): Promise<boolean> {
    const rows = await this.sql`
      update tenantry_catalog.http_idempotency set locked_until = now() + make_interval(secs => ${this.leaseSeconds})
      where principal = ${principal} and idempotency_key = ${key} and status is null returning 1`;
    return rows.length > 0;
  }

  /**
   * Ends the holder's lease at once without a stored response: the request was answered before its
   * work finished (its deadline passed), so the next retry takes over and finds what the work did.
   */
  async expire(principal: string, key: string): Promise<void> {
    await this.sql`
      update tenantry_catalog.http_idempotency set locked_until = now()
      where principal = ${principal} and idempotency_key = ${key} and status is null`;
  }

  /**
   * What a request id's earlier holder committed, if anything: every change Tenantry makes appends an
   * audit entry in the change's own transaction, carrying the request id, so a taken-over claim can
   * tell "the work never ran" from "the work committed and only its answer was lost".
   */
  async committedWork(requestId: string): Promise<{ action: string; target: string } | undefined> {
    const [row] = await this.sql<{ action: string; target: string }[]>`
      select action, target from tenantry_catalog.audit_log where request_id = ${requestId} order by id limit 1`;
    return row;
  }

  /**
   * Stores the response for replays, without its secrets: a new API key or invitation token is shown
   * once and kept nowhere in plaintext, so a replay returns the rest of the response with the secret
   * replaced by a marker (rotate the key if the first response was lost).
   */
  async complete(principal: string, key: string, status: number, response: unknown): Promise<void> {
    await this.sql`
      update tenantry_catalog.http_idempotency set status = ${status}, response = ${this.sql.json((withoutSecrets(response) ?? null) as never)}, locked_until = null
      where principal = ${principal} and idempotency_key = ${key}`;
  }

  /**
   * Removes in-progress claims whose holder's lease ran out more than `olderThanSeconds` ago (`repair`):
   * their retries then run afresh. (Until then a retry takes the claim over and can still find what its
   * first request committed.)
   */
  async purgeOrphaned(olderThanSeconds = 0): Promise<number> {
    const rows = await this.sql`
      delete from tenantry_catalog.http_idempotency
      where status is null and (locked_until is null or locked_until < now() - make_interval(secs => ${olderThanSeconds})) returning 1`;
    return rows.length;
  }

  async purgeExpired(): Promise<number> {
    const rows = await this.sql`delete from tenantry_catalog.http_idempotency where created_at < now() - ${TTL}::interval returning 1`;
    return rows.length;
  }
}
