import { randomUUID } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { tenantObjectBytes } from '../objects/usage.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { Tenant } from '../tenants/model.js';
import { validateTier, type Tier } from '../tenants/model.js';
import { STRATEGIES } from '../isolation/modes.js';
import { validateAmount, validateLimit, type QuotaName } from './metrics.js';
import type { WindowUnit } from '../plans/plan-file.js';
import { loadPlans, toLimit, UNLIMITED_SQL as UNLIMITED } from '../plans/state.js';
import { overLimitTenants } from '../plans/plans.js';
import type { CountMetricName, DebitMetricName, GaugeMetricName, LeaseMetricName, PlanMetricName } from '../plans/plan-types.js';

/** Quota keys as the app's generated plan types name them (the built-in ones by default). */
type PlanQuotaKey = import('../plans/plan-types.js').TenantryPlanTypes extends { quota: infer Q extends string } ? Q : QuotaName;
type MetricName = PlanMetricName;

export interface TierInfo {
  name: Tier;
  /** per quota key: the limit, or null for unlimited */
  quotas: Record<PlanQuotaKey, number | null>;
  features: string[];
  /** new tenants land on this tier when they name none */
  default: boolean;
  /** on the tier trials run on: the tier a trial falls back to */
  trialOf: string | null;
  updatedAt: Date;
}

export interface EffectiveQuota {
  /** null: unlimited */
  limit: number | null;
  source: 'tier' | 'override';
}

export interface UsageLine {
  metric: MetricName;
  kind: 'count' | 'window' | 'lease' | 'gauge';
  quota: PlanQuotaKey;
  used: number;
  /** null: unlimited (a gauge's limit is in its measured units: the plan's limit times its scale) */
  limit: number | null;
  /** 0-100+, one decimal */
  utilization: number;
  windowStart: Date | null;
}

export interface UsageSummary {
  tenantId: string;
  tier: Tier;
  metrics: UsageLine[];
  /** true when any metric is over 90% of its limit */
  atRisk: boolean;
  /** true when any metric is above its limit (after a downgrade or a lowered limit): its debits are refused */
  overQuota: boolean;
  /** the metrics above their limit */
  overLimit: string[];
}

export interface UsageHistoryRow {
  tenantId: string;
  slug: string;
  period: string;
  metric: string;
  amount: number;
}

export interface IncrementResult {
  metric: MetricName;
  used: number;
  /** null: unlimited */
  limit: number | null;
  /** true when this was a retry of an already-applied idempotency key */
  replayed: boolean;
}

const WINDOW_SQL: Record<WindowUnit, string> = { minute: 'minute', hour: 'hour', day: 'day', month: 'month' };

