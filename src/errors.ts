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
  IDEMPOTENCY_KEY_REUSED: { status: 422, title: 'Idempotency key reused for another request' },
  IDEMPOTENCY_IN_PROGRESS: { status: 409, title: 'A request with this idempotency key is still running' },
  INVITATION_CLOSED: { status: 409, title: 'The invitation was already accepted or revoked' },
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
