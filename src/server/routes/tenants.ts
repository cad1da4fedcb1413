import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { TenantryError, isTenantryError } from '../../errors.js';
// the bodies' tier and isolation are strings in the schema (app-defined plans); the library validates them
import type { CreateTenantInput } from '../../provisioning/provision.js';
import type { ListTenantsOptions, UpdateTenantInput } from '../../tenants/tenants.js';
import { SECRET_NOT_REPLAYED } from '../../idempotency/idempotency.js';
import * as S from '../schemas.js';
import { bearer, problemResponses, routeAccess, tenantReply, tenantView, type RouteDeps } from './shared.js';

/** The operator's tenant lifecycle: provision, list, read, change, suspend, activate, restore, delete. */
export async function tenantRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor, operatorOnly } = routeAccess(deps);
  app.post('/v1/tenants', { schema: { tags: ['tenants'], summary: 'Provision a tenant', security: bearer, body: S.CreateTenantBody, response: { 201: S.CreatedTenantSchema, ...problemResponses } } }, async (req, reply) => {
    operatorOnly(req);
    const body = req.body as Static<typeof S.CreateTenantBody>;
    try {
      const t = await tenantry.tenants.create(body as CreateTenantInput, actor(req));
      return reply.status(201).send({ ...tenantView(t), apiKey: t.apiKey!.key });
    } catch (err) {
      // A retry of a create whose answer was lost (its process died, or PostgreSQL went away after the
      // commit) finds the tenant that request made; its key was shown to nobody, so rotate it.
      const idem = req.idempotency;
      if (idem?.takenOver && isTenantryError(err, 'SLUG_TAKEN')) {
        const made = await tenantry.tenants.createdByRequest(body.slug, idem.requestId);
        if (made) return reply.status(201).header('idempotent-recovered', 'true').send({ ...tenantView(made), apiKey: SECRET_NOT_REPLAYED });
        // the slug is held by a provisioning its dead process left half-made (likely this key's own):
        // the background healer removes it, then the retry can create the tenant
        const holder = await tenantry.tenants.find(body.slug);
        if (holder?.status === 'provisioning') {
          throw new TenantryError('PROVISIONING_INCOMPLETE', `An earlier attempt at tenant "${body.slug}" stopped half-way; it is being removed in the background. Retry with the same Idempotency-Key shortly.`, { slug: body.slug, retryAfterSeconds: 5 });
        }
      }
      throw err;
    }
  });
  app.get('/v1/tenants', { schema: { tags: ['tenants'], summary: 'List tenants', security: bearer, querystring: S.ListTenantsQuery, response: { 200: S.TenantPage, ...problemResponses } } }, async (req) => {
    operatorOnly(req);
    const page = await tenantry.tenants.list(req.query as ListTenantsOptions);
    return { items: page.items.map(tenantView), nextCursor: page.nextCursor };
  });
  app.get('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Get a tenant by id or slug', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const { id } = req.params as Static<typeof S.IdParams>;
    return tenantView(await tenantry.tenants.get((await access(req, id, 'read')).id));
  });
  app.patch('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Change name, tier or metadata', security: bearer, params: S.IdParams, body: S.UpdateTenantBody, response: tenantReply } }, async (req) => {
    const { id } = req.params as Static<typeof S.IdParams>;
    const t = await access(req, id, 'operator');
    return tenantView(await tenantry.tenants.update(t.id, req.body as UpdateTenantInput, actor(req)));
  });
  app.post('/v1/tenants/:id/suspend', { schema: { tags: ['tenants'], summary: 'Suspend a tenant', security: bearer, params: S.IdParams, body: S.SuspendBody, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.suspend(t.id, (req.body as Static<typeof S.SuspendBody>).reason, actor(req)));
  });
  app.post('/v1/tenants/:id/activate', { schema: { tags: ['tenants'], summary: 'Lift a suspension', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.activate(t.id, actor(req)));
  });
  app.post('/v1/tenants/:id/restore', { schema: { tags: ['tenants'], summary: 'Undo a soft delete', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.restore(t.id, actor(req)));
  });
  app.delete('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Soft delete, or hard delete with ?hard=true', security: bearer, params: S.IdParams, querystring: S.DeleteQuery, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    const q = req.query as Static<typeof S.DeleteQuery>;
    return tenantView(await tenantry.tenants.delete(t.id, { ...actor(req), hard: q.hard ?? false, force: q.force ?? false }));
  });
}
