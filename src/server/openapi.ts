/**
 * The OpenAPI document made true and complete after @fastify/swagger builds it from the routes: an
 * operationId on every operation (derived from method and path, so a new route gets one too), errors
 * declared as application/problem+json under the statuses the server answers with and the stable codes
 * each may carry, the headers the server reads (Idempotency-Key, X-Tenant-ID, x-request-id) and sets
 * (x-request-id, RateLimit-*, Retry-After, Idempotent-Replayed), the health, readiness, metrics and
 * document routes, named component schemas, public routes marked as such, and a `servers` entry.
 */
import { ERROR_CODES } from '../errors.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/** Component schemas named after their $id (Tenant, Problem, ...) instead of def-0..def-4. */
export const openapiRefResolver = {
  buildLocalReference(json: Record<string, unknown>, _baseUri: unknown, _fragment: unknown, i: number): string {
    return typeof json.$id === 'string' ? json.$id : `Schema${i}`;
  },
};

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;
/** Last path segments that name an action on the resource before them, not a collection. */
const ACTIONS = new Set(['suspend', 'activate', 'restore', 'rotate', 'accept', 'verify']);
/** Operation ids a derived name would say less well. */
const NAMED: Record<string, string> = {
  'post /v1/tenants/{id}/usage': 'recordTenantUsage',
  'post /v1/tenants/{id}/leases': 'acquireTenantLease',
  'delete /v1/tenants/{id}/leases/{leaseId}': 'releaseTenantLease',
  'get /v1/tenant': 'getOwnTenant',
  'get /v1/tenant/usage': 'getOwnTenantUsage',
  'post /v1/tenant/sql': 'runOwnTenantSql',
  'get /v1/t/{slug}': 'getTenantByPath',
  'get /v1/t/{slug}/usage': 'getTenantUsageByPath',
  'post /v1/t/{slug}/sql': 'runTenantSqlByPath',
  'get /healthz': 'getHealth',
  'get /readyz': 'getReadiness',
  'get /metrics': 'getMetrics',
  'get /openapi.json': 'getOpenApiDocument',
  'put /v1/plans': 'applyPlans',
  'post /v1/tenants/{id}/members': 'addTenantMember',
  'delete /v1/tenants/{id}/members/{userId}': 'removeTenantMember',
  'delete /v1/tenants/{id}/api-keys/{keyId}': 'revokeTenantApiKey',
  'delete /v1/tenants/{id}/invitations/{invitationId}': 'revokeTenantInvitation',
  'post /v1/tenants/{id}/invitations': 'inviteTenantMember',
  'get /v1/tenants/{id}/audit': 'listTenantAudit',
  'get /v1/plans': 'getPlans',
  'post /v1/tenants/{id}/backups': 'backUpTenant',
  'get /v1/tenants/{id}/backups/{backupId}/archive': 'downloadTenantBackup',
  'post /v1/tenants/{id}/backups/{backupId}/restore': 'restoreTenantBackup',
  'post /v1/tenants/{id}/export': 'exportTenant',
  'post /v1/tenants/{id}/clone': 'cloneTenant',
  'post /v1/tenants/{id}/move': 'moveTenant',
  'get /v1/operations/{opId}': 'getOperation',
  'get /v1/domains/tls-ask': 'askDomainCertificate',
  'post /v1/billing/stripe/webhook': 'receiveStripeWebhook',
  'post /v1/billing/close': 'closeBillingPeriod',
  'put /v1/tenants/{id}/billing': 'setTenantBillingCustomer',
  'get /v1/tenants/{id}/billing': 'getTenantBilling',
};

const pascal = (s: string): string => s.split(/[-_]/).filter(Boolean).map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
const singular = (s: string): string => (s.endsWith('ies') ? `${s.slice(0, -3)}y` : s.endsWith('s') && !s.endsWith('ss') ? s.slice(0, -1) : s);

/**
 * createTenant, listTenantApiKeys, rotateTenantApiKey, deleteTenantMember, ...: a resource followed by
 * a parameter is one item (singular), the last segment names what the operation acts on.
 */
export function deriveOperationId(method: string, path: string): string {
  const named = NAMED[`${method} ${path}`];
  if (named) return named;
  const segments = path.split('/').filter((s) => s && s !== 'v1');
  const endsWithParam = /^\{.+\}$/.test(segments.at(-1) ?? '');
  const last = segments.filter((s) => !s.startsWith('{')).at(-1) ?? '';
  const nouns: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s.startsWith('{')) continue;
    if (ACTIONS.has(s) && s === last && !endsWithParam) continue;
    const item = segments[i + 1]?.startsWith('{') || (method === 'post' && s === last && !endsWithParam);
    nouns.push(pascal(item || i < segments.length - 1 ? singular(s) : s));
  }
  let verb: string;
  if (ACTIONS.has(last) && !endsWithParam) verb = last;
  else if (endsWithParam) verb = { get: 'get', put: 'set', patch: 'update', delete: 'delete', post: 'create' }[method] ?? method;
  else verb = { get: last.endsWith('s') ? 'list' : 'get', put: 'set', patch: 'update', delete: 'delete', post: 'create' }[method] ?? method;
  return verb + nouns.join('');
}

