import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { Tenantry } from '../tenantry.js';
import { TenantryError, ERROR_CODES } from '../errors.js';
import type { Tenant } from '../tenants/model.js';
import {
  TenantSchema, ProblemSchema, CreateTenantBody, UpdateTenantBody, ListTenantsQuery, SuspendBody, IdParams, DeleteQuery,
  type CreateTenantBodyT, type UpdateTenantBodyT, type ListTenantsQueryT,
} from './schemas.js';

export interface ServerDeps {
  tenantry: Tenantry;
  logLevel?: string;
}

/** The tenant object every response carries (the HTTP contract; internal placement stays internal). */
export function tenantView(t: Tenant): Record<string, unknown> {
  return {
    id: t.id, slug: t.slug, name: t.name, status: t.status, tier: t.tier, isolation: t.isolation,
    trialEndsAt: t.trialEndsAt?.toISOString() ?? null, suspendedReason: t.suspendedReason, metadata: t.metadata,
    createdAt: t.createdAt.toISOString(), updatedAt: t.updatedAt.toISOString(),
  };
}

/**
 * The HTTP face: every route validates its input against a JSON schema and calls the library; errors
 * are RFC 9457 problem+json carrying the library's stable code.
 */
export async function buildServer({ tenantry, logLevel = 'info' }: ServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: logLevel,
      // never log credentials
      redact: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]'],
    },
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
    },
    ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false } },
  });
  app.addSchema(TenantSchema);
  app.addSchema(ProblemSchema);
  app.addHook('onSend', async (req, reply) => { reply.header('x-request-id', req.id); });

  app.setErrorHandler((err, req, reply) => {
    const problem = toProblem(err, req.id);
    if (problem.status >= 500) req.log.error({ err }, 'request failed');
    void reply.status(problem.status).type('application/problem+json').send(problem);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).type('application/problem+json').send({
      type: 'about:blank', title: 'Not found', status: 404, code: 'NOT_FOUND', detail: `No route ${req.method} ${req.url}.`, requestId: req.id,
    });
  });

  const operator = async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization;
    const token = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    if (!token) throw new HttpError(401, 'UNAUTHORIZED', 'Send Authorization: Bearer <operator token> (TENANTRY_ADMIN_KEY, or the token printed at first start).');
    if (!tenantry.operatorKey.verify(token)) throw new HttpError(401, 'UNAUTHORIZED', 'The bearer token is not valid.');
  };
  const actor = (req: FastifyRequest) => ({ actor: 'operator', requestId: String(req.id) });
  const tenantReply = { 200: { $ref: 'Tenant#' } };

  app.get('/healthz', { schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      const r = await tenantry.ready();
      return reply.status(r.ok ? 200 : 503).send({ status: r.ok ? 'ready' : 'catalog migrations pending', ...r });
    } catch (err) {
      return reply.status(503).send({ status: 'catalog unreachable', error: (err as Error).message });
    }
  });

  app.post<{ Body: CreateTenantBodyT }>('/v1/tenants', { preHandler: operator, schema: { body: CreateTenantBody, response: { 201: { $ref: 'Tenant#' } } } },
    async (req, reply) => reply.status(201).send(tenantView(await tenantry.tenants.create(req.body, actor(req)))));
  app.get<{ Querystring: ListTenantsQueryT }>('/v1/tenants', {
    preHandler: operator,
    schema: { querystring: ListTenantsQuery, response: { 200: { type: 'object', properties: { items: { type: 'array', items: { $ref: 'Tenant#' } }, nextCursor: { type: ['string', 'null'] } } } } },
  }, async (req) => {
    const page = await tenantry.tenants.list(req.query);
    return { items: page.items.map(tenantView), nextCursor: page.nextCursor };
  });
  app.get<{ Params: { id: string } }>('/v1/tenants/:id', { preHandler: operator, schema: { params: IdParams, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.get(req.params.id)));
  app.patch<{ Params: { id: string }; Body: UpdateTenantBodyT }>('/v1/tenants/:id', { preHandler: operator, schema: { params: IdParams, body: UpdateTenantBody, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.update(req.params.id, req.body, actor(req))));
  app.post<{ Params: { id: string }; Body: { reason: string } }>('/v1/tenants/:id/suspend', { preHandler: operator, schema: { params: IdParams, body: SuspendBody, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.suspend(req.params.id, req.body.reason, actor(req))));
  app.post<{ Params: { id: string } }>('/v1/tenants/:id/activate', { preHandler: operator, schema: { params: IdParams, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.activate(req.params.id, actor(req))));
  app.post<{ Params: { id: string } }>('/v1/tenants/:id/restore', { preHandler: operator, schema: { params: IdParams, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.restore(req.params.id, actor(req))));
  app.delete<{ Params: { id: string }; Querystring: { hard?: boolean; force?: boolean } }>('/v1/tenants/:id', { preHandler: operator, schema: { params: IdParams, querystring: DeleteQuery, response: tenantReply } },
    async (req) => tenantView(await tenantry.tenants.delete(req.params.id, { ...actor(req), hard: req.query.hard ?? false, force: req.query.force ?? false })));

  return app;
}

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

interface Problem { type: string; title: string; status: number; detail: string; code: string; requestId: string }

function toProblem(err: unknown, requestId: string): Problem {
  if (err instanceof TenantryError) {
    return { type: `https://tenantry.dev/errors/${err.code}`, title: ERROR_CODES[err.code].title, status: err.status, detail: err.message, code: err.code, requestId };
  }
  if (err instanceof HttpError) {
    return { type: `https://tenantry.dev/errors/${err.code}`, title: err.status === 401 ? 'Unauthorized' : 'Error', status: err.status, detail: err.message, code: err.code, requestId };
  }
  const e = err as { validation?: unknown; statusCode?: number; message?: string };
  if (e.validation) {
    return { type: 'https://tenantry.dev/errors/INVALID_INPUT', title: ERROR_CODES.INVALID_INPUT.title, status: 400, detail: e.message ?? 'Invalid request.', code: 'INVALID_INPUT', requestId };
  }
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return { type: 'about:blank', title: 'Bad request', status: e.statusCode, detail: e.message ?? 'Bad request.', code: 'BAD_REQUEST', requestId };
  }
  return { type: 'about:blank', title: 'Internal error', status: 500, detail: 'An internal error occurred; the request id identifies it in the server log.', code: 'INTERNAL', requestId };
}

