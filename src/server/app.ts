import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import AjvCompiler from '@fastify/ajv-compiler';
import { randomUUID } from 'node:crypto';
import type { Tenantry } from '../tenantry.js';
import { TenantryError, ERROR_CODES, isTenantryError, translateDatabaseError } from '../errors.js';
import { IdempotencyStore } from '../idempotency/idempotency.js';
import { DatabaseHealth, installDeadline, withRetries } from './resilience.js';
import { createMetrics } from './metrics.js';
import { authenticateToken, bearerToken } from '../keys/authorize.js';
import * as S from './schemas.js';
import { completeOpenApi, openapiRefResolver } from './openapi.js';
import { PACKAGE_VERSION } from '../config.js';
import { registerInputGuard } from './input-guard.js';
import { registerConsole } from '../console/plugin.js';
import { healthRoutes } from './routes/health.js';
import { tenantRoutes } from './routes/tenants.js';
import { quotaRoutes } from './routes/quotas.js';
import { planRoutes } from './routes/plans.js';
import { keyRoutes } from './routes/keys.js';
import { memberRoutes } from './routes/members.js';
import { featureRoutes } from './routes/features.js';
import { auditRoutes } from './routes/audit.js';
import { webhookRoutes } from './routes/webhooks.js';
import { tenantSelfRoutes } from './routes/tenant-self.js';
import { backupRoutes } from './routes/backups.js';
import { domainRoutes } from './routes/domains.js';
import { billingRoutes } from './routes/billing.js';
import { usageHistoryRoutes } from './routes/usage-history.js';
import { migrationRoutes } from './routes/migrations.js';
import { webhookRedeliveryRoutes } from './routes/webhook-redelivery.js';
import { statsRoutes } from './routes/stats.js';

export { tenantView } from './routes/shared.js';

export interface ServerDeps {
  tenantry: Tenantry;
  logLevel?: string;
  /** hosts `{slug}.{baseDomain}` name a tenant on tenant routes */
  baseDomain?: string | undefined;
  /** tenant ids as metric labels (unbounded cardinality: off unless the operator asks) */
  tenantLabels?: boolean;
  /** every request is answered within this many ms (503 REQUEST_TIMEOUT past it); default 30000 */
  requestTimeoutMs?: number;
}

// who may do what lives in the library (src/keys/authorize.ts), shared with the app plugins and the CLI
type Principal = import('../keys/authorize.js').Principal;

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** `requestId`: the request that first claimed the key (work runs, and is audited, under it) */
    idempotency: { principal: string; key: string; requestId: string; takenOver: boolean; heartbeat: NodeJS.Timeout } | null;
  }
  interface FastifyInstance {
    /** PostgreSQL's reachability as this server sees it; the last-resort handler marks it unready */
    health: DatabaseHealth;
  }
}

const coercingValidators = AjvCompiler();
const exactValidators = AjvCompiler();

/**
 * The HTTP face. Every route validates its input against a TypeBox schema (also served as OpenAPI
 * 3.1) and calls the library; errors are RFC 9457 problem+json with the library's stable code.
 */
