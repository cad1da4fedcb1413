import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as S from '../schemas.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** A tenant's API keys: create (shown once), list, revoke, rotate. */
export async function keyRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);
  app.post('/v1/tenants/:id/api-keys', { schema: { tags: ['api keys'], summary: 'Create an API key (shown once)', security: bearer, params: S.IdParams, body: S.CreateKeyBody, response: { 201: S.CreatedApiKeySchema, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    const b = req.body as Static<typeof S.CreateKeyBody>;
    const created = await tenantry.keys.create(t.id, { name: b.name, ...(b.scopes ? { scopes: b.scopes } : {}), expiresAt: b.expiresAt ? new Date(b.expiresAt) : null, memberUserId: b.memberUserId ?? null }, actor(req));
    return reply.status(201).send(plain(created));
  });
  app.get('/v1/tenants/:id/api-keys', { schema: { tags: ['api keys'], summary: 'List API keys (never their secrets)', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'ApiKey#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return plain(await tenantry.keys.list(t.id));
  });
  app.delete('/v1/tenants/:id/api-keys/:keyId', { schema: { tags: ['api keys'], summary: 'Revoke an API key', security: bearer, params: S.KeyParams, response: { 200: { $ref: 'ApiKey#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.KeyParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.keys.revoke(t.id, p.keyId, actor(req)));
  });
  app.post('/v1/tenants/:id/api-keys/:keyId/rotate', { schema: { tags: ['api keys'], summary: 'Rotate: a new key; the old one valid for graceSeconds', security: bearer, params: S.KeyParams, body: { anyOf: [S.RotateKeyBody, { type: 'null' }] }, response: { 201: S.CreatedApiKeySchema, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as Static<typeof S.KeyParams>;
    const t = await access(req, p.id, 'admin');
    const b = (req.body ?? {}) as Static<typeof S.RotateKeyBody>;
    return reply.status(201).send(plain(await tenantry.keys.rotate(t.id, p.keyId, b.graceSeconds !== undefined ? { graceSeconds: b.graceSeconds } : {}, actor(req))));
  });
}
