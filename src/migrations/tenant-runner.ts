import os from 'node:os';
import type { Sql } from 'postgres';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { TenantryError } from '../errors.js';
import { migrateTarget, MAY_CHANGE_TABLES, POOLED_SCHEMA } from '../isolation/data-plane.js';
import { ident, literal } from '../identifiers.js';
import { validateIsolation, validateTier, type Isolation, type Tier, type TenantRow } from '../tenants/model.js';
import type { MigrationFile } from './files.js';
import { STRATEGIES, placementOf } from '../isolation/modes.js';

/** Advisory lock key of a migration run: two runs at once would otherwise visit the same tenants. */
const MIGRATE_LOCK_KEY = 0x74656d67; // 'temg'

export interface MigrateOptions {
  /** tenants to migrate at once; default sized to the server (see defaultConcurrency) */
  concurrency?: number;
  /** only these tenants (ids or slugs) */
  tenants?: string[];
  tier?: Tier;
  isolation?: Isolation;
  /** plan only: which tenants would be visited and the SQL that would run */
  dryRun?: boolean;
  /** lock_timeout of each tenant's transaction (ms, default 10000) */
  lockTimeoutMs?: number;
  /** wait for a concurrent run to finish instead of refusing (default false) */
  wait?: boolean;
  /** visit every selected tenant (not only those behind) and re-apply RLS and grants; with the pooled tables */
  reapplySecurity?: boolean;
  /** called after each tenant */
  onProgress?: (p: { done: number; total: number; tenant: { id: string; slug: string }; error?: string }) => void;
}

export interface MigrateReport {
  latestVersion: number;
  /** tenants that were behind (or selected) when the run started */
  planned: number;
  migrated: number;
  failed: { id: string; slug: string; isolation: Isolation; error: string }[];
  /** the plan, on a dry run: tenant, its version, and the files it would get */
  plan?: { id: string; slug: string; isolation: Isolation; from: number; files: string[] }[];
  /** the SQL of the pending files, on a dry run */
  sql?: { name: string; sql: string }[];
  durationMs: number;
}

/**
 * Records the migration files in the catalog, refusing an applied file whose checksum changed, so a
 * run can be planned from the catalog without visiting any tenant.
 */
export async function recordMigrationFiles(sql: Sql, files: MigrationFile[]): Promise<void> {
  const known = await sql<{ version: number; name: string; checksum: string }[]>`select version, name, checksum from tenantry_catalog.tenant_migrations`;
  const byVersion = new Map(known.map((k) => [k.version, k]));
  for (const f of files) {
    const k = byVersion.get(f.version);
    if (k && k.checksum !== f.checksum) {
      throw new TenantryError('MIGRATION_CHECKSUM_MISMATCH', `Tenant migration ${f.name} differs from the ${k.name} already applied (checksum changed). Restore the original file; put new changes in a new numbered file.`, { migration: f.name });
    }
  }
  const fresh = files.filter((f) => !byVersion.has(f.version));
  if (fresh.length) {
    await sql`insert into tenantry_catalog.tenant_migrations ${sql(fresh.map((f) => ({ version: f.version, name: f.name, checksum: f.checksum })))} on conflict (version) do nothing`;
  }
}

export async function defaultConcurrency(sql: Sql): Promise<number> {
  const [r] = await sql<{ max: number; used: number }[]>`
    select current_setting('max_connections')::int as max, (select count(*)::int from pg_stat_activity) as used`;
  const free = Math.max(2, (r?.max ?? 100) - (r?.used ?? 0) - 10);
  // DDL is CPU-bound on the server: beyond about two per core, more at once only queue on locks
  return Math.max(1, Math.min(32, Math.floor(free / 4), os.cpus().length * 2));
}

/**
 * Applies pending tenant migrations to every schema and database tenant (the pooled tables and the
 * template are brought up to date when Tenantry opens). Each tenant migrates in its own transaction
 * with a lock_timeout, so it is either fully at the new version or untouched; a failing tenant does
 * not stop the others; a killed run is resumed by running it again (each tenant's own record of
 * applied files is the truth, the catalog's version a cache of it).
 */
