import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as S from '../schemas.js';
import { bearer, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** Feature flags: what a tenant has and why, and the operator's per-tenant overrides. */
export async function featureRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);
  app.get('/v1/tenants/:id/features', { schema: { tags: ['features'], summary: 'Feature flags and where each comes from', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: S.FeatureStateSchema }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return tenantry.features.list(t.id);
  });
  app.put('/v1/tenants/:id/features/:feature', { schema: { tags: ['features'], summary: 'Override a feature for one tenant (null: back to the tier)', security: bearer, params: S.FeatureParams, body: S.FeatureBody, response: { 200: { type: 'array', items: S.FeatureStateSchema }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.FeatureParams>;
    const t = await access(req, p.id, 'operator');
    return tenantry.features.set(t.id, p.feature, (req.body as Static<typeof S.FeatureBody>).enabled, actor(req));
  });
}
