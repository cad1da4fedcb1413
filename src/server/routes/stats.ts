import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

const Risk = Type.Object({ tenantId: Type.String(), slug: Type.String(), metric: Type.String(), used: Type.Number(), limit: Type.Number(), utilization: Type.Number({ description: 'percent of the limit' }) });
export const StatsOverviewSchema = Type.Object({
  tenants: Type.Object({ total: Type.Integer(), byStatus: Type.Record(Type.String(), Type.Integer()) }),
  atRisk: Type.Object({ count: Type.Integer(), tenants: Type.Array(Risk) }),
  overQuota: Type.Object({ count: Type.Integer(), tenants: Type.Array(Risk) }),
  provisioning: Type.Object({
    succeeded: Type.Integer(), failed: Type.Integer(),
    p50Ms: Type.Union([Type.Number(), Type.Null()]), p95Ms: Type.Union([Type.Number(), Type.Null()]), maxMs: Type.Union([Type.Number(), Type.Null()]),
    recentFailures: Type.Array(Type.Object({ slug: Type.Union([Type.String(), Type.Null()]), reason: Type.String(), at: Type.String() })),
  }),
  jobs: Type.Union([Type.Null(), Type.Object({
    queued: Type.Integer(), running: Type.Integer(), failed: Type.Integer(),
    recentFailures: Type.Array(Type.Object({ task: Type.String(), error: Type.String(), at: Type.String() })),
  })]),
  webhooks: Type.Object({ failedLastDay: Type.Integer(), pending: Type.Integer() }),
});

/** The operator's overview numbers, computed in the catalog (the console never lists every tenant for them). */
export async function statsRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { operatorOnly } = routeAccess(deps);
  app.get('/v1/stats/overview', { schema: {
    operationId: 'getStatsOverview', tags: ['stats'], summary: 'Tenants at risk and over quota, the last day\'s provisioning, the job queue and failed webhooks (operator)', security: bearer,
    response: { 200: StatsOverviewSchema, ...problemResponses },
  } }, async (req) => {
    operatorOnly(req);
    return plain(await tenantry.statsOverview());
  });
}
