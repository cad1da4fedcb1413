import { TenantryError } from './errors.js';

/**
 * The one helper that puts an identifier into SQL. Every identifier Tenantry builds (database,
 * schema, role, table names) is derived from a tenant id or from Tenantry's own fixed names, never
 * from user input; names from configuration (the catalog database) are quoted the same way.
 */
export function ident(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 63 || name.includes('\0')) {
    throw new TenantryError('INVALID_INPUT', `Refusing to use ${JSON.stringify(name)} as an SQL identifier.`);
  }
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal for the few utility statements that cannot take bound parameters (CREATE ROLE ... PASSWORD). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new TenantryError('INVALID_INPUT', 'NUL byte in SQL literal.');
  return `'${value.replace(/'/g, "''")}'`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/** Names of a tenant's PostgreSQL objects: derived from its id only, so no catalog visible to every role reveals a customer. */
export function tenantObjectNames(namespace: string, tenantId: string): { role: string; schema: string; database: string } {
  if (!isUuid(tenantId)) throw new TenantryError('INVALID_INPUT', `Not a tenant id: ${JSON.stringify(tenantId)}.`);
  const hex = tenantId.replace(/-/g, '');
  return { role: `${namespace}_t_${hex}`, schema: `t_${hex}`, database: `${namespace}_t_${hex}` };
}

export function tenantIdFromHex(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export const SLUG_RULE = 'a slug is 3-63 characters of lowercase letters, digits and hyphens, with no leading, trailing or doubled hyphen';
const SLUG = /^[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]$/;

export function validateSlug(slug: unknown): string {
  if (typeof slug !== 'string' || !SLUG.test(slug) || slug.includes('--')) {
    throw new TenantryError('INVALID_SLUG', `Invalid slug ${JSON.stringify(slug)}: ${SLUG_RULE} (e.g. "acme-corp").`, { slug });
  }
  return slug;
}
