import { TenantryError } from '../errors.js';

export const ISOLATION_MODES = ['pooled', 'schema', 'database'] as const;
export type Isolation = (typeof ISOLATION_MODES)[number];

/** The built-in (agent platform) tiers; an app's plan file declares its own. */
export const TIERS = ['free', 'starter', 'professional', 'enterprise', 'custom'] as const;
/** A tier name: the app's own when `tenantry plans types` generated them, else the built-in ones. */
export type Tier = import('../plans/plan-types.js').TenantryPlanTypes extends { tier: infer T extends string } ? T : (typeof TIERS)[number];

export const TENANT_STATUSES = ['provisioning', 'active', 'trial', 'suspended', 'deleted'] as const;
export type TenantStatus = (typeof TENANT_STATUSES)[number];

export interface Tenant {
  id: string;
  slug: string;
  name: string;
  status: TenantStatus;
  tier: Tier;
  isolation: Isolation;
  trialEndsAt: Date | null;
  suspendedReason: string | null;
  metadata: Record<string, unknown>;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
  /** the tenant migration version its tables are at */
  schemaVersion: number;
  /** where its rows live: the server (today always 'default') and names derived from the id only */
  placement: { server: string; database: string; schema: string; role: string };
}

export interface TenantRow {
  id: string;
  seq: string;
  slug: string;
  name: string;
  status: TenantStatus;
  tier: Tier;
  isolation: Isolation;
  database_name: string;
  schema_name: string;
  role_name: string;
  /** the server the placement names ('default' until a fleet of servers is configured) */
  server_name?: string;
  metadata: Record<string, unknown>;
  trial_ends_at: Date | null;
  suspended_reason: string | null;
  schema_version: number;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
}

export function toTenant(r: TenantRow): Tenant {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    status: r.status,
    tier: r.tier,
    isolation: r.isolation,
    trialEndsAt: r.trial_ends_at,
    suspendedReason: r.suspended_reason,
    metadata: r.metadata,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    deletedAt: r.deleted_at,
    schemaVersion: r.schema_version,
    placement: { server: r.server_name ?? 'default', database: r.database_name, schema: r.schema_name, role: r.role_name },
  };
}

/** A tier the plans in force declare (`known`, in their order); names are case-insensitive. */
export function validateTier(tier: unknown, known: readonly string[]): Tier {
  const t = typeof tier === 'string' ? tier.toLowerCase() : tier;
  if (typeof t !== 'string' || !known.includes(t)) {
    throw new TenantryError('INVALID_TIER', `Unknown tier ${JSON.stringify(tier)}; use one of ${known.join(', ')}.`, { tier });
  }
  return t as Tier;
}

export function validateIsolation(mode: unknown): Isolation {
  if (typeof mode !== 'string' || !(ISOLATION_MODES as readonly string[]).includes(mode)) {
    throw new TenantryError('INVALID_ISOLATION', `Unknown isolation mode ${JSON.stringify(mode)}; use one of ${ISOLATION_MODES.join(', ')}.`, { isolation: mode });
  }
  return mode as Isolation;
}

export function validateStatus(status: unknown): TenantStatus {
  if (typeof status !== 'string' || !(TENANT_STATUSES as readonly string[]).includes(status)) {
    throw new TenantryError('INVALID_INPUT', `Unknown status ${JSON.stringify(status)}; use one of ${TENANT_STATUSES.join(', ')}.`, { status });
  }
  return status as TenantStatus;
}

export function validateName(name: unknown, fallback?: string): string {
  if (name === undefined && fallback !== undefined) return fallback;
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > 200 || /[\u0000-\u001f]/.test(name)) {
    throw new TenantryError('INVALID_INPUT', `name must be 1-200 printable characters, got ${JSON.stringify(name)}.`, { field: 'name' });
  }
  return name.trim();
}

export function validateMetadata(metadata: unknown): Record<string, unknown> {
  if (metadata === undefined) return {};
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw new TenantryError('INVALID_INPUT', 'metadata must be a JSON object.', { field: 'metadata' });
  }
  let text: string;
  try {
    text = JSON.stringify(metadata);
  } catch {
    throw new TenantryError('INVALID_INPUT', 'metadata must be JSON-serialisable.', { field: 'metadata' });
  }
  if (text.length > 65_536) throw new TenantryError('INVALID_INPUT', 'metadata must be under 64 KiB of JSON.', { field: 'metadata' });
  if (text.includes('\\u0000')) throw new TenantryError('INVALID_INPUT', 'metadata must not contain NUL characters.', { field: 'metadata' });
  return JSON.parse(text) as Record<string, unknown>;
}

export function validateTrialDays(days: unknown): number | undefined {
  if (days === undefined || days === null) return undefined;
  if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > 3650) {
    throw new TenantryError('INVALID_INPUT', `trialDays must be an integer from 1 to 3650, got ${JSON.stringify(days)}.`, { field: 'trialDays' });
  }
  return days;
}

export function validateReason(reason: unknown): string {
  if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > 500) {
    throw new TenantryError('INVALID_INPUT', 'A suspension needs a reason of 1-500 characters.', { field: 'reason' });
  }
  return reason.trim();
}
