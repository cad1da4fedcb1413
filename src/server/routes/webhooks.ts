import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TenantryError } from '../../errors.js';
import { namesTenant } from '../../keys/authorize.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** Webhook endpoints and their deliveries (the operator for any tenant, a tenant key for its own). */
export async function webhookRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { actor } = routeAccess(deps);

  // The operator registers endpoints for every tenant or for one; a tenant key (admin scope) only for
  // its own tenant, and then a URL that resolves to a private, loopback or link-local address is
  // refused unless the operator allows such targets (server-side request forgery).

  const WebhookSchema = { type: 'object', properties: {
    id: { type: 'string' }, tenantId: { type: ['string', 'null'] }, url: { type: 'string' }, events: { type: 'array', items: { type: 'string' } },
    allowPrivate: { type: 'boolean' }, enabled: { type: 'boolean' }, createdBy: { type: 'string' }, createdAt: { type: 'string' }, secret: { type: 'string' },
  } } as const;
  const WebhookBody = { type: 'object', additionalProperties: false, required: ['url'], properties: {
    url: { type: 'string', minLength: 1, maxLength: 2048 }, tenant: { type: ['string', 'null'], minLength: 1, maxLength: 64 },
    events: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 64 } },
  } } as const;
  const WebhookParams = { type: 'object', required: ['webhookId'], properties: { webhookId: { type: 'string', maxLength: 64 } } } as const;
  const WebhookQuery = { type: 'object', additionalProperties: false, properties: { tenant: { type: 'string', minLength: 1, maxLength: 64 } } } as const;
  /** The tenant a webhook call is about: a tenant key's own (admin scope), or what the operator names. */
  const webhookTenant = async (req: FastifyRequest, named: string | null | undefined): Promise<string | null | undefined> => {
    const p = req.principal!;
    if (p.kind === 'operator') return named;
    if (named !== undefined && named !== null && !namesTenant(p.tenant, named)) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(named)}.`);
    if (!p.permissions.includes('admin')) throw new TenantryError('FORBIDDEN', `This API key lacks the "admin" scope (it has: ${p.permissions.join(', ') || 'none'}).`);
    return p.tenant.id;
  };
  app.post('/v1/webhooks', { schema: { tags: ['webhooks'], summary: 'Register a webhook endpoint (its signing secret is shown once)', security: bearer, body: WebhookBody, response: { 201: WebhookSchema, ...problemResponses } } }, async (req, reply) => {
    const b = req.body as { url: string; tenant?: string | null; events?: string[] };
    const tenant = await webhookTenant(req, b.tenant);
    const ep = await tenantry.webhooks.create({ url: b.url, tenant: tenant ?? null, ...(b.events ? { events: b.events } : {}) }, { ...actor(req), tenantScoped: req.principal?.kind === 'tenant' });
    return reply.status(201).send(plain(ep));
  });
  app.get('/v1/webhooks', { schema: { tags: ['webhooks'], summary: 'List webhook endpoints (never their secrets)', security: bearer, querystring: WebhookQuery, response: { 200: { type: 'array', items: WebhookSchema }, ...problemResponses } } }, async (req) => {
    const tenant = await webhookTenant(req, (req.query as { tenant?: string }).tenant);
    return plain(await tenantry.webhooks.list({ tenant: tenant ?? null }));
  });
  app.delete('/v1/webhooks/:webhookId', { schema: { tags: ['webhooks'], summary: 'Remove a webhook endpoint', security: bearer, params: WebhookParams, response: { 204: { type: 'null' }, ...problemResponses } } }, async (req, reply) => {
    const tenant = await webhookTenant(req, undefined);
    await tenantry.webhooks.remove((req.params as { webhookId: string }).webhookId, tenant ? { tenant } : {}, actor(req));
    return reply.status(204).send();
  });
  app.get('/v1/webhooks/:webhookId/deliveries', { schema: { tags: ['webhooks'], summary: 'Recent deliveries with every attempt\'s status and latency', security: bearer, params: WebhookParams, response: { 200: { type: 'array', items: { type: 'object', additionalProperties: true } }, ...problemResponses } } }, async (req) => {
    const tenant = await webhookTenant(req, undefined);
    return plain(await tenantry.webhooks.deliveries((req.params as { webhookId: string }).webhookId, tenant ? { tenant } : {}));
  });
}
