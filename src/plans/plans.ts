import { readFileSync, statSync } from 'node:fs';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import {
  MAX_PLAN_FILE_BYTES, parsePlansText, plansDocument, tierQuotas, validatePlans,
  type PlanMetric, type PlanTier, type Plans,
} from './plan-file.js';
import { loadPlans, toLimit } from './state.js';
import { plansDeclaration } from './plan-types.js';

/** One difference between the plans in force and a plan file. */
export interface PlanChange {
  change:
    | 'metric.added' | 'metric.removed' | 'metric.changed'
    | 'feature.added' | 'feature.removed' | 'feature.changed'
    | 'tier.added' | 'tier.removed' | 'tier.reordered' | 'tier.changed'
    | 'limit.raised' | 'limit.lowered' | 'feature.granted' | 'feature.revoked';
  /** `metric:agents`, `tier:free`, `tier:free/participants` ... */
  target: string;
  from?: unknown;
  to?: unknown;
}

/** A change that would strand tenants or their history, and how to let it through. */
export interface PlanRefusal {
  code: 'PLAN_TIER_IN_USE' | 'PLAN_METRIC_HAS_USAGE';
  target: string;
  message: string;
  tenants: number;
}

export interface OverLimit { tenantId: string; slug: string; metric: string; used: number; limit: number }

export interface PlanDiff {
  /** true when the file and the catalog declare the same plans */
  identical: boolean;
  changes: PlanChange[];
  /** what `apply` would refuse (each with its own error code), unless moveTenants / dropHistory say otherwise */
  refusals: PlanRefusal[];
  /** tenants on a removed tier, and where they would go */
  moves: { tenantId: string; slug: string; from: string; to: string }[];
  /** tenants whose usage would exceed a lowered limit (kept, never deleted; their debits are refused) */
  overLimit: OverLimit[];
  /** tenants on a tier whose limits, features or existence change */
  tenantsAffected: number;
}

export interface ApplyPlansOptions {
  /** tenants on a tier the file removes move to this tier (which the file declares) */
  moveTenants?: string;
  /** removing a metric (or changing its kind) deletes its recorded usage and history */
  dropHistory?: boolean;
}

export interface PlanFileStatus {
  /** the plan file named by the `plans` option / TENANTRY_PLANS */
  path: string;
  differs: boolean;
  changes: PlanChange[];
}

/** Thrown inside a dry run's transaction to roll everything back. */
class DryRun extends Error {
  constructor(readonly diff: PlanDiff) { super('dry run'); }
}

const PLAN_LOCK = 'tenantry-plans';

/** Reads a plan file from disk, refusing oversized files before reading them whole. */
export function readPlanFile(file: string): Plans {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (err) {
    throw new TenantryError('INVALID_PLANS', `Plan file ${file} cannot be read: ${(err as Error).message}`, { path: file });
  }
  if (size > MAX_PLAN_FILE_BYTES) {
    throw new TenantryError('INVALID_PLANS', `Plan file ${file} is ${(size / 1_048_576).toFixed(1)} MiB; the limit is ${MAX_PLAN_FILE_BYTES / 1_048_576} MiB.`, { path: '$', bytes: size });
  }
  return parsePlansText(readFileSync(file, 'utf8'), file);
}

/** A plan given as a parsed document, file text, or already-validated plans. */
function toPlans(input: unknown): Plans {
  if (typeof input === 'string') return parsePlansText(input, 'the plan text');
  return validatePlans(input);
}

