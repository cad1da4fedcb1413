import type { Core } from '../core.js';

/** One tenant near or past a limit: the metric closest to (or furthest over) its limit. */
export interface TenantAtRisk { tenantId: string; slug: string; metric: string; used: number; limit: number; utilization: number }

/** What the operator's overview shows, computed in the catalog (never by listing every tenant). */
export interface StatsOverview {
  tenants: { total: number; byStatus: Record<string, number> };
  /** tenants with a metric above 90% of its limit but none over it (worst first, at most 50 listed) */
  atRisk: { count: number; tenants: TenantAtRisk[] };
  /** tenants with a metric over its limit (worst first, at most 50 listed) */
  overQuota: { count: number; tenants: TenantAtRisk[] };
  /** the last 24 hours of provisioning */
  provisioning: { succeeded: number; failed: number; p50Ms: number | null; p95Ms: number | null; maxMs: number | null; recentFailures: { slug: string | null; reason: string; at: Date }[] };
  /** graphile-worker's queue; null when the job runner's schema is not installed */
  jobs: { queued: number; running: number; failed: number; recentFailures: { task: string; error: string; at: Date }[] } | null;
  /** webhook deliveries that gave up in the last 24 hours, and those still being retried */
  webhooks: { failedLastDay: number; pending: number };
}

const LISTED = 50;

export async function statsOverview(core: Core): Promise<StatsOverview> {
  const sql = core.admin;
  const [statusRows, riskRows, prov, provFailures, hooks] = await Promise.all([
    sql<{ status: string; n: number }[]>`select status, count(*)::int as n from tenantry_catalog.tenants group by status`,
    // each live tenant's worst metric against its effective limit (tier or override), in one pass
    sql<{ tenant_id: string; slug: string; metric: string; used: string; limit_value: string; ratio: string; total_over: number; total_risk: number }[]>`
      with usage as (
        select t.id as tenant_id, t.slug, m.name as metric,
          case m.kind
            when 'lease' then (select count(*) from tenantry_catalog.usage_leases l
                               where l.tenant_id = t.id and l.metric = m.name and l.expires_at > clock_timestamp())
            when 'window' then case when c.window_start = date_trunc(m.window_unit, now()) then c.used else 0 end
            else coalesce(c.used, 0) end::numeric as used,
          tenantry_catalog.quota_limit(t.id, m.quota)::numeric * (case when m.kind = 'gauge' then m.scale else 1 end) as limit_value
        from tenantry_catalog.tenants t
        cross join tenantry_catalog.plan_metrics m
        left join tenantry_catalog.usage_counters c on c.tenant_id = t.id and c.metric = m.name
        where t.status not in ('deleted', 'provisioning')
      ), worst as (
        select distinct on (tenant_id) tenant_id, slug, metric, used, limit_value,
          case when limit_value = 0 then (case when used > 0 then 1e9 else 0 end) else used / limit_value end as ratio
        from usage where limit_value is not null and used > 0
        order by tenant_id, case when limit_value = 0 then (case when used > 0 then 1e9 else 0 end) else used / limit_value end desc
      ), flagged as (
        select *, count(*) filter (where used > limit_value) over () as total_over,
                  count(*) filter (where used <= limit_value and ratio > 0.9) over () as total_risk,
                  row_number() over (partition by used > limit_value order by ratio desc, slug) as rank
        from worst where ratio > 0.9
      )
      select tenant_id, slug, metric, used::text, limit_value::text, ratio::text, total_over::int, total_risk::int
      from flagged where rank <= ${LISTED} order by ratio desc, slug`,
    sql<{ succeeded: number; failed: number; p50: number | null; p95: number | null; max: number | null }[]>`
      select count(*) filter (where action = 'tenant.created')::int as succeeded,
             count(*) filter (where action = 'tenant.provisioning_failed')::int as failed,
             percentile_disc(0.5) within group (order by (details->>'durationMs')::numeric) filter (where action = 'tenant.created' and details ? 'durationMs') as p50,
             percentile_disc(0.95) within group (order by (details->>'durationMs')::numeric) filter (where action = 'tenant.created' and details ? 'durationMs') as p95,
             max((details->>'durationMs')::numeric) filter (where action = 'tenant.created') as max
      from tenantry_catalog.audit_log
      where action in ('tenant.created', 'tenant.provisioning_failed') and created_at > now() - interval '1 day'`,
    sql<{ slug: string | null; reason: string | null; at: Date }[]>`
      select details->>'slug' as slug, coalesce(details->>'reason', details->>'error', '') as reason, created_at as at
      from tenantry_catalog.audit_log
      where action = 'tenant.provisioning_failed' and created_at > now() - interval '1 day'
      order by created_at desc limit 10`,
    sql<{ failed: number; pending: number }[]>`
      select (select count(*) from tenantry_catalog.webhook_deliveries where status = 'failed' and finished_at > now() - interval '1 day')::int as failed,
             (select count(*) from tenantry_catalog.webhook_deliveries where status = 'pending')::int as pending`,
  ]);
  const byStatus: Record<string, number> = {};
  for (const r of statusRows) byStatus[r.status] = r.n;
  const toRisk = (r: (typeof riskRows)[number]): TenantAtRisk => ({
    tenantId: r.tenant_id, slug: r.slug, metric: r.metric, used: Number(r.used), limit: Number(r.limit_value), utilization: Math.round(Number(r.ratio) * 1000) / 10,
  });
  const p = prov[0]!;
  return {
    tenants: { total: statusRows.filter((r) => r.status !== 'deleted').reduce((n, r) => n + r.n, 0), byStatus },
    atRisk: { count: riskRows[0]?.total_risk ?? 0, tenants: riskRows.filter((r) => Number(r.used) <= Number(r.limit_value)).map(toRisk) },
    overQuota: { count: riskRows[0]?.total_over ?? 0, tenants: riskRows.filter((r) => Number(r.used) > Number(r.limit_value)).map(toRisk) },
    provisioning: {
      succeeded: p.succeeded, failed: p.failed,
      p50Ms: p.p50 === null ? null : Number(p.p50), p95Ms: p.p95 === null ? null : Number(p.p95), maxMs: p.max === null ? null : Number(p.max),
      recentFailures: provFailures.map((f) => ({ slug: f.slug, reason: (f.reason ?? '').slice(0, 500), at: f.at })),
    },
    jobs: await jobHealth(core),
    webhooks: { failedLastDay: hooks[0]!.failed, pending: hooks[0]!.pending },
  };
}

/** graphile-worker's queue: jobs waiting, locked by a worker, and out of attempts. */
async function jobHealth(core: Core): Promise<StatsOverview['jobs']> {
  const sql = core.admin;
  const [has] = await sql<{ ok: boolean }[]>`select to_regclass('tenantry_jobs._private_jobs') is not null as ok`;
  if (!has?.ok) return null;
  const [counts] = await sql<{ queued: number; running: number; failed: number }[]>`
    select count(*) filter (where locked_at is null and attempts < max_attempts)::int as queued,
           count(*) filter (where locked_at is not null)::int as running,
           count(*) filter (where attempts >= max_attempts)::int as failed
    from tenantry_jobs._private_jobs`;
  const failures = await sql<{ task: string; error: string | null; at: Date }[]>`
    select t.identifier as task, j.last_error as error, j.updated_at as at
    from tenantry_jobs._private_jobs j join tenantry_jobs._private_tasks t on t.id = j.task_id
    where j.last_error is not null order by j.updated_at desc limit 10`;
  return { ...counts!, recentFailures: failures.map((f) => ({ task: f.task, error: (f.error ?? '').slice(0, 500), at: f.at })) };
}
