/**
 * Every error Tenantry raises is a TenantryError with a stable `code` from this registry, the HTTP
 * status that goes with it, and a message a person can act on. A retired code is never reused.
 */
export const ERROR_CODES = {
  INVALID_INPUT: { status: 400, title: 'The input is not valid' },
  INVALID_SLUG: { status: 400, title: 'The slug is not valid' },
  INVALID_TIER: { status: 400, title: 'Unknown tier' },
  INVALID_ISOLATION: { status: 400, title: 'Unknown isolation mode' },
  INVALID_CONFIG: { status: 500, title: 'Tenantry is misconfigured' },
  TENANT_NOT_FOUND: { status: 404, title: 'Tenant not found' },
  TENANT_SUSPENDED: { status: 403, title: 'Tenant is suspended' },
  TENANT_DELETED: { status: 410, title: 'Tenant is deleted' },
  TENANT_NOT_READY: { status: 409, title: 'Tenant is still being provisioned' },
  INVALID_TRANSITION: { status: 409, title: 'That lifecycle change is not allowed now' },
  SLUG_TAKEN: { status: 409, title: 'Slug already taken' },
  PROVISIONING_FAILED: { status: 500, title: 'Provisioning failed and was rolled back' },
  MIGRATION_FAILED: { status: 500, title: 'A migration failed' },
  MIGRATION_IN_PROGRESS: { status: 409, title: 'Another migration run is in progress' },
  MIGRATION_CHECKSUM_MISMATCH: { status: 500, title: 'An applied migration was edited' },
  NAMESPACE_IN_USE: { status: 409, title: 'The namespace belongs to another installation' },
  INSUFFICIENT_PRIVILEGE: { status: 500, title: 'The database user lacks a privilege Tenantry needs' },
  CONNECTION_BUDGET_EXHAUSTED: { status: 503, title: 'No tenant connection could be had in time' },
  CLOSED: { status: 500, title: 'This Tenantry instance is closed' },
  QUOTA_EXCEEDED: { status: 429, title: 'Quota exceeded' },
  RATE_LIMITED: { status: 429, title: 'Rate limited' },
  FORBIDDEN: { status: 403, title: 'Forbidden' },
  UNAUTHORIZED: { status: 401, title: 'Missing or invalid credentials' },
  INVALID_API_KEY: { status: 401, title: 'The API key is not valid' },
  API_KEY_REVOKED: { status: 401, title: 'The API key was revoked' },
  API_KEY_EXPIRED: { status: 401, title: 'The API key has expired' },
  API_KEY_NOT_FOUND: { status: 404, title: 'API key not found' },
  MEMBER_NOT_FOUND: { status: 404, title: 'Member not found' },
  MEMBER_EXISTS: { status: 409, title: 'Already a member' },
  LAST_OWNER: { status: 409, title: 'A tenant must keep at least one owner' },
  INVITATION_NOT_FOUND: { status: 404, title: 'Invitation not found' },
  INVITATION_EXPIRED: { status: 410, title: 'The invitation has expired' },
  SQL_ERROR: { status: 400, title: 'The SQL statement failed' },
  SQL_TIMEOUT: { status: 408, title: 'The SQL statement timed out' },
  SQL_NOT_ALLOWED: { status: 403, title: 'The SQL endpoint does not run that statement or function' },
  SQL_RESULT_TOO_LARGE: { status: 422, title: 'The SQL statement\'s result is larger than the endpoint serves' },
  IDEMPOTENCY_KEY_REUSED: { status: 422, title: 'Idempotency key reused for another request' },
  IDEMPOTENCY_IN_PROGRESS: { status: 409, title: 'A request with this idempotency key is still running' },
  IDEMPOTENCY_RESULT_LOST: { status: 409, title: 'The request with this idempotency key committed, but its answer was lost' },
  INVITATION_CLOSED: { status: 409, title: 'The invitation was already accepted or revoked' },
  INVALID_PLANS: { status: 400, title: 'The plan file is not valid' },
  PLAN_TIER_IN_USE: { status: 409, title: 'The plans remove a tier that tenants are on' },
  PLAN_METRIC_HAS_USAGE: { status: 409, title: 'The plans remove or redefine a metric with recorded usage' },
  DATABASE_UNAVAILABLE: { status: 503, title: 'PostgreSQL is unreachable right now' },
  PROVISIONING_INCOMPLETE: { status: 503, title: 'Provisioning failed and its rollback has not finished yet' },
  REQUEST_TIMEOUT: { status: 503, title: 'The request did not finish within its deadline' },
  RATE_LIMITER_UNAVAILABLE: { status: 503, title: 'The rate limiter\'s Redis is unreachable right now' },
  WEBHOOK_URL_INVALID: { status: 400, title: 'The webhook URL is not a reachable http(s) URL' },
  WEBHOOK_URL_FORBIDDEN: { status: 400, title: 'The webhook URL points at a private, loopback or link-local address' },
  WEBHOOK_NOT_FOUND: { status: 404, title: 'Webhook endpoint not found' },
  WEBHOOK_SIGNATURE_INVALID: { status: 401, title: 'The webhook signature does not verify' },
  JOB_UNKNOWN: { status: 400, title: 'Unknown job' },
  BACKUP_NOT_FOUND: { status: 404, title: 'Backup not found' },
  BACKUP_INVALID: { status: 422, title: 'The backup is corrupted, truncated or tampered with; nothing was restored' },
  BACKUP_TOO_NEW: { status: 409, title: 'The backup was taken at a newer tenant migration version than this installation has' },
  RESTORE_CONFIRMATION_REQUIRED: { status: 400, title: 'Restoring over a tenant replaces its data: confirm it' },
  TENANT_MOVING: { status: 409, title: 'The tenant is being moved; writes are refused for a moment, retry shortly' },
  MOVE_NOT_NEEDED: { status: 409, title: 'The tenant is already in that isolation mode' },
  MOVE_IN_PROGRESS: { status: 409, title: 'The tenant is already being moved' },
  MOVE_FAILED: { status: 500, title: 'The move failed and was undone; the tenant stays where it was' },
  MOVE_CANCELLED: { status: 409, title: 'The move was cancelled and undone; the tenant stays where it was' },
  MOVE_NOT_FOUND: { status: 404, title: 'Move not found' },
  DECRYPT_FAILED: { status: 422, title: 'The ciphertext does not decrypt for this tenant and context' },
  ENCRYPTION_NOT_CONFIGURED: { status: 501, title: 'Encryption needs a master key (TENANTRY_MASTER_KEY) or a KMS' },
  KMS_UNAVAILABLE: { status: 503, title: 'The key-management service is unreachable or refused the request' },
  KEY_UNAVAILABLE: { status: 500, title: 'A data key is wrapped by a key-encryption key this process does not hold' },
  CACHE_NOT_CONFIGURED: { status: 501, title: 'The tenant cache needs Redis (REDIS_URL)' },
  CACHE_UNAVAILABLE: { status: 503, title: 'The cache\'s Redis is unreachable right now' },
  OBJECT_STORE_NOT_CONFIGURED: { status: 501, title: 'Object storage needs a bucket (TENANTRY_OBJECT_STORE_BUCKET)' },
  OBJECT_STORE_UNAVAILABLE: { status: 503, title: 'The object store is unreachable right now' },
  OBJECT_NOT_FOUND: { status: 404, title: 'Object not found' },
  DOMAIN_INVALID: { status: 400, title: 'The domain name is not valid' },
  DOMAIN_TAKEN: { status: 409, title: 'The domain is verified by another tenant' },
  DOMAIN_NOT_FOUND: { status: 404, title: 'Domain not found' },
  DOMAIN_VERIFICATION_FAILED: { status: 422, title: 'The domain\'s ownership could not be verified' },
  DOMAIN_LIMIT_REACHED: { status: 409, title: 'The tenant holds as many domains as allowed' },
  BILLING_NOT_CONFIGURED: { status: 404, title: 'Billing is not configured (STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET)' },
  BILLING_CUSTOMER_TAKEN: { status: 409, title: 'The billing customer id belongs to another tenant' },
  BILLING_SIGNATURE_INVALID: { status: 400, title: 'The billing webhook signature does not verify' },
  BILLING_PROVIDER_FAILED: { status: 502, title: 'The billing provider refused or failed the request' },
  OPERATION_NOT_FOUND: { status: 404, title: 'Operation not found' },
  OPERATION_INTERRUPTED: { status: 500, title: 'The operation was interrupted too many times (its process kept dying); what it did was undone' },
  WEBHOOK_DELIVERY_NOT_FOUND: { status: 404, title: 'Webhook delivery not found' },
  WEBHOOK_DELIVERY_PENDING: { status: 409, title: 'The webhook delivery is still being attempted; redeliver it once it has succeeded or failed' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TenantryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TenantryError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, status: this.status, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export function isTenantryError(err: unknown, code?: ErrorCode): err is TenantryError {
  return err instanceof TenantryError && (code === undefined || err.code === code);
}

/**
 * The one table of faults that mean "PostgreSQL cannot be reached right now" rather than "this request
 * is wrong": connection-class SQLSTATEs, a server shutting down or starting up, and the driver's and
 * the network's own error codes. Each becomes DATABASE_UNAVAILABLE (503, retryable) instead of a 500.
 */
export const DATABASE_UNAVAILABLE_ERRORS: { sqlstateClasses: readonly string[]; sqlstates: readonly string[]; codes: readonly string[] } = {
  // 08: connection exception (08000, 08003, 08006, 08001, 08004, ...)
  sqlstateClasses: ['08'],
  // admin_shutdown, crash_shutdown, cannot_connect_now (starting up or in recovery), too_many_connections
  sqlstates: ['57P01', '57P02', '57P03', '53300'],
  // node's socket errors and postgres.js's connection errors
  codes: ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND',
    'CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT'],
};

/** Whether `err` (or its cause, or any error of an AggregateError) is in DATABASE_UNAVAILABLE_ERRORS. */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 4) return false;
  if (err instanceof TenantryError) return err.code === 'DATABASE_UNAVAILABLE';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    const t = DATABASE_UNAVAILABLE_ERRORS;
    if (/^[0-9A-Z]{5}$/.test(code) && (t.sqlstates.includes(code) || t.sqlstateClasses.includes(code.slice(0, 2)))) return true;
    if (t.codes.includes(code)) return true;
  }
  const nested = (err as { errors?: unknown }).errors;
  if (Array.isArray(nested) && nested.some((e) => isDatabaseUnavailable(e, depth + 1))) return true;
  return isDatabaseUnavailable((err as { cause?: unknown }).cause, depth + 1);
}

/** Seconds a client should wait before retrying after DATABASE_UNAVAILABLE. */
export const DATABASE_RETRY_AFTER_SECONDS = 2;

/** `err` as DATABASE_UNAVAILABLE when it is a connection-class fault, else unchanged. */
export function translateDatabaseError(err: unknown): unknown {
  if (err instanceof TenantryError || !isDatabaseUnavailable(err)) return err;
  const code = (err as { code?: unknown }).code;
  return new TenantryError('DATABASE_UNAVAILABLE', `PostgreSQL is unreachable right now (${typeof code === 'string' ? code : 'connection lost'}); retry in a few seconds.`,
    { retryAfterSeconds: DATABASE_RETRY_AFTER_SECONDS }, { cause: err });
}
