/**
 * What every route plugin shares: the deps it is registered with, the problem responses and security
 * every operation declares, the tenant view, and the access rules (which live in the library,
 * src/keys/authorize.ts; these only read the request for them).
 */
import type { FastifyRequest } from 'fastify';
import type { Tenantry } from '../../tenantry.js';
import type { Tenant } from '../../tenants/model.js';
import type { Scope } from '../../keys/api-keys.js';
import type { KeyAuthority } from '../../members/roles.js';
import { auditActor, authorizeTenant, requireOperator, resolveRequestTenant } from '../../keys/authorize.js';
import type * as S from '../schemas.js';

/** The options every route plugin is registered with (a type alias: Fastify's plugin options are a record). */
export type RouteDeps = {
  tenantry: Tenantry;
  /** hosts `{slug}.{baseDomain}` name a tenant on tenant routes */
  baseDomain?: string | undefined;
};

export const problemResponses = { 400: { $ref: 'Problem#' }, 401: { $ref: 'Problem#' }, 403: { $ref: 'Problem#' }, 404: { $ref: 'Problem#' }, 409: { $ref: 'Problem#' }, 429: { $ref: 'Problem#' } };
export const bearer = [{ bearer: [] as string[] }];
export const tenantReply = { 200: { $ref: 'Tenant#' }, ...problemResponses };

/** Dates to ISO strings, for responses built from library objects. */
export const plain = <T>(value: T): unknown => JSON.parse(JSON.stringify(value));

/** The tenant object every response carries (the HTTP contract; internal placement stays internal). */
export function tenantView(t: Tenant): S.TenantView {
  return {
    id: t.id, slug: t.slug, name: t.name, status: t.status, tier: t.tier, isolation: t.isolation,
    trialEndsAt: t.trialEndsAt?.toISOString() ?? null, suspendedReason: t.suspendedReason, metadata: t.metadata,
    createdAt: t.createdAt.toISOString(), updatedAt: t.updatedAt.toISOString(),
  };
}

/**
 * Who a change is done by, for the audit log. Work done under an Idempotency-Key is audited under the
 * request that first claimed the key, so a retry that takes over a claim whose holder died can find
 * what that holder committed. A tenant key's authority goes with every change it asks for: the library
 * refuses what would raise a role or a key above the key's own (the operator's calls carry none and
 * are not limited).
 */
export function actor(req: FastifyRequest): { actor: string; requestId: string; authority?: KeyAuthority } {
  return { ...auditActor(req.principal), requestId: req.idempotency?.requestId ?? String(req.id) };
}

/** The access rules of the routes, bound to one server's deps. */
export function routeAccess(deps: RouteDeps) {
  const { tenantry } = deps;
  return {
    actor,
    /**
     * The tenant a /v1/tenants/{id}/... route acts on. The operator may act on any tenant. A tenant key
     * acts only on its own tenant, within its scopes; naming another tenant answers 404, so a key cannot
     * learn which other tenants exist.
     */
    access: (req: FastifyRequest, idOrSlug: string, need: Scope | 'operator'): Promise<Tenant> => authorizeTenant(tenantry, req.principal!, idOrSlug, need),
    operatorOnly: (req: FastifyRequest): void => requireOperator(req.principal),
    /**
     * The tenant of a self-service route: the key's tenant is authoritative; X-Tenant-ID, a
     * {slug}.{base domain} host or a /v1/t/{slug} path may name it too, and naming another is refused.
     * The operator names the tenant with one of them.
     */
    self: (req: FastifyRequest, pathSlug: string | undefined, need: Scope): Promise<Tenant> => resolveRequestTenant(tenantry, req.principal!,
      { header: req.headers['x-tenant-id'] as string | undefined, host: req.headers.host, pathSlug }, { need, baseDomain: deps.baseDomain }),
  };
}