/** The differences between two plans, in file order; pure. */
export function comparePlans(from: Plans, to: Plans): PlanChange[] {
  const out: PlanChange[] = [];
  const byName = <T extends { name: string }>(xs: T[]): Map<string, T> => new Map(xs.map((x) => [x.name, x]));
  const fm = byName(from.metrics);
  const tm = byName(to.metrics);
  for (const m of from.metrics) if (!tm.has(m.name)) out.push({ change: 'metric.removed', target: `metric:${m.name}`, from: m.kind });
  for (const m of to.metrics) {
    const old = fm.get(m.name);
    if (!old) { out.push({ change: 'metric.added', target: `metric:${m.name}`, to: m.kind }); continue; }
    for (const k of ['kind', 'window', 'ttlSeconds', 'source', 'quota', 'unit', 'scale', 'description'] as const) {
      if (old[k] !== m[k]) out.push({ change: 'metric.changed', target: `metric:${m.name}.${k}`, from: old[k], to: m[k] });
    }
  }
  const ff = byName(from.features);
  const tf = byName(to.features);
  for (const f of from.features) if (!tf.has(f.name)) out.push({ change: 'feature.removed', target: `feature:${f.name}` });
  for (const f of to.features) {
    const old = ff.get(f.name);
    if (!old) out.push({ change: 'feature.added', target: `feature:${f.name}` });
    else if (old.description !== f.description) out.push({ change: 'feature.changed', target: `feature:${f.name}`, from: old.description, to: f.description });
  }
  const ft = byName(from.tiers);
  const tt = byName(to.tiers);
  for (const t of from.tiers) if (!tt.has(t.name)) out.push({ change: 'tier.removed', target: `tier:${t.name}` });
  const keptOld = from.tiers.filter((t) => tt.has(t.name)).map((t) => t.name);
  const keptNew = to.tiers.filter((t) => ft.has(t.name)).map((t) => t.name);
  if (keptOld.join() !== keptNew.join()) out.push({ change: 'tier.reordered', target: 'tiers', from: keptOld, to: keptNew });
  const show = (v: number | null | undefined): number | string => (v === null ? 'unlimited' : v ?? 0);
  for (const t of to.tiers) {
    const old = ft.get(t.name);
    if (!old) { out.push({ change: 'tier.added', target: `tier:${t.name}` }); continue; }
    for (const m of to.metrics) {
      if (!fm.has(m.name)) continue;
      const a = old.limits[m.name];
      const b = t.limits[m.name];
      if (a === b) continue;
      const raised = b === null || (a !== null && a !== undefined && b! > a);
      out.push({ change: raised ? 'limit.raised' : 'limit.lowered', target: `tier:${t.name}/${m.name}`, from: show(a), to: show(b) });
    }
    for (const [k, label] of [['rateLimit', 'rate_limit'], ['retentionDays', 'retention_days']] as const) {
      if (old[k] !== t[k]) out.push({ change: t[k] > old[k] ? 'limit.raised' : 'limit.lowered', target: `tier:${t.name}/${label}`, from: old[k], to: t[k] });
    }
    for (const f of t.features) if (!old.features.includes(f)) out.push({ change: 'feature.granted', target: `tier:${t.name}/${f}` });
    for (const f of old.features) if (!t.features.includes(f)) out.push({ change: 'feature.revoked', target: `tier:${t.name}/${f}` });
    if (old.default !== t.default) out.push({ change: 'tier.changed', target: `tier:${t.name}.default`, from: old.default, to: t.default });
    if (old.trialOf !== t.trialOf) out.push({ change: 'tier.changed', target: `tier:${t.name}.trialOf`, from: old.trialOf, to: t.trialOf });
    if (JSON.stringify(old.price ?? null) !== JSON.stringify(t.price ?? null)) out.push({ change: 'tier.changed', target: `tier:${t.name}.price`, from: old.price ?? null, to: t.price ?? null });
  }
  return out;
}

/**
 * Plans that belong to the app: read, compared with a plan file, and applied like a migration: in one
 * catalog transaction, audited, refusing changes that would strand tenants or their usage unless told
 * where they go.
 */
export class PlanService {
  private fileStatus: PlanFileStatus | undefined;

  constructor(
    private readonly core: Core,
    /** told after an apply, so cached limits and tenants are dropped */
    private readonly onApplied: () => void = () => {},
  ) {}

  /** The plans in force (the catalog's, as of the last load). */
  current(): Plans {
    return this.core.plans.plans;
  }

  /** The plans in force as a plan-file document. */
  document(): Record<string, unknown> {
    return plansDocument(this.current());
  }

  /** Re-reads the plans from the catalog (after another process applied some). */
  async reload(): Promise<Plans> {
    const plans = await loadPlans(this.core.admin);
    this.core.plans.set(plans);
    return plans;
  }

  /**
   * Compares the plan file named at open (option `plans` / TENANTRY_PLANS) with the catalog. A file
   * that differs is reported (here, in the log, in GET /v1/plans), never applied silently.
   */
  async checkFile(file: string): Promise<PlanFileStatus> {
    const plans = readPlanFile(file);
    const changes = comparePlans(this.current(), plans);
    this.fileStatus = { path: file, differs: changes.length > 0, changes };
    if (changes.length > 0) {
      this.core.logger.warn({ file, changes: changes.length }, `the plan file differs from the catalog (${changes.length} changes); review with \`tenantry plans diff\` and apply with \`tenantry plans apply\``);
    }
    return this.fileStatus;
  }

