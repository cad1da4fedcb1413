import type { Sql } from 'postgres';
import type { ResolvedOptions } from './config.js';
import type { Logger } from './logger.js';
import type { ContextSigner } from './isolation/context.js';
import type { MigrationFile } from './migrations/files.js';
import type { PoolBudget } from './db/connections.js';
import type { RoleNames } from './isolation/data-plane.js';
import type { TenantCache } from './tenants/cache.js';
import type { TenantryEventEmitter } from './events.js';
import type { SchemaPool } from './provisioning/schema-pool.js';
import type { RolePool } from './provisioning/role-pool.js';
import type { PlanState } from './plans/state.js';

export interface InstallationRoles extends RoleNames {
  /** group holding CONNECT on the shared database, for schema tenants' own roles */
  schemaGroup: string;
}

/** Everything the modules share; built once by Tenantry.open. */
export interface Core {
  opts: ResolvedOptions;
  logger: Logger;
  /** admin URL: the configured user on the catalog database */
  url: string;
  /** the configured (privileged) user on the catalog database */
  admin: Sql;
  /**
   * the same user on the catalog database over the direct URL (never through a pooler): for advisory
   * locks, LISTEN and template clones, which need a session of their own. The admin pool itself (which
   * uses the direct URL too); named so that code needing a session says so.
   */
  direct: Sql;
  /** the direct URL (databaseUrl when there is no pooler) */
  directUrl: string;
  /** databaseUrl points at a transaction-mode pooler: no startup parameters, no named statements */
  pooled: boolean;
  /** the configured user on the shared data database (pooled tables and tenant schemas) */
  sharedAdmin: Sql;
  installationId: string;
  namespace: string;
  roles: InstallationRoles;
  sharedDatabase: string;
  templateDatabase: string;
  signer: ContextSigner;
  migrations: MigrationFile[];
  pools: PoolBudget;
  cache: TenantCache;
  /** pre-created schemas for schema-mode signups */
  schemaPool: SchemaPool;
  /** pre-made login roles for pooled signups */
  rolePool: RolePool;
  events: TenantryEventEmitter;
  /** the app's plans in force (metrics, tiers, features), read from the catalog */
  plans: PlanState;
  /** a short-lived admin connection to another database of the server */
  adminTo(database: string, max?: number): Sql;
  /** the runtime role's pool on a data database, within the connection budget */
  /** (pools are keyed by server, database and role: see src/db/pool-key.ts; `server` defaults to the configured one) */
  runtimeOn<T>(database: string, fn: (sql: Sql) => Promise<T>, server?: string): Promise<T>;
}

export const latestVersion = (core: Core): number => core.migrations[core.migrations.length - 1]?.version ?? 0;
