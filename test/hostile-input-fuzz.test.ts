import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';

/**
 * Hostile bytes against every route of the HTTP API, taken from the app's own route table: NUL bytes,
 * lone surrogates, absurd lengths and arbitrary JSON in bodies, path ids, query strings and the
 * headers the server reads. No request may get a 5xx, and a refused request may change nothing in the
 * catalog or the data plane (snapshots compared). Bounded in time: each property stops after its
 * time budget even if it has not done all its runs.
 */

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const TIME_BUDGET_MS = 15_000;
/** FUZZ_SEED=<n> replays a run (fast-check prints the seed of a failing one) */
const seed = process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED) } : {};

let inst: TestInstallation;
let app: FastifyInstance;
/** the tenant the valid parts of a request name, and ids that exist under it */
const valid: Record<string, string[]> = {};
let tenantKey = '';
let routes: Route[] = [];

interface Route {
  method: string;
  /** the Fastify pattern, e.g. /v1/tenants/:id/members/:userId */
  pattern: string;
  params: string[];
  bodyFields: string[];
  queryFields: string[];
}

before(async () => {
  // junk credentials in the fuzz would trip the failed-authentication throttle and turn later requests into
  // 429s that never reach the routes' own checks: the throttle has its own tests
  inst = await freshInstallation({ adminKey: ADMIN, authFailuresPerAddress: 1_000_000, authFailuresPerKey: 1_000_000 });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: process.env.FUZZ_LOG ?? 'silent' });
  await app.ready();
  const t = await inst.tenantry.tenants.create({ slug: 'fuzz-target', tier: 'enterprise', name: 'Fuzz Inc' });
  tenantKey = t.apiKey!.key;
  const key = await inst.tenantry.keys.create(t.id, { name: 'fuzz', scopes: ['read', 'write', 'admin', 'sql'] });
  const member = await inst.tenantry.members.add(t.id, { email: 'fuzz@example.com', role: 'member' });
  const invitation = await inst.tenantry.members.invite(t.id, { email: 'invitee@example.com', role: 'viewer' });
  const features = await inst.tenantry.features.list(t.id);
  Object.assign(valid, {
    id: [t.id, t.slug], slug: [t.slug], keyId: [key.id], userId: [member.userId],
    invitationId: [invitation.invitation.id], feature: features.map((f) => f.feature).slice(0, 3), '*': ['index.html'],
  });
  routes = routeTable(app);
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
});

/**
 * Every route the app serves, read from the app itself (Fastify's route tree), with the body and
 * query fields its OpenAPI document declares.
 */
function routeTable(server: FastifyInstance): Route[] {
  const doc = server.swagger() as { paths: Record<string, Record<string, { parameters?: { name: string; in: string }[]; requestBody?: { content?: Record<string, { schema?: { properties?: Record<string, unknown>; anyOf?: { properties?: Record<string, unknown> }[] } }> } }>> };
  const out: Route[] = [];
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) {
    const stack: string[] = [];
    for (const line of server.printRoutes({ method: method as 'GET', commonPrefix: false }).split('\n')) {
      const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]*)\))?/.exec(line);
      if (!m) continue;
      const depth = m[1]!.length / 4;
      stack.length = depth;
      stack.push(m[2]!);
      if (!m[3]) continue;
      const pattern = stack.join('');
      const openapiPath = pattern.replace(/:(\w+)/g, '{$1}');
      const op = doc.paths[openapiPath]?.[method.toLowerCase()];
      const schema = op?.requestBody?.content?.['application/json']?.schema;
      const props = schema?.properties ?? schema?.anyOf?.find((s) => s.properties)?.properties ?? {};
      out.push({
        method, pattern,
        params: [...pattern.matchAll(/:(\w+)|\*/g)].map((p) => p[1] ?? '*'),
        bodyFields: Object.keys(props),
        queryFields: (op?.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name),
      });
    }
  }
  return out;
}

// ---- arbitraries ----

/** Text PostgreSQL cannot take, placed among ordinary characters. */
const poison = fc.oneof(
  fc.constantFrom('\u0000', 'ab\u0000cd', '\ud800', 'x\udfffy', '\udbff\u0000', 'a\ud83d', '\ude00b'),
  fc.tuple(fc.string({ maxLength: 8 }), fc.constantFrom('\u0000', '\ud800', '\udc00'), fc.string({ maxLength: 8 })).map(([a, p, b]) => a + p + b),
);
/** Any UTF-16 code units at all (lone surrogates and control characters included). */
const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ maxLength: 30 }), poison);
const anyJson = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, anyText, fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(anyText, tie('value'), { maxKeys: 4 })),
})).value;

/** Percent-encodes every UTF-16 code unit, lone surrogates as the bytes a client could send (WTF-8). */
function encodeAny(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (/^[A-Za-z0-9_.~-]$/.test(ch)) { out += ch; continue; }
    const bytes = cp < 0x80 ? [cp]
      : cp < 0x800 ? [0xc0 | (cp >> 6), 0x80 | (cp & 63)]
        : cp < 0x10000 ? [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)]
          : [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)];
    out += bytes.map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return out;
}