/** Tiers, per-tenant quota overrides and atomic usage metering. */
export class QuotaService {
  private storageTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly core: Core, private readonly tenants: TenantService,
    /** told after overrides or a tier change, so cached limits are dropped (undefined: every tenant) */
    private readonly onLimitsChanged: (tenantId?: string) => void = () => {},
  ) {}

  // ---- tiers ----

  /** The tiers in their declared order (for upgrades and downgrades). */
  async listTiers(): Promise<TierInfo[]> {
    const rows = await this.core.admin<{ name: Tier; quotas: Record<PlanQuotaKey, number | null>; features: string[]; is_default: boolean; trial_of: string | null; updated_at: Date }[]>`
      select name, quotas, features, is_default, trial_of, updated_at from tenantry_catalog.tiers order by position, name`;
    return rows.map((r) => ({ name: r.name, quotas: r.quotas, features: r.features, default: r.is_default, trialOf: r.trial_of, updatedAt: r.updated_at }));
  }

  async getTier(name: string): Promise<TierInfo> {
    const tier = validateTier(name, this.core.plans.tierNames());
    const t = (await this.listTiers()).find((x) => x.name === tier);
    if (!t) throw new TenantryError('INVALID_TIER', `Tier ${tier} is missing from the catalog.`);
    return t;
  }

  /** Edits a tier's quotas (merged) and/or its feature set (replaced); audited on the installation's chain. */
  async updateTier(name: string, change: { quotas?: Partial<Record<string, number>>; features?: string[] }, who: AuditActor = {}): Promise<TierInfo> {
    const tier = validateTier(name, this.core.plans.tierNames());
    if (!change || typeof change !== 'object') throw new TenantryError('INVALID_INPUT', 'updateTier() takes { quotas?, features? }.');
    const quotas: Record<string, number> = {};
    for (const [k, v] of Object.entries(change.quotas ?? {})) quotas[this.core.plans.validateQuotaName(k)] = validateLimit(v, k);
    const features = change.features === undefined ? undefined : change.features.map(validateFeature);
    await this.core.admin.begin(async (tx) => {
      const [before] = await tx<{ quotas: Record<string, number>; features: string[] }[]>`select quotas, features from tenantry_catalog.tiers where name = ${tier} for update`;
      await tx`
        update tenantry_catalog.tiers set quotas = quotas || ${tx.json(quotas)},
          features = ${features ?? before!.features}, updated_at = now()
        where name = ${tier}`;
      await appendAudit(tx, {
        tenantId: null, actor: who.actor ?? this.core.opts.actor, action: 'tier.updated', target: `tier:${tier}`,
        requestId: who.requestId, details: { quotas, features: features ?? null, before },
      });
      // a lowered limit deletes nothing: the tenants now above it are named, and their debits refused
      const onTier = new Set((await tx<{ id: string }[]>`select id from tenantry_catalog.tenants where tier = ${tier}`).map((r) => r.id));
      const named = Object.keys(quotas).length === 0 ? [] : (await overLimitTenants(tx)).filter((o) => onTier.has(o.tenantId));
      if (named.length > 0) {
        await appendAudit(tx, {
          tenantId: null, actor: who.actor ?? this.core.opts.actor, action: 'quota.exceeded_by_change', target: `tier:${tier}`,
          requestId: who.requestId, details: { tenants: named.slice(0, 1000), count: named.length },
        });
      }
      await tx`select pg_notify('tenantry_plans_changed', '')`;
    });
    // the plans in force now carry the edited tier
    this.core.plans.set(await loadPlans(this.core.admin));
    this.onLimitsChanged();
    return this.getTier(tier);
  }

  // ---- quotas ----

  /** Each quota's limit for a tenant: its override if set, else its tier's. */
  async effectiveQuotas(idOrSlug: string): Promise<Record<PlanQuotaKey, EffectiveQuota>> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<{ quota: string; limit_value: string | null; source: 'tier' | 'override' }[]>`
      select q.key as quota, coalesce(o.limit_value, case when q.value is null then ${UNLIMITED}::bigint else q.value::bigint end) as limit_value,
             case when o.limit_value is null then 'tier' else 'override' end as source
      from tenantry_catalog.tiers ti, jsonb_each_text(ti.quotas) q
      left join tenantry_catalog.quota_overrides o on o.tenant_id = ${t.id} and o.quota = q.key
      where ti.name = ${t.tier}`;
    const out = {} as Record<PlanQuotaKey, EffectiveQuota>;
    const known = this.core.plans.quotaNames();
    for (const r of rows) if (known.includes(r.quota)) out[r.quota as PlanQuotaKey] = { limit: toLimit(r.limit_value), source: r.source };
    return out;
  }

  /** Sets per-tenant overrides (a number) or removes them (null); audited. */
  async setOverrides(idOrSlug: string, overrides: Record<string, number | null>, who: AuditActor = {}): Promise<Record<PlanQuotaKey, EffectiveQuota>> {
    if (!overrides || typeof overrides !== 'object' || Array.isArray(overrides)) throw new TenantryError('INVALID_INPUT', 'Quota overrides are an object like { max_agents: 500 } (null removes one).');
    const entries = Object.entries(overrides).map(([k, v]) => [this.core.plans.validateQuotaName(k), v === null ? null : validateLimit(v, k)] as const);
    if (entries.length === 0) throw new TenantryError('INVALID_INPUT', 'Name at least one quota to override.');
    const t = await this.tenants.get(idOrSlug);
    await this.core.admin.begin(async (tx) => {
      for (const [quota, value] of entries) {
        if (value === null) await tx`delete from tenantry_catalog.quota_overrides where tenant_id = ${t.id} and quota = ${quota}`;
        else await tx`
          insert into tenantry_catalog.quota_overrides (tenant_id, quota, limit_value) values (${t.id}, ${quota}, ${value})
          on conflict (tenant_id, quota) do update set limit_value = excluded.limit_value`;
      }
      await appendAudit(tx, {
        tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'quota.overrides_set', target: `tenant:${t.id}`,
        requestId: who.requestId, details: { overrides: Object.fromEntries(entries) },
      });
    });
    this.onLimitsChanged(t.id);
    return this.effectiveQuotas(t.id);
  }

  // ---- metering ----

  /**
   * Debits `amount` of a count or windowed metric. Either returns the new usage or throws
   * QUOTA_EXCEEDED having changed nothing. One UPDATE decides: its WHERE re-checks the limit on the
   * row it locks, so concurrent debits never overshoot, and a window that has passed restarts in the
   * same statement. A retry with the same idempotency key is applied once.
   */
  async increment(idOrSlug: string, metricName: DebitMetricName, amount = 1, opts: { idempotencyKey?: string } = {}): Promise<IncrementResult> {
    const def = this.core.plans.metric(metricName);
    const metric = def.name as MetricName;
    if (def.kind !== 'count' && def.kind !== 'window') {
      throw new TenantryError('INVALID_INPUT', `${metric} is a ${def.kind} metric: ${def.kind === 'lease' ? 'use acquireLease/releaseLease' : def.source === 'storage' ? 'it is measured, not debited (refreshStorage)' : 'set it with setGauge'}.`);
    }
    const n = validateAmount(amount);
    const key = opts.idempotencyKey;
    if (key !== undefined && (typeof key !== 'string' || key.length < 1 || key.length > 200)) {
      throw new TenantryError('INVALID_INPUT', 'idempotencyKey must be a string of 1-200 characters.');
    }
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    if (key === undefined) return this.debit(this.core.admin, tenant, metric, n);
    return this.core.admin.begin(async (tx) => {
      const claimed = await tx`
        insert into tenantry_catalog.usage_idempotency (tenant_id, idempotency_key, metric, amount, used_after)
        values (${tenant.id}, ${key}, ${metric}, ${n}, -1) on conflict do nothing returning 1`;
      if (claimed.length === 0) {
        // a concurrent first attempt held the key until it committed; its outcome is now visible
        const [prior] = await tx<{ metric: string; amount: string; used_after: string }[]>`
          select metric, amount, used_after from tenantry_catalog.usage_idempotency where tenant_id = ${tenant.id} and idempotency_key = ${key}`;
        if (prior!.metric !== metric || Number(prior!.amount) !== n) {
          throw new TenantryError('INVALID_INPUT', `Idempotency key ${JSON.stringify(key)} was already used for ${prior!.amount} ${prior!.metric}; use a new key for a different request.`);
        }
        // the limit is read on this transaction's own connection: asking the pool for another one
        // while holding this one deadlocks once every pooled connection is a replay waiting here
        const [lim] = await tx<{ limit_value: string }[]>`
          select tenantry_catalog.quota_limit(${tenant.id}, ${def.quota}) as limit_value`;
        return { metric, used: Number(prior!.used_after), limit: toLimit(lim!.limit_value), replayed: true };
      }
      const r = await this.debit(tx, tenant, metric, n);
      await tx`update tenantry_catalog.usage_idempotency set used_after = ${r.used} where tenant_id = ${tenant.id} and idempotency_key = ${key}`;
      return r;
    });
  }

  /** Lowers a count metric (an agent deleted, a user removed); never below zero. */
  async decrement(idOrSlug: string, metricName: CountMetricName, amount = 1): Promise<{ metric: MetricName; used: number }> {
    const def = this.core.plans.metric(metricName);
    const metric = def.name as MetricName;
    if (def.kind !== 'count') throw new TenantryError('INVALID_INPUT', `Only count metrics go down; ${metric} is ${def.kind}.`);
    const n = validateAmount(amount);
    const t = await this.tenants.get(idOrSlug);
    return { metric, used: await this.credit(this.core.admin, t.id, metric, n) };
  }

  /** Whether the plans in force declare this metric (members count against `users` only where they do). */
  meters(metric: string): boolean {
    return this.core.plans.hasMetric(metric);
  }

  /** The credit statement, shared with members (a removed member frees a max_users slot). */
  async credit(sql: Sql | TransactionSql, tenantId: string, metric: string, n: number): Promise<number> {
    const [r] = await sql<{ used: string }[]>`
      update tenantry_catalog.usage_counters set used = greatest(used - ${n}, 0), updated_at = now()
      where tenant_id = ${tenantId} and metric = ${metric} returning used`;
    return Number(r?.used ?? 0);
  }

  /** The debit statement, shared with members (max_users) so both paths enforce the same way. */
  async debit(sql: Sql | TransactionSql, tenant: Tenant, metricName: string, n: number): Promise<IncrementResult> {
    const def = this.core.plans.metric(metricName);
    const metric = def.name as MetricName;
    const windowed = def.kind === 'window';
    const unit = windowed ? WINDOW_SQL[def.window!] : null;
    for (let attempt = 0; attempt < 2; attempt++) {
      const rows = await sql<{ used: string; limit_value: string }[]>`
        with lim as (
          select tenantry_catalog.quota_limit(${tenant.id}, ${def.quota}) as limit_value
        ), w as (
          select case when ${unit}::text is null then null else date_trunc(${unit ?? 'day'}, now()) end as ws
        ), upd as (
          update tenantry_catalog.usage_counters c set
            used = case when c.window_start is distinct from w.ws then ${n} else c.used + ${n} end,
            window_start = w.ws, updated_at = now()
          from lim, w
          where c.tenant_id = ${tenant.id} and c.metric = ${metric}
            and (case when c.window_start is distinct from w.ws then ${n} else c.used + ${n} end) <= lim.limit_value
          returning c.used, lim.limit_value
        ), hist as (
          insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount)
          select ${tenant.id}, ${metric}, current_date, ${n} from upd
          on conflict (tenant_id, metric, day) do update set amount = usage_daily.amount + excluded.amount
        )
        select used, limit_value from upd`;
      if (rows[0]) return { metric, used: Number(rows[0].used), limit: toLimit(rows[0].limit_value), replayed: false };
      // no row updated: either the counter does not exist yet, or the debit would pass the limit.
      // Retry once after making sure the row exists, also when this insert found it already there:
      // a concurrent first debit may have created it after our UPDATE looked (the insert waits for
      // that creator to commit, so the retry sees the row), and refusing then would be spurious.
      if (attempt === 1) break;
      await sql`
        insert into tenantry_catalog.usage_counters (tenant_id, metric, used) values (${tenant.id}, ${metric}, 0)
        on conflict do nothing`;
    }
    const [cur] = await sql<{ used: string; limit_value: string; current: boolean }[]>`
      select c.used, tenantry_catalog.quota_limit(c.tenant_id, ${def.quota}) as limit_value,
             (${unit}::text is null or c.window_start = date_trunc(${unit ?? 'day'}, now())) as current
      from tenantry_catalog.usage_counters c
      where c.tenant_id = ${tenant.id} and c.metric = ${metric}`;
    const used = cur?.current ? Number(cur.used) : 0;
    this.core.events.emit('quotaRejected', { metric, tenantId: tenant.id });
    const limit = toLimit(cur?.limit_value ?? 0);
    throw new TenantryError('QUOTA_EXCEEDED', `Quota ${def.quota} of tenant "${tenant.slug}" would be exceeded: ${used} used of ${limit}, ${n} more requested${windowed ? ` (resets each ${unit})` : ''}. Raise the tier or override the quota.`, { tenantId: tenant.id, metric, quota: def.quota, used, limit, requested: n });
  }

  /**
   * Takes one concurrency slot for `ttlSeconds`; a holder that crashes frees its slot when the lease
   * expires. Acquisitions for one tenant and metric serialise on its counter row.
   */
  async acquireLease(idOrSlug: string, metricName: LeaseMetricName, opts: { ttlSeconds?: number } = {}): Promise<{ leaseId: string; expiresAt: Date; used: number; limit: number | null }> {
    const def = this.core.plans.metric(metricName);
    const metric = def.name as MetricName;
    if (def.kind !== 'lease') throw new TenantryError('INVALID_INPUT', `${metric} is not a lease metric; use increment.`);
    const ttl = opts.ttlSeconds ?? def.ttlSeconds ?? 300;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) throw new TenantryError('INVALID_INPUT', 'ttlSeconds must be an integer from 1 to 86400.');
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    return this.core.admin.begin(async (tx) => {
      await tx`insert into tenantry_catalog.usage_counters (tenant_id, metric, used) values (${tenant.id}, ${metric}, 0) on conflict do nothing`;
      const [lim] = await tx<{ limit_value: string }[]>`
        select tenantry_catalog.quota_limit(c.tenant_id, ${def.quota}) as limit_value
        from tenantry_catalog.usage_counters c
        where c.tenant_id = ${tenant.id} and c.metric = ${metric}
        for update of c`;
      await tx`delete from tenantry_catalog.usage_leases where tenant_id = ${tenant.id} and metric = ${metric} and expires_at <= clock_timestamp()`;
      const [h] = await tx<{ held: number }[]>`select count(*)::int as held from tenantry_catalog.usage_leases where tenant_id = ${tenant.id} and metric = ${metric}`;
      const held = h!.held;
      const limit = toLimit(lim!.limit_value);
      if (limit !== null && held + 1 > limit) {
        this.core.events.emit('quotaRejected', { metric, tenantId: tenant.id });
        throw new TenantryError('QUOTA_EXCEEDED', `All ${limit} ${def.quota} slots of tenant "${tenant.slug}" are taken; release one, wait for a lease to expire, or raise the quota.`, { tenantId: tenant.id, metric, quota: def.quota, used: held, limit, requested: 1 });
      }
      const leaseId = randomUUID();
      const [lease] = await tx<{ expires_at: Date }[]>`
        insert into tenantry_catalog.usage_leases (id, tenant_id, metric, expires_at)
        values (${leaseId}, ${tenant.id}, ${metric}, clock_timestamp() + make_interval(secs => ${ttl})) returning expires_at`;
      await tx`update tenantry_catalog.usage_counters set used = ${held + 1}, updated_at = now() where tenant_id = ${tenant.id} and metric = ${metric}`;
      await tx`
        insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount) values (${tenant.id}, ${metric}, current_date, 1)
        on conflict (tenant_id, metric, day) do update set amount = usage_daily.amount + 1`;
      return { leaseId, expiresAt: lease!.expires_at, used: held + 1, limit };
    });
  }

  /** Extends a lease still held; false when it already expired or was released. */
  async renewLease(idOrSlug: string, leaseId: string, opts: { ttlSeconds?: number } = {}): Promise<boolean> {
    const ttl = opts.ttlSeconds ?? 300;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) throw new TenantryError('INVALID_INPUT', 'ttlSeconds must be an integer from 1 to 86400.');
    if (!isUuidLike(leaseId)) throw new TenantryError('INVALID_INPUT', 'leaseId is not one acquireLease returned.');
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin`
      update tenantry_catalog.usage_leases set expires_at = clock_timestamp() + make_interval(secs => ${ttl})
      where id = ${leaseId} and tenant_id = ${t.id} and expires_at > clock_timestamp() returning 1`;
    return rows.length > 0;
  }

  /** Frees a slot; false when the lease had already expired or been released. */
  async releaseLease(idOrSlug: string, leaseId: string): Promise<boolean> {
    if (!isUuidLike(leaseId)) throw new TenantryError('INVALID_INPUT', 'leaseId is not one acquireLease returned.');
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin`
      delete from tenantry_catalog.usage_leases where id = ${leaseId} and tenant_id = ${t.id} and expires_at > clock_timestamp() returning 1`;
    return rows.length > 0;
  }

  // ---- reporting ----

  /**
   * Usage, limit and utilization per declared metric; `atRisk` when any metric is over 90% of its
   * limit, `overQuota` (and the line's `overLimit`) when usage is above it, as after a downgrade.
   */
  async summary(idOrSlug: string): Promise<UsageSummary> {
    const t = await this.tenants.get(idOrSlug);
    const limits = await this.effectiveQuotas(t.id) as Record<string, EffectiveQuota | undefined>;
    const counters = await this.core.admin<{ metric: string; used: string; window_start: Date | null }[]>`
      select metric, used, window_start from tenantry_catalog.usage_counters where tenant_id = ${t.id}`;
    const leases = await this.core.admin<{ metric: string; n: number }[]>`
      select metric, count(*)::int as n from tenantry_catalog.usage_leases where tenant_id = ${t.id} and expires_at > clock_timestamp() group by metric`;
    const [now] = await this.core.admin<{ minute: Date; hour: Date; day: Date; month: Date }[]>`
      select date_trunc('minute', now()) as minute, date_trunc('hour', now()) as hour, date_trunc('day', now()) as day, date_trunc('month', now()) as month`;
    const byMetric = new Map(counters.map((c) => [c.metric, c]));
    const held = new Map(leases.map((l) => [l.metric, l.n]));
    const metrics: UsageLine[] = this.core.plans.plans.metrics.map((def) => {
      const c = byMetric.get(def.name);
      let used = Number(c?.used ?? 0);
      let windowStart: Date | null = null;
      if (def.kind === 'window') {
        windowStart = now![def.window!];
        if (!c?.window_start || c.window_start.getTime() !== windowStart.getTime()) used = 0;
      }
      if (def.kind === 'lease') used = held.get(def.name) ?? 0;
      const quotaLimit = limits[def.quota]?.limit;
      const limit = quotaLimit === null ? null : (quotaLimit ?? 0) * (def.kind === 'gauge' ? def.scale : 1);
      const utilization = limit === null ? 0 : limit === 0 ? (used > 0 ? 100 : 0) : Math.round((used / limit) * 1000) / 10;
      return { metric: def.name as MetricName, kind: def.kind, quota: def.quota as PlanQuotaKey, used, limit, utilization, windowStart };
    });
    const overLimit: string[] = metrics.filter((m) => m.limit !== null && m.used > m.limit).map((m) => m.metric);
    return { tenantId: t.id, tier: t.tier, metrics, atRisk: metrics.some((m) => m.utilization > 90), overQuota: overLimit.length > 0, overLimit };
  }

  /**
   * Sets an app gauge (a level the app measures itself, such as bandwidth this month) to `value`, in
   * the metric's measured units. A value above the limit is refused with QUOTA_EXCEEDED and not
   * recorded, exactly like a debit that would pass it.
   */
  async setGauge(idOrSlug: string, metricName: GaugeMetricName, value: number): Promise<IncrementResult> {
    const def = this.core.plans.metric(metricName);
    if (def.kind !== 'gauge' || def.source !== 'app') {
      throw new TenantryError('INVALID_INPUT', `${def.name} is not a gauge the app sets${def.source === 'storage' ? ' (it is measured: refreshStorage)' : ''}.`);
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > 1e15) {
      throw new TenantryError('INVALID_INPUT', `A gauge value is a whole number from 0 to 1e15, got ${JSON.stringify(value)}.`, { field: 'value' });
    }
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    // the limit check and the write are one statement, as for debits
    const rows = await this.core.admin<{ used: string; limit_value: string }[]>`
      with lim as (select tenantry_catalog.quota_limit(${tenant.id}, ${def.quota})::numeric * ${def.scale} as limit_value
      ), upd as (
        insert into tenantry_catalog.usage_counters (tenant_id, metric, used)
        select ${tenant.id}, ${def.name}, ${value} from lim where ${value} <= lim.limit_value
        on conflict (tenant_id, metric) do update set used = excluded.used, updated_at = now()
        returning used
      ), hist as (
        -- a gauge's history is its peak level of each day (exports take the peak of the period)
        insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount)
        select ${tenant.id}, ${def.name}, current_date, used from upd
        on conflict (tenant_id, metric, day) do update set amount = greatest(usage_daily.amount, excluded.amount)
      )
      select used, (select limit_value from lim)::text as limit_value from upd`;
    if (rows[0]) return { metric: def.name as MetricName, used: Number(rows[0].used), limit: gaugeLimit(rows[0].limit_value), replayed: false };
    const [lim] = await this.core.admin<{ limit_value: string }[]>`select (tenantry_catalog.quota_limit(${tenant.id}, ${def.quota})::numeric * ${def.scale})::text as limit_value`;
    const limit = gaugeLimit(lim!.limit_value);
    this.core.events.emit('quotaRejected', { metric: def.name, tenantId: tenant.id });
    throw new TenantryError('QUOTA_EXCEEDED', `Quota ${def.quota} of tenant "${tenant.slug}" would be exceeded: ${def.name} ${value} is over its limit of ${limit}. Raise the tier or override the quota.`, { tenantId: tenant.id, metric: def.name, quota: def.quota, used: value, limit, requested: value });
  }

  /** Usage totals per day or month, for one tenant or all; the billing export's source. */
  async history(opts: { tenant?: string; metric?: string; from?: Date; to?: Date; period?: 'day' | 'month' } = {}): Promise<UsageHistoryRow[]> {
    const period = opts.period ?? 'day';
    if (period !== 'day' && period !== 'month') throw new TenantryError('INVALID_INPUT', 'period must be day or month.');
    const metric = opts.metric === undefined ? undefined : this.core.plans.metric(opts.metric).name;
    for (const [k, v] of [['from', opts.from], ['to', opts.to]] as const) {
      if (v !== undefined && (!(v instanceof Date) || Number.isNaN(v.getTime()))) throw new TenantryError('INVALID_INPUT', `${k} must be a valid date.`);
    }
    const tenantId = opts.tenant === undefined ? undefined : (await this.tenants.get(opts.tenant)).id;
    const sql = this.core.admin;
    const rows = await sql<{ tenant_id: string; slug: string; period: string; metric: string; amount: string }[]>`
      select d.tenant_id, t.slug, to_char(date_trunc(${period}, d.day), ${period === 'day' ? 'YYYY-MM-DD' : 'YYYY-MM'}) as period,
             d.metric,
             -- debits add up over a period; a gauge's level does not: its peak in the period
             (case when bool_or(m.kind = 'gauge') then max(d.amount) else sum(d.amount) end)::bigint as amount
      from tenantry_catalog.usage_daily d join tenantry_catalog.tenants t on t.id = d.tenant_id
        left join tenantry_catalog.plan_metrics m on m.name = d.metric
      where true
        ${tenantId ? sql`and d.tenant_id = ${tenantId}` : sql``}
        ${metric ? sql`and d.metric = ${metric}` : sql``}
        ${opts.from ? sql`and d.day >= ${opts.from}::date` : sql``}
        ${opts.to ? sql`and d.day <= ${opts.to}::date` : sql``}
      group by 1, 2, 3, 4 order by 3, 2, 4`;
    return rows.map((r) => ({ tenantId: r.tenant_id, slug: r.slug, period: r.period, metric: r.metric, amount: Number(r.amount) }));
  }

  /** The history as CSV (header: period,tenant_id,slug,metric,amount) or JSON text. */
  async exportHistory(format: 'csv' | 'json', opts: Parameters<QuotaService['history']>[0] = {}): Promise<string> {
    if (format !== 'csv' && format !== 'json') throw new TenantryError('INVALID_INPUT', 'format must be csv or json.');
    const rows = await this.history(opts);
    if (format === 'json') return JSON.stringify(rows, null, 2);
    const esc = (v: string | number): string => {
      const s = String(v);
      // quote fields with separators, and defuse spreadsheet formulas
      const safe = /^[=+\-@]/.test(s) ? `'${s}` : s;
      return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
    };
    return ['period,tenant_id,slug,metric,amount', ...rows.map((r) => [r.period, r.tenantId, r.slug, r.metric, r.amount].map(esc).join(','))].join('\n') + '\n';
  }

  // ---- storage ----

  /**
   * Measures a tenant's storage from PostgreSQL: its database's size, its schema's relation sizes, or
   * (pooled) the bytes of its rows in the shared tables; stores it as `storage_bytes`.
   */
  async refreshStorage(idOrSlug: string): Promise<number> {
    const t = await this.tenants.get(idOrSlug);
    // measured by the tenant's isolation mode (database size, schema relations, or its pooled rows' bytes)
    // plus the bytes it keeps in object storage (tenantry.objects), counted as they are written
    const bytes = await STRATEGIES[t.isolation].measureStorage(this.core, { ...t.placement, id: t.id, isolation: t.isolation })
      + await tenantObjectBytes(this.core.admin, t.id);
    // recorded as the plans' measured-storage gauge, when they declare one
    const gauge = this.core.plans.plans.metrics.find((m) => m.kind === 'gauge' && m.source === 'storage');
    if (gauge) {
      await this.core.admin.begin(async (tx) => {
        await tx`
          insert into tenantry_catalog.usage_counters (tenant_id, metric, used) values (${t.id}, ${gauge.name}, ${bytes})
          on conflict (tenant_id, metric) do update set used = excluded.used, updated_at = now()`;
        // the day's peak, for exports
        await tx`
          insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount) values (${t.id}, ${gauge.name}, current_date, ${bytes})
          on conflict (tenant_id, metric, day) do update set amount = greatest(usage_daily.amount, excluded.amount)`;
      });
    }
    return bytes;
  }

  /** Refreshes every live tenant's storage figure now and then every `seconds` (0 stops). */
  scheduleStorageRefresh(seconds: number): void {
    if (this.storageTimer) clearInterval(this.storageTimer);
    this.storageTimer = undefined;
    if (seconds <= 0) return;
    this.storageTimer = setInterval(() => void this.refreshAllStorage(), seconds * 1000);
    this.storageTimer.unref();
  }

  async refreshAllStorage(): Promise<number> {
    const rows = await this.core.admin<{ id: string }[]>`select id from tenantry_catalog.tenants where status in ('active', 'trial', 'suspended')`;
    let done = 0;
    for (const { id } of rows) {
      try {
        await this.refreshStorage(id);
        done++;
      } catch (err) {
        this.core.logger.warn({ err, tenantId: id }, 'storage refresh failed');
      }
    }
    return done;
  }

  stop(): void {
    this.scheduleStorageRefresh(0);
  }
}

const FEATURE = /^[a-z][a-z0-9_]{0,62}$/;
export function validateFeature(f: unknown): string {
  if (typeof f !== 'string' || !FEATURE.test(f)) {
    throw new TenantryError('INVALID_INPUT', `A feature name is 1-63 chars of [a-z0-9_] starting with a letter, got ${JSON.stringify(f)}.`);
  }
  return f;
}

/** A gauge's limit in measured units (null: unlimited). */
function gaugeLimit(text: string): number | null {
  return BigInt(text.split('.')[0]!) >= BigInt(UNLIMITED) ? null : Number(text);
}

function isUuidLike(v: unknown): v is string {
  return typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v);
}
