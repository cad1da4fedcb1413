import type { Sql, TransactionSql } from 'postgres';
import { ident, literal } from '../identifiers.js';
import { TenantryError } from '../errors.js';
import type { MigrationFile } from '../migrations/files.js';

/** Names every data database shares. */
export const CONTEXT_SCHEMA = 'tenantry';
export const POOLED_SCHEMA = 'pooled';
export const DATABASE_MODE_SCHEMA = 'app';

export interface RoleNames {
  owner: string;
  runtime: string;
  /** group whose members (pooled tenants' own roles) may touch the shared pooled tables */
  pooledGroup: string;
  /** group whose members (database tenants' own roles) may touch tables in the tenant databases */
  databaseGroup: string;
}

/**
 * The context schema of a data database: the key table only its owner can read and the SECURITY
 * DEFINER function the policies call. Runs as the privileged user, objects owned by the owner role.
 */
export function contextSchemaSql(namespace: string, roles: RoleNames, keys: { inner: Buffer; outer: Buffer }): string {
  const owner = ident(roles.owner);
  return `
create schema if not exists ${CONTEXT_SCHEMA} authorization ${owner};
grant usage on schema ${CONTEXT_SCHEMA} to public;
set local role ${owner};
create table if not exists ${CONTEXT_SCHEMA}.settings (
  singleton boolean primary key default true check (singleton),
  namespace text not null,
  k_inner bytea not null,
  k_outer bytea not null
);
revoke all on ${CONTEXT_SCHEMA}.settings from public;
insert into ${CONTEXT_SCHEMA}.settings (namespace, k_inner, k_outer)
  values ('${namespace}', '\\x${keys.inner.toString('hex')}', '\\x${keys.outer.toString('hex')}')
  on conflict (singleton) do update set namespace = excluded.namespace, k_inner = excluded.k_inner, k_outer = excluded.k_outer;
create table if not exists ${CONTEXT_SCHEMA}.schema_pool (
  schema_name text primary key,
  version integer not null,
  created_at timestamptz not null default now()
);
revoke all on ${CONTEXT_SCHEMA}.schema_pool from public;
create table if not exists ${CONTEXT_SCHEMA}.migrations (
  schema_name text not null,
  version integer not null,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now(),
  primary key (schema_name, version)
);
revoke all on ${CONTEXT_SCHEMA}.migrations from public;

-- The tenant the current statement acts for, if it is a tenant of isolation mode required_mode
-- ('p', 's', 'd'; NULL for any). Policies call it as (select ...), so it runs once per statement.
-- SECURITY DEFINER with a fixed search_path: the caller can neither read the key nor shadow the
-- functions it calls. The context is '<tenant id>.<mode>.<hex HMAC of "<id>.<mode>">'; the mode
-- is signed too, so a schema or database tenant's context cannot reach the shared pooled tables.
create or replace function ${CONTEXT_SCHEMA}.tenant_for(required_mode text) returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  s record;
  prefix text;
  ctx text;
  claimed text;
  mode text;
  tenant uuid;
begin
  select namespace, k_inner, k_outer into s from ${CONTEXT_SCHEMA}.settings;
  prefix := s.namespace || '_t_';
  if left(session_user::text, length(prefix)) = prefix then
    -- A tenant's own login role (untrusted SQL): the session user decides. SET ROLE, RESET ROLE
    -- and set_config cannot change the session user, so nothing sent on it can act for another tenant.
    -- (Its privileges, not the mode, keep it from tables of other modes.)
    tenant := substr(session_user::text, length(prefix) + 1)::uuid;
  else
    ctx := current_setting('tenantry.ctx', true);
    if ctx is null or ctx = '' then
      return null; -- no context: policies compare with NULL, so no row qualifies
    end if;
    claimed := split_part(ctx, '.', 1);
    mode := split_part(ctx, '.', 2);
    if length(ctx) <> 103 or claimed !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       or mode not in ('p', 's', 'd') then
      raise exception 'tenantry: malformed tenant context' using errcode = '42501';
    end if;
    -- compare digests rather than the MACs, so timing says nothing about the expected MAC's prefix
    if sha256(convert_to(split_part(ctx, '.', 3), 'UTF8'))
       <> sha256(convert_to(encode(sha256(s.k_outer || sha256(s.k_inner || convert_to(claimed || '.' || mode, 'UTF8'))), 'hex'), 'UTF8')) then
      raise exception 'tenantry: tenant context signature is invalid' using errcode = '42501';
    end if;
    if required_mode is not null and mode <> required_mode then
      return null;
    end if;
    tenant := claimed::uuid;
  end if;
  -- a tenant database belongs to exactly one tenant, whatever context arrives in it
  if left(current_database()::text, length(prefix)) = prefix
     and substr(current_database()::text, length(prefix) + 1)::uuid <> tenant then
    raise exception 'tenantry: this database belongs to another tenant' using errcode = '42501';
  end if;
  return tenant;
end
$fn$;
revoke all on function ${CONTEXT_SCHEMA}.tenant_for(text) from public;
grant execute on function ${CONTEXT_SCHEMA}.tenant_for(text) to public;

-- The current tenant, of any mode: the default of every tenant_id column, and the policies' check.
create or replace function ${CONTEXT_SCHEMA}.current_tenant() returns uuid
language sql stable
as $fn$ select ${CONTEXT_SCHEMA}.tenant_for(null) $fn$;
revoke all on function ${CONTEXT_SCHEMA}.current_tenant() from public;
grant execute on function ${CONTEXT_SCHEMA}.current_tenant() to public;
reset role;
`;
}

