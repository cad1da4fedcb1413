import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import type { Isolation } from '../tenants/model.js';
import { TenantryError } from '../errors.js';
import { ident } from '../identifiers.js';
import { listTenantTables, enterTenantWalls, exportTableRows, stageTableRows, type TenantTable, type TenantColumn } from './tenant-rows.js';
import { CONTEXT_SCHEMA } from './data-plane.js';

/**
 * The isolation seam: what each mode (pooled-mode.ts, schema-mode.ts, database-mode.ts) implements,
 * and the parts they share. Backup, restore, clone, move, quotas' storage measure and doctor's
 * placement check are written once against it.
 */

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
  /**
   * The migration runner's step for one existing tenant: its pending tenant migrations, each under
   * `lockTimeoutMs`; `shared` is the run's pool on the shared database. Returns the version reached.
   */
  migrateExisting(core: Core, t: TenantPlacement, opts: { shared: Sql; lockTimeoutMs: number; reapplySecurity: boolean }): Promise<number>;
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
export function rowSeam(on: (core: Core, t: TenantPlacement) => { sql: Sql; release(): Promise<void> }): Pick<IsolationStrategy, 'openTransaction' | 'listTenantTables' | 'exportRows' | 'importRows'> {
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

export const onShared = (core: Core): { sql: Sql; release(): Promise<void> } => ({ sql: core.sharedAdmin, release: async () => {} });

export async function schemaExists(sql: Sql, name: string): Promise<boolean> {
  return (await sql`select 1 from pg_namespace where nspname = ${name}`).length > 0;
}


/**
 * Deletes the current tenant's rows from every tenant table of a schema. Runs as the owner with the
 * tenant's context, so the policies themselves confine the delete to that tenant. Tables are retried
 * in passes so children go before the parents their foreign keys point at.
 */
export async function deleteTenantRows(tx: Sql, schemaName: string): Promise<void> {
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