export async function migrateTenants(core: Core, opts: MigrateOptions = {}): Promise<MigrateReport> {
  const started = Date.now();
  const latest = latestVersion(core);
  const tier = opts.tier === undefined ? undefined : validateTier(opts.tier, core.plans.tierNames());
  const isolation = opts.isolation === undefined ? undefined : validateIsolation(opts.isolation);
  const ids = opts.tenants === undefined ? undefined : await resolveIds(core, opts.tenants);
  const concurrency = opts.concurrency ?? await defaultConcurrency(core.admin);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new TenantryError('INVALID_INPUT', 'concurrency must be an integer from 1 to 256.');
  const lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1) throw new TenantryError('INVALID_INPUT', 'lockTimeoutMs must be a positive integer.');

  await recordMigrationFiles(core.admin, core.migrations);
  const sql = core.admin;
  // decided from the catalog alone: no tenant is visited when none is behind
  const pending = await sql<TenantRow[]>`
    select * from tenantry_catalog.tenants
    where status in ('active', 'trial', 'suspended', 'deleted') and isolation <> 'pooled'
      and ${ids ? sql`id = any(${ids}::uuid[])` : opts.reapplySecurity ? sql`true` : sql`schema_version < ${latest}`}
      ${tier ? sql`and tier = ${tier}` : sql``}
      ${isolation ? sql`and isolation = ${isolation}` : sql``}
    order by seq`;
  const report: MigrateReport = { latestVersion: latest, planned: pending.length, migrated: 0, failed: [], durationMs: 0 };
  if (opts.dryRun) {
    report.plan = pending.map((t) => ({ id: t.id, slug: t.slug, isolation: t.isolation, from: t.schema_version, files: core.migrations.filter((m) => m.version > t.schema_version).map((m) => m.name) }));
    const from = Math.min(...pending.map((t) => t.schema_version), latest);
    report.sql = core.migrations.filter((m) => m.version > from).map((m) => ({ name: m.name, sql: m.sql }));
    report.durationMs = Date.now() - started;
    return report;
  }
  if (opts.reapplySecurity && !ids && (isolation === undefined || isolation === 'pooled')) {
    await migrateTarget(core.sharedAdmin, {
      schema: POOLED_SCHEMA, owner: core.roles.owner, migrations: core.migrations, lockTimeoutMs, reapplySecurity: true,
      rls: { schema: POOLED_SCHEMA, pooledOnly: true, grantees: [core.roles.runtime, core.roles.pooledGroup] },
    });
  }
  if (pending.length === 0) {
    report.durationMs = Date.now() - started;
    return report;
  }

  // a session-level lock needs a session of its own: the direct connection, not one behind a pooler
  const lock = await core.direct.reserve();
  try {
    if (opts.wait) await lock`select pg_advisory_lock(${MIGRATE_LOCK_KEY})`;
    else {
      const [got] = await lock<{ ok: boolean }[]>`select pg_try_advisory_lock(${MIGRATE_LOCK_KEY}) as ok`;
      if (!got?.ok) throw new TenantryError('MIGRATION_IN_PROGRESS', 'Another tenant migration run is in progress; wait for it (or pass wait: true / --wait).');
    }
    // the shared database's schema tenants get a pool as wide as the run (the admin pool is small)
    const shared = core.adminTo(core.sharedDatabase, Math.min(concurrency, pending.length));
    // catalog versions are written in batches (a cache of each tenant's own record, never ahead of it)
    const versions = new CatalogVersions(core.admin, (err) => core.logger.warn({ err }, 'recording migrated versions in the catalog failed; the next run re-checks those tenants'));
    try {
      // every schema tenant's applied files in one query, instead of one round trip per tenant
      const plans = opts.reapplySecurity ? new Map<string, SchemaPlan>() : await planSchemaTenants(shared, pending, core.migrations);
      let next = 0;
      let done = 0;
      const worker = async (): Promise<void> => {
        for (;;) {
          const t = pending[next++];
          if (!t) return;
          let error: string | undefined;
          try {
            const plan = plans.get(t.schema_name);
            const quick = plan && t.isolation === 'schema' ? await migrateSchemaInOneTrip(core, shared, t, plan, lockTimeoutMs) : undefined;
            const version = quick ?? await migrateOneTenant(core, shared, t, lockTimeoutMs, Boolean(opts.reapplySecurity));
            versions.set(t.id, version);
            report.migrated++;
          } catch (err) {
            error = err instanceof Error ? err.message : String(err);
            report.failed.push({ id: t.id, slug: t.slug, isolation: t.isolation, error });
            core.logger.warn({ tenantId: t.id, err }, 'tenant migration failed');
          }
          done++;
          try {
            opts.onProgress?.({ done, total: pending.length, tenant: { id: t.id, slug: t.slug }, ...(error ? { error } : {}) });
          } catch (err) {
            // a broken progress display must not end the run half-way (and release its lock while workers still run)
            core.logger.warn({ err }, 'tenant migration onProgress callback failed');
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, pending.length) }, worker));
    } finally {
      await versions.flush();
      await shared.end({ timeout: 5 }).catch(() => undefined);
      await lock`select pg_advisory_unlock(${MIGRATE_LOCK_KEY})`.catch(() => undefined);
    }
  } finally {
    lock.release();
  }
  report.durationMs = Date.now() - started;
  return report;
}

