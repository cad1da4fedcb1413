/**
 * What the app plugins (tenantry/fastify, tenantry/express, tenantry/hono) do per request, framework
 * aside: who is calling, which tenant the request names (in the configured order), the tenant's rate
 * limit. The rules themselves are the library's (src/keys/authorize.ts), the same the server uses.
 */
import type { TransactionSql } from 'postgres';
import type { Tenantry } from '../tenantry.js';
import { TenantryError } from '../errors.js';
import type { Tenant } from '../tenants/model.js';
import type { Scope } from '../keys/api-keys.js';
import {
  authenticateToken, bearerToken, resolveRequestTenant, rateLimitRequest, DEFAULT_TENANT_ORDER,
  type Principal, type TenantSource,
} from '../keys/authorize.js';

export interface TenantryAppOptions {
  tenantry: Tenantry;
  /** where a request may name its tenant, in order (default: apiKey, header, subdomain, domain, path; domain: a verified custom domain as the host) */
  order?: readonly TenantSource[];
  /** `{slug}.{baseDomain}` hosts name a tenant (the subdomain source); unset, hosts are ignored */
  baseDomain?: string;
  /** the header that names a tenant (default `x-tenant-id`) */
  header?: string;
  /** the route parameter that names a tenant (default `tenant`, as in `/t/:tenant/...`) */
  pathParam?: string;
  /** refuse requests without a tenant API key (default false: the app authenticates its own users) */
  requireApiKey?: boolean;
  /** the scope a key needs (default `read`) */
  scope?: Scope;
  /** apply the tenant's rate limit (api_calls_per_minute) and send RateLimit-* headers (default true) */
  rateLimit?: boolean;
}

export interface RequestInput {
  authorization?: string | undefined;
  header?: string | undefined;
  host?: string | undefined;
  pathSlug?: string | undefined;
  address: string;
}

export interface ResolvedRequest {
  tenant: Tenant;
  principal: Principal | null;
  /** RateLimit-* headers to send */
  headers: Record<string, string>;
  withTenant<T>(fn: (sql: TransactionSql) => Promise<T>): Promise<T>;
}

export async function resolveForRequest(opts: TenantryAppOptions, input: RequestInput): Promise<ResolvedRequest> {
  const order = opts.order ?? DEFAULT_TENANT_ORDER;
  const token = order.includes('apiKey') ? bearerToken(input.authorization) : '';
  if (!token && opts.requireApiKey) throw new TenantryError('UNAUTHORIZED', 'Send Authorization: Bearer <tenant API key>.');
  const principal = token ? await authenticateToken(opts.tenantry, token, input.address) : null;
  const tenant = await resolveRequestTenant(opts.tenantry, principal, { header: input.header, host: input.host, pathSlug: input.pathSlug }, { need: opts.scope ?? 'read', order, baseDomain: opts.baseDomain });
  const headers = opts.rateLimit === false ? {} : await rateLimitRequest(opts.tenantry, tenant);
  return { tenant, principal, headers, withTenant: (fn) => opts.tenantry.withTenant(tenant.id, fn) };
}
