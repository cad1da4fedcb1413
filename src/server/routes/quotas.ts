import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { createHash } from 'node:crypto';
import * as S from '../schemas.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** Quotas and usage: effective quotas, overrides, debits, leases and gauges. */
export async function quotaRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);
  app.get('/v1/tenants/:id/quotas', { schema: { tags: ['quotas'], summary: 'Effective quotas (tier or override)', security: bearer, params: S.IdParams, response: { 200: S.EffectiveQuotasSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return tenantry.quotas.effectiveQuotas(t.id);
  });
  app.put('/v1/tenants/:id/quotas', { schema: { tags: ['quotas'], summary: 'Set per-tenant quota overrides (null removes one)', security: bearer, params: S.IdParams, body: S.QuotasBody, response: { 200: S.EffectiveQuotasSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantry.quotas.setOverrides(t.id, req.body as Record<string, number | null>, actor(req));
  });
  app.post('/v1/tenants/:id/usage', { schema: { tags: ['quotas'], summary: 'Debit usage atomically', security: bearer, params: S.IdParams, body: S.UsageBody, response: { 200: S.IncrementResultSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'write');
    const b = req.body as Static<typeof S.UsageBody>;
    // An Idempotency-Key header also keys the debit itself, in the debit's own transaction: a retry that
    // takes over the claim of a process that died after committing gets that debit back, not a second one.
    const idem = req.idempotency;
    const idempotencyKey = b.idempotencyKey ?? (idem ? `http:${createHash('sha256').update(`${idem.principal}\0${idem.key}`).digest('hex').slice(0, 48)}` : undefined);
    return tenantry.quotas.increment(t.id, b.metric, b.amount, idempotencyKey ? { idempotencyKey } : {});
  });
  app.get('/v1/tenants/:id/usage', { schema: { tags: ['quotas'], summary: 'Usage against quotas', security: bearer, params: S.IdParams, response: { 200: S.UsageSummarySchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return plain(await tenantry.quotas.summary(t.id));
  });

  app.post('/v1/tenants/:id/leases', { schema: { tags: ['quotas'], summary: 'Take a concurrency slot of a lease metric (freed on release or expiry)', security: bearer, params: S.IdParams, body: S.LeaseBody, response: { 201: S.LeaseSchema, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'write');
    const b = req.body as Static<typeof S.LeaseBody>;
    return reply.status(201).send(plain(await tenantry.quotas.acquireLease(t.id, b.metric, b.ttlSeconds !== undefined ? { ttlSeconds: b.ttlSeconds } : {})));
  });
  app.delete('/v1/tenants/:id/leases/:leaseId', { schema: { tags: ['quotas'], summary: 'Release a lease', security: bearer, params: S.LeaseParams, response: { 200: { type: 'object', properties: { released: { type: 'boolean' } } }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.LeaseParams>;
    const t = await access(req, p.id, 'write');
    return { released: await tenantry.quotas.releaseLease(t.id, p.leaseId) };
  });
  app.put('/v1/tenants/:id/gauges/:metric', { schema: { tags: ['quotas'], summary: 'Set a gauge the app measures (refused above its limit)', security: bearer, params: S.GaugeParams, body: S.GaugeBody, response: { 200: S.IncrementResultSchema, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.GaugeParams>;
    const t = await access(req, p.id, 'write');
    return tenantry.quotas.setGauge(t.id, p.metric, (req.body as Static<typeof S.GaugeBody>).value);
  });
}