/**
 * Hardening every data database gets: no CREATE on public, no temporary objects, no CONNECT for
 * PUBLIC. Run as the database's owner (the privileged user).
 */
export function hardenDatabaseSql(database: string, runtime: string): string {
  return `
revoke connect, temporary on database ${ident(database)} from public;
grant connect on database ${ident(database)} to ${ident(runtime)};`;
}

export interface RlsTarget {
  schema: string;
  /** set for a schema-per-tenant schema: its policies also pin tenant_id to this tenant */
  pinnedTenant?: string;
  /** set for the shared pooled schema: only a pooled tenant's context reaches its rows */
  pooledOnly?: boolean;
  /** roles that get DML on the schema's tenant tables (runtime and the tenant's role or group) */
  grantees: string[];
}

/**
 * Row-level security on every table of a schema that has tenant_id: ENABLE + FORCE, a permissive
 * policy that admits the current tenant's rows and a RESTRICTIVE one that no other policy can widen,
 * both with USING and WITH CHECK. With no context current_tenant() is NULL, so no row qualifies
 * (fail closed). Tables without tenant_id get no grants at all (and doctor reports them).
 */
export async function applyRowSecurity(tx: TransactionSql | Sql, target: RlsTarget, opts: { all?: boolean } = {}): Promise<{ tables: string[]; withoutTenantId: string[] }> {
  // Tables already treated (RLS enabled and forced, both policies present) are left alone unless `all`:
  // re-creating every policy of every tenant on each migration would take ACCESS EXCLUSIVE locks and
  // most of the run's time. A migration that drops a policy or disables RLS makes its table untreated.
  const rows = await tx<{ relname: string; has_tenant: boolean; treated: boolean }[]>`
    select c.relname,
           exists (select 1 from pg_attribute a
                   where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped) as has_tenant,
           c.relrowsecurity and c.relforcerowsecurity
             and (select count(*) from pg_policy p where p.polrelid = c.oid and p.polname in ('tenantry_access', 'tenantry_isolation')) = 2 as treated
    from pg_namespace n
    -- pg_class has no index by schema: filtering it on relnamespace scans every relation of the
    -- database (about 9 per schema tenant; 264 ms at 3,400 tenants, and every schema create paid it,
    -- so creates slowed as tenants grew). The schema's own dependency entries (every relation made in
    -- a schema, or moved into one, records one) are found through pg_depend's reference index.
    join pg_depend d on d.refclassid = 'pg_catalog.pg_namespace'::regclass and d.refobjid = n.oid and d.refobjsubid = 0
      and d.classid = 'pg_catalog.pg_class'::regclass
    join pg_class c on c.oid = d.objid and c.relnamespace = n.oid
    where n.nspname = ${target.schema} and c.relkind in ('r', 'p')
    order by c.relname`;
  const s = ident(target.schema);
  const grantees = target.grantees.map(ident).join(', ');
  const grant = target.grantees.length > 0;
  const base = target.pooledOnly
    ? `tenant_id = (select ${CONTEXT_SCHEMA}.tenant_for('p'))`
    : `tenant_id = (select ${CONTEXT_SCHEMA}.current_tenant())`;
  const pinned = target.pinnedTenant ? `${base} and tenant_id = '${uuidLiteral(target.pinnedTenant)}'::uuid` : base;
  const stmts: string[] = [];
  const tables: string[] = [];
  const withoutTenantId: string[] = [];
  for (const r of rows) {
    if (!r.has_tenant) {
      withoutTenantId.push(r.relname);
      continue;
    }
    tables.push(r.relname);
    if (r.treated && !opts.all) continue;
    const t = `${s}.${ident(r.relname)}`;
    stmts.push(
      `alter table ${t} enable row level security`,
      `alter table ${t} force row level security`,
      `drop policy if exists tenantry_access on ${t}`,
      `create policy tenantry_access on ${t} as permissive for all to public using (${base}) with check (${base})`,
      `drop policy if exists tenantry_isolation on ${t}`,
      `create policy tenantry_isolation on ${t} as restrictive for all to public using (${pinned}) with check (${pinned})`,
    );
    if (grant) stmts.push(`grant select, insert, update, delete on ${t} to ${grantees}`);
  }
  if (stmts.length === 0) return { tables, withoutTenantId };
  if (grant) stmts.unshift(`grant usage on schema ${s} to ${grantees}`);
  if (grant) stmts.push(`grant usage, select on all sequences in schema ${s} to ${grantees}`);
  await tx.unsafe(stmts.join(';\n'));
  return { tables, withoutTenantId };
}

