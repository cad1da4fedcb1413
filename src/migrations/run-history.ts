import type { Core } from '../core.js';
import type { Isolation } from '../tenants/model.js';
import type { MigrateReport } from './tenant-runner.js';
import { migrationStatus } from './tenant-runner.js';

/** One finished tenant migration run, as recorded in the catalog. */
export interface MigrationRun {
  finishedAt: Date;
  latestVersion: number;
  planned: number;
  migrated: number;
  failed: { id: string; slug: string; isolation: Isolation; error: string }[];
  durationMs: number;
}

/** Where the tenants stand (per version and mode) and what the last run left failed. */
export interface MigrationOverview {
  latestVersion: number;
  versions: { version: number; isolation: Isolation; tenants: number }[];
  behind: number;
  lastRun: MigrationRun | null;
}

const KEEP_RUNS = 100;

/**
 * Records a finished run; a failure to record is logged, never thrown: the run itself succeeded and
 * its report was already computed, so the caller must not see it fail.
 */
export async function recordMigrationRun(core: Core, report: MigrateReport): Promise<void> {
  const failed = report.failed.slice(0, 1000).map((f) => ({ ...f, error: f.error.slice(0, 2000) }));
  try {
    await core.admin.begin(async (tx) => {
      await tx`insert into tenantry_catalog.tenant_migration_runs (latest_version, planned, migrated, failed, duration_ms)
               values (${report.latestVersion}, ${report.planned}, ${report.migrated}, ${tx.json(failed as never)}, ${Math.max(0, Math.round(report.durationMs))})`;
      await tx`delete from tenantry_catalog.tenant_migration_runs
               where id < (select id from tenantry_catalog.tenant_migration_runs order by id desc offset ${KEEP_RUNS - 1} limit 1)`;
    });
  } catch (err) {
    core.logger.warn({ err }, 'recording the tenant migration run failed; the migrations page shows the previous run');
  }
}

export async function migrationOverview(core: Core): Promise<MigrationOverview> {
  const status = await migrationStatus(core);
  const [r] = await core.admin<{ finished_at: Date; latest_version: number; planned: number; migrated: number; failed: MigrationRun['failed']; duration_ms: number }[]>`
    select finished_at, latest_version, planned, migrated, failed, duration_ms
    from tenantry_catalog.tenant_migration_runs order by id desc limit 1`;
  return {
    ...status,
    lastRun: r ? { finishedAt: r.finished_at, latestVersion: r.latest_version, planned: r.planned, migrated: r.migrated, failed: r.failed, durationMs: r.duration_ms } : null,
  };
}
