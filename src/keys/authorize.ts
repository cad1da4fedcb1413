/**
 * The one authorization surface: who is calling (the operator token or a tenant API key), which tenant
 * a request names (API key, header, subdomain, path; in a configurable order), whether the caller may
 * act on it, the tenant's rate limit, and errors as RFC 9457 problems. The HTTP server, the app
 * plugins (tenantry/fastify, tenantry/express, tenantry/hono) and the CLI share it; none has rules of
 * its own.
 */
import type { Tenantry } from '../tenantry.js';
import { TenantryError, ERROR_CODES, isTenantryError, translateDatabaseError } from '../errors.js';
import type { Tenant } from '../tenants/model.js';
import { parseApiKey, type Scope } from './api-keys.js';
import type { KeyAuthority } from '../members/roles.js';

export type Principal =
  | { kind: 'operator'; /** the process acting as the operator (the CLI: 'cli'), named in the audit log */ via?: string }
  | { kind: 'tenant'; tenant: Tenant; keyId: string; permissions: Scope[]; authority: KeyAuthority };

/** Where a request may name its tenant. */
export type TenantSource = 'apiKey' | 'header' | 'subdomain' | 'domain' | 'path';
export const DEFAULT_TENANT_ORDER: readonly TenantSource[] = ['apiKey', 'header', 'subdomain', 'domain', 'path'];

/** The token of an `Authorization: Bearer <token>` header, or ''. */
export function bearerToken(header: unknown): string {
  return typeof header === 'string' && /^Bearer /i.test(header) ? header.slice(7).trim() : '';
}

/** Whether a tenant is the one an id or slug names. */
export function namesTenant(t: Pick<Tenant, 'id' | 'slug'>, idOrSlug: string): boolean {
  const k = idOrSlug.toLowerCase();
  return k === t.id || k === t.slug;
}

/**
 * The caller behind a bearer token: the operator, or a tenant API key with its permissions. Failed
 * credentials are throttled per client address and per key id: past the limit a wrong credential gets
 * 429 instead of 401. A right one still passes: tenants behind one proxy or NAT share an address, and
 * refusing every credential from it let one tenant's junk lock out the others and the operator, while
 * a right guess of a 256-bit secret is not a risk worth that. Checking a credential costs no query
 * (keys are held in memory), so a throttled address still costs little.
 */
export async function authenticateToken(tenantry: Tenantry, token: string, address: string): Promise<Principal> {
  if (!token) throw new TenantryError('UNAUTHORIZED', 'Send Authorization: Bearer <token>: the operator token (TENANTRY_ADMIN_KEY, or the one printed at first start) or a tenant API key.');
  const keyId = token.startsWith('tnt_live_') ? parseApiKey(token)?.keyId : undefined;
  try {
    if (token.startsWith('tnt_live_')) {
      const v = await tenantry.keys.verify(token);
      // a tenant-wide key acts as an admin: only an owner (or the operator) makes an owner
      const authority: KeyAuthority = { keyId: v.key.id, memberUserId: v.key.memberUserId, role: v.key.memberUserId ? v.role ?? 'viewer' : 'admin', permissions: v.permissions };
      return { kind: 'tenant', tenant: v.tenant, keyId: v.key.id, permissions: v.permissions, authority };
    }
    if (tenantry.operatorKey.verify(token)) return { kind: 'operator' };
    throw new TenantryError('UNAUTHORIZED', 'The bearer token is neither the operator token nor a tenant API key.');
  } catch (err) {
    // guesses: a wrong operator token, a wrong or unknown key (revoked and expired keys needed the right secret)
    if (isTenantryError(err, 'UNAUTHORIZED') || isTenantryError(err, 'INVALID_API_KEY')) throw tenantry.authThrottle.failed(address, keyId, err.code) ?? err;
    throw err;
  }
}

/**
 * The tenant a /v1/tenants/{id}/... route acts on. The operator may act on any tenant. A tenant key
 * acts only on its own tenant, within its scopes; naming another tenant answers 404, so a key cannot
 * learn which other tenants exist.
 */
