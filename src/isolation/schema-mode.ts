import { ident, tenantObjectNames } from '../identifiers.js';
import { DEFAULT_SERVER } from '../db/pool-key.js';
import { migrateTarget } from './data-plane.js';
import { rowSeam, onShared, schemaExists, type IsolationStrategy } from './isolation-strategy.js';

/**
 * Schema mode: a schema per tenant in the shared database, owned by Tenantry's owner role, with the
 * tenant's own role granted only its schema; RLS (pinned to the tenant) as a second wall.
 */
export const schemaMode: IsolationStrategy = {
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
  migrateExisting: async (core, t, opts) => (await migrateTarget(opts.shared, {
    schema: t.schema, owner: core.roles.owner, migrations: core.migrations, context: core.signer.sign(t.id, 'schema'),
    lockTimeoutMs: opts.lockTimeoutMs, reapplySecurity: opts.reapplySecurity,
    rls: { schema: t.schema, pinnedTenant: t.id, grantees: [core.roles.runtime, t.role] },
  })).version,
  remove: async (core, t) => {
    await core.sharedAdmin.unsafe(`drop schema if exists ${ident(t.schema)} cascade`);
  },
};

