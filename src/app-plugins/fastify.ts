/**
 * `tenantry/fastify`: a Fastify plugin for the app's own server. Per request it resolves the tenant
 * (API key, header, subdomain, custom domain, path; order configurable), applies the tenant's rate limit, decorates
 * `request.tenant` and `request.withTenant(fn)`, and answers TenantryErrors as RFC 9457 problem+json.
 *
 *   await app.register(tenantryPlugin, { tenantry, baseDomain: 'example.com' });
 *   app.get('/agents', (req) => req.withTenant((sql) => sql`select * from agents`));
 */
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TransactionSql } from 'postgres';
import type { Tenant } from '../tenants/model.js';
import { isTenantryError, TenantryError } from '../errors.js';
import { problemOf } from '../keys/authorize.js';
import { resolveForRequest, type TenantryAppOptions } from './request-tenant.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** the request's tenant (tenantry/fastify); null on routes the plugin skips */
    tenant: Tenant | null;
    /** a transaction bound to the request's tenant (tenantry/fastify) */
    withTenant<T>(fn: (sql: TransactionSql) => Promise<T>): Promise<T>;
  }
}

export interface TenantryFastifyOptions extends TenantryAppOptions {
  /** requests that need no tenant (health checks, public pages); default: none skipped */
  skip?: (request: FastifyRequest) => boolean;
  /** answer errors as problem+json (default true); false leaves the app's own error handler */
  errorHandler?: boolean;
}

function sendProblem(reply: FastifyReply, err: unknown, requestId: string): FastifyReply {
  const { problem, headers } = problemOf(err, requestId);
  return reply.status(problem.status).headers(headers).type('application/problem+json').send(problem);
}

async function tenantryFastify(app: FastifyInstance, opts: TenantryFastifyOptions): Promise<void> {
  app.decorateRequest('tenant', null);
  app.decorateRequest('withTenant', function withTenant<T>(this: FastifyRequest, fn: (sql: TransactionSql) => Promise<T>): Promise<T> {
    if (!this.tenant) return Promise.reject(new TenantryError('INVALID_INPUT', 'This request has no tenant (the route is skipped by the tenantry plugin).'));
    return opts.tenantry.withTenant(this.tenant.id, fn);
  });
  // preValidation: route parameters are parsed by then, so /t/:tenant/... can name the tenant
  app.addHook('preValidation', async (req, reply) => {
    if (opts.skip?.(req)) return;
    const params = (req.params ?? {}) as Record<string, string | undefined>;
    const headerName = (opts.header ?? 'x-tenant-id').toLowerCase();
    const r = await resolveForRequest(opts, {
      authorization: req.headers.authorization,
      header: typeof req.headers[headerName] === 'string' ? req.headers[headerName] as string : undefined,
      host: req.headers.host,
      pathSlug: params[opts.pathParam ?? 'tenant'],
      address: req.ip,
    });
    void reply.headers(r.headers);
    req.tenant = r.tenant;
  });
  if (opts.errorHandler !== false) {
    app.setErrorHandler((err, req, reply) => {
      if (isTenantryError(err) || (err as { code?: string }).code === 'RATE_LIMITED') return sendProblem(reply, err, String(req.id));
      const status = (err as { statusCode?: number }).statusCode ?? 500;
      if (status >= 500) req.log.error({ err }, 'request failed');
      return reply.status(status).type('application/problem+json').send({
        type: 'about:blank', title: status >= 500 ? 'Internal error' : 'Bad request', status,
        detail: status >= 500 ? 'The request failed unexpectedly.' : (err as Error).message, code: status >= 500 ? 'INTERNAL' : 'INVALID_INPUT', requestId: String(req.id),
      });
    });
  }
}

/** The plugin (fastify-plugin: its decorators and hooks apply to the app that registers it). */
export const tenantryPlugin = fp(tenantryFastify, { fastify: '5.x', name: 'tenantry' });
export default tenantryPlugin;
export type { TenantryAppOptions } from './request-tenant.js';