interface Req { method: string; url: string; headers: Record<string, string>; payload?: string }

function build(route: Route, pathValues: string[], query: [string, string][], headers: Record<string, string>, body: unknown): Req {
  let i = 0;
  const url = route.pattern.replace(/:(\w+)|\*/g, () => encodeAny(pathValues[i++] ?? 'x'));
  const qs = query.map(([k, v]) => `${encodeAny(k)}=${encodeAny(v)}`).join('&');
  const req: Req = { method: route.method, url: qs ? `${url}?${qs}` : url, headers: { ...headers } };
  if (body !== undefined && route.method !== 'GET') {
    req.payload = JSON.stringify(body);
    req.headers['content-type'] = 'application/json';
  }
  return req;
}

// ---- the state a refused request must not change ----

let snapshotSql: string | undefined;
/**
 * Every catalog table (row count and digest) and this installation's roles, databases and schemas.
 * Left out: scratch state a refused request may legitimately write (rate-limit buckets, stored
 * Idempotency-Key answers, credential throttling, key last-use times).
 */
async function snapshot(): Promise<Record<string, string>> {
  if (!snapshotSql) {
    const tables = (await inst.su<{ relname: string }[]>`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'tenantry_catalog' and c.relkind in ('r', 'p')
        and c.relname !~ '(rate_limit|idempotency|throttl|attempt|lease|role_pool)' order by 1`).map((r) => r.relname);
    assert.ok(tables.includes('tenants') && tables.includes('audit_log') && tables.includes('memberships'));
    snapshotSql = tables.map((t) => `select '${t}' as t, count(*)::text || ':' || md5(coalesce(string_agg((to_jsonb(x) - 'last_used_at')::text, '|' order by (to_jsonb(x) - 'last_used_at')::text), '')) as v from tenantry_catalog."${t}" x`).join(' union all ');
  }
  const rows = await inst.su.unsafe<{ t: string; v: string }[]>(snapshotSql);
  const ns = `${inst.namespace}\\_%`;
  const [objects] = await inst.su<{ roles: string; databases: string }[]>`
    -- (not the role pool's pre-made roles: its background refill makes them at any time, each with its pool row)
    select (select string_agg(rolname || ':' || rolcanlogin, ',' order by rolname) from pg_roles where rolname like ${ns}
              and not exists (select 1 from tenantry_catalog.role_pool p where rolname = ${inst.namespace + '_t_'} || replace(p.tenant_id::text, '-', ''))) as roles,
           (select string_agg(datname, ',' order by datname) from pg_database where datname like ${ns}) as databases`;
  return { ...Object.fromEntries(rows.map((r) => [r.t, r.v])), ...objects };
}

/** The answer, or null when the client itself refuses a header no HTTP peer could send (a NUL, a code unit past U+00FF). */
async function send(req: Req): Promise<{ status: number; body: string; contentType: string } | null> {
  try {
    const r = await app.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, ...(req.payload !== undefined ? { payload: req.payload } : {}) });
    return { status: r.statusCode, body: r.body, contentType: String(r.headers['content-type'] ?? '') };
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_INVALID_CHAR' || /Invalid character/i.test(String(err))) return null;
    throw err;
  }
}

const describe = (req: Req, r: { status: number; body: string }): string =>
  `${req.method} ${req.url} headers=${JSON.stringify(req.headers)} body=${req.payload?.slice(0, 300)} -> ${r.status} ${r.body.slice(0, 300)}`;

// ---- properties ----

test('the route table comes from the app and covers the API', () => {
  assert.ok(routes.length >= 30, `found ${routes.length} routes`);
  for (const must of ['POST /v1/tenants', 'POST /v1/tenants/:id/suspend', 'POST /v1/tenants/:id/usage', 'POST /v1/tenants/:id/members',
    'POST /v1/tenants/:id/invitations', 'POST /v1/tenants/:id/api-keys', 'GET /v1/tenants/:id', 'POST /v1/t/:slug/sql', 'GET /healthz']) {
    assert.ok(routes.some((r) => `${r.method} ${r.pattern}` === must), `${must} is in the route table`);
  }
  assert.deepEqual(routes.find((r) => r.pattern === '/v1/tenants/:id/suspend')!.bodyFields, ['reason']);
});

