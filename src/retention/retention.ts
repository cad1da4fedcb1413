import type { Sql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { ident } from '../identifiers.js';
import { appendAudit } from '../audit/audit.js';
import { runInTenant } from '../isolation/tenant-transaction.js';
import type { MigrationFile } from '../migrations/files.js';
import { toTenant, type Tenant, type TenantRow } from '../tenants/model.js';

export type RetentionStatus = 'active' | 'suspended' | 'deleted';
/** days kept, `null` forever, `tier` the tier's data_retention_days */
export type RetentionDays = number | null | 'tier';

/**
 * Retention per data class and tenant status, as the original design states it. `active` covers
 * trials too. Operators override any cell with the `retention` option.
 */
export const DEFAULT_RETENTION: Record<string, Record<RetentionStatus, RetentionDays>> = {
  executions: { active: 'tier', suspended: 30, deleted: 7 },
  audit: { active: 7 * 365, suspended: 365, deleted: 90 },
  user_data: { active: null, suspended: 365, deleted: 30 },
};

/** One tenant table that opted in: `-- tenantry:retention table=<t> class=<c> column=<timestamp column>`. */
export interface RetentionDeclaration {
  table: string;
  dataClass: string;
  column: string;
  /** the migration file that declared it */
  file: string;
}

export interface TenantRetentionReport {
  tenantId: string;
  slug: string;
  status: string;
  dryRun: boolean;
  /** rows deleted (or, dry run, that would be) per table, and `audit_log` for Tenantry's own trail */
  counts: Record<string, number>;
  /** longest single batch transaction, ms (the longest any lock was held) */
  longestBatchMs: number;
}

const NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const MARK = /^\s*--\s*tenantry:retention\b(.*)$/gm;

/**
 * Reads the opt-in declarations from the tenant migrations. A table opts in with a comment line in
 * the migration that creates it; anything malformed is refused at start-up, naming the file.
 */
export function retentionDeclarations(files: MigrationFile[], classes: string[]): RetentionDeclaration[] {
  const out = new Map<string, RetentionDeclaration>();
  for (const f of files) {
    for (const m of f.sql.matchAll(MARK)) {
      const kv = Object.fromEntries([...m[1]!.matchAll(/([a-z]+)=([^\s]+)/g)].map((x) => [x[1]!, x[2]!]));
      const where = `${f.name}: "${m[0].trim()}"`;
      if (!kv.table || !NAME.test(kv.table)) throw new TenantryError('INVALID_CONFIG', `${where} needs table=<tenant table name>.`);
      if (!kv.column || !NAME.test(kv.column)) throw new TenantryError('INVALID_CONFIG', `${where} needs column=<timestamp column>.`);
      if (!kv.class || !classes.includes(kv.class)) throw new TenantryError('INVALID_CONFIG', `${where} needs class= one of ${classes.join(', ')}.`);
      out.set(kv.table, { table: kv.table, dataClass: kv.class, column: kv.column, file: f.name });
    }
  }
  return [...out.values()];
}

const DAY_MS = 86_400_000;

/**
 * Purges data past its retention, per tenant, inside that tenant's walls: the runtime role's
 * tenant-bound transaction (RLS and the signed context apply), in batches of bounded size, each its
 * own short transaction with a lock timeout, so no purge holds a lock for long or blocks the
 * tenant's own writes. Each purge is audited with its counts per table.
 */
export class RetentionService {
  readonly declarations: RetentionDeclaration[];

  constructor(private readonly core: Core) {
    this.declarations = retentionDeclarations(core.migrations, Object.keys(this.policy()));
  }

  /** The policy in force: defaults with the `retention` option over them. */
  policy(): Record<string, Record<RetentionStatus, RetentionDays>> {
    const out: Record<string, Record<RetentionStatus, RetentionDays>> = {};
    for (const [cls, cells] of Object.entries(DEFAULT_RETENTION)) out[cls] = { ...cells };
    for (const [cls, cells] of Object.entries(this.core.opts.retention)) {
      out[cls] = { ...(out[cls] ?? { active: null, suspended: null, deleted: null }), ...(cells as Record<RetentionStatus, RetentionDays>) };
    }
    return out;
  }

  /** Days one class is kept for a tenant now (null: forever). */
  daysFor(dataClass: string, t: Pick<Tenant, 'status' | 'tier'>): number | null {
    const status: RetentionStatus = t.status === 'suspended' ? 'suspended' : t.status === 'deleted' ? 'deleted' : 'active';
    const cell = this.policy()[dataClass]?.[status] ?? null;
    if (cell !== 'tier') return cell;
    const tierDays = this.core.plans.plans.tiers.find((x) => x.name === t.tier)?.retentionDays ?? 0;
    // a tier that keeps its data for 0 days (unset) falls back to 90
    return tierDays > 0 ? tierDays : 90;
  }

  /** Purges (or counts, dry run) one tenant's data past its retention. */
  async purgeTenant(tenantId: string, opts: { dryRun?: boolean } = {}): Promise<TenantRetentionReport> {
    const [row] = await this.core.admin<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${tenantId}`;
    if (!row) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id ${JSON.stringify(tenantId)}.`);
    const t = toTenant(row);
    const dryRun = Boolean(opts.dryRun);
    const report: TenantRetentionReport = { tenantId: t.id, slug: t.slug, status: t.status, dryRun, counts: {}, longestBatchMs: 0 };
    if (t.status === 'provisioning') return report;
    const now = this.core.opts.clock();
    const batch = this.core.opts.retentionBatchSize;
    for (const d of this.declarations) {
      const days = this.daysFor(d.dataClass, t);
      if (days === null) { report.counts[d.table] = 0; continue; }
      const cutoff = new Date(now.getTime() - days * DAY_MS);
      const table = ident(d.table);
      const column = ident(d.column);
      const exists = await runInTenant(this.core, t, async (tx) => (await tx<{ ok: boolean }[]>`select to_regclass(${d.table}) is not null as ok`)[0]!.ok);
      if (!exists) continue;
      let total = 0;
      if (dryRun) {
        total = await runInTenant(this.core, t, async (tx) => Number((await tx.unsafe<{ n: string }[]>(`select count(*) as n from ${table} where ${column} < $1`, [cutoff]))[0]!.n));
      } else {
        for (;;) {
          const started = process.hrtime.bigint();
          const n = await runInTenant(this.core, t, async (tx) => {
            // a batch never waits long for a lock the tenant's own work holds: it fails and the next run retries
            await tx`select set_config('lock_timeout', '2000', true)`;
            const r = await tx.unsafe(`delete from ${table} where ctid = any (array(select ctid from ${table} where ${column} < $1 limit ${batch}))`, [cutoff]);
            return r.count;
          });
          report.longestBatchMs = Math.max(report.longestBatchMs, Number(process.hrtime.bigint() - started) / 1e6);
          total += n;
          if (n < batch) break;
        }
      }
      report.counts[d.table] = total;
    }
    // Tenantry's own trail of this tenant follows the audit class
    const auditDays = this.daysFor('audit', t);
    if (auditDays !== null) {
      const cutoff = new Date(now.getTime() - auditDays * DAY_MS);
      report.counts.audit_log = dryRun ? await this.countAudit(t.id, cutoff) : await purgeAudit(this.core.admin, t.id, cutoff, batch);
    }
    const removed = Object.values(report.counts).reduce((a, b) => a + b, 0);
    if (!dryRun && removed > 0) {
      await appendAudit(this.core.admin, {
        tenantId: t.id, actor: 'system', action: 'retention.purged', target: `tenant:${t.id}`,
        details: { counts: report.counts, status: t.status, longestBatchMs: Math.round(report.longestBatchMs) },
      });
    }
    return report;
  }

  /** The installation's own audit chain (tenant-less entries), kept as the audit class of an active tenant. */
  async purgeInstallationAudit(opts: { dryRun?: boolean } = {}): Promise<number> {
    const days = this.policy().audit?.active;
    if (typeof days !== 'number') return 0;
    const cutoff = new Date(this.core.opts.clock().getTime() - days * DAY_MS);
    return opts.dryRun ? this.countAudit(null, cutoff) : purgeAudit(this.core.admin, null, cutoff, this.core.opts.retentionBatchSize);
  }

  /** Every tenant (and the installation's trail); what `tenantry retention run [--dry-run]` does. */
  async purgeAll(opts: { dryRun?: boolean } = {}): Promise<{ tenants: TenantRetentionReport[]; installationAudit: number }> {
    const ids = await this.core.admin<{ id: string }[]>`select id from tenantry_catalog.tenants where status <> 'provisioning' order by seq`;
    const tenants: TenantRetentionReport[] = [];
    for (const { id } of ids) tenants.push(await this.purgeTenant(id, opts));
    return { tenants, installationAudit: await this.purgeInstallationAudit(opts) };
  }

  private async countAudit(tenantId: string | null, cutoff: Date): Promise<number> {
    const [r] = await this.core.admin<{ n: string }[]>`
      select count(*) as n from tenantry_catalog.audit_log
      where tenant_id is not distinct from ${tenantId}::uuid and created_at < ${cutoff}
        and chain_seq < (select max(chain_seq) from tenantry_catalog.audit_log where tenant_id is not distinct from ${tenantId}::uuid)`;
    return Number(r!.n);
  }
}

/** Removes the oldest audit entries of one chain before `cutoff`, through the one SECURITY DEFINER exception. */
async function purgeAudit(sql: Sql, tenantId: string | null, cutoff: Date, batch: number): Promise<number> {
  let total = 0;
  for (;;) {
    const [r] = await sql<{ n: number }[]>`select tenantry_catalog.audit_purge(${tenantId}::uuid, ${cutoff}, ${batch}) as n`;
    total += r!.n;
    if (r!.n < batch) return total;
  }
}

/**
 * Undoes what an earlier build of 0040 set up on open (DELETE on the audit log held by the owner role,
 * which the configured user inherits as its member): audit_purge() is the configured user's own again
 * and grants itself DELETE only inside its transaction (0041). Idempotent; run on every open.
 */
export async function ensureAuditPurge(lock: Sql, ownerRole: string): Promise<void> {
  const o = ident(ownerRole);
  await lock.unsafe(`
    revoke delete on tenantry_catalog.audit_log from ${o};
    alter function tenantry_catalog.audit_purge(uuid, timestamptz, integer) owner to current_user;`);
}