export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const { tenantry } = deps;
  const app = Fastify({
    logger: {
      level: deps.logLevel ?? 'info',
      // never log credentials
      redact: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]'],
    },
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
    },
    bodyLimit: 256 * 1024,
    // a URL whose percent-escapes are not UTF-8 (a lone surrogate sent as %ED%A0%80, a stray %) is bad
    // input like any other: 400 problem+json, not Fastify's own answer
    frameworkErrors: (err, req, reply) => {
      void (reply as FastifyReply).status(400).type('application/problem+json').send({
        type: 'https://tenantry.dev/errors/INVALID_INPUT', title: ERROR_CODES.INVALID_INPUT.title, status: 400,
        detail: `The request URL cannot be read (${err.message}); percent-encode it as UTF-8.`, code: 'INVALID_INPUT', requestId: String(req.id),
      });
    },
    ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false, allErrors: false } },
    // Query strings and path parameters arrive as text and are coerced to their types; a JSON body
    // already has types, and one of the wrong type is refused rather than coerced ("5", true or
    // ["acme"] are not an amount of 5, an amount of 1 or the slug "acme").
    schemaController: {
      compilersFactory: {
        buildValidator: (externalSchemas, options) => {
          const coercing = coercingValidators(externalSchemas, options);
          const exact = exactValidators(externalSchemas, { ...options, customOptions: { ...options?.customOptions, coerceTypes: false } } as typeof options);
          return (route) => (route.httpPart === 'body' ? exact(route) : coercing(route));
        },
      },
    },
  });
  const metrics = createMetrics(tenantry, { tenantLabels: deps.tenantLabels ?? false });
  app.decorateRequest('principal', null);
  app.decorateRequest('idempotency', null);
  const health = new DatabaseHealth(() => tenantry.ping(), app.log);
  app.decorate('health', health);
  app.addHook('onClose', async () => { health.stop(); });
  const sendProblem = (req: FastifyRequest, reply: import('fastify').FastifyReply, err: unknown): void => {
    const problem = toProblem(err, String(req.id));
    if (problem.code === 'DATABASE_UNAVAILABLE') health.reportFault();
    else if (problem.status >= 500) req.log.error({ err }, 'request failed');
    const retryAfter = (isTenantryError(err) ? err : translateDatabaseError(err) as TenantryError).details?.retryAfterSeconds;
    if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
    else if (problem.status === 503) void reply.header('retry-after', '1');
    void reply.status(problem.status).type('application/problem+json').send(problem);
  };
  installDeadline(app, deps.requestTimeoutMs ?? 30_000, sendProblem);

  await app.register(swagger, {
    refResolver: openapiRefResolver,
    transformObject: (d) => completeOpenApi('openapiObject' in d ? d.openapiObject : d.swaggerObject, { version: PACKAGE_VERSION }),
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Tenantry', version: '0.1.0', description: 'Multi-tenant control plane for PostgreSQL.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the operator token, or a tenant API key (tnt_live_...)' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await registerConsole(app); // the admin console at /console (src/console, console/)
  app.addSchema(S.TenantSchema);
  app.addSchema(S.ProblemSchema);
  app.addSchema(S.ApiKeySchema);
  app.addSchema(S.MemberSchema);
  app.addSchema(S.InvitationSchema);

  // ---- cross-cutting: request ids, errors, auth, rate limits, idempotency, metrics ----

  app.addHook('onRequest', async (req, reply) => { void reply.header('x-request-id', req.id); });
  // NUL bytes, lone surrogates and absurd lengths in the path, query, headers or body: 400 before anything reads them
  registerInputGuard(app);

  app.setErrorHandler((err, req, reply) => {
    // answered already (its deadline passed): the late error is only logged
    if (reply.sent) { req.log.warn({ err }, 'request failed after its deadline answered for it'); return; }
    sendProblem(req, reply, err);
  });
  // while PostgreSQL is known to be down, API requests fail fast instead of each waiting on a connect
  app.addHook('onRequest', async (req) => {
    if (!health.available && req.routeOptions.url?.startsWith('/v1/')) {
      throw new TenantryError('DATABASE_UNAVAILABLE', 'PostgreSQL is unreachable right now; retry in a few seconds.', { retryAfterSeconds: 2 });
    }
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).type('application/problem+json').send({
      type: 'about:blank', title: 'Not found', status: 404, code: 'NOT_FOUND', detail: `No route ${req.method} ${req.url.split('?')[0]}.`, requestId: req.id,
    });
  });

  app.addHook('onRequest', async (req, reply) => {
    // Decided on the route the router matched, never on the raw request line: `/%761/...` (an encoded
    // `v`) or an absolute-form `GET http://x/v1/...` reach the /v1 routes while their raw text does not
    // start with `/v1/` (the red team read other tenants' records that way). Unmatched requests get the 404.
    const route = req.routeOptions.url;
    if (route === undefined || !route.startsWith('/v1/') || route === '/v1/invitations/accept' || req.routeOptions.config?.publicRoute === true) return;
    req.principal = await authenticate(tenantry, req);
    if (req.principal.kind === 'tenant') {
      const d = await tenantry.rateLimit(req.principal.tenant.id);
      void reply.header('ratelimit-limit', String(d.limit));
      void reply.header('ratelimit-remaining', String(d.remaining));
      void reply.header('ratelimit-reset', String(Math.ceil(d.resetAfterMs / 1000)));
      void reply.header('ratelimit-policy', `${d.limit};w=60`);
      if (!d.allowed) {
        const retryAfterSeconds = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
        throw new TenantryError('RATE_LIMITED', `Tenant "${req.principal.tenant.slug}" is over its ${d.limit} requests per minute; retry after ${retryAfterSeconds} s.`, { retryAfterSeconds });
      }
    }
  });

  app.addHook('preHandler', async (req, reply) => {
    const key = req.headers['idempotency-key'];
    if (req.method !== 'POST' || typeof key !== 'string') return;
    IdempotencyStore.validateKey(key);
    const principal = req.principal?.kind === 'tenant' ? `key:${req.principal.keyId}` : req.principal?.kind ?? 'anonymous';
    const path = req.url.split('?')[0]!;
    const claim = await tenantry.idempotency.claim(principal, key, req.method, path, IdempotencyStore.fingerprint(req.method, path, req.body), String(req.id));
    if (claim.state === 'in-progress') {
      throw new TenantryError('IDEMPOTENCY_IN_PROGRESS', `A request with Idempotency-Key ${JSON.stringify(key)} is still running; retry after ${claim.retryAfterSeconds} s.`, { retryAfterSeconds: claim.retryAfterSeconds });
    }
    if (claim.state === 'replay') {
      void reply.header('idempotent-replayed', 'true');
      const isProblem = claim.status >= 400;
      return reply.status(claim.status).type(isProblem ? 'application/problem+json' : 'application/json').send(claim.response);
    }
    // answered by its deadline while claiming: no work will run, so the claim is handed back at once
    if (req.deadlinePassed) { await tenantry.idempotency.expire(principal, key); return; }
    // the claim is a lease, renewed while this request runs; if this process dies it runs out and a retry takes over
    const heartbeat = setInterval(() => { tenantry.idempotency.heartbeat(principal, key).catch(() => undefined); }, (tenantry.idempotency.leaseSeconds * 1000) / 3);
    heartbeat.unref();
    req.idempotency = { principal, key, requestId: claim.requestId, takenOver: claim.takenOver, heartbeat };
    // A takeover: the first holder died, perhaps after its COMMIT. Running the request again would make a
    // second key, member or invitation; its audit entry (written in the change's own transaction, with
    // this request id) says whether the work committed. A create of a tenant finds its tenant instead,
    // and a debit is keyed by its Idempotency-Key inside its own transaction (it applies once anyway).
    if (claim.takenOver && path !== '/v1/tenants' && !path.endsWith('/usage')) {
      const done = await tenantry.idempotency.committedWork(claim.requestId);
      if (done) {
        throw new TenantryError('IDEMPOTENCY_RESULT_LOST', `The request with Idempotency-Key ${JSON.stringify(key)} committed (${done.action} ${done.target}) but its answer was lost; it is not run again. Read the result back (a new key's secret was shown to nobody: rotate it).`, { action: done.action, target: done.target });
      }
    }
  });
  app.addHook('onSend', async (req, reply, payload) => {
    const idem = req.idempotency;
    if (!idem) return payload;
    req.idempotency = null;
    const giveUp = (err: unknown): void => { req.log.warn({ err }, 'could not end an idempotency claim; its lease runs out on its own'); };
    const endLease = (): Promise<void> => withRetries(() => tenantry.idempotency.expire(idem.principal, idem.key), giveUp);
    // the answer waits for the claim's update at most briefly: a PostgreSQL that hangs must not hold it
    const briefly = (p: Promise<void>): Promise<unknown> => Promise.race([p, new Promise((r) => { setTimeout(r, 2_000).unref(); })]);
    if (req.deadlinePassed) {
      // answered before its work finished: hold the claim until the work ends, then let a retry take it
      // over and find what the work did (rather than run it a second time alongside it)
      void (req.work ?? Promise.resolve()).then(() => { clearInterval(idem.heartbeat); return endLease(); });
      return payload;
    }
    clearInterval(idem.heartbeat);
    if (reply.statusCode >= 500) {
      // The claim is kept (with its first request id) but its lease ends now, so the retry runs at once
      // and can find work that committed before the failure was noticed. Never throws: a failed release
      // is retried in the background, and the lease runs out by itself if every retry fails.
      await briefly(endLease());
    } else {
      let body: unknown = null;
      try { body = typeof payload === 'string' ? JSON.parse(payload) : null; } catch { body = null; }
      await briefly(withRetries(() => tenantry.idempotency.complete(idem.principal, idem.key, reply.statusCode, body), giveUp));
    }
    return payload;
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.observeRequest(req.method, req.routeOptions?.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
  });

  // ---- the routes, one Fastify plugin per concept (src/server/routes/); the hooks above apply to all ----

  const routeDeps = { tenantry, baseDomain: deps.baseDomain };
  await app.register(healthRoutes, { ...routeDeps, metrics });
  await app.register(tenantRoutes, routeDeps);
  await app.register(quotaRoutes, routeDeps);
  await app.register(planRoutes, routeDeps);
  await app.register(keyRoutes, routeDeps);
  await app.register(memberRoutes, routeDeps);
  await app.register(featureRoutes, routeDeps);
  await app.register(auditRoutes, routeDeps);
  await app.register(webhookRoutes, routeDeps);
  await app.register(tenantSelfRoutes, routeDeps);
  await app.register(backupRoutes, routeDeps);
  await app.register(domainRoutes, routeDeps);
  await app.register(billingRoutes, routeDeps);
  await app.register(usageHistoryRoutes, routeDeps);
  await app.register(migrationRoutes, routeDeps);
  await app.register(webhookRedeliveryRoutes, routeDeps);
  await app.register(statsRoutes, routeDeps);

  return app;
}

async function authenticate(tenantry: Tenantry, req: FastifyRequest): Promise<Principal> {
  return authenticateToken(tenantry, bearerToken(req.headers.authorization), req.ip);
}

interface Problem { type: string; title: string; status: number; detail: string; code: string; requestId: string }

export function toProblem(err: unknown, requestId: string): Problem {
  err = translateDatabaseError(err);
  if (isTenantryError(err)) {
    return { type: `https://tenantry.dev/errors/${err.code}`, title: ERROR_CODES[err.code].title, status: err.status, detail: err.message, code: err.code, requestId };
  }
  const e = err as { validation?: unknown; statusCode?: number; code?: string; message?: string };
  if (e.validation) {
    return { type: 'https://tenantry.dev/errors/INVALID_INPUT', title: ERROR_CODES.INVALID_INPUT.title, status: 400, detail: `Invalid request: ${e.message ?? 'it does not match the schema'}.`, code: 'INVALID_INPUT', requestId };
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return { type: 'https://tenantry.dev/errors/PAYLOAD_TOO_LARGE', title: 'Request body too large', status: 413, detail: 'The request body is over 256 KiB.', code: 'PAYLOAD_TOO_LARGE', requestId };
  }
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return { type: 'https://tenantry.dev/errors/INVALID_INPUT', title: ERROR_CODES.INVALID_INPUT.title, status: e.statusCode, detail: e.message ?? 'Bad request.', code: 'INVALID_INPUT', requestId };
  }
  return { type: 'about:blank', title: 'Internal error', status: 500, detail: 'An internal error occurred; the request id identifies it in the server log.', code: 'INTERNAL', requestId };
}

