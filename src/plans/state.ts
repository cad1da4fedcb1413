import type { Sql, TransactionSql } from 'postgres';
import { TenantryError } from '../errors.js';
import {
  quotaNames, RATE_LIMIT_QUOTA, RETENTION_QUOTA,
  type GaugeSource, type MetricKind, type PlanMetric, type PlanTier, type Plans, type WindowUnit,
} from './plan-file.js';

/** The largest bigint: what the catalog's quota_limit() answers for an unlimited quota. */
export const UNLIMITED_SQL = '9223372036854775807';

/** A limit read from the catalog as a number, or null when it is unlimited. */
export function toLimit(v: string | number | null | undefined): number | null {
  if (v === null || v === undefined) return 0;
  if (String(v) === UNLIMITED_SQL) return null;
  return Number(v);
}

/**
 * The plans in force, held in memory so the metering path looks a metric up without a query. Loaded
 * from the catalog at open, replaced after `plans apply` here and when another process announces one
 * (NOTIFY tenantry_plans_changed).
 */
export class PlanState {
  private current!: Plans;
  private metrics = new Map<string, PlanMetric>();
  private tiers = new Map<string, PlanTier>();
  private quotas: string[] = [];

  constructor(plans: Plans) {
    this.set(plans);
  }

  set(plans: Plans): void {
    this.current = plans;
    this.metrics = new Map(plans.metrics.map((m) => [m.name, m]));
    this.tiers = new Map(plans.tiers.map((t) => [t.name, t]));
    this.quotas = quotaNames(plans);
  }

  get plans(): Plans {
    return this.current;
  }

  /** The declared metric of that name; INVALID_INPUT naming the declared ones otherwise. */
  metric(name: unknown): PlanMetric {
    const m = typeof name === 'string' ? this.metrics.get(name) : undefined;
    if (!m) throw new TenantryError('INVALID_INPUT', `Unknown metric ${JSON.stringify(name)}; use one of ${[...this.metrics.keys()].join(', ')}.`, { metric: name });
    return m;
  }

  hasMetric(name: string): boolean {
    return this.metrics.has(name);
  }

  metricNames(): string[] {
    return [...this.metrics.keys()];
  }

  tierNames(): string[] {
    return [...this.tiers.keys()];
  }

  tier(name: string): PlanTier | undefined {
    return this.tiers.get(name);
  }

  defaultTier(): string {
    return (this.current.tiers.find((t) => t.default) ?? this.current.tiers[0]!).name;
  }

  /** The tier trials run on (the one with trialOf), if the plans name one. */
  trialTier(): PlanTier | undefined {
    return this.current.tiers.find((t) => t.trialOf !== null);
  }

  quotaNames(): string[] {
    return this.quotas;
  }

  validateQuotaName(quota: unknown): string {
    if (typeof quota !== 'string' || !this.quotas.includes(quota)) {
      throw new TenantryError('INVALID_INPUT', `Unknown quota ${JSON.stringify(quota)}; use one of ${this.quotas.join(', ')}.`, { quota });
    }
    return quota;
  }
}

interface MetricRow { name: string; kind: MetricKind; quota: string; unit: string; scale: string; window_unit: WindowUnit | null; ttl_seconds: number | null; gauge_source: GaugeSource | null; description: string }
interface TierRow { name: string; quotas: Record<string, number | null>; features: string[]; is_default: boolean; trial_of: string | null; price: PlanTier['price'] }

/** Reads the plans in force from the catalog (metrics, features and tiers in their order). */
export async function loadPlans(sql: Sql | TransactionSql): Promise<Plans> {
  const metricRows = await sql<MetricRow[]>`
    select name, kind, quota, unit, scale, window_unit, ttl_seconds, gauge_source, description
    from tenantry_catalog.plan_metrics order by position, name`;
  const featureRows = await sql<{ name: string; description: string }[]>`
    select name, description from tenantry_catalog.plan_features order by position, name`;
  const tierRows = await sql<TierRow[]>`
    select name, quotas, features, is_default, trial_of, price from tenantry_catalog.tiers order by position, name`;
  const metrics: PlanMetric[] = metricRows.map((r) => ({
    name: r.name, kind: r.kind, quota: r.quota, unit: r.unit, scale: Number(r.scale),
    window: r.window_unit, ttlSeconds: r.ttl_seconds, source: r.gauge_source, description: r.description,
  }));
  const tiers: PlanTier[] = tierRows.map((r) => ({
    name: r.name,
    limits: Object.fromEntries(metrics.map((m) => [m.name, r.quotas[m.quota] === undefined ? 0 : r.quotas[m.quota]!])),
    features: r.features,
    rateLimit: Number(r.quotas[RATE_LIMIT_QUOTA] ?? 0),
    retentionDays: Number(r.quotas[RETENTION_QUOTA] ?? 0),
    default: r.is_default,
    trialOf: r.trial_of,
    price: r.price ?? null,
  }));
  return { metrics, features: featureRows.map((f) => ({ name: f.name, description: f.description })), tiers };
}