test('one poisoned field anywhere in an otherwise valid request: 400 INVALID_INPUT naming it, nothing written', async () => {
  const where = fc.constantFrom('path', 'query', 'header', 'body');
  const header = fc.constantFrom('idempotency-key', 'x-tenant-id');
  await fc.assert(fc.asyncProperty(fc.nat(), where, header, poison, fc.nat(), async (pick, place, headerName, bad, slot) => {
    const route = routes[pick % routes.length]!;
    const pathValues = route.params.map((p) => (valid[p] ?? ['x'])[0]!);
    const query: [string, string][] = [];
    const headers: Record<string, string> = { authorization: `Bearer ${ADMIN}` };
    const body: Record<string, unknown> = {};
    let field: string;
    if (place === 'path' && route.params.length > 0) {
      const i = slot % route.params.length;
      pathValues[i] = bad;
      field = route.params[i]!;
    } else if (place === 'query') {
      const name = route.queryFields.length ? route.queryFields[slot % route.queryFields.length]! : 'cursor';
      query.push([name, bad]);
      field = name;
    } else if (place === 'body' && route.method !== 'GET' && route.method !== 'DELETE') {
      const name = route.bodyFields.length ? route.bodyFields[slot % route.bodyFields.length]! : 'note';
      body[name] = slot % 3 === 0 ? { nested: [bad] } : bad;
      field = name;
    } else {
      // headers cannot carry a NUL or a code unit past U+00FF over HTTP; through inject they can, and
      // whatever reaches the server must still be refused
      headers[headerName] = bad;
      field = headerName;
    }
    const req = build(route, pathValues, query, headers, Object.keys(body).length ? body : undefined);
    const before = await snapshot();
    const r = await send(req);
    if (!r) return;
    // a lone surrogate in a URL can only travel as bytes that are not UTF-8 (%ED%A0%80): the router
    // refuses those in a path, the query parser keeps them as the literal (valid) text "%ED%A0%80"
    const encodedSurrogate = (place === 'path' || place === 'query') && /[\ud800-\udfff]/.test(bad);
    if (encodedSurrogate && place === 'query') {
      assert.ok(r.status < 500, describe(req, r));
      if (r.status >= 400) assert.deepEqual(await snapshot(), before, `nothing written: ${describe(req, r)}`);
      return;
    }
    assert.equal(r.status, 400, describe(req, r));
    // the docs plugin's routes answer errors in Fastify's own format (code and message)
    if (!route.pattern.startsWith('/docs')) assert.match(r.contentType, /application\/problem\+json/, describe(req, r));
    const answer = JSON.parse(r.body) as { code: string; detail?: string; message?: string };
    assert.equal(answer.code, 'INVALID_INPUT', describe(req, r));
    const problem = { detail: answer.detail ?? answer.message ?? '' };
    // a path the router cannot decode has no field to name yet
    if (!encodedSurrogate) assert.ok(problem.detail.includes(field), `the detail names ${field}: ${problem.detail}`);
    assert.deepEqual(await snapshot(), before, `nothing written: ${describe(req, r)}`);
  }), { numRuns: 400, interruptAfterTimeLimit: TIME_BUDGET_MS, includeErrorInReport: true, ...seed });
});

test('arbitrary bodies, headers, query strings and path ids on every route: never a 5xx, and a refusal writes nothing', async () => {
  const credential = fc.constantFrom<'operator' | 'tenant' | 'none' | 'junk'>('operator', 'operator', 'tenant', 'none', 'junk');
  // null: the valid value for that parameter (so the request gets past the lookups to the deeper code)
  const pathValues = fc.array(fc.oneof(fc.constant(null), fc.constant(null), anyText, fc.uuid()), { minLength: 3, maxLength: 3 });
  const query = fc.array(fc.tuple(fc.oneof(fc.constantFrom('limit', 'cursor', 'status', 'tier', 'hard', 'force', 'isolation'), anyText), fc.oneof(anyText, fc.integer().map(String))), { maxLength: 3 });
  const extraHeaders = fc.dictionary(fc.constantFrom('idempotency-key', 'x-tenant-id', 'x-request-id'), anyText, { maxKeys: 2 });
  const body = fc.oneof(fc.constant(undefined), anyJson, fc.dictionary(fc.oneof(fc.constantFrom('slug', 'name', 'reason', 'email', 'role', 'metadata', 'metric', 'amount', 'idempotencyKey', 'sql', 'params', 'token', 'enabled', 'scopes'), anyText), anyJson, { maxKeys: 5 }));
  let refusals = 0;
  let answered = 0;
  await fc.assert(fc.asyncProperty(fc.nat(), pathValues, credential, query, extraHeaders, body,
    async (pick, given, cred, q, hdrs, b) => {
      const route = routes[pick % routes.length]!;
      const values = route.params.map((p, i) => given[i] ?? (valid[p] ?? ['x'])[i % (valid[p]?.length ?? 1)]!);
      const headers: Record<string, string> = { ...hdrs };
      if (cred === 'operator') headers.authorization = `Bearer ${ADMIN}`;
      else if (cred === 'tenant') headers.authorization = `Bearer ${tenantKey}`;
      else if (cred === 'junk') headers.authorization = `Bearer tnt_live_${given[0] ?? 'x'}`;
      const req = build(route, values, q, headers, b);
      const before = await snapshot();
      const r = await send(req);
      if (!r) return;
      answered++;
      assert.ok(r.status < 500, describe(req, r));
      if (r.status >= 400) {
        refusals++;
        assert.deepEqual(await snapshot(), before, `a refusal wrote something: ${describe(req, r)}`);
      }
    }), { numRuns: 600, interruptAfterTimeLimit: TIME_BUDGET_MS, includeErrorInReport: true, ...seed });
  assert.ok(answered > 50, `only ${answered} requests answered`);
  assert.ok(refusals > 0);
});
