import type { Sql, TransactionSql } from 'postgres';
import { listTenantTables, enterTenantWalls, exportTableRows, stageTableRows, insertStagedRows, type TenantTable, type TenantColumn } from './tenant-rows.js';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { ident, literal, tenantObjectNames } from '../identifiers.js';
import { TenantryError } from '../errors.js';
import type { Isolation } from '../tenants/model.js';
import { migrateTarget, POOLED_SCHEMA, DATABASE_MODE_SCHEMA, CONTEXT_SCHEMA } from './data-plane.js';
import { cachedTenantRoleDefaults } from '../installation.js';
import { DEFAULT_SERVER, poolKey } from '../db/pool-key.js';

export { DEFAULT_SERVER };

export interface TenantPlacement {
  id: string;
  isolation: Isolation;
  /** the server holding the database (a later fleet of servers is rows of the catalog, not a rewrite) */
  server: string;
  database: string;
  schema: string;
  role: string;
}

/**
 * One seam per isolation mode: where a tenant's rows live, how they are created, migrated and removed.
 * Everything else (catalog, roles, lifecycle, the tenant-scoped transaction) is shared.
 */
export interface IsolationStrategy {
  readonly mode: Isolation;
  placementFor(core: Core, tenantId: string): TenantPlacement;
  /** the group role the tenant's own login role joins */
  group(core: Core): string;
  /** creates the tenant's schema or database (not its tables) */
  place(core: Core, t: TenantPlacement): Promise<void>;
  /** brings the tenant's tables to the latest tenant migration; returns the version reached */
  migrate(core: Core, t: TenantPlacement): Promise<number>;
  /** removes the tenant's rows, schema or database; safe to run on a half-created tenant */
  remove(core: Core, t: TenantPlacement): Promise<void>;
  /**
   * A transaction as the configured user on the database holding the tenant's rows. `walls()` then
   * sets the owner role and the tenant's signed context for the rest of it: from there on the
   * policies confine every statement to this tenant. (Before walls(): temporary staging tables.)
   */
  openTransaction<T>(core: Core, t: TenantPlacement, fn: (tx: TransactionSql, walls: () => Promise<void>) => Promise<T>): Promise<T>;
  /** the tenant tables of the placement, parents before children */
  listTenantTables(tx: TransactionSql, t: TenantPlacement): Promise<TenantTable[]>;
  /** inside the walls: the tenant's rows of one table, COPY text */
  exportRows(tx: TransactionSql, t: TenantPlacement, table: TenantTable): Promise<Buffer>;
  /** before the walls: stages COPY text rows; inside them: insertStagedRows moves them in */
  importRows(core: Core, tx: TransactionSql, t: TenantPlacement, table: TenantTable, columns: TenantColumn[], data: Buffer, stage: string): Promise<void>;
  /** bytes the tenant's data takes */
  measureStorage(core: Core, t: TenantPlacement): Promise<number>;
  /** what is missing of the placement (empty when whole) */
  check(core: Core, t: TenantPlacement): Promise<string[]>;
}

/** The row-level half of the seam, identical in every mode but for the connection it runs on. */
function rowSeam(on: (core: Core, t: TenantPlacement) => { sql: Sql; release(): Promise<void> }): Pick<IsolationStrategy, 'openTransaction' | 'listTenantTables' | 'exportRows' | 'importRows'> {
  return {
    openTransaction: async (core, t, fn) => {
      const conn = on(core, t);
      try {
        return await conn.sql.begin((tx) => fn(tx, () => enterTenantWalls(tx, core.roles.owner, core.signer.sign(t.id, t.isolation), t.schema))) as never;
      } finally {
        await conn.release();
      }
    },
    listTenantTables: (tx, t) => listTenantTables(tx, t.schema),
    exportRows: (tx, t, table) => exportTableRows(tx, t.schema, table),
    importRows: (core, tx, _t, _table, columns, data, stage) => stageTableRows(tx, columns, data, stage, core.roles.owner),
  };
}