/** One tenant's pending migrations, by its isolation mode (the seam: src/isolation/*-mode.ts). */
async function migrateOneTenant(core: Core, shared: Sql, t: TenantRow, lockTimeoutMs: number, reapplySecurity: boolean): Promise<number> {
  return STRATEGIES[t.isolation].migrateExisting(core, placementOf(t), { shared, lockTimeoutMs, reapplySecurity });
}

/** A schema tenant's applied files, read for the whole run at once. */
interface SchemaPlan { applied: number; pending: MigrationFile[]; highest: number; mismatch?: string }

async function planSchemaTenants(shared: Sql, tenants: TenantRow[], migrations: MigrationFile[]): Promise<Map<string, SchemaPlan>> {
  const schemas = tenants.filter((t) => t.isolation === 'schema').map((t) => t.schema_name);
  const plans = new Map<string, SchemaPlan>();
  if (schemas.length === 0) return plans;
  const rows = await shared<{ schema_name: string; version: number; checksum: string }[]>`
    select schema_name, version, checksum from tenantry.migrations where schema_name = any(${schemas})`;
  const bySchema = new Map<string, Map<number, string>>();
  for (const r of rows) {
    let m = bySchema.get(r.schema_name);
    if (!m) bySchema.set(r.schema_name, m = new Map());
    m.set(r.version, r.checksum);
  }
  for (const schema of schemas) {
    const done = bySchema.get(schema) ?? new Map<number, string>();
    const edited = migrations.find((m) => done.has(m.version) && done.get(m.version) !== m.checksum);
    plans.set(schema, {
      applied: done.size, pending: migrations.filter((m) => !done.has(m.version)), highest: Math.max(0, ...done.keys()),
      ...(edited ? { mismatch: edited.name } : {}),
    });
  }
  return plans;
}

/**
 * A schema tenant's pending files in one round trip: BEGIN, the session setup, the record of the files
 * (first: a concurrent application of the same file fails on its primary key before any DDL runs), the
 * files themselves and COMMIT, as one simple-protocol query. Used only where migrateTarget would do
 * exactly this: files already applied before (so the tables exist and are secured), none that may
 * create a table or touch row-level security (those re-check the schema's tables), checksums intact.
 * Undefined when not eligible, or when anything fails: the transaction is rolled back (nothing is half
 * applied) and the tenant goes through migrateTarget, which re-plans it and reports the precise error.
 */
