import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { ident, literal } from '../identifiers.js';
import type { Isolation } from '../tenants/model.js';
import { cachedTenantRoleDefaults } from '../installation.js';
import { DEFAULT_SERVER } from '../db/pool-key.js';
import type { IsolationStrategy, TenantPlacement } from './isolation-strategy.js';
import { pooledMode } from './pooled-mode.js';
import { schemaMode } from './schema-mode.js';
import { databaseMode } from './database-mode.js';

/**
 * The isolation modes, one file each (pooled-mode.ts, schema-mode.ts, database-mode.ts) behind one
 * interface (isolation-strategy.ts), and what every mode shares: the tenant's own login role.
 */

export { DEFAULT_SERVER };
export type { IsolationStrategy, TenantPlacement };

export const STRATEGIES: Record<Isolation, IsolationStrategy> = { pooled: pooledMode, schema: schemaMode, database: databaseMode };

/** A tenant's placement from its catalog row (the server it names included). */
export function placementOf(row: { id: string; isolation: Isolation; server_name?: string; database_name: string; schema_name: string; role_name: string }): TenantPlacement {
  return { id: row.id, isolation: row.isolation, server: row.server_name ?? DEFAULT_SERVER, database: row.database_name, schema: row.schema_name, role: row.role_name };
}


/** Creates the tenant's own login role, used as the session user for untrusted SQL. */
export async function createTenantRole(core: Core, t: TenantPlacement, tx?: Sql | TransactionSql): Promise<void> {
  const strategy = STRATEGIES[t.isolation];
  // temp_file_limit where Tenantry may pin it (see tenantRoleDefaults), in the same round trip
  const defaults = Object.entries(await cachedTenantRoleDefaults(core.admin, core.opts.sqlTempFileLimitKb))
    .map(([name, value]) => `alter role ${ident(t.role)} set ${ident(name)} = ${literal(value)};`).join('\n');
  await (tx ?? core.admin).unsafe(`
    create role ${ident(t.role)} with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit
      connection limit ${core.opts.tenantConnectionLimit} password ${literal(core.signer.roleVerifier(t.role))};
    ${defaults}
    comment on role ${ident(t.role)} is ${literal(`tenantry installation ${core.installationId}`)};
    grant ${ident(strategy.group(core))} to ${ident(t.role)};
    grant ${ident(t.role)} to current_user;`);
}

export async function roleExists(sql: Sql, role: string): Promise<boolean> {
  return (await sql`select 1 from pg_roles where rolname = ${role}`).length > 0;
}

/** Ends every session of a tenant's own role (after its login is disabled). */
export async function terminateRoleSessions(sql: Sql, role: string): Promise<void> {
  await sql`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${role} and pid <> pg_backend_pid()`;
}

export async function dropTenantRole(core: Core, role: string): Promise<void> {
  if (!(await roleExists(core.admin, role))) return;
  await core.admin.unsafe(`alter role ${ident(role)} nologin`);
  await terminateRoleSessions(core.admin, role);
  // privileges the role holds in the shared database (schema grants survive only if the schema does)
  await core.sharedAdmin.unsafe(`drop owned by ${ident(role)}`);
  await core.admin.unsafe(`drop role if exists ${ident(role)}`);
}