  /** The plan file named at open and whether it differs from the catalog (undefined: none named). */
  status(): PlanFileStatus | undefined {
    return this.fileStatus;
  }

  /** Parses and checks a plan (a document, JSON text, or a file path with `{ file }`). */
  parse(input: unknown): Plans {
    if (input && typeof input === 'object' && !Array.isArray(input) && typeof (input as { file?: unknown }).file === 'string' && Object.keys(input).length === 1) {
      return readPlanFile((input as { file: string }).file);
    }
    return toPlans(input);
  }

  /** What applying `input` would change, refuse, move and put over its limits; changes nothing. */
  async diff(input: unknown, opts: ApplyPlansOptions = {}): Promise<PlanDiff> {
    const target = this.parse(input);
    try {
      await this.run(target, opts, {}, true);
    } catch (err) {
      if (err instanceof DryRun) return err.diff;
      throw err;
    }
    throw new Error('unreachable: a dry run always rolls back');
  }

  /**
   * Applies a plan in one catalog transaction: metrics, features and tiers replaced, tenants moved,
   * history dropped only when asked, over-limit tenants named in a `quota.exceeded_by_change` entry,
   * and the whole change audited as `plans.applied`. A refused plan changes nothing.
   */
  async apply(input: unknown, opts: ApplyPlansOptions = {}, who: AuditActor = {}): Promise<PlanDiff> {
    const target = this.parse(input);
    const diff = await this.run(target, opts, who, false);
    this.core.plans.set(target);
    if (this.fileStatus) this.fileStatus = { ...this.fileStatus, ...(await this.refreshFileStatus(this.fileStatus.path)) };
    this.onApplied();
    return diff;
  }

  /** The .d.ts for the plans in force (or a given plan). */
  types(input?: unknown, from?: string): string {
    return plansDeclaration(input === undefined ? this.current() : this.parse(input), from);
  }

  private async refreshFileStatus(file: string): Promise<Omit<PlanFileStatus, 'path'>> {
    try {
      const changes = comparePlans(this.current(), readPlanFile(file));
      return { differs: changes.length > 0, changes };
    } catch {
      return { differs: true, changes: [] };
    }
  }

