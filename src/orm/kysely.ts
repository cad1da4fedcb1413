/**
 * `tenantry/kysely`: a Kysely instance bound to one tenant, on withTenant's transaction (through
 * kysely-postgres-js).
 *
 *   import { tenantKysely } from 'tenantry/kysely';
 *   const rows = await tenantKysely<DB, Agent[]>(tenantry, 'acme', (db) => db.selectFrom('agents').selectAll().execute());
 *
 * Everything `db` runs is inside the tenant's walls; `fn`'s result is committed when it resolves and
 * rolled back when it throws. `db.transaction().execute(...)` runs as a savepoint of that transaction.
 * Needs `kysely` and `kysely-postgres-js` installed (optional peer dependencies of Tenantry).
 */
import { Kysely, type KyselyConfig } from 'kysely';
import { PostgresJSDialect } from 'kysely-postgres-js';
import type { Tenantry } from '../tenantry.js';
import { TenantryError } from '../errors.js';

/** Kysely's config without its dialect (the tenant's transaction is the dialect's client). */
export type TenantKyselyConfig = Omit<KyselyConfig, 'dialect'>;

/** Runs `fn` with a Kysely instance bound to `tenant` (id or slug), in one transaction. */
export async function tenantKysely<DB, T>(
  tenantry: Pick<Tenantry, 'withTenant'>,
  tenant: string,
  fn: (db: Kysely<DB>) => Promise<T>,
  config?: TenantKyselyConfig,
): Promise<T> {
  if (typeof fn !== 'function') throw new TenantryError('INVALID_INPUT', 'tenantKysely(tenantry, tenant, fn, config?) needs a function: (db) => Promise<result>.');
  if (config !== undefined && (config === null || typeof config !== 'object' || Array.isArray(config) || 'dialect' in config)) {
    throw new TenantryError('INVALID_INPUT', 'tenantKysely\'s config is Kysely\'s config without a dialect ({ plugins, log }), or left out: the tenant\'s transaction is the dialect.');
  }
  return tenantry.withTenant(tenant, (sql) => fn(new Kysely<DB>({ ...config, dialect: new PostgresJSDialect({ postgres: sql as never }) })));
}
