import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import AjvCompiler from '@fastify/ajv-compiler';
import type { Static } from '@sinclair/typebox';
import { randomUUID } from 'node:crypto';
import type { Tenantry } from '../tenantry.js';
import { TenantryError, ERROR_CODES, isTenantryError, isDatabaseUnavailable, translateDatabaseError } from '../errors.js';
import type { Tenant } from '../tenants/model.js';
// the bodies' tier and isolation are strings in the schema (app-defined plans); the library validates them
import type { CreateTenantInput } from '../provisioning/provision.js';
import type { ListTenantsOptions, UpdateTenantInput } from '../tenants/tenants.js';
import { parseApiKey, type Scope } from '../keys/api-keys.js';
import type { KeyAuthority } from '../members/roles.js';
import { IdempotencyStore, SECRET_NOT_REPLAYED } from '../idempotency/idempotency.js';
import { DatabaseHealth, installDeadline, withRetries } from './resilience.js';
import { createHash } from 'node:crypto';
import { createMetrics } from './metrics.js';
import { authenticateToken, authorizeTenant, bearerToken, requireOperator, resolveRequestTenant } from '../keys/authorize.js';
import * as S from './schemas.js';
import { completeOpenApi, openapiRefResolver } from './openapi.js';
import { PACKAGE_VERSION } from '../config.js';
import { registerInputGuard } from './input-guard.js';
import { registerConsole } from '../console/plugin.js';

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

/** The tenant object every response carries (the HTTP contract; internal placement stays internal). */
export function tenantView(t: Tenant): S.TenantView {
  return {
    id: t.id, slug: t.slug, name: t.name, status: t.status, tier: t.tier, isolation: t.isolation,
    trialEndsAt: t.trialEndsAt?.toISOString() ?? null, suspendedReason: t.suspendedReason, metadata: t.metadata,
    createdAt: t.createdAt.toISOString(), updatedAt: t.updatedAt.toISOString(),
  };
}

/** Dates to ISO strings, for responses built from library objects. */
const plain = <T>(value: T): unknown => JSON.parse(JSON.stringify(value));

const coercingValidators = AjvCompiler();
const exactValidators = AjvCompiler();

