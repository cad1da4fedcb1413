import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { Tenantry, type TenantryOptions } from '../../src/index.js';
import { startPgBouncer, type PgBouncer } from './pgbouncer.js';

export const SUPERUSER_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * PGBOUNCER=1 runs a suite through PgBouncer: each installation gets a PgBouncer of its own in
 * transaction mode, Tenantry's DATABASE_URL points at it and the direct URL at the server. The tests'
 * own superuser and attacker connections stay direct.
 */
export const VIA_PGBOUNCER = process.env.PGBOUNCER === '1' || process.env.PGBOUNCER === 'true';

export function superuser(): Sql {
  return postgres(SUPERUSER_URL, { onnotice: () => {}, max: 4 });
}

export interface TestInstallation {
  tenantry: Tenantry;
  namespace: string;
  /** URL of the installation's admin user (CREATEDB + CREATEROLE only, not a superuser) */
  adminUrl: string;
  /** a superuser connection to the catalog database, for inspecting state */
  su: Sql;
  /** connect to any database as any role (password derived by Tenantry for its own roles) */
  urlFor(database: string, user: string, password?: string): string;
  /** the installation's PgBouncer when the suite runs through one (PGBOUNCER=1) */
  bouncer: PgBouncer | undefined;
  cleanup(): Promise<void>;
}

/**
 * A throwaway installation: its own admin role with only CREATEDB and CREATEROLE (as on managed
 * PostgreSQL), its own catalog database and namespace, all removed by cleanup().
 */
export async function freshInstallation(options: Partial<TenantryOptions> = {}, setup: { pgbouncer?: { poolSize: number } } = {}): Promise<TestInstallation> {
  const namespace = `tt${randomBytes(4).toString('hex')}`;
  const admin = `${namespace}_admin`;
  const password = randomBytes(12).toString('hex');
  const catalogDb = `${namespace}_catalog`;
  const boot = superuser();
  await boot.unsafe(`create role "${admin}" login createdb createrole password '${password}'`);
  await boot.unsafe(`create database "${catalogDb}" owner "${admin}"`);
  await boot.end();
  const urlFor = (database: string, user: string, pw?: string): string => {
    const u = new URL(SUPERUSER_URL);
    u.username = encodeURIComponent(user);
    u.password = pw ? encodeURIComponent(pw) : '';
    u.pathname = `/${database}`;
    return u.toString();
  };
  const adminUrl = urlFor(catalogDb, admin, password);
  // a modest connection budget: two test files share a server whose max_connections may be 100
  const bouncer = setup.pgbouncer || VIA_PGBOUNCER ? await startPgBouncer({ ...setup.pgbouncer, databases: { [catalogDb]: 8 } }) : undefined;
  const via = bouncer ? { databaseUrl: bouncer.via(adminUrl), directUrl: adminUrl } : { databaseUrl: adminUrl };
  const tenantry = await Tenantry.open({ ...via, namespace, maxConnections: 16, ...options }).catch(async (err) => {
    await bouncer?.stop();
    throw err;
  });
  const su = postgres(urlFor(catalogDb, new URL(SUPERUSER_URL).username || 'postgres', decodeURIComponent(new URL(SUPERUSER_URL).password)), { onnotice: () => {}, max: 4 });
  let cleaned = false;
  return {
    tenantry, namespace, adminUrl, su, urlFor, bouncer,
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      await tenantry.uninstall({ confirm: namespace }).catch(async () => { await tenantry.close(); });
      await su.end();
      await bouncer?.stop();
      const s = superuser();
      try {
        await s.unsafe(`drop database if exists "${catalogDb}" with (force)`);
        // anything uninstall could not reach (a test that broke things on purpose)
        const dbs = await s<{ datname: string }[]>`select datname from pg_database where datname like ${namespace + '\\_%'}`;
        for (const { datname } of dbs) {
          await s.unsafe(`alter database "${datname}" allow_connections true`);
          await s.unsafe(`drop database if exists "${datname}" with (force)`);
        }
        const roles = await s<{ rolname: string }[]>`select rolname from pg_roles where rolname like ${namespace + '\\_%'} order by rolname like '%\\_t\\_%' desc, rolname = ${admin}`;
        for (const { rolname } of roles) {
          await s.unsafe(`drop owned by "${rolname}" cascade`).catch(() => undefined);
          await s.unsafe(`drop role if exists "${rolname}"`);
        }
      } finally {
        await s.end();
      }
    },
  };
}

/** The derived password of one of the installation's own roles (tenant roles, the runtime role). */
export async function rolePassword(inst: TestInstallation, role: string): Promise<string> {
  const { ContextSigner } = await import('../../src/isolation/context.js');
  const [row] = await inst.su<{ secret: Buffer }[]>`select secret from tenantry_catalog.installation`;
  return new ContextSigner(row!.secret).rolePassword(role);
}

/** A signed context for a tenant, as the library would set it (to show what a *valid* one can and cannot do). */
export async function signedContext(inst: TestInstallation, tenantId: string, isolation?: 'pooled' | 'schema' | 'database'): Promise<string> {
  const { ContextSigner } = await import('../../src/isolation/context.js');
  const [row] = await inst.su<{ secret: Buffer }[]>`select secret from tenantry_catalog.installation`;
  const [t] = await inst.su<{ isolation: 'pooled' | 'schema' | 'database' }[]>`select isolation from tenantry_catalog.tenants where id = ${tenantId}`;
  return new ContextSigner(row!.secret).sign(tenantId, isolation ?? t?.isolation ?? 'pooled');
}

/** A connection as a Tenantry role (tenant role or runtime) to a database. */
export async function connectAs(inst: TestInstallation, role: string, database: string): Promise<Sql> {
  return postgres(inst.urlFor(database, role, await rolePassword(inst, role)), { onnotice: () => {}, max: 1, connect_timeout: 10 });
}
