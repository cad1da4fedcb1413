import type { FastifyInstance } from 'fastify';
import { TenantryError } from '../../errors.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the route takes no bearer token (Caddy's TLS ask, Stripe's webhooks): it authenticates otherwise or not at all */
    publicRoute?: boolean;
  }
}

/** Requests to the TLS ask endpoint allowed per client address and minute. */
export const TLS_ASK_PER_MINUTE = 600;

const DomainSchema = { type: 'object', properties: {
  id: { type: 'string' }, tenantId: { type: 'string' }, domain: { type: 'string' }, verified: { type: 'boolean' },
  verifiedAt: { type: ['string', 'null'] }, method: { type: ['string', 'null'], enum: ['dns', 'http', null] },
  token: { type: 'string' }, txtName: { type: 'string' }, httpUrl: { type: 'string' },
  lastCheckedAt: { type: ['string', 'null'] }, lastError: { type: ['string', 'null'] }, createdAt: { type: 'string' },
} } as const;
const Params = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;
const DomainParams = { type: 'object', required: ['id', 'domain'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 }, domain: { type: 'string', minLength: 1, maxLength: 1024 } } } as const;
const AddBody = { type: 'object', additionalProperties: false, required: ['domain'], properties: { domain: { type: 'string', minLength: 1, maxLength: 1024 } } } as const;
const VerifyBody = { type: ['object', 'null'], additionalProperties: false, properties: { method: { type: 'string', enum: ['dns', 'http'] } } } as const;
const AskQuery = { type: 'object', required: ['domain'], properties: { domain: { type: 'string', minLength: 1, maxLength: 1024 } } } as const;

/**
 * Custom domains of a tenant (operator, or the tenant's own key: admin scope to change, read to list),
 * and the public endpoint Caddy's on-demand TLS asks before it requests a certificate.
 */
export async function domainRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);

  app.post('/v1/tenants/:id/domains', { schema: { tags: ['domains'], summary: 'Claim a custom domain (verify it next: DNS TXT or HTTP token)', security: bearer, params: Params, body: AddBody, response: { 201: DomainSchema, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return reply.status(201).send(plain(await tenantry.domains.add(t.id, (req.body as { domain: string }).domain, actor(req))));
  });
  app.get('/v1/tenants/:id/domains', { schema: { tags: ['domains'], summary: 'List a tenant\'s custom domains', security: bearer, params: Params, response: { 200: { type: 'array', items: DomainSchema }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return plain(await tenantry.domains.list(t.id));
  });
  app.get('/v1/tenants/:id/domains/:domain', { schema: { tags: ['domains'], summary: 'One custom domain and how to verify it', security: bearer, params: DomainParams, response: { 200: DomainSchema, ...problemResponses } } }, async (req) => {
    const p = req.params as { id: string; domain: string };
    const t = await access(req, p.id, 'read');
    return plain(await tenantry.domains.get(t.id, p.domain));
  });
  app.post('/v1/tenants/:id/domains/:domain/verify', { schema: { tags: ['domains'], summary: 'Check the domain\'s TXT record or HTTP token and mark it verified', security: bearer, params: DomainParams, body: VerifyBody, response: { 200: DomainSchema, 422: { $ref: 'Problem#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as { id: string; domain: string };
    const t = await access(req, p.id, 'admin');
    const method = (req.body as { method?: 'dns' | 'http' } | null)?.method;
    return plain(await tenantry.domains.verify(t.id, p.domain, method ? { method } : {}, actor(req)));
  });
  app.delete('/v1/tenants/:id/domains/:domain', { schema: { tags: ['domains'], summary: 'Remove a custom domain (it stops resolving at once)', security: bearer, params: DomainParams, response: { 204: { type: 'null' }, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as { id: string; domain: string };
    const t = await access(req, p.id, 'admin');
    await tenantry.domains.remove(t.id, p.domain, actor(req));
    return reply.status(204).send();
  });

  // Caddy's on_demand_tls `ask`: 200 for a verified domain, 404 for anything else. The answer says
  // nothing of which tenant owns it; the rate limit keeps random names from costing a query each.
  app.get('/v1/domains/tls-ask', { config: { publicRoute: true }, schema: { tags: ['domains'], summary: 'Whether a TLS certificate may be issued for a domain (Caddy on-demand TLS ask): 200 verified, 404 not', querystring: AskQuery, response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } }, 404: { $ref: 'Problem#' }, 400: { $ref: 'Problem#' }, 429: { $ref: 'Problem#' } } } }, async (req, reply) => {
    const d = await tenantry.rateLimiter.consume(`tls-ask:${req.ip}`, { limit: TLS_ASK_PER_MINUTE, periodMs: 60_000, burst: TLS_ASK_PER_MINUTE });
    if (!d.allowed) {
      const retryAfterSeconds = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
      throw new TenantryError('RATE_LIMITED', `Over ${TLS_ASK_PER_MINUTE} certificate questions per minute from this address; retry after ${retryAfterSeconds} s.`, { retryAfterSeconds });
    }
    if (await tenantry.domains.allowsCertificate((req.query as { domain: string }).domain)) return reply.status(200).send({ ok: true });
    throw new TenantryError('DOMAIN_NOT_FOUND', 'No verified domain by that name.');
  });
}
