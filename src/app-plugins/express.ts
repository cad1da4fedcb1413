/**
 * `tenantry/express`: the same as tenantry/fastify, as Express middleware. It sets `req.tenant` and
 * `req.withTenant(fn)`; `tenantryErrors()` answers TenantryErrors from later handlers as problem+json.
 *
 *   app.get('/agents', tenantry({ tenantry: t }), async (req, res) => res.json(await req.withTenant((sql) => sql`select * from agents`)));
 */
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import type { TransactionSql } from 'postgres';
import type { Tenant } from '../tenants/model.js';
import { isTenantryError } from '../errors.js';
import { problemOf } from '../keys/authorize.js';
import { resolveForRequest, type TenantryAppOptions } from './request-tenant.js';

/** What the middleware adds to Express's request. */
export interface TenantRequest extends Request {
  tenant: Tenant;
  withTenant<T>(fn: (sql: TransactionSql) => Promise<T>): Promise<T>;
}

function sendProblem(res: Response, err: unknown): void {
  const { problem, headers } = problemOf(err);
  res.status(problem.status).set(headers).type('application/problem+json').send(JSON.stringify(problem));
}

export function tenantry(opts: TenantryAppOptions): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const header = req.get(opts.header ?? 'x-tenant-id');
    resolveForRequest(opts, {
      authorization: req.get('authorization'), header, host: req.get('host'),
      pathSlug: (req.params as Record<string, string | undefined>)[opts.pathParam ?? 'tenant'],
      address: req.ip ?? req.socket.remoteAddress ?? 'unknown',
    }).then((r) => {
      res.set(r.headers);
      Object.assign(req, { tenant: r.tenant, withTenant: r.withTenant });
      next();
    }, (err: unknown) => sendProblem(res, err));
  };
}

/** Answers TenantryErrors thrown by later handlers as problem+json; anything else goes on. */
export function tenantryErrors(): ErrorRequestHandler {
  return (err: unknown, _req: Request, res: Response, next: NextFunction): void => {
    if (isTenantryError(err)) sendProblem(res, err);
    else next(err);
  };
}

export type { TenantryAppOptions } from './request-tenant.js';
