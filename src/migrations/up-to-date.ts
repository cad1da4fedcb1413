import { resolveOptions, CATALOG_MIGRATIONS_DIR, type TenantryOptions } from '../config.js';
import { connect } from '../db/connections.js';
import { migrationsDigest } from '../installation.js';
import { loadMigrationFiles } from './files.js';
import type { MigrateReport } from './tenant-runner.js';

/**
 * `tenantry migrate` when there is nothing to do, answered from the catalog alone: one connection, one
 * query, no pools, no schema or role pool refills, no jobs, no LISTEN, and none of the server, job,
 * backup or SQL-guard modules loaded. Returns undefined whenever anything at all may need work or is
 * not certain (the embedded server, a catalog migration not applied, tenant migration files the
 * catalog has not recorded with these checksums, a template or pooled tables not migrated with exactly
 * these files, a schema or database tenant behind): the caller then opens Tenantry in full, which does
 * that work (and refuses an edited migration file) as before.
 *
 * Why the template's digest stands for the pooled tables too: opening Tenantry migrates the shared
 * pooled tables, then the template, under one catalog lock, and records the digest of the files it
 * used only after both; a digest equal to these files' means both were brought up to these files.
 */
export async function migrateNothingPending(options: TenantryOptions = {}): Promise<MigrateReport | undefined> {
  const started = Date.now();
  const opts = resolveOptions(options);
  if (!opts.databaseUrl) return undefined;
  const files = loadMigrationFiles(opts.tenantMigrations);
  const catalogFiles = loadMigrationFiles(CATALOG_MIGRATIONS_DIR);
  const latest = files[files.length - 1]?.version ?? 0;
  const sql = connect(opts.directUrl ?? opts.databaseUrl, { max: 1, connect_timeout: 10 });
  try {
    const [state] = await sql<{ namespace: string | null; catalog: number[]; template: string | null; recorded: { version: number; checksum: string }[]; behind: number }[]>`
      select (select namespace from tenantry_catalog.installation) as namespace,
             array(select version from tenantry_catalog.migrations) as catalog,
             (select value #>> '{}' from tenantry_catalog.settings where key = 'template_migrations') as template,
             (select coalesce(json_agg(json_build_object('version', version, 'checksum', checksum)), '[]'::json) from tenantry_catalog.tenant_migrations) as recorded,
             (select count(*)::int from tenantry_catalog.tenants
              where status in ('active', 'trial', 'suspended', 'deleted') and isolation <> 'pooled' and schema_version < ${latest}) as behind`;
    if (!state || state.namespace !== opts.namespace) return undefined;
    const applied = new Set(state.catalog.map(Number));
    if (!catalogFiles.every((f) => applied.has(f.version))) return undefined;
    const recorded = new Map(state.recorded.map((r) => [r.version, r.checksum]));
    if (!files.every((f) => recorded.get(f.version) === f.checksum)) return undefined;
    if (state.template !== migrationsDigest(files)) return undefined;
    if (state.behind !== 0) return undefined;
    return { latestVersion: latest, planned: 0, migrated: 0, failed: [], durationMs: Date.now() - started };
  } catch (err) {
    // no catalog yet (a first run), or a catalog older than these queries: the full open sets it up
    if (['42P01', '42703', '3F000'].includes((err as { code?: string }).code ?? '')) return undefined;
    throw err;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