const problemContent = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } };

/** "TENANT_NOT_FOUND, API_KEY_NOT_FOUND, ..." for one status, from the one error registry. */
function codesFor(status: number): string[] {
  return Object.entries(ERROR_CODES).filter(([, v]) => (v as { status: number }).status === status).map(([k]) => k);
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad input; nothing was written', 401: 'Missing or bad credentials', 403: 'Not allowed for these credentials',
  404: 'Not found (also a tenant a key may not see)', 408: 'The statement ran past its timeout', 409: 'Conflict with the current state',
  410: 'Gone', 422: 'The Idempotency-Key was sent with another request', 429: 'Over a quota or the rate limit',
  500: 'Unexpected failure', 503: 'PostgreSQL unavailable or the request ran past its deadline; retry after Retry-After',
};

const header = (description: string, schema: Json = { type: 'string' }): Json => ({ description, schema });
const REQUEST_ID = header('The request id (the one sent in x-request-id, or a new one); also in every log line and problem');
const RATE_LIMIT_HEADERS = {
  'RateLimit-Limit': header('Requests per minute allowed to this tenant (tenant keys only)', { type: 'integer' }),
  'RateLimit-Remaining': header('Requests left in the current window (tenant keys only)', { type: 'integer' }),
  'RateLimit-Reset': header('Seconds until the window resets (tenant keys only)', { type: 'integer' }),
  'RateLimit-Policy': header('The limit and its window, e.g. "100;w=60" (tenant keys only)'),
};
const RETRY_AFTER = header('Seconds to wait before retrying', { type: 'integer' });
const REPLAYED = header('"true" when the response is the stored answer to an earlier request with the same Idempotency-Key');
const RECOVERED = header('"true" when a create whose first answer was lost was found by its Idempotency-Key');

const RATE_LIMIT_REFS = {
  'RateLimit-Limit': { $ref: '#/components/headers/RateLimitLimit' },
  'RateLimit-Remaining': { $ref: '#/components/headers/RateLimitRemaining' },
  'RateLimit-Reset': { $ref: '#/components/headers/RateLimitReset' },
  'RateLimit-Policy': { $ref: '#/components/headers/RateLimitPolicy' },
};

/** The shared problem+json response for one status (components.responses.Problem404, ...). */
function problemResponse(doc: Json, code: number): string {
  const name = `Problem${code}`;
  doc.components.responses ??= {};
  if (!doc.components.responses[name]) {
    const codes = codesFor(code);
    doc.components.responses[name] = {
      description: `${STATUS_TEXT[code] ?? 'Error'} (RFC 9457 problem+json${codes.length ? `; code: ${codes.join(', ')}` : ''})`,
      // 429 and 503 always carry Retry-After; a few others (a request still running) may
      headers: { 'x-request-id': { $ref: '#/components/headers/RequestId' }, 'Retry-After': { $ref: '#/components/headers/RetryAfter' }, ...RATE_LIMIT_REFS },
      content: structuredClone(problemContent),
    };
  }
  return name;
}

/** Statuses every operation of a kind can answer with, beyond the ones its route declares. */
function errorStatuses(method: string, path: string, secured: boolean): number[] {
  const out = new Set([400, 500, 503]);
  if (secured) for (const s of [401, 403, 404, 409, 410, 429]) out.add(s);
  if (method === 'post') { out.add(409); out.add(422); }
  if (path.endsWith('/sql')) out.add(408);
  if (path === '/v1/invitations/accept') { out.add(404); out.add(409); out.add(410); out.add(429); }
  return [...out].sort();
}

