import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { ident, tenantObjectNames } from '../identifiers.js';
import { DEFAULT_SERVER, poolKey } from '../db/pool-key.js';
import { DATABASE_MODE_SCHEMA, migrateTarget } from './data-plane.js';
import { rowSeam, type IsolationStrategy } from './isolation-strategy.js';

/**
 * Database mode: a database per tenant, cloned from the template Tenantry keeps migrated, CONNECT
 * granted only to the tenant's role and Tenantry's runtime role; RLS as a second wall.
 */
export const databaseMode: IsolationStrategy = {
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
  migrateExisting: async (core, t, opts) => {
    const db = core.adminTo(t.database, 1);
    try {
      return (await migrateTarget(db, {
        schema: t.schema, owner: core.roles.owner, migrations: core.migrations, context: core.signer.sign(t.id, 'database'),
        lockTimeoutMs: opts.lockTimeoutMs, reapplySecurity: opts.reapplySecurity,
        rls: { schema: t.schema, grantees: [core.roles.runtime, core.roles.databaseGroup] },
      })).version;
    } finally {
      await db.end({ timeout: 5 });
    }
  },
  remove: async (core, t) => {
    await core.pools.drop(poolKey({ server: t.server, database: t.database, role: core.roles.runtime }));
    await core.admin.unsafe(`drop database if exists ${ident(t.database)} with (force)`);
  },
};


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

