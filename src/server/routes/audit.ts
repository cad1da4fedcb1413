import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as S from '../schemas.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** A tenant's audit log and the check of its hash chain (admin scope). */
export async function auditRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access } = routeAccess(deps);
  app.get('/v1/tenants/:id/audit', { schema: { tags: ['audit'], summary: 'Audit entries, newest first', security: bearer, params: S.IdParams, querystring: S.AuditQuery, response: { 200: { type: 'object', properties: { items: { type: 'array', items: S.AuditEntrySchema }, nextCursor: { type: ['string', 'null'] } } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    const q = req.query as Static<typeof S.AuditQuery>;
    const limit = q.limit ?? 50;
    const items = await tenantry.audit(t.id, { limit, ...(q.cursor ? { before: q.cursor } : {}) });
    return { items: plain(items), nextCursor: items.length === limit ? items[items.length - 1]!.id : null };
  });
  app.get('/v1/tenants/:id/audit/verify', { schema: { tags: ['audit'], summary: 'Recompute the audit hash chain', security: bearer, params: S.IdParams, response: { 200: S.AuditVerificationSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return tenantry.verifyAudit(t.id);
  });
}