const PLAIN_ROUTES: Record<string, Json> = {
  '/healthz': { get: { tags: ['operations'], summary: 'Liveness: the process answers', responses: { 200: { description: 'alive', content: { 'application/json': { schema: { type: 'object', properties: { status: { type: 'string' } }, required: ['status'] } } } } } } },
  '/readyz': { get: { tags: ['operations'], summary: 'Readiness: the catalog is reachable and at this code\'s version', responses: {
    200: { description: 'ready', content: { 'application/json': { schema: { $ref: '#/components/schemas/Readiness' } } } },
    503: { description: 'not ready', content: { 'application/json': { schema: { $ref: '#/components/schemas/Readiness' } } } },
  } } },
  '/metrics': { get: { tags: ['operations'], summary: 'Prometheus metrics (text exposition format)', responses: { 200: { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
  '/openapi.json': { get: { tags: ['operations'], summary: 'This OpenAPI document', responses: { 200: { description: 'the document', content: { 'application/json': { schema: { type: 'object' } } } } } } },
};

/** Takes @fastify/swagger's document and returns it true and complete (see the file comment). */
export function completeOpenApi(input: Json, opts: { version: string }): Json {
  const doc = structuredClone(input);
  doc.info = { ...doc.info, version: opts.version, license: { name: 'MIT', identifier: 'MIT' } };
  if (!Array.isArray(doc.servers) || doc.servers.length === 0) doc.servers = [{ url: '/', description: 'the server that serves this document' }];
  doc.components ??= {};
  doc.components.schemas ??= {};
  doc.components.schemas.Readiness ??= {
    type: 'object', required: ['ok'], additionalProperties: true,
    properties: { ok: { type: 'boolean' }, status: { type: 'string' }, catalogVersion: { type: 'integer' }, expectedVersion: { type: 'integer' } },
  };
  doc.components.headers = {
    ...doc.components.headers,
    RequestId: REQUEST_ID,
    RateLimitLimit: RATE_LIMIT_HEADERS['RateLimit-Limit'],
    RateLimitRemaining: RATE_LIMIT_HEADERS['RateLimit-Remaining'],
    RateLimitReset: RATE_LIMIT_HEADERS['RateLimit-Reset'],
    RateLimitPolicy: RATE_LIMIT_HEADERS['RateLimit-Policy'],
    RetryAfter: RETRY_AFTER,
    IdempotentReplayed: REPLAYED,
    IdempotentRecovered: RECOVERED,
  };
  doc.paths ??= {};
  for (const [path, item] of Object.entries(PLAIN_ROUTES)) if (!doc.paths[path]) doc.paths[path] = structuredClone(item);
  const tags = new Set<string>();
  const seen = new Map<string, string>();
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      op.operationId ??= deriveOperationId(method, path);
      const clash = seen.get(op.operationId);
      if (clash) throw new Error(`OpenAPI: operationId ${op.operationId} of ${method} ${path} is also ${clash}'s`);
      seen.set(op.operationId, `${method} ${path}`);
      for (const t of op.tags ?? []) tags.add(t);
      const plain = Boolean(PLAIN_ROUTES[path]);
      const secured = Array.isArray(op.security) && op.security.length > 0;
      // routes without a bearer token say so (the invitation token is in the body)
      if (!secured) op.security = [];

      op.parameters ??= [];
      const has = (name: string): boolean => op.parameters.some((p: Json) => p.in === 'header' && p.name.toLowerCase() === name.toLowerCase());
      if (!has('x-request-id')) op.parameters.push({ in: 'header', name: 'x-request-id', required: false, description: 'An id for this request (1-128 visible characters); one is made when absent', schema: { type: 'string', maxLength: 128 } });
      if (method === 'post' && !plain && !has('Idempotency-Key')) {
        op.parameters.push({ in: 'header', name: 'Idempotency-Key', required: false, description: 'Makes a retry safe: a replay within 24 hours gets the first response and does nothing twice; the same key with another request answers 422', schema: { type: 'string', minLength: 1, maxLength: 255 } });
      }
      if (/^\/v1\/(tenant|t\/\{slug\})(\/|$)/.test(path) && !has('X-Tenant-ID')) {
        op.parameters.push({ in: 'header', name: 'X-Tenant-ID', required: false, description: 'The tenant (id or slug) for the operator; with a tenant key it must name the key\'s own tenant', schema: { type: 'string' } });
      }
      if (op.parameters.length === 0) delete op.parameters;

      op.responses ??= {};
      for (const s of plain ? [400, 500] : errorStatuses(method, path, secured)) op.responses[s] ??= {};
      for (const [status, res] of Object.entries(op.responses as Record<string, Json>)) {
        const code = Number(status);
        if (code >= 400 && !(plain && res.content)) {
          // one shared response per status: problem+json, the codes it may carry, its headers
          op.responses[status] = { $ref: `#/components/responses/${problemResponse(doc, code)}` };
          continue;
        }
        res.headers = { 'x-request-id': { $ref: '#/components/headers/RequestId' }, ...res.headers };
        if (secured) Object.assign(res.headers, RATE_LIMIT_REFS);
        if (!res.description || res.description === 'Default Response') res.description = code === 201 ? 'Created' : code === 204 ? 'No content' : 'OK';
        if (method === 'post' && !plain) {
          res.headers['Idempotent-Replayed'] = { $ref: '#/components/headers/IdempotentReplayed' };
          if (path === '/v1/tenants') res.headers['Idempotent-Recovered'] = { $ref: '#/components/headers/IdempotentRecovered' };
        }
      }
    }
  }
  doc.tags = [...tags, 'operations'].filter((t, i, all) => all.indexOf(t) === i).map((name) => ({ name, description: `${name[0]!.toUpperCase()}${name.slice(1)} routes` }));
  return doc;
}
