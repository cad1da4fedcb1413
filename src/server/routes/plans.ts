import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { TenantryError } from '../../errors.js';
import * as S from '../schemas.js';
import { bearer, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** The plans in force (any key that may read) and applying a plan file (the operator). */
export async function planRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { actor, operatorOnly } = routeAccess(deps);
  app.get('/v1/plans', { schema: { tags: ['plans'], summary: 'The plans in force: metrics, tiers in order, features', security: bearer, response: { 200: S.PlansViewSchema, ...problemResponses } } }, async (req) => {
    // the plans are the same for every tenant (a price list, not a tenant's data): any key that may read
    const p = req.principal!;
    if (p.kind === 'tenant' && !p.permissions.includes('read')) throw new TenantryError('FORBIDDEN', `This API key lacks the "read" scope (it has: ${p.permissions.join(', ') || 'none'}).`);
    // where the plan file lives on the server, and how it differs, is the operator's business
    const file = p.kind === 'operator' ? tenantry.plans.status() : undefined;
    return { plans: tenantry.plans.document(), file: file ?? null };
  });
  app.put('/v1/plans', { schema: { tags: ['plans'], summary: 'Apply a plan file (refused when it would strand tenants or usage; dryRun: only the diff)', security: bearer, body: S.PutPlansBody, response: { 200: S.PlanDiffSchema, ...problemResponses } } }, async (req) => {
    operatorOnly(req);
    const b = req.body as Static<typeof S.PutPlansBody>;
    const opts = { ...(b.moveTenants !== undefined ? { moveTenants: b.moveTenants } : {}), ...(b.dropHistory !== undefined ? { dropHistory: b.dropHistory } : {}) };
    if (b.dryRun) return { applied: false, ...(await tenantry.plans.diff(b.plans, opts)) };
    return { applied: true, ...(await tenantry.plans.apply(b.plans, opts, actor(req))) };
  });
}
