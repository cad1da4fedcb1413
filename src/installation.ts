import { randomBytes, randomUUID, createHash } from 'node:crypto';
import type { Sql } from 'postgres';
import { TenantryError } from './errors.js';
import { ident, literal } from './identifiers.js';
import type { ContextSigner } from './isolation/context.js';
import {
  contextSchemaSql, hardenDatabaseSql, migrateTarget, POOLED_SCHEMA, DATABASE_MODE_SCHEMA, type RlsTarget,
} from './isolation/data-plane.js';
import type { InstallationRoles } from './core.js';
import type { MigrationFile } from './migrations/files.js';
import type { Logger } from './logger.js';

export interface InstallationRecord {
  id: string;
  namespace: string;
  secret: Buffer;
}

/** Reads the installation row, creating it (with a fresh master secret) on first start. */
export async function loadOrCreateInstallation(lock: Sql, namespace: string): Promise<InstallationRecord> {
  const [row] = await lock<{ id: string; namespace: string; secret: Buffer }[]>`
    select id, namespace, secret from tenantry_catalog.installation`;
  if (row) {
    if (row.namespace !== namespace) {
      throw new TenantryError('INVALID_CONFIG', `This catalog was installed with namespace "${row.namespace}", not "${namespace}". Set TENANTRY_NAMESPACE=${row.namespace}.`);
    }
    return row;
  }
  const created = { id: randomUUID(), namespace, secret: randomBytes(32) };
  await lock`insert into tenantry_catalog.installation (id, namespace, secret) values (${created.id}, ${namespace}, ${created.secret})`;
  return created;
}

export function installationRoles(namespace: string): InstallationRoles {
  return {
    owner: `${namespace}_owner`,
    runtime: `${namespace}_runtime`,
    pooledGroup: `${namespace}_pooled`,
    databaseGroup: `${namespace}_dbtenant`,
    schemaGroup: `${namespace}_schematenant`,
  };
}

const roleComment = (installationId: string): string => `tenantry installation ${installationId}`;

/**
 * Creates Tenantry's fixed roles. Works for a user with only CREATEDB and CREATEROLE: it grants
 * itself membership in the roles it creates, which it needs to create objects owned by them, to drop
 * databases they are connected to and to end their sessions.
 */
export async function ensureRoles(lock: Sql, inst: InstallationRecord, roles: InstallationRoles, signer: ContextSigner): Promise<void> {
  const specs: { name: string; attrs: string }[] = [
    { name: roles.owner, attrs: 'nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls' },
    {
      name: roles.runtime,
      // the session user of every library pool: owns nothing, bypasses nothing, belongs to no role
      attrs: `login nosuperuser nocreatedb nocreaterole noreplication nobypassrls noinherit password ${literal(signer.roleVerifier(roles.runtime))}`,
    },
    { name: roles.pooledGroup, attrs: 'nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls' },
    { name: roles.databaseGroup, attrs: 'nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls' },
    { name: roles.schemaGroup, attrs: 'nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls' },
  ];
  for (const spec of specs) {
    const [existing] = await lock<{ comment: string | null; rolsuper: boolean; rolreplication: boolean; rolbypassrls: boolean }[]>`
      select shobj_description(oid, 'pg_authid') as comment, rolsuper, rolreplication, rolbypassrls
      from pg_roles where rolname = ${spec.name}`;
    if (existing) {
      if (existing.comment !== roleComment(inst.id)) {
        throw new TenantryError('NAMESPACE_IN_USE', `Role ${spec.name} already exists and does not belong to this installation. Choose another TENANTRY_NAMESPACE, or drop the other installation.`);
      }
      // ALTER ROLE may name [NO]SUPERUSER, [NO]REPLICATION or [NO]BYPASSRLS only as a superuser, even
      // when nothing changes: name them only when they drifted, or every restart of a CREATEROLE-only
      // user (managed PostgreSQL) fails
      const superuserOnly: Record<string, boolean> = { nosuperuser: existing.rolsuper, noreplication: existing.rolreplication, nobypassrls: existing.rolbypassrls };
      const attrs = spec.attrs.split(' ').filter((a) => !(a in superuserOnly) || superuserOnly[a]).join(' ');
      await lock.unsafe(`alter role ${ident(spec.name)} with ${attrs}`);
    } else {
      await lock.unsafe(`create role ${ident(spec.name)} with ${spec.attrs}`);
      await lock.unsafe(`comment on role ${ident(spec.name)} is ${literal(roleComment(inst.id))}`);
    }
  }
  await grantSelf(lock, roles.owner);
  await grantSelf(lock, roles.runtime);
  // defaults SQL run as the runtime role may have planted on itself (ALTER ROLE CURRENT_USER SET ...)
  await resetRoleDefaults(lock, roles.runtime);
}