async function migrateSchemaInOneTrip(core: Core, shared: Sql, t: TenantRow, plan: SchemaPlan, lockTimeoutMs: number): Promise<number | undefined> {
  if (plan.mismatch || plan.applied === 0 || plan.pending.length === 0) return undefined;
  if (plan.pending.some((m) => MAY_CHANGE_TABLES.test(m.sql))) return undefined;
  const latest = core.migrations[core.migrations.length - 1]?.version ?? 0;
  const schema = t.schema_name;
  const record = plan.pending.map((m) => `(${literal(schema)}, ${m.version}, ${literal(m.name)}, ${literal(m.checksum)})`).join(', ');
  const text = [
    'begin',
    `set local lock_timeout = '${Math.max(1, lockTimeoutMs)}ms'`,
    `insert into tenantry.migrations (schema_name, version, name, checksum) values ${record}`,
    `set local role ${ident(core.roles.owner)}`,
    `set local search_path = ${ident(schema)}`,
    `select set_config('tenantry.ctx', ${literal(core.signer.sign(t.id, 'schema'))}, true)`,
    // each file on lines of its own: a file ending in a line comment cannot swallow what follows
    ...plan.pending.map((m) => `\n${m.sql}\n`),
    'commit',
  ].join('\n;\n');
  const conn = await shared.reserve();
  try {
    await conn.unsafe(text);
  } catch (err) {
    await conn.unsafe('rollback').catch(() => undefined);
    core.logger.debug({ tenantId: t.id, err }, 'one-trip tenant migration failed; retrying it step by step');
    return undefined;
  } finally {
    conn.release();
  }
  return Math.max(latest, plan.highest);
}

/**
 * Tenants' reached versions, written to the catalog as they come: one UPDATE (per version) at a time,
 * carrying every tenant that finished while the previous one ran. A slow run records each tenant at
 * once (progress shows in `migrate status`); a fast one writes a batch per round trip instead of one
 * statement per tenant. A failed write is logged: the catalog is a cache the next run re-checks.
 */
class CatalogVersions {
  private pending = new Map<number, string[]>();
  private running: Promise<void> | undefined;

  constructor(private readonly sql: Sql, private readonly onError: (err: unknown) => void) {}

  set(id: string, version: number): void {
    const ids = this.pending.get(version) ?? [];
    ids.push(id);
    this.pending.set(version, ids);
    this.running ??= this.drain();
  }

  /** Waits until every version set so far is written. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    if (this.pending.size) {
      this.running = this.drain();
      await this.running;
    }
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.size) {
        const batch = this.pending;
        this.pending = new Map();
        for (const [version, ids] of batch) {
          await this.sql`update tenantry_catalog.tenants set schema_version = ${version} where id = any(${ids}::uuid[]) and schema_version < ${version}`;
        }
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.running = undefined;
    }
  }
}

async function resolveIds(core: Core, tenants: string[]): Promise<string[]> {
  if (!Array.isArray(tenants) || tenants.length === 0) throw new TenantryError('INVALID_INPUT', 'tenants must be a non-empty list of ids or slugs.');
  const rows = await core.admin<{ id: string; slug: string }[]>`
    select id, slug from tenantry_catalog.tenants where id::text = any(${tenants}) or slug = any(${tenants})`;
  const found = new Set(rows.flatMap((r) => [r.id, r.slug]));
  const missing = tenants.filter((t) => !found.has(t));
  if (missing.length) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${missing.map((m) => JSON.stringify(m)).join(', ')}.`);
  return rows.map((r) => r.id);
}

/** How many tenants sit at each version, by isolation mode. */
export async function migrationStatus(core: Core): Promise<{ latestVersion: number; versions: { version: number; isolation: Isolation; tenants: number }[]; behind: number }> {
  const rows = await core.admin<{ version: number; isolation: Isolation; tenants: number }[]>`
    select schema_version as version, isolation, count(*)::int as tenants from tenantry_catalog.tenants
    where status <> 'provisioning' group by 1, 2 order by 1, 2`;
  const latest = latestVersion(core);
  return { latestVersion: latest, versions: [...rows], behind: rows.filter((r) => r.version < latest).reduce((n, r) => n + r.tenants, 0) };
}