const problemResponses = { 400: { $ref: 'Problem#' }, 401: { $ref: 'Problem#' }, 403: { $ref: 'Problem#' }, 404: { $ref: 'Problem#' }, 409: { $ref: 'Problem#' }, 429: { $ref: 'Problem#' } };
const bearer = [{ bearer: [] as string[] }];

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
    if (!health.available && req.url.startsWith('/v1/')) {
      throw new TenantryError('DATABASE_UNAVAILABLE', 'PostgreSQL is unreachable right now; retry in a few seconds.', { retryAfterSeconds: 2 });
    }
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).type('application/problem+json').send({
      type: 'about:blank', title: 'Not found', status: 404, code: 'NOT_FOUND', detail: `No route ${req.method} ${req.url.split('?')[0]}.`, requestId: req.id,
    });
  });

  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith('/v1/') || req.url.startsWith('/v1/invitations/accept')) return;
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

  // ---- access rules ----

  // Work done under an Idempotency-Key is audited under the request that first claimed the key, so a
  // retry that takes over a claim whose holder died can find what that holder committed.
  // a tenant key's authority goes with every change it asks for: the library refuses what would raise
  // a role or a key above the key's own (the operator's calls carry none and are not limited)
  const actor = (req: FastifyRequest): { actor: string; requestId: string; authority?: KeyAuthority } => ({
    actor: req.principal?.kind === 'tenant' ? `key:${req.principal.keyId}` : 'operator',
    requestId: req.idempotency?.requestId ?? String(req.id),
    ...(req.principal?.kind === 'tenant' ? { authority: req.principal.authority } : {}),
  });

  /**
   * The tenant a /v1/tenants/{id}/... route acts on. The operator may act on any tenant. A tenant key
   * acts only on its own tenant, within its scopes; naming another tenant answers 404, so a key cannot
   * learn which other tenants exist.
   */
  const access = (req: FastifyRequest, idOrSlug: string, need: Scope | 'operator'): Promise<Tenant> => authorizeTenant(tenantry, req.principal!, idOrSlug, need);
  const operatorOnly = (req: FastifyRequest): void => requireOperator(req.principal);

  /**
   * The tenant of a self-service route: the key's tenant is authoritative; X-Tenant-ID, a
   * {slug}.{base domain} host or a /v1/t/{slug} path may name it too, and naming another is refused.
   * The operator names the tenant with one of them.
   */
  const self = (req: FastifyRequest, pathSlug: string | undefined, need: Scope): Promise<Tenant> => resolveRequestTenant(tenantry, req.principal!,
    { header: req.headers['x-tenant-id'] as string | undefined, host: req.headers.host, pathSlug }, { need, baseDomain: deps.baseDomain });


  // ---- health, metrics, OpenAPI ----

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    if (!health.ready && !(await health.recheck())) return reply.status(503).send({ status: health.reason, ok: false });
    try {
      const r = await tenantry.ready();
      return reply.status(r.ok ? 200 : 503).send({ status: r.ok ? 'ready' : 'catalog migrations pending', ...r });
    } catch (err) {
      if (isDatabaseUnavailable(err)) health.reportFault();
      return reply.status(503).send({ status: 'catalog unreachable', ok: false, error: (err as Error).message });
    }
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => planEnums(app.swagger(), tenantry));

  // ---- operator: tenants ----

  app.post('/v1/tenants', { schema: { tags: ['tenants'], summary: 'Provision a tenant', security: bearer, body: S.CreateTenantBody, response: { 201: S.CreatedTenantSchema, ...problemResponses } } }, async (req, reply) => {
    operatorOnly(req);
    const body = req.body as Static<typeof S.CreateTenantBody>;
    try {
      const t = await tenantry.tenants.create(body as CreateTenantInput, actor(req));
      return reply.status(201).send({ ...tenantView(t), apiKey: t.apiKey!.key });
    } catch (err) {
      // A retry of a create whose answer was lost (its process died, or PostgreSQL went away after the
      // commit) finds the tenant that request made; its key was shown to nobody, so rotate it.
      const idem = req.idempotency;
      if (idem?.takenOver && isTenantryError(err, 'SLUG_TAKEN')) {
        const made = await tenantry.tenants.createdByRequest(body.slug, idem.requestId);
        if (made) return reply.status(201).header('idempotent-recovered', 'true').send({ ...tenantView(made), apiKey: SECRET_NOT_REPLAYED });
        // the slug is held by a provisioning its dead process left half-made (likely this key's own):
        // the background healer removes it, then the retry can create the tenant
        const holder = await tenantry.tenants.find(body.slug);
        if (holder?.status === 'provisioning') {
          throw new TenantryError('PROVISIONING_INCOMPLETE', `An earlier attempt at tenant "${body.slug}" stopped half-way; it is being removed in the background. Retry with the same Idempotency-Key shortly.`, { slug: body.slug, retryAfterSeconds: 5 });
        }
      }
      throw err;
    }
  });
  app.get('/v1/tenants', { schema: { tags: ['tenants'], summary: 'List tenants', security: bearer, querystring: S.ListTenantsQuery, response: { 200: S.TenantPage, ...problemResponses } } }, async (req) => {
    operatorOnly(req);
    const page = await tenantry.tenants.list(req.query as ListTenantsOptions);
    return { items: page.items.map(tenantView), nextCursor: page.nextCursor };
  });
  const tenantReply = { 200: { $ref: 'Tenant#' }, ...problemResponses };
  app.get('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Get a tenant by id or slug', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const { id } = req.params as Static<typeof S.IdParams>;
    return tenantView(await tenantry.tenants.get((await access(req, id, 'read')).id));
  });
  app.patch('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Change name, tier or metadata', security: bearer, params: S.IdParams, body: S.UpdateTenantBody, response: tenantReply } }, async (req) => {
    const { id } = req.params as Static<typeof S.IdParams>;
    const t = await access(req, id, 'operator');
    return tenantView(await tenantry.tenants.update(t.id, req.body as UpdateTenantInput, actor(req)));
  });
  app.post('/v1/tenants/:id/suspend', { schema: { tags: ['tenants'], summary: 'Suspend a tenant', security: bearer, params: S.IdParams, body: S.SuspendBody, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.suspend(t.id, (req.body as Static<typeof S.SuspendBody>).reason, actor(req)));
  });
  app.post('/v1/tenants/:id/activate', { schema: { tags: ['tenants'], summary: 'Lift a suspension', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.activate(t.id, actor(req)));
  });
  app.post('/v1/tenants/:id/restore', { schema: { tags: ['tenants'], summary: 'Undo a soft delete', security: bearer, params: S.IdParams, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantView(await tenantry.tenants.restore(t.id, actor(req)));
  });
  app.delete('/v1/tenants/:id', { schema: { tags: ['tenants'], summary: 'Soft delete, or hard delete with ?hard=true', security: bearer, params: S.IdParams, querystring: S.DeleteQuery, response: tenantReply } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    const q = req.query as Static<typeof S.DeleteQuery>;
    return tenantView(await tenantry.tenants.delete(t.id, { ...actor(req), hard: q.hard ?? false, force: q.force ?? false }));
  });

  // ---- quotas and usage ----

  app.get('/v1/tenants/:id/quotas', { schema: { tags: ['quotas'], summary: 'Effective quotas (tier or override)', security: bearer, params: S.IdParams, response: { 200: S.EffectiveQuotasSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return tenantry.quotas.effectiveQuotas(t.id);
  });
  app.put('/v1/tenants/:id/quotas', { schema: { tags: ['quotas'], summary: 'Set per-tenant quota overrides (null removes one)', security: bearer, params: S.IdParams, body: S.QuotasBody, response: { 200: S.EffectiveQuotasSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return tenantry.quotas.setOverrides(t.id, req.body as Record<string, number | null>, actor(req));
  });
  app.post('/v1/tenants/:id/usage', { schema: { tags: ['quotas'], summary: 'Debit usage atomically', security: bearer, params: S.IdParams, body: S.UsageBody, response: { 200: S.IncrementResultSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'write');
    const b = req.body as Static<typeof S.UsageBody>;
    // An Idempotency-Key header also keys the debit itself, in the debit's own transaction: a retry that
    // takes over the claim of a process that died after committing gets that debit back, not a second one.
    const idem = req.idempotency;
    const idempotencyKey = b.idempotencyKey ?? (idem ? `http:${createHash('sha256').update(`${idem.principal}\0${idem.key}`).digest('hex').slice(0, 48)}` : undefined);
    return tenantry.quotas.increment(t.id, b.metric, b.amount, idempotencyKey ? { idempotencyKey } : {});
  });
  app.get('/v1/tenants/:id/usage', { schema: { tags: ['quotas'], summary: 'Usage against quotas', security: bearer, params: S.IdParams, response: { 200: S.UsageSummarySchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return plain(await tenantry.quotas.summary(t.id));
  });

  app.post('/v1/tenants/:id/leases', { schema: { tags: ['quotas'], summary: 'Take a concurrency slot of a lease metric (freed on release or expiry)', security: bearer, params: S.IdParams, body: S.LeaseBody, response: { 201: S.LeaseSchema, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'write');
    const b = req.body as Static<typeof S.LeaseBody>;
    return reply.status(201).send(plain(await tenantry.quotas.acquireLease(t.id, b.metric, b.ttlSeconds !== undefined ? { ttlSeconds: b.ttlSeconds } : {})));
  });
  app.delete('/v1/tenants/:id/leases/:leaseId', { schema: { tags: ['quotas'], summary: 'Release a lease', security: bearer, params: S.LeaseParams, response: { 200: { type: 'object', properties: { released: { type: 'boolean' } } }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.LeaseParams>;
    const t = await access(req, p.id, 'write');
    return { released: await tenantry.quotas.releaseLease(t.id, p.leaseId) };
  });
  app.put('/v1/tenants/:id/gauges/:metric', { schema: { tags: ['quotas'], summary: 'Set a gauge the app measures (refused above its limit)', security: bearer, params: S.GaugeParams, body: S.GaugeBody, response: { 200: S.IncrementResultSchema, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.GaugeParams>;
    const t = await access(req, p.id, 'write');
    return tenantry.quotas.setGauge(t.id, p.metric, (req.body as Static<typeof S.GaugeBody>).value);
  });

  // ---- plans ----

  app.get('/v1/plans', { schema: { tags: ['plans'], summary: 'The plans in force: metrics, tiers in order, features', security: bearer, response: { 200: S.PlansViewSchema, ...problemResponses } } }, async (req) => {
    // the plans are the same for every tenant (a price list, not a tenant's data): any key that may read
    const p = req.principal!;
    if (p.kind === 'tenant' && !p.permissions.includes('read')) throw new TenantryError('FORBIDDEN', `This API key lacks the "read" scope (it has: ${p.permissions.join(', ') || 'none'}).`);
    // where the plan file lives on the server, and how it differs, is the operator's business
    const file = p.kind === 'operator' ? tenantry.plans.status() : undefined;
    return { plans: tenantry.plans.document(), file: file ?? null };
  });
  app.put('/v1/plans', { schema: { tags: ['plans'], summary: 'Apply a plan file (refused when it would strand tenants or usage; dryRun: only the diff)', security: bearer, body: S.PutPlansBody, response: { 200: S.PlanDiffSchema, ...problemResponses } } }, async (req) => {
    operatorOnly(req);
    const b = req.body as Static<typeof S.PutPlansBody>;
    const opts = { ...(b.moveTenants !== undefined ? { moveTenants: b.moveTenants } : {}), ...(b.dropHistory !== undefined ? { dropHistory: b.dropHistory } : {}) };
    if (b.dryRun) return { applied: false, ...(await tenantry.plans.diff(b.plans, opts)) };
    return { applied: true, ...(await tenantry.plans.apply(b.plans, opts, actor(req))) };
  });

  // ---- API keys ----

  app.post('/v1/tenants/:id/api-keys', { schema: { tags: ['api keys'], summary: 'Create an API key (shown once)', security: bearer, params: S.IdParams, body: S.CreateKeyBody, response: { 201: S.CreatedApiKeySchema, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    const b = req.body as Static<typeof S.CreateKeyBody>;
    const created = await tenantry.keys.create(t.id, { name: b.name, ...(b.scopes ? { scopes: b.scopes } : {}), expiresAt: b.expiresAt ? new Date(b.expiresAt) : null, memberUserId: b.memberUserId ?? null }, actor(req));
    return reply.status(201).send(plain(created));
  });
  app.get('/v1/tenants/:id/api-keys', { schema: { tags: ['api keys'], summary: 'List API keys (never their secrets)', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'ApiKey#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return plain(await tenantry.keys.list(t.id));
  });
  app.delete('/v1/tenants/:id/api-keys/:keyId', { schema: { tags: ['api keys'], summary: 'Revoke an API key', security: bearer, params: S.KeyParams, response: { 200: { $ref: 'ApiKey#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.KeyParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.keys.revoke(t.id, p.keyId, actor(req)));
  });
  app.post('/v1/tenants/:id/api-keys/:keyId/rotate', { schema: { tags: ['api keys'], summary: 'Rotate: a new key; the old one valid for graceSeconds', security: bearer, params: S.KeyParams, body: { anyOf: [S.RotateKeyBody, { type: 'null' }] }, response: { 201: S.CreatedApiKeySchema, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as Static<typeof S.KeyParams>;
    const t = await access(req, p.id, 'admin');
    const b = (req.body ?? {}) as Static<typeof S.RotateKeyBody>;
    return reply.status(201).send(plain(await tenantry.keys.rotate(t.id, p.keyId, b.graceSeconds !== undefined ? { graceSeconds: b.graceSeconds } : {}, actor(req))));
  });

  // ---- members and invitations ----

  app.post('/v1/tenants/:id/members', { schema: { tags: ['members'], summary: 'Add a member (counts against max_users)', security: bearer, params: S.IdParams, body: S.AddMemberBody, response: { 201: { $ref: 'Member#' }, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return reply.status(201).send(plain(await tenantry.members.add(t.id, req.body as Static<typeof S.AddMemberBody>, actor(req))));
  });
  app.get('/v1/tenants/:id/members', { schema: { tags: ['members'], summary: 'List members', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'Member#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return plain(await tenantry.members.list(t.id));
  });
  app.patch('/v1/tenants/:id/members/:userId', { schema: { tags: ['members'], summary: 'Change a member\'s role', security: bearer, params: S.MemberParams, body: S.UpdateMemberBody, response: { 200: { $ref: 'Member#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.MemberParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.members.updateRole(t.id, p.userId, (req.body as Static<typeof S.UpdateMemberBody>).role, actor(req)));
  });
  app.delete('/v1/tenants/:id/members/:userId', { schema: { tags: ['members'], summary: 'Remove a member (never the last owner)', security: bearer, params: S.MemberParams, response: { 204: { type: 'null' }, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as Static<typeof S.MemberParams>;
    const t = await access(req, p.id, 'admin');
    await tenantry.members.remove(t.id, p.userId, actor(req));
    return reply.status(204).send();
  });
  app.post('/v1/tenants/:id/invitations', { schema: { tags: ['members'], summary: 'Invite by email (token shown once)', security: bearer, params: S.IdParams, body: S.InviteBody, response: { 201: { type: 'object', properties: { invitation: { $ref: 'Invitation#' }, token: { type: 'string' } } }, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return reply.status(201).send(plain(await tenantry.members.invite(t.id, req.body as Static<typeof S.InviteBody>, actor(req))));
  });
  app.get('/v1/tenants/:id/invitations', { schema: { tags: ['members'], summary: 'List invitations', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'Invitation#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return plain(await tenantry.members.listInvitations(t.id));
  });
  app.delete('/v1/tenants/:id/invitations/:invitationId', { schema: { tags: ['members'], summary: 'Revoke an invitation', security: bearer, params: S.InvitationParams, response: { 200: { $ref: 'Invitation#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.InvitationParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.members.revokeInvitation(t.id, p.invitationId, actor(req)));
  });
  app.post('/v1/invitations/accept', { schema: { tags: ['members'], summary: 'Accept an invitation (the token is the credential)', body: S.AcceptInvitationBody, response: { 200: { type: 'object', properties: { tenantId: { type: 'string' }, userId: { type: 'string' }, email: { type: 'string' }, role: { type: 'string' } } }, ...problemResponses } } }, async (req) => {
    const b = req.body as Static<typeof S.AcceptInvitationBody>;
    return plain(await tenantry.members.accept(b.token, b.name !== undefined ? { name: b.name } : {}, { requestId: String(req.id) }));
  });

  // ---- features and audit ----

  app.get('/v1/tenants/:id/features', { schema: { tags: ['features'], summary: 'Feature flags and where each comes from', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: S.FeatureStateSchema }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return tenantry.features.list(t.id);
  });
  app.put('/v1/tenants/:id/features/:feature', { schema: { tags: ['features'], summary: 'Override a feature for one tenant (null: back to the tier)', security: bearer, params: S.FeatureParams, body: S.FeatureBody, response: { 200: { type: 'array', items: S.FeatureStateSchema }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.FeatureParams>;
    const t = await access(req, p.id, 'operator');
    return tenantry.features.set(t.id, p.feature, (req.body as Static<typeof S.FeatureBody>).enabled, actor(req));
  });
  app.get('/v1/tenants/:id/audit', { schema: { tags: ['audit'], summary: 'Audit entries, newest first', security: bearer, params: S.IdParams, querystring: S.AuditQuery, response: { 200: { type: 'object', properties: { items: { type: 'array', items: S.AuditEntrySchema }, nextCursor: { type: ['string', 'null'] } } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    const q = req.query as Static<typeof S.AuditQuery>;
    const limit = q.limit ?? 50;
    const items = await tenantry.audit(t.id, { limit, ...(q.cursor ? { before: q.cursor } : {}) });
    return { items: plain(items), nextCursor: items.length === limit ? items[items.length - 1]!.id : null };
  });
  app.get('/v1/tenants/:id/audit/verify', { schema: { tags: ['audit'], summary: 'Recompute the audit hash chain', security: bearer, params: S.IdParams, response: { 200: S.AuditVerificationSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return tenantry.verifyAudit(t.id);
  });

  // ---- webhooks ----
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
    if (named !== undefined && named !== null && !names(p.tenant, named)) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(named)}.`);
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

  // ---- tenant self-service (tenant API key; also /v1/t/{slug}/...) ----

  for (const prefix of ['/v1/tenant', '/v1/t/:slug']) {
    const params = prefix.includes(':slug') ? { params: S.SlugParams } : {};
    const slugOf = (req: FastifyRequest): string | undefined => (req.params as { slug?: string }).slug;
    app.get(prefix, { schema: { tags: ['self-service'], summary: 'The key\'s own tenant', security: bearer, ...params, response: tenantReply } }, async (req) => tenantView(await self(req, slugOf(req), 'read')));
    app.get(`${prefix}/usage`, { schema: { tags: ['self-service'], summary: 'The key\'s own usage against quotas', security: bearer, ...params, response: { 200: S.UsageSummarySchema, ...problemResponses } } }, async (req) => {
      const t = await self(req, slugOf(req), 'read');
      return plain(await tenantry.quotas.summary(t.id));
    });
    app.post(`${prefix}/sql`, { schema: { tags: ['self-service'], summary: 'Run one SQL statement inside the tenant\'s walls (sql scope)', security: bearer, ...params, body: S.SqlBody, response: { 200: S.SqlResultSchema, ...problemResponses } } }, async (req) => {
      const t = await self(req, slugOf(req), 'sql');
      const b = req.body as Static<typeof S.SqlBody>;
      const p = req.principal!;
      const readOnly = Boolean(b.readOnly) || (p.kind === 'tenant' && !p.permissions.includes('write'));
      return plain(await tenantry.runTenantSql(t.id, { sql: b.sql, params: b.params ?? [], readOnly }));
    });
  }

  return app;
}

/**
 * The OpenAPI document with the plans' names as enums: every schema marked with PlanName(...) lists
 * the metrics, tiers, quotas or features declared now (a plan applied while the server runs shows at
 * once). A copy: the cached document keeps its markers.
 */
function planEnums(doc: unknown, tenantry: Tenantry): unknown {
  const plans = tenantry.plans.current();
  const names: Record<string, string[]> = {
    metric: plans.metrics.map((m) => m.name),
    tier: plans.tiers.map((t) => t.name),
    quota: [...new Set([...plans.metrics.map((m) => m.quota), 'api_calls_per_minute', 'data_retention_days'])],
    feature: plans.features.map((f) => f.name),
  };
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (!v || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = walk(x);
    const mark = out.$comment;
    if (typeof mark === 'string' && mark.startsWith(S.PLAN_NAME_MARK)) {
      const of = mark.slice(S.PLAN_NAME_MARK.length);
      delete out.$comment;
      delete out.pattern;
      out.enum = names[of] ?? [];
    }
    return out;
  };
  return walk(doc);
}

function names(t: Tenant, idOrSlug: string): boolean {
  const k = idOrSlug.toLowerCase();
  return k === t.id || k === t.slug;
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