/** Makes the configured user a member of `role` (with its privileges), unless it already is. */
export async function grantSelf(sql: Sql, role: string): Promise<void> {
  const [m] = await sql<{ ok: boolean }[]>`select pg_has_role(current_user, ${role}, 'USAGE') and pg_has_role(current_user, ${role}, 'MEMBER') as ok`;
  if (m?.ok) return;
  await sql.unsafe(`grant ${ident(role)} to current_user`);
}

export async function databaseExists(sql: Sql, name: string): Promise<boolean> {
  const rows = await sql`select 1 from pg_database where datname = ${name}`;
  return rows.length > 0;
}

/**
 * The shared data database holds the pooled tables (schema `pooled`) and every schema tenant's schema.
 * It is separate from the catalog database so that no tenant role ever needs CONNECT on the catalog.
 */
export interface DataDatabaseOptions {
  lock: Sql; adminTo: (db: string, max?: number) => Sql; name: string; namespace: string; roles: InstallationRoles;
  signer: ContextSigner; migrations: MigrationFile[]; logger: Logger;
}

/**
 * What every data database gets (the context schema, `schema` owned by the owner role, no CREATE on
 * public), then the tenant migrations applied to `schema`; returns the version reached.
 */
async function prepareDataDatabase(db: Sql, opts: DataDatabaseOptions, rls: RlsTarget): Promise<number> {
  await db.begin(async (tx) => {
    await tx.unsafe(contextSchemaSql(opts.namespace, opts.roles, opts.signer.paddedKeys()));
    await tx.unsafe(`create schema if not exists ${ident(rls.schema)} authorization ${ident(opts.roles.owner)}`);
    await hardenPublicSchema(tx as unknown as Sql, opts.logger, opts.name);
    await revokeCatalogExtras(tx as unknown as Sql, opts.logger, opts.name);
  });
  const { version } = await migrateTarget(db, { schema: rls.schema, owner: opts.roles.owner, migrations: opts.migrations, rls });
  return version;
}

export async function ensureSharedDatabase(opts: DataDatabaseOptions): Promise<void> {
  const { lock, name, roles } = opts;
  if (!(await databaseExists(lock, name))) {
    await lock.unsafe(`create database ${ident(name)}`);
    opts.logger.info({ database: name }, 'created the shared data database');
  }
  await lock.unsafe(`${hardenDatabaseSql(name, roles.runtime)}
    grant connect on database ${ident(name)} to ${ident(roles.pooledGroup)}, ${ident(roles.schemaGroup)};`);
  const db = opts.adminTo(name, 1);
  try {
    const version = await prepareDataDatabase(db, opts, { schema: POOLED_SCHEMA, pooledOnly: true, grantees: [roles.runtime, roles.pooledGroup] });
    // pooled tenants' rows live in these tables: their catalog version follows them (never backwards)
    await lock`update tenantry_catalog.tenants set schema_version = ${version} where isolation = 'pooled' and schema_version < ${version}`;
  } finally {
    await db.end({ timeout: 5 });
  }
}

/**
 * Large-object functions: a tenant that can call them stores data outside its rows, its read-only mode
 * and its storage quota (issue #8, finding 4). Every built-in function that creates, writes, reads or
 * removes one; lo_import/lo_export are superuser-only already.
 */
