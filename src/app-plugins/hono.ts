/**
 * `tenantry/hono`: the same as tenantry/fastify, as Hono middleware. It sets `c.get('tenant')` and
 * `c.get('withTenant')`; `tenantryOnError` answers TenantryErrors as problem+json (app.onError).
 *
 *   app.use('/api/*', tenantry({ tenantry: t }));
 *   app.get('/api/agents', async (c) => c.json(await c.get('withTenant')((sql) => sql`select * from agents`)));
 */
import type { Context, ErrorHandler, MiddlewareHandler } from 'hono';
import type { TransactionSql } from 'postgres';
import type { Tenant } from '../tenants/model.js';
import { isTenantryError } from '../errors.js';
import { problemOf } from '../keys/authorize.js';
import { resolveForRequest, type TenantryAppOptions } from './request-tenant.js';

/** The variables the middleware sets (`new Hono<{ Variables: TenantryVariables }>()`). */
export interface TenantryVariables {
  tenant: Tenant;
  withTenant: <T>(fn: (sql: TransactionSql) => Promise<T>) => Promise<T>;
}

function problemResponse(c: Context, err: unknown): Response {
  const { problem, headers } = problemOf(err);
  return c.body(JSON.stringify(problem), problem.status as 400, { ...headers, 'content-type': 'application/problem+json' });
}

export function tenantry(opts: TenantryAppOptions): MiddlewareHandler<{ Variables: TenantryVariables }> {
  return async (c, next) => {
    // @hono/node-server hands the Node request over as env.incoming
    const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
    let r;
    try {
      r = await resolveForRequest(opts, {
        authorization: c.req.header('authorization'), header: c.req.header(opts.header ?? 'x-tenant-id'), host: c.req.header('host'),
        pathSlug: c.req.param(opts.pathParam ?? 'tenant'), address: incoming?.socket?.remoteAddress ?? 'unknown',
      });
    } catch (err) {
      return problemResponse(c, err);
    }
    for (const [k, v] of Object.entries(r.headers)) c.header(k, v);
    c.set('tenant', r.tenant);
    c.set('withTenant', r.withTenant);
    await next();
    return undefined;
  };
}

/** app.onError(tenantryOnError): TenantryErrors as problem+json, anything else as a 500 problem. */
export const tenantryOnError: ErrorHandler = (err, c) => {
  if (isTenantryError(err)) return problemResponse(c, err);
  return c.body(JSON.stringify({ type: 'about:blank', title: 'Internal error', status: 500, detail: 'The request failed unexpectedly.', code: 'INTERNAL' }), 500, { 'content-type': 'application/problem+json' });
};

export type { TenantryAppOptions } from './request-tenant.js';
