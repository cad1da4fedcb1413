import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client';
import type { Tenantry } from '../tenantry.js';

/**
 * Prometheus metrics. Labels are bounded: routes are route patterns, never raw URLs, and tenant ids
 * appear only when the operator turns `tenantLabels` on.
 */
export function createMetrics(tenantry: Tenantry, opts: { tenantLabels: boolean }) {
  const registry = new Registry();
  // no prefix: stock Node.js dashboards look for process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'tenantry_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers: [registry] });
  const latency = new Histogram({
    name: 'tenantry_http_request_duration_seconds', help: 'HTTP request latency by route and status', labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry],
  });
  const provisioning = new Histogram({
    name: 'tenantry_provisioning_duration_seconds', help: 'Tenant provisioning time by isolation mode and outcome', labelNames: ['isolation', 'outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
  });
  const quotaRejections = new Counter({ name: 'tenantry_quota_rejections_total', help: 'Debits refused with QUOTA_EXCEEDED, by metric', labelNames: opts.tenantLabels ? ['metric', 'tenant'] : ['metric'], registers: [registry] });
  const rateLimited = new Counter({ name: 'tenantry_rate_limit_rejections_total', help: 'Requests refused by the rate limiter', labelNames: opts.tenantLabels ? ['tenant'] : [], registers: [registry] });
  new Gauge({
    name: 'tenantry_tenants', help: 'Tenants by status, tier and isolation mode', labelNames: ['status', 'tier', 'isolation'], registers: [registry],
    async collect() {
      this.reset();
      const rows = await tenantry.catalog<{ status: string; tier: string; isolation: string; n: number }[]>`
        select status, tier, isolation, count(*)::int as n from tenantry_catalog.tenants group by 1, 2, 3`;
      for (const r of rows) this.set({ status: r.status, tier: r.tier, isolation: r.isolation }, r.n);
    },
  });
  new Gauge({
    name: 'tenantry_pool_connections', help: 'Tenant connection pools: budget, reserved for open pools, leased now, idle (reserved, not leased), callers waiting', labelNames: ['state'], registers: [registry],
    collect() {
      const s = tenantry.poolStats();
      this.set({ state: 'budget' }, s.budget);
      this.set({ state: 'reserved' }, s.reserved);
      this.set({ state: 'leased' }, s.leased);
      this.set({ state: 'idle' }, Math.max(0, s.reserved - s.leased));
      this.set({ state: 'waiting' }, s.waiting);
    },
  });
  new Gauge({ name: 'tenantry_pools_open', help: 'Open tenant connection pools', registers: [registry], collect() { this.set(tenantry.poolStats().pools); } });
  new Gauge({ name: 'tenantry_pool_evictions', help: 'Pools closed to make room under the connection budget (since start)', registers: [registry], collect() { this.set(tenantry.poolStats().evictions); } });

  tenantry.events.on('provisioned', (e) => provisioning.observe({ isolation: e.isolation, outcome: e.outcome }, e.durationMs / 1000));
  tenantry.events.on('quotaRejected', (e) => quotaRejections.inc(opts.tenantLabels ? { metric: e.metric, tenant: e.tenantId } : { metric: e.metric }));
  const authFailures = new Counter({ name: 'tenantry_auth_failures_total', help: 'Failed authentications (wrong operator token, wrong or unknown API key), by the code answered', labelNames: ['reason'], registers: [registry] });
  const authThrottled = new Counter({ name: 'tenantry_auth_throttled_total', help: 'Bursts of failed authentications that throttled a client address or a key id (one per burst)', labelNames: ['scope'], registers: [registry] });
  const authRefused = new Counter({ name: 'tenantry_auth_refused_total', help: 'Requests answered 429 because their client address or key id failed too often', labelNames: ['scope'], registers: [registry] });
  tenantry.events.on('authFailed', (e) => authFailures.inc({ reason: e.reason }));
  tenantry.events.on('authThrottled', (e) => authThrottled.inc({ scope: e.scope }));
  tenantry.events.on('authRefused', (e) => authRefused.inc({ scope: e.scope }));
  tenantry.events.on('rateLimited', (e) => (opts.tenantLabels ? rateLimited.inc({ tenant: e.tenantId }) : rateLimited.inc()));

  return {
    registry,
    observeRequest(method: string, route: string, status: number, seconds: number): void {
      const labels = { method, route, status: String(status) };
      requests.inc(labels);
      latency.observe(labels, seconds);
    },
  };
}