const onShared = (core: Core): { sql: Sql; release(): Promise<void> } => ({ sql: core.sharedAdmin, release: async () => {} });

const pooled: IsolationStrategy = {
  mode: 'pooled',
  placementFor: (core, id) => ({ id, isolation: 'pooled', server: DEFAULT_SERVER, database: core.sharedDatabase, schema: POOLED_SCHEMA, role: tenantObjectNames(core.namespace, id).role }),
  ...rowSeam(onShared),
  measureStorage: (core, t) => core.sharedAdmin.begin(async (tx) => {
    // the bytes of its rows in the shared tables, counted inside its walls
    await enterTenantWalls(tx, core.roles.owner, core.signer.sign(t.id, 'pooled'), POOLED_SCHEMA);
    let total = 0;
    for (const table of await listTenantTables(tx, POOLED_SCHEMA)) {
      const [r] = await tx.unsafe<{ n: string }[]>(`select coalesce(sum(pg_column_size(x.*)), 0)::bigint as n from ${ident(POOLED_SCHEMA)}.${ident(table.name)} x`);
      total += Number(r!.n);
    }
    return total;
  }),
  check: async (core) => (await schemaExists(core.sharedAdmin, POOLED_SCHEMA)) ? [] : [`the shared schema ${POOLED_SCHEMA} is missing`],
  group: (core) => core.roles.pooledGroup,
  place: async () => {},
  // the shared tables are migrated once for all pooled tenants, when Tenantry opens
  migrate: async (core) => latestVersion(core),
  remove: async (core, t) => {
    await core.sharedAdmin.begin(async (tx) => {
      await tx.unsafe(`set local role ${ident(core.roles.owner)}`);
      await tx`select set_config('tenantry.ctx', ${core.signer.sign(t.id, 'pooled')}, true)`;
      await deleteTenantRows(tx as unknown as Sql, POOLED_SCHEMA);
    });
  },
};

const schema: IsolationStrategy = {
  mode: 'schema',
  placementFor: (core, id) => {
    const n = tenantObjectNames(core.namespace, id);
    return { id, isolation: 'schema', server: DEFAULT_SERVER, database: core.sharedDatabase, schema: n.schema, role: n.role };
  },
  ...rowSeam(onShared),
  measureStorage: async (core, t) => {
    const [r] = await core.sharedAdmin<{ n: string }[]>`
      select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint as n
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${t.schema} and c.relkind in ('r', 'p', 'm')`;
    return Number(r!.n);
  },
  check: async (core, t) => (await schemaExists(core.sharedAdmin, t.schema)) ? [] : [`schema ${t.schema} is missing`],
  group: (core) => core.roles.schemaGroup,
  place: async (core, t) => {
    // a pre-created, pre-migrated schema when the pool has one; else a new one
    if (await core.schemaPool.claim(t.schema)) return;
    await core.sharedAdmin.unsafe(`create schema ${ident(t.schema)} authorization ${ident(core.roles.owner)}`);
  },
  migrate: async (core, t) => {
    const r = await migrateTarget(core.sharedAdmin, {
      schema: t.schema, owner: core.roles.owner, migrations: core.migrations, context: core.signer.sign(t.id, 'schema'),
      // a claimed pool schema has its tables already: grant them to the tenant and pin its policies
      reapplySecurity: true,
      // the schema's policies also pin tenant_id to this tenant: a row of another tenant written
      // through a schema-qualified name is refused even with a valid context of that other tenant
      rls: { schema: t.schema, pinnedTenant: t.id, grantees: [core.roles.runtime, t.role] },
    });
    return r.version;
  },
  remove: async (core, t) => {
    await core.sharedAdmin.unsafe(`drop schema if exists ${ident(t.schema)} cascade`);
  },
};