export const LARGE_OBJECT_FUNCTIONS = ['lo_creat', 'lo_create', 'lo_from_bytea', 'lo_open', 'lo_close', 'loread', 'lowrite', 'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64', 'lo_truncate', 'lo_truncate64', 'lo_unlink', 'lo_get', 'lo_put'];
/** Statistics views and size functions: other tenants' row counts, sizes, values and sessions (finding 9). */
export const STATISTICS_VIEWS = ['pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs', 'pg_stat_activity', 'pg_stat_all_tables', 'pg_stat_user_tables', 'pg_stat_xact_all_tables', 'pg_stat_xact_user_tables', 'pg_stat_all_indexes', 'pg_stat_user_indexes', 'pg_statio_all_tables', 'pg_statio_user_tables', 'pg_statio_all_indexes', 'pg_statio_user_indexes', 'pg_statio_all_sequences', 'pg_statio_user_sequences', 'pg_stat_user_functions', 'pg_stat_xact_user_functions'];
export const SIZE_FUNCTIONS = ['pg_total_relation_size', 'pg_relation_size', 'pg_table_size', 'pg_indexes_size', 'pg_database_size'];

/**
 * Where the installing user is a superuser (only the owner of pg_catalog may), PUBLIC loses in each
 * data database what no tenant's data work needs: the large-object functions, the statistics views
 * and the size functions. A non-superuser installation cannot revoke them; there the SQL endpoint's
 * guard refuses them, and the README says so. Template clones inherit the revocations.
 */
async function revokeCatalogExtras(tx: Sql, logger: Logger, database: string): Promise<void> {
  const [me] = await tx<{ rolsuper: boolean }[]>`select rolsuper from pg_roles where rolname = current_user`;
  if (!me?.rolsuper) {
    logger.info({ database }, 'not a superuser: large-object functions and statistics views stay granted to PUBLIC (the SQL endpoint refuses them)');
    return;
  }
  const functions = await tx<{ sig: string }[]>`
    select p.oid::regprocedure::text as sig from pg_proc p
    where p.pronamespace = 'pg_catalog'::regnamespace and p.proname = any(${[...LARGE_OBJECT_FUNCTIONS, ...SIZE_FUNCTIONS]})`;
  for (const { sig } of functions) await tx.unsafe(`revoke execute on function ${sig} from public`);
  const views = await tx<{ relname: string }[]>`
    select relname from pg_class where relnamespace = 'pg_catalog'::regnamespace and relname = any(${STATISTICS_VIEWS})`;
  for (const { relname } of views) await tx.unsafe(`revoke select on pg_catalog.${ident(relname)} from public`);
}

/** No CREATE on `public` for PUBLIC (PostgreSQL 15+ already defaults to this; older versions do not). */
async function hardenPublicSchema(tx: Sql, logger: Logger, database: string): Promise<void> {
  const [owns] = await tx<{ ok: boolean }[]>`
    select pg_has_role(current_user, nspowner, 'USAGE') as ok from pg_namespace where nspname = 'public'`;
  if (owns?.ok) {
    await tx.unsafe('revoke create on schema public from public');
  } else {
    logger.warn({ database }, 'cannot revoke CREATE on schema public (not its owner); doctor will report it');
  }
}

/** Digest of the tenant migrations a template holds, to know without connecting whether it is current. */
export function migrationsDigest(migrations: MigrationFile[]): string {
  return createHash('sha256').update(migrations.map((m) => `${m.version}:${m.checksum}`).join('\n')).digest('hex');
}

/**
 * The template database tenant databases are cloned from. It is kept at `datallowconn = false`, so no
 * session can sit in it (CREATE DATABASE ... TEMPLATE refuses a template with connections) and no
 * tenant can ever connect to it; it is opened briefly only to migrate it.
 */
