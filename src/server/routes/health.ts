import type { FastifyInstance } from 'fastify';
import type { Tenantry } from '../../tenantry.js';
import { isDatabaseUnavailable } from '../../errors.js';
import type { createMetrics } from '../metrics.js';
import * as S from '../schemas.js';
import type { RouteDeps } from './shared.js';

/** Liveness, readiness, Prometheus metrics and the OpenAPI document (none needs a credential). */
export async function healthRoutes(app: FastifyInstance, deps: RouteDeps & { metrics: ReturnType<typeof createMetrics> }): Promise<void> {
  const { tenantry, metrics } = deps;
  const health = app.health;
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    if (!health.ready && !(await health.recheck())) return reply.status(503).send({ status: health.reason, ok: false });
    try {
      const r = await tenantry.ready();
      return reply.status(r.ok ? 200 : 503).send({ status: r.ok ? 'ready' : 'catalog migrations pending', ...r });
    } catch (err) {
      if (isDatabaseUnavailable(err)) health.reportFault();
      return reply.status(503).send({ status: 'catalog unreachable', ok: false, error: (err as Error).message });
    }
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => planEnums(app.swagger(), tenantry));
}


/**
 * The OpenAPI document with the plans' names as enums: every schema marked with PlanName(...) lists
 * the metrics, tiers, quotas or features declared now (a plan applied while the server runs shows at
 * once). A copy: the cached document keeps its markers.
 */
function planEnums(doc: unknown, tenantry: Tenantry): unknown {
  const plans = tenantry.plans.current();
  const names: Record<string, string[]> = {
    metric: plans.metrics.map((m) => m.name),
    tier: plans.tiers.map((t) => t.name),
    quota: [...new Set([...plans.metrics.map((m) => m.quota), 'api_calls_per_minute', 'data_retention_days'])],
    feature: plans.features.map((f) => f.name),
  };
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (!v || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = walk(x);
    const mark = out.$comment;
    if (typeof mark === 'string' && mark.startsWith(S.PLAN_NAME_MARK)) {
      const of = mark.slice(S.PLAN_NAME_MARK.length);
      delete out.$comment;
      delete out.pattern;
      out.enum = names[of] ?? [];
    }
    return out;
  };
  return walk(doc);
}