const database: IsolationStrategy = {
  mode: 'database',
  placementFor: (core, id) => {
    const n = tenantObjectNames(core.namespace, id);
    return { id, isolation: 'database', server: DEFAULT_SERVER, database: n.database, schema: DATABASE_MODE_SCHEMA, role: n.role };
  },
  ...rowSeam((core, t) => {
    const sql = core.adminTo(t.database, 1);
    return { sql, release: () => sql.end({ timeout: 5 }) };
  }),
  measureStorage: async (core, t) => {
    const [r] = await core.admin<{ n: string }[]>`select pg_database_size(${t.database})::bigint as n`;
    return Number(r!.n);
  },
  check: async (core, t) => (await core.admin`select 1 from pg_database where datname = ${t.database}`).length > 0 ? [] : [`database ${t.database} is missing`],
  group: (core) => core.roles.databaseGroup,
  place: async (core, t) => {
    await cloneTemplate(core, t.database);
    await core.admin.unsafe(`
      revoke connect, temporary on database ${ident(t.database)} from public;
      grant connect on database ${ident(t.database)} to ${ident(core.roles.runtime)}, ${ident(t.role)};`);
  },
  // the clone is taken from the template, which Tenantry keeps at the latest version
  migrate: async (core) => latestVersion(core),
  remove: async (core, t) => {
    await core.pools.drop(poolKey({ server: t.server, database: t.database, role: core.roles.runtime }));
    await core.admin.unsafe(`drop database if exists ${ident(t.database)} with (force)`);
  },
};

export const STRATEGIES: Record<Isolation, IsolationStrategy> = { pooled, schema, database };

/** A tenant's placement from its catalog row (the server it names included). */
export function placementOf(row: { id: string; isolation: Isolation; server_name?: string; database_name: string; schema_name: string; role_name: string }): TenantPlacement {
  return { id: row.id, isolation: row.isolation, server: row.server_name ?? DEFAULT_SERVER, database: row.database_name, schema: row.schema_name, role: row.role_name };
}

async function schemaExists(sql: Sql, name: string): Promise<boolean> {
  return (await sql`select 1 from pg_namespace where nspname = ${name}`).length > 0;
}

/**
 * CREATE DATABASE ... TEMPLATE fails with 55006 while any session is connected to the template
 * (a brief window while it is being migrated); retry with backoff instead of failing the signup.
 */
async function cloneTemplate(core: Core, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      // over the direct connection: a pooler in between could itself be what holds the template open
      await core.direct.unsafe(`create database ${ident(name)} template ${ident(core.templateDatabase)}`);
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== '55006' || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 1000) * (0.5 + Math.random())));
    }
  }
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

/**
 * Deletes the current tenant's rows from every tenant table of a schema. Runs as the owner with the
 * tenant's context, so the policies themselves confine the delete to that tenant. Tables are retried
 * in passes so children go before the parents their foreign keys point at.
 */
async function deleteTenantRows(tx: Sql, schemaName: string): Promise<void> {
  const tables = (await tx<{ relname: string }[]>`
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schemaName} and c.relkind in ('r', 'p') and c.relrowsecurity
      and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)`)
    .map((r) => r.relname);
  let remaining = tables;
  for (let pass = 0; remaining.length > 0; pass++) {
    const failed: string[] = [];
    for (const table of remaining) {
      try {
        await (tx as unknown as { savepoint: (fn: (s: Sql) => Promise<unknown>) => Promise<unknown> }).savepoint((sp) =>
          sp.unsafe(`delete from ${ident(schemaName)}.${ident(table)} where tenant_id = (select ${CONTEXT_SCHEMA}.current_tenant())`));
      } catch (err) {
        if ((err as { code?: string }).code !== '23503' || pass > tables.length) throw err;
        failed.push(table);
      }
    }
    if (failed.length === remaining.length && pass > tables.length) {
      throw new TenantryError('PROVISIONING_FAILED', `Could not delete the tenant's rows from ${failed.join(', ')} (foreign keys from outside the tenant tables?).`);
    }
    remaining = failed;
  }
}
