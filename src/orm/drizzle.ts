/**
 * `tenantry/drizzle`: a Drizzle database bound to one tenant, on withTenant's transaction.
 *
 *   import { tenantDrizzle } from 'tenantry/drizzle';
 *   const rows = await tenantDrizzle(tenantry, 'acme', (db) => db.select().from(agents), { schema });
 *
 * Everything `db` runs is inside the tenant's walls (its role, search_path and RLS context); `fn`'s
 * result is committed when it resolves and rolled back when it throws. `db.transaction()` is a
 * savepoint of that transaction (nested ones too); Drizzle's own date handling applies (`timestamp`,
 * `date` and `interval` as Drizzle converts them). Needs `drizzle-orm` installed (an optional peer
 * dependency of Tenantry).
 */
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import type { DrizzleConfig } from 'drizzle-orm';
import type { Sql } from 'postgres';
import type { Tenantry } from '../tenantry.js';
import { TenantryError } from '../errors.js';

export type TenantDrizzle<TSchema extends Record<string, unknown> = Record<string, never>> = PostgresJsDatabase<TSchema>;

/** Runs `fn` with a Drizzle database bound to `tenant` (id or slug), in one transaction. */
export async function tenantDrizzle<T, TSchema extends Record<string, unknown> = Record<string, never>>(
  tenantry: Pick<Tenantry, 'withTenant'>,
  tenant: string,
  fn: (db: TenantDrizzle<TSchema>) => Promise<T>,
  config?: DrizzleConfig<TSchema>,
): Promise<T> {
  if (typeof fn !== 'function') throw new TenantryError('INVALID_INPUT', 'tenantDrizzle(tenantry, tenant, fn, config?) needs a function: (db) => Promise<result>.');
  if (config !== undefined && (config === null || typeof config !== 'object' || Array.isArray(config))) {
    throw new TenantryError('INVALID_INPUT', 'tenantDrizzle\'s config is Drizzle\'s config object ({ schema, casing, logger }), or left out.');
  }
  // withTenant's transaction is usable unmodified as a postgres.js client (src/isolation/orm-compat.ts)
  return tenantry.withTenant(tenant, (sql) => fn(config === undefined ? drizzle(sql as unknown as Sql) : drizzle(sql as unknown as Sql, config)));
}