export async function ensureTemplateDatabase(opts: DataDatabaseOptions): Promise<void> {
  const { lock, name, roles } = opts;
  const digest = migrationsDigest(opts.migrations);
  const exists = await databaseExists(lock, name);
  if (exists) {
    const [state] = await lock<{ value: string }[]>`select value #>> '{}' as value from tenantry_catalog.settings where key = 'template_migrations'`;
    if (state?.value === digest) return;
  } else {
    await lock.unsafe(`create database ${ident(name)}`);
  }
  await lock.unsafe(`alter database ${ident(name)} allow_connections true; ${hardenDatabaseSql(name, roles.runtime)}`);
  const db = opts.adminTo(name, 1);
  try {
    await prepareDataDatabase(db, opts, { schema: DATABASE_MODE_SCHEMA, grantees: [roles.runtime, roles.databaseGroup] });
  } finally {
    await db.end({ timeout: 5 });
    await lock.unsafe(`alter database ${ident(name)} allow_connections false`);
  }
  await lock`
    insert into tenantry_catalog.settings (key, value) values ('template_migrations', ${lock.json(digest)})
    on conflict (key) do update set value = excluded.value, updated_at = now()`;
  opts.logger.info({ database: name }, 'template database is current');
}

/** Keeps tenant roles and databases away from the catalog database, when the configured user owns it. */
export async function hardenCatalogDatabase(lock: Sql, logger: Logger): Promise<void> {
  const [db] = await lock<{ name: string; owns: boolean }[]>`
    select datname as name, pg_has_role(current_user, datdba, 'USAGE') as owns
    from pg_database where datname = current_database()`;
  if (db?.owns && db.name !== 'postgres') {
    await lock.unsafe(`revoke connect, temporary on database ${ident(db.name)} from public`);
  } else {
    logger.warn({ database: db?.name }, 'CONNECT on the catalog database stays granted to PUBLIC (not owned by the configured user, or the shared maintenance database); doctor reports it');
  }
}

/** Removes every ALTER ROLE ... SET default of a role, in every database. */
export async function resetRoleDefaults(sql: Sql, role: string): Promise<void> {
  const rows = await sql<{ datname: string | null }[]>`
    select d.datname from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
    left join pg_database d on d.oid = s.setdatabase where r.rolname = ${role}`;
  for (const { datname } of rows) {
    await sql.unsafe(datname ? `alter role ${ident(role)} in database ${ident(datname)} reset all` : `alter role ${ident(role)} reset all`);
  }
}

/**
 * The role defaults Tenantry itself sets on every tenant role: temp_file_limit, a superuser-only
 * setting that no startup parameter or SET of a tenant session may change, so it is pinned as a role
 * default where the installing user may set it (a superuser, or PostgreSQL 15+'s GRANT SET ON
 * PARAMETER temp_file_limit). A tenant cannot remove it either: RESET of a superuser-only setting
 * needs the same privilege. Elsewhere the server's own temp_file_limit holds, which a tenant cannot
 * raise. Empty when Tenantry may set nothing.
 */
export async function tenantRoleDefaults(sql: Sql, tempFileLimitKb: number): Promise<Record<string, string>> {
  const [me] = await sql<{ rolsuper: boolean; v: number }[]>`
    select rolsuper, current_setting('server_version_num')::int as v from pg_roles where rolname = current_user`;
  let may = Boolean(me?.rolsuper);
  if (!may && (me?.v ?? 0) >= 150000) {
    const [p] = await sql<{ ok: boolean }[]>`select has_parameter_privilege('temp_file_limit', 'SET') as ok`;
    may = Boolean(p?.ok);
  }
  return may ? { temp_file_limit: `${tempFileLimitKb}kB` } : {};
}

/** Sets Tenantry's own role defaults (tenantRoleDefaults) on a tenant role. */
export async function applyTenantRoleDefaults(sql: Sql, role: string, defaults: Record<string, string>): Promise<void> {
  for (const [name, value] of Object.entries(defaults)) {
    await sql.unsafe(`alter role ${ident(role)} set ${ident(name)} = ${literal(value)}`);
  }
}

const defaultsByPool = new WeakMap<Sql, Promise<Record<string, string>>>();

/** tenantRoleDefaults, asked once per privileged pool (the user's privileges do not change while it runs). */
export function cachedTenantRoleDefaults(sql: Sql, tempFileLimitKb: number): Promise<Record<string, string>> {
  let p = defaultsByPool.get(sql);
  if (!p) {
    p = tenantRoleDefaults(sql, tempFileLimitKb);
    p.catch(() => defaultsByPool.delete(sql));
    defaultsByPool.set(sql, p);
  }
  return p;
}
