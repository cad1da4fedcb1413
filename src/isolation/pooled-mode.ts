import type { Sql } from 'postgres';
import { ident, tenantObjectNames } from '../identifiers.js';
import { latestVersion } from '../core.js';
import { DEFAULT_SERVER } from '../db/pool-key.js';
import { listTenantTables, enterTenantWalls } from './tenant-rows.js';
import { POOLED_SCHEMA } from './data-plane.js';
import { rowSeam, onShared, schemaExists, deleteTenantRows, type IsolationStrategy } from './isolation-strategy.js';

/**
 * Pooled mode: the tenant's rows live in the shared tables of one schema, told apart by tenant_id
 * under row-level security (ENABLE + FORCE); its placement is the shared database and schema.
 */
export const pooledMode: IsolationStrategy = {
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
  migrateExisting: async (core) => latestVersion(core),
  remove: async (core, t) => {
    await core.sharedAdmin.begin(async (tx) => {
      await tx.unsafe(`set local role ${ident(core.roles.owner)}`);
      await tx`select set_config('tenantry.ctx', ${core.signer.sign(t.id, 'pooled')}, true)`;
      await deleteTenantRows(tx as unknown as Sql, POOLED_SCHEMA);
    });
  },
};