function uuidLiteral(id: string): string {
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new TenantryError('INVALID_INPUT', `Not a tenant id: ${id}`);
  return id;
}

export interface MigrateTargetOptions {
  schema: string;
  owner: string;
  migrations: MigrationFile[];
  rls: RlsTarget;
  /** signed context of the tenant, so data-changing migrations see that tenant's rows */
  context?: string;
  lockTimeoutMs?: number;
  /** re-apply row-level security and grants even when no file is pending (repairs a dropped policy) */
  reapplySecurity?: boolean;
}

/**
 * Applies pending tenant migrations to one schema of one data database, in one transaction, then
 * re-applies row-level security so every new tenant table is covered. Returns the version reached.
 * An applied file whose checksum changed is refused.
 */
export async function migrateTarget(sql: Sql, opts: MigrateTargetOptions): Promise<{ version: number; applied: number }> {
  return sql.begin(async (tx) => {
    await tx.unsafe(`set local lock_timeout = '${Math.max(1, opts.lockTimeoutMs ?? 10_000)}ms'`);
    const { applied, pending, highest } = await planTarget(tx, opts.schema, opts.migrations);
    // a target a newer folder already took further stays there: the version reached never goes backwards
    const version = Math.max(opts.migrations.length ? opts.migrations[opts.migrations.length - 1]!.version : 0, highest);
    if (pending.length === 0 && applied > 0 && !opts.reapplySecurity) return { version, applied: 0 };
    // one round trip for the session setup (the context is a hex MAC and a uuid, quoted all the same)
    await tx.unsafe(`set local role ${ident(opts.owner)}; set local search_path = ${ident(opts.schema)}${opts.context ? `; select set_config('tenantry.ctx', ${literal(opts.context)}, true)` : ''}`);
    for (const m of pending) {
      try {
        await tx.unsafe(m.sql);
      } catch (err) {
        throw new TenantryError('MIGRATION_FAILED', `Tenant migration ${m.name} failed in schema ${opts.schema}: ${(err as Error).message}`, { migration: m.name, schema: opts.schema }, { cause: err });
      }
    }
    if (pending.length) {
      await tx`insert into tenantry.migrations ${tx(pending.map((m) => ({ schema_name: opts.schema, version: m.version, name: m.name, checksum: m.checksum })))}`;
    }
    // Listing a schema's tables scans pg_class (it has no index by schema), which with thousands of
    // tenant schemas costs more than a small migration itself. Files that cannot create a table or touch
    // row-level security skip it; anything missed that way has no grants at all (fail closed) and
    // doctor reports it.
    if (applied === 0 || opts.reapplySecurity || pending.some((m) => MAY_CHANGE_TABLES.test(m.sql))) {
      await applyRowSecurity(tx, opts.rls, { all: Boolean(opts.reapplySecurity) });
    }
    return { version, applied: pending.length };
  });
}

/** SQL that may create a table or change its row-level security (then the new state is re-checked). */
export const MAY_CHANGE_TABLES = /\bcreate\b[^;]*\btable\b|\binto\b|\brow\s+level\s+security\b|\bpolicy\b|\bpartition\b|\binherit|\bexecute\b|\bdo\b/i;

export async function planTarget(tx: TransactionSql | Sql, schema: string, migrations: MigrationFile[]): Promise<{ applied: number; pending: MigrationFile[]; highest: number }> {
  const rows = await tx<{ version: number; name: string; checksum: string }[]>`
    select version, name, checksum from tenantry.migrations where schema_name = ${schema}`;
  const done = new Map(rows.map((r) => [r.version, r]));
  for (const m of migrations) {
    const d = done.get(m.version);
    if (d && d.checksum !== m.checksum) {
      throw new TenantryError('MIGRATION_CHECKSUM_MISMATCH', `Tenant migration ${m.name} was edited after it was applied to ${schema}. Restore the original file and put new changes in a new numbered file.`, { migration: m.name, schema });
    }
  }
  return { applied: rows.length, pending: migrations.filter((m) => !done.has(m.version)), highest: Math.max(0, ...rows.map((r) => r.version)) };
}