export async function authorizeTenant(tenantry: Tenantry, p: Principal, idOrSlug: string, need: Scope | 'operator'): Promise<Tenant> {
  if (p.kind === 'operator') return tenantry.tenants.get(idOrSlug);
  if (!namesTenant(p.tenant, idOrSlug)) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(idOrSlug)}.`);
  if (need === 'operator') throw new TenantryError('FORBIDDEN', 'This route needs the operator token; tenant API keys cannot use it.');
  requireScope(p, need);
  return p.tenant;
}

/**
 * The principal of a process that holds the installation's own database credentials (DATABASE_URL):
 * the CLI. Whoever can log in as the catalog's owner can already do everything the operator token can,
 * so such a process acts as the operator; there is no narrower principal to check it against. Its
 * commands still go through the rules here (requireOperator, authorizeTenant with the scope the same
 * HTTP route needs) and `via` names it in the audit log.
 */
export function localOperator(via: string): Principal {
  return { kind: 'operator', via };
}

/** Who a change is done by, as the audit log records it: a key (with its authority, which the library enforces), or the operator. */
export function auditActor(p: Principal | null | undefined): { actor: string; authority?: KeyAuthority } {
  if (p?.kind === 'tenant') return { actor: `key:${p.keyId}`, authority: p.authority };
  return { actor: p?.via ?? 'operator' };
}

export function requireOperator(p: Principal | null | undefined): void {
  if (p?.kind !== 'operator') throw new TenantryError('FORBIDDEN', 'This route needs the operator token; tenant API keys cannot use it.');
}

function requireScope(p: Extract<Principal, { kind: 'tenant' }>, need: Scope): void {
  if (!p.permissions.includes(need)) throw new TenantryError('FORBIDDEN', `This API key lacks the "${need}" scope (it has: ${p.permissions.join(', ') || 'none'}).`);
}

/** What a request says about its tenant, before any of it is believed. */
export interface TenantHints {
  header?: string | undefined;
  host?: string | undefined;
  pathSlug?: string | undefined;
  /** the tenant whose verified custom domain the host is (looked up by resolveRequestTenant) */
  domainTenant?: string | undefined;
}

/** The slugs or ids a request names, in the given order (the API key's tenant is not among them). */
export function namedTenants(hints: TenantHints, opts: { order?: readonly TenantSource[]; baseDomain?: string | undefined } = {}): string[] {
  const named: string[] = [];
  for (const source of opts.order ?? DEFAULT_TENANT_ORDER) {
    if (source === 'header' && typeof hints.header === 'string' && hints.header !== '') named.push(hints.header);
    if (source === 'subdomain' && opts.baseDomain) {
      const host = (hints.host ?? '').toLowerCase().replace(/:\d+$/, '');
      if (host.endsWith(`.${opts.baseDomain}`)) {
        const sub = host.slice(0, -opts.baseDomain.length - 1);
        if (sub) named.push(sub);
      }
    }
    if (source === 'domain' && hints.domainTenant) named.push(hints.domainTenant);
    if (source === 'path' && hints.pathSlug !== undefined && hints.pathSlug !== '') named.push(hints.pathSlug);
  }
  return named;
}

/**
 * The tenant of a self-service request: a tenant key's tenant is authoritative (a header, host or path
 * naming another is refused); otherwise the first source in `order` that names one, and every other
 * named must agree. Without a key, `principal` is the operator (the server) or nobody (an app that
 * authenticates its own users and lets the request name its tenant).
 */
export async function resolveRequestTenant(tenantry: Tenantry, p: Principal | null, hints: TenantHints, opts: { need?: Scope; order?: readonly TenantSource[]; baseDomain?: string | undefined } = {}): Promise<Tenant> {
  const order = opts.order ?? DEFAULT_TENANT_ORDER;
  // a verified custom domain names its tenant; an unverified, removed or unknown one names nobody
  const domainTenant = order.includes('domain') && hints.domainTenant === undefined ? await tenantry.domains.tenantIdForHost(hints.host) : hints.domainTenant;
  const named = namedTenants({ ...hints, domainTenant }, { order, baseDomain: opts.baseDomain });
  if (p?.kind === 'tenant' && order.includes('apiKey')) {
    const other = named.find((n) => !namesTenant(p.tenant, n));
    if (other !== undefined) throw new TenantryError('FORBIDDEN', `This API key belongs to another tenant than ${JSON.stringify(other)} names.`);
    if (opts.need) requireScope(p, opts.need);
    return p.tenant;
  }
  if (named.length === 0) throw new TenantryError('INVALID_INPUT', `Name the tenant: ${order.map((s) => ({ apiKey: 'use a tenant API key', header: 'send X-Tenant-ID', subdomain: 'use a {slug}.<base domain> host', domain: 'use a verified custom domain as the host', path: 'name it in the path (/v1/t/{slug}/...)' })[s]).join(', ')}.`);
  const [first, ...rest] = named;
  const t = await tenantry.tenants.resolveForWork(first!);
  if (rest.some((n) => !namesTenant(t, n))) throw new TenantryError('INVALID_INPUT', 'X-Tenant-ID, host and path name different tenants.');
  return t;
}

/** One rate-limit decision for a tenant's request: the RateLimit-* headers to send, and RATE_LIMITED when over. */
export async function rateLimitRequest(tenantry: Tenantry, tenant: Pick<Tenant, 'id' | 'slug'>): Promise<Record<string, string>> {
  const d = await tenantry.rateLimit(tenant.id);
  const headers = {
    'ratelimit-limit': String(d.limit),
    'ratelimit-remaining': String(d.remaining),
    'ratelimit-reset': String(Math.ceil(d.resetAfterMs / 1000)),
    'ratelimit-policy': `${d.limit};w=60`,
  };
  if (!d.allowed) {
    const retryAfterSeconds = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
    throw Object.assign(new TenantryError('RATE_LIMITED', `Tenant "${tenant.slug}" is over its ${d.limit} requests per minute; retry after ${retryAfterSeconds} s.`, { retryAfterSeconds }), { headers });
  }
  return headers;
}

export interface Problem { type: string; title: string; status: number; detail: string; code: string; requestId?: string }

/** An error as an RFC 9457 problem, with the headers that go with it (Retry-After, RateLimit-*). */
export function problemOf(err: unknown, requestId?: string): { problem: Problem; headers: Record<string, string> } {
  const e = translateDatabaseError(err);
  const headers: Record<string, string> = { ...((err as { headers?: Record<string, string> })?.headers ?? {}) };
  if (isTenantryError(e)) {
    const retry = e.details?.retryAfterSeconds;
    if (typeof retry === 'number') headers['retry-after'] = String(retry);
    else if (e.status === 503) headers['retry-after'] = '1';
    return { problem: { type: `https://tenantry.dev/errors/${e.code}`, title: ERROR_CODES[e.code].title, status: e.status, detail: e.message, code: e.code, ...(requestId ? { requestId } : {}) }, headers };
  }
  return { problem: { type: 'about:blank', title: 'Internal error', status: 500, detail: 'The request failed unexpectedly.', code: 'INTERNAL', ...(requestId ? { requestId } : {}) }, headers };
}