  private async run(target: Plans, opts: ApplyPlansOptions, who: AuditActor, dryRun: boolean): Promise<PlanDiff> {
    if (opts.moveTenants !== undefined && (typeof opts.moveTenants !== 'string' || !target.tiers.some((t) => t.name === opts.moveTenants))) {
      throw new TenantryError('INVALID_TIER', `--move-tenants names ${JSON.stringify(opts.moveTenants)}, which is not a tier of the new plans (${target.tiers.map((t) => t.name).join(', ')}).`, { tier: opts.moveTenants });
    }
    if (opts.dropHistory !== undefined && typeof opts.dropHistory !== 'boolean') throw new TenantryError('INVALID_INPUT', 'dropHistory must be true or false.');
    const actor = who.actor ?? this.core.opts.actor;
    return this.core.admin.begin(async (tx) => {
      // one plan change at a time, across processes
      await tx`select pg_advisory_xact_lock(hashtextextended(${PLAN_LOCK}, 0))`;
      const before = await loadPlans(tx);
      const changes = comparePlans(before, target);
      const newTiers = new Set(target.tiers.map((t) => t.name));
      const removedTiers = before.tiers.filter((t) => !newTiers.has(t.name)).map((t) => t.name);
      const newMetrics = new Map(target.metrics.map((m) => [m.name, m]));
      // a metric whose usage would be stranded: removed, or counted differently from now on
      const strandedMetrics = before.metrics.filter((m) => {
        const n = newMetrics.get(m.name);
        return !n || n.kind !== m.kind || n.window !== m.window || n.source !== m.source;
      });

      const onRemoved = removedTiers.length === 0 ? [] : await tx<{ id: string; slug: string; tier: string }[]>`
        select id, slug, tier from tenantry_catalog.tenants where tier = any(${removedTiers}) order by seq`;
      const usage = strandedMetrics.length === 0 ? [] : await tx<{ metric: string; tenants: number }[]>`
        select metric, count(distinct tenant_id)::int as tenants from (
          select tenant_id, metric from tenantry_catalog.usage_counters where used > 0 and metric = any(${strandedMetrics.map((m) => m.name)})
          union all select tenant_id, metric from tenantry_catalog.usage_daily where metric = any(${strandedMetrics.map((m) => m.name)})
          union all select tenant_id, metric from tenantry_catalog.usage_leases where metric = any(${strandedMetrics.map((m) => m.name)})
        ) u group by metric`;
      const refusals: PlanRefusal[] = [];
      if (opts.moveTenants === undefined) {
        for (const tier of removedTiers) {
          const n = onRemoved.filter((t) => t.tier === tier).length;
          if (n > 0) refusals.push({ code: 'PLAN_TIER_IN_USE', target: `tier:${tier}`, tenants: n, message: `Tier ${tier} is removed but ${n} tenant(s) are on it; say where they go with --move-tenants <tier> (moveTenants).` });
        }
      }
      if (!opts.dropHistory) {
        for (const u of usage) {
          const gone = !newMetrics.has(u.metric);
          refusals.push({ code: 'PLAN_METRIC_HAS_USAGE', target: `metric:${u.metric}`, tenants: u.tenants, message: `Metric ${u.metric} is ${gone ? 'removed' : 'counted differently (kind, window or source changed)'} but ${u.tenants} tenant(s) have recorded usage of it; pass --drop-history (dropHistory) to delete that usage and its history.` });
        }
      }
      const moves = opts.moveTenants === undefined ? [] : onRemoved.map((t) => ({ tenantId: t.id, slug: t.slug, from: t.tier, to: opts.moveTenants! }));
      const affectedTiers = new Set([...removedTiers, ...changes.filter((c) => c.target.startsWith('tier:')).map((c) => c.target.slice(5).split(/[/.]/)[0]!)]);
      const metricsChanged = changes.some((c) => c.change.startsWith('metric.'));
      const [aff] = await tx<{ n: number }[]>`
        select count(*)::int as n from tenantry_catalog.tenants
        where status <> 'deleted' and (${metricsChanged} or tier = any(${[...affectedTiers]}))`;
      const diff: PlanDiff = { identical: changes.length === 0, changes, refusals, moves, overLimit: [], tenantsAffected: aff!.n };

      if (refusals.length > 0) {
        if (dryRun) throw new DryRun(diff);
        const first = refusals[0]!;
        throw new TenantryError(first.code, `${first.message}${refusals.length > 1 ? ` (and ${refusals.length - 1} more refusal(s); see \`tenantry plans diff\`)` : ''} Nothing was changed.`, { refusals });
      }

      await this.write(tx, before, target, { removedTiers, strandedMetrics, moves, dropHistory: Boolean(opts.dropHistory), actor, requestId: who.requestId });
      diff.overLimit = await overLimitTenants(tx);
      if (dryRun) throw new DryRun(diff);

      if (diff.overLimit.length > 0) {
        await appendAudit(tx, {
          tenantId: null, actor, action: 'quota.exceeded_by_change', target: 'plans', requestId: who.requestId,
          details: { tenants: diff.overLimit.slice(0, 1000), count: diff.overLimit.length },
        });
      }
      await appendAudit(tx, {
        tenantId: null, actor, action: 'plans.applied', target: 'plans', requestId: who.requestId,
        details: {
          changes: changes.slice(0, 1000), changeCount: changes.length, moved: moves.length,
          moveTenants: opts.moveTenants ?? null, droppedHistory: opts.dropHistory ? strandedMetrics.map((m) => m.name) : [],
          plans: plansDocument(target),
        },
      });
      await tx`select pg_notify('tenantry_plans_changed', '')`;
      return diff;
    });
  }

  private async write(tx: TransactionSql, before: Plans, target: Plans, w: {
    removedTiers: string[]; strandedMetrics: PlanMetric[]; moves: PlanDiff['moves']; dropHistory: boolean; actor: string; requestId: string | undefined;
  }): Promise<void> {
    const stranded = w.strandedMetrics.map((m) => m.name);
    if (w.dropHistory && stranded.length > 0) {
      await tx`delete from tenantry_catalog.usage_counters where metric = any(${stranded})`;
      await tx`delete from tenantry_catalog.usage_daily where metric = any(${stranded})`;
      await tx`delete from tenantry_catalog.usage_leases where metric = any(${stranded})`;
      await tx`delete from tenantry_catalog.usage_idempotency where metric = any(${stranded})`;
    } else if (stranded.length > 0) {
      // no recorded usage (or the refusal above would have stopped us): only empty rows remain
      await tx`delete from tenantry_catalog.usage_counters where metric = any(${stranded}) and used = 0`;
    }
    // overrides follow their metric's quota when it is renamed, and go with a removed metric
    const newByName = new Map(target.metrics.map((m) => [m.name, m]));
    for (const m of before.metrics) {
      const n = newByName.get(m.name);
      if (!n) await tx`delete from tenantry_catalog.quota_overrides where quota = ${m.quota}`;
      else if (n.quota !== m.quota) await tx`update tenantry_catalog.quota_overrides set quota = ${n.quota} where quota = ${m.quota}`;
    }
    await tx`delete from tenantry_catalog.plan_metrics`;
    for (const [i, m] of target.metrics.entries()) {
      await tx`
        insert into tenantry_catalog.plan_metrics (name, position, kind, quota, unit, scale, window_unit, ttl_seconds, gauge_source, description)
        values (${m.name}, ${i}, ${m.kind}, ${m.quota}, ${m.unit}, ${m.scale}, ${m.window}, ${m.ttlSeconds}, ${m.source}, ${m.description})`;
    }
    await tx`delete from tenantry_catalog.plan_features`;
    for (const [i, f] of target.features.entries()) {
      await tx`insert into tenantry_catalog.plan_features (name, position, description) values (${f.name}, ${i}, ${f.description})`;
    }
    await tx`update tenantry_catalog.tiers set is_default = false where is_default`;
    for (const [i, t] of target.tiers.entries()) await this.upsertTier(tx, target, t, i);
    for (const m of w.moves) {
      await tx`update tenantry_catalog.tenants set tier = ${m.to}, updated_at = now() where id = ${m.tenantId}`;
      await appendAudit(tx, {
        tenantId: m.tenantId, actor: w.actor, action: 'tenant.tier_changed', target: `tenant:${m.tenantId}`, requestId: w.requestId,
        details: { from: m.from, to: m.to, reason: 'plans.apply: the tier was removed' },
      });
    }
    if (w.removedTiers.length > 0) await tx`delete from tenantry_catalog.tiers where name = any(${w.removedTiers})`;
    const def = target.tiers.find((t) => t.default)!;
    await tx`update tenantry_catalog.tiers set is_default = true where name = ${def.name}`;
  }

  private async upsertTier(tx: TransactionSql, plans: Plans, t: PlanTier, position: number): Promise<void> {
    const quotas = tierQuotas(plans, t);
    await tx`
      insert into tenantry_catalog.tiers (name, quotas, features, position, is_default, trial_of, price, updated_at)
      values (${t.name}, ${tx.json(quotas as never)}, ${t.features}, ${position}, false, ${t.trialOf}, ${t.price ? tx.json(t.price as never) : null}, now())
      on conflict (name) do update set quotas = excluded.quotas, features = excluded.features, position = excluded.position,
        trial_of = excluded.trial_of, price = excluded.price, updated_at = now()`;
  }
}

/**
 * Tenants whose usage is above their limit as the catalog stands (after a change in the same
 * transaction): counts and gauges by their level, windows within the current window, leases by the
 * slots held. Nothing is deleted; their next debit is refused.
 */
export async function overLimitTenants(tx: Sql | TransactionSql, tenantId?: string): Promise<OverLimit[]> {
  const rows = await tx<{ tenant_id: string; slug: string; metric: string; used: string; limit_value: string }[]>`
    select * from (
      select t.id as tenant_id, t.slug, m.name as metric, m.position,
        case m.kind
          when 'lease' then (select count(*) from tenantry_catalog.usage_leases l
                             where l.tenant_id = t.id and l.metric = m.name and l.expires_at > clock_timestamp())
          when 'window' then case when c.window_start = date_trunc(m.window_unit, now()) then c.used else 0 end
          else coalesce(c.used, 0) end as used,
        tenantry_catalog.quota_limit(t.id, m.quota)::numeric * (case when m.kind = 'gauge' then m.scale else 1 end) as limit_value
      from tenantry_catalog.tenants t
      cross join tenantry_catalog.plan_metrics m
      left join tenantry_catalog.usage_counters c on c.tenant_id = t.id and c.metric = m.name
      where t.status <> 'deleted' ${tenantId === undefined ? tx`` : tx`and t.id = ${tenantId}`}
    ) x
    where x.used > x.limit_value
    order by x.slug, x.position`;
  return rows.map((r) => ({ tenantId: r.tenant_id, slug: r.slug, metric: r.metric, used: Number(r.used), limit: toLimit(r.limit_value) ?? 0 }));
}
