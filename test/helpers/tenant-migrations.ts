/**
 * Helpers for the tenant migration tests: temp migration folders, superuser connections to the data
 * databases, and what a tenant's own database says about its schema (the truth the catalog caches).
 */
import { mkdtempSync, copyFileSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { SUPERUSER_URL, type TestInstallation } from './installation.js';
import { Tenantry, type Tenant } from '../../src/index.js';

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');
export const EXAMPLE_0001 = path.join(REPO_ROOT, 'migrations', 'tenant-example', '0001_agent_platform.sql');

/** 0002: a new column with an index on an existing table, and a NEW tenant table (which must get RLS). */
export const ADD_COLUMN_SQL = `
alter table agents add column priority int not null default 0;
create index agents_priority_idx on agents (tenant_id, priority);
create table tags (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  name text not null,
  primary key (tenant_id, id)
);
`;

const dirs: string[] = [];

/** A fresh temp folder holding the example 0001 (or a copy of `base`) plus `extra` files. */
export function migrationsDir(extra: Record<string, string> = {}, base?: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-migrations-'));
  dirs.push(dir);
  if (base) for (const f of readdirSync(base)) copyFileSync(path.join(base, f), path.join(dir, f));
  else copyFileSync(EXAMPLE_0001, path.join(dir, path.basename(EXAMPLE_0001)));
  for (const [name, sql] of Object.entries(extra)) writeFileSync(path.join(dir, name), sql);
  return dir;
}

export function removeMigrationDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** A superuser connection to any database of the test server. */
export function suTo(inst: TestInstallation, database: string, max = 1): Sql {
  const su = new URL(SUPERUSER_URL);
  return postgres(inst.urlFor(database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password)), { onnotice: () => {}, max });
}

export async function withSu<T>(inst: TestInstallation, database: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = suTo(inst, database);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export { rejectsWith } from './assertions.js';

/** Opens another Tenantry instance on the same installation with another migrations folder. */
export function openWith(inst: TestInstallation, dir: string): Promise<Tenantry> {
  return Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, tenantMigrations: dir });
}

/** The catalog's schema_version of each tenant, by slug. */
export async function catalogVersions(inst: TestInstallation): Promise<Map<string, number>> {
  const rows = await inst.su<{ slug: string; schema_version: number }[]>`select slug, schema_version from tenantry_catalog.tenants`;
  return new Map(rows.map((r) => [r.slug, r.schema_version]));
}

export interface TenantTruth {
  /** versions in the tenant's own tenantry.migrations (one entry per row, so duplicates would show) */
  applied: number[];
  /** columns of the tenant's agents table */
  agentColumns: string[];
  /** per table of the tenant's schema: RLS enabled, forced, and its policies */
  tables: Map<string, { rls: boolean; forced: boolean; policies: string[] }>;
}

/**
 * What the tenant's own data database says: applied migrations, agents' columns and the row security
 * of each table. `shared` is a superuser connection to the shared database (schema and pooled tenants).
 */
export async function tenantTruth(inst: TestInstallation, shared: Sql, t: Pick<Tenant, 'isolation' | 'placement'>): Promise<TenantTruth> {
  const read = async (sql: Sql): Promise<TenantTruth> => {
    const schema = t.placement.schema;
    const applied = (await sql<{ version: number }[]>`select version from tenantry.migrations where schema_name = ${schema} order by version`).map((r) => r.version);
    const agentColumns = (await sql<{ column_name: string }[]>`
      select column_name::text from information_schema.columns where table_schema = ${schema} and table_name = 'agents' order by ordinal_position`).map((r) => r.column_name);
    const rows = await sql<{ relname: string; rls: boolean; forced: boolean; policies: string[] }[]>`
      select c.relname::text, c.relrowsecurity as rls, c.relforcerowsecurity as forced,
             coalesce((select array_agg(p.polname::text || ':' || case when p.polpermissive then 'permissive' else 'restrictive' end order by p.polname)
                       from pg_policy p where p.polrelid = c.oid), '{}') as policies
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${schema} and c.relkind in ('r', 'p')`;
    return { applied, agentColumns, tables: new Map(rows.map((r) => [r.relname, { rls: r.rls, forced: r.forced, policies: r.policies }])) };
  };
  if (t.isolation !== 'database') return read(shared);
  return withSu(inst, t.placement.database, read);
}

export const TENANTRY_POLICIES = ['tenantry_access:permissive', 'tenantry_isolation:restrictive'];

export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs the CLI (`node --import tsx src/cli/main.ts ...args`) against the installation, stdio piped (not a TTY). */
export function runCli(inst: TestInstallation, dir: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), ...args], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_TENANT_MIGRATIONS: dir, LOG_LEVEL: 'silent',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
