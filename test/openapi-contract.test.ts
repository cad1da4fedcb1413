/**
 * The API contract is true and complete: the served OpenAPI document lints clean with @redocly/cli,
 * names every operation and schema, and declares errors, headers and the operational routes; real
 * requests over a real socket go through a response validator that checks each answer's status,
 * content type, body (JSON Schema 2020-12, Ajv) and headers against the served document and fails on
 * any mismatch; the committed client types are what the document generates today, and the typed
 * client (`tenantry/client`) works against the server.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { generateClientTypes, CLIENT_TYPES_FILE } from '../scripts/generate-client.js';
import { createTenantryClient } from '../src/client/index.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const DOC_ID = 'https://tenantry.test/openapi.json';
/** Headers HTTP itself or Fastify sets, which an API document does not declare. */
const TRANSPORT_HEADERS = new Set(['content-type', 'content-length', 'date', 'connection', 'keep-alive', 'transfer-encoding']);
const METHODS = ['get', 'put', 'post', 'delete', 'patch'];

let inst: TestInstallation;
let app: FastifyInstance;
let base = '';
let doc: Json;
let ajv: Ajv2020;
const covered = new Set<string>();
const mismatches: string[] = [];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'tenantry-openapi-'));

before(async () => {
  inst = await freshInstallation({ adminKey: ADMIN });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  base = await app.listen({ port: 0, host: '127.0.0.1' });
  doc = await (await fetch(`${base}/openapi.json`)).json();
  ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ ...doc, $id: DOC_ID });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

const pointer = (...parts: string[]): string => parts.map((p) => `/${p.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');

function resolve(obj: Json): [Json, string | undefined] {
  if (obj && typeof obj.$ref === 'string' && obj.$ref.startsWith('#/')) {
    const at = obj.$ref.slice(1);
    const target = at.split('/').slice(1).reduce((o: Json, k: string) => o?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
    return [target, at];
  }
  return [obj, undefined];
}

/** The document's path template (and operation) for a concrete request. */
function operationFor(method: string, url: string): { template: string; op: Json } | undefined {
  const pathname = new URL(url, base).pathname;
  for (const template of Object.keys(doc.paths)) {
    const re = new RegExp(`^${template.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (re.test(pathname) && doc.paths[template][method]) return { template, op: doc.paths[template][method] };
  }
  return undefined;
}

/** Checks one real response against the served document; every difference is a mismatch. */
function validateResponse(method: string, url: string, sentHeaders: Record<string, string>, res: Response, text: string): void {
  const where = `${method.toUpperCase()} ${url} -> ${res.status}`;
  const found = operationFor(method, url);
  if (!found) { mismatches.push(`${where}: no such operation in the document`); return; }
  const { template, op } = found;
  covered.add(op.operationId);
  for (const name of Object.keys(sentHeaders)) {
    if (name === 'authorization' || name === 'content-type') continue;
    const declared = (op.parameters ?? []).some((p: Json) => p.in === 'header' && p.name.toLowerCase() === name.toLowerCase());
    if (!declared) mismatches.push(`${where}: request header ${name} is read by the server but not declared`);
  }
  const raw = op.responses?.[String(res.status)] ?? op.responses?.default;
  if (!raw) { mismatches.push(`${where}: status ${res.status} not declared`); return; }
  const [response, responsePointer] = resolve(raw);
  const basePointer = responsePointer ?? pointer('paths', template, method, 'responses', String(res.status));
  const declaredHeaders = new Set(Object.keys(response.headers ?? {}).map((h) => h.toLowerCase()));
  res.headers.forEach((_v, name) => {
    if (!TRANSPORT_HEADERS.has(name) && !declaredHeaders.has(name)) mismatches.push(`${where}: response header ${name} not declared`);
  });
  const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
  if (res.status === 204 || text === '') {
    if (response.content && Object.keys(response.content).length && res.status !== 204) mismatches.push(`${where}: empty body, but content declared`);
    return;
  }
  const media = response.content?.[type];
  if (!media) { mismatches.push(`${where}: content type ${type} not declared (declared: ${Object.keys(response.content ?? {}).join(', ')})`); return; }
  if (!media.schema || type === 'text/plain') return;
  const validate = ajv.getSchema(`${DOC_ID}#${basePointer}${pointer('content', type, 'schema')}`)
    ?? ajv.compile({ $ref: `${DOC_ID}#${basePointer}${pointer('content', type, 'schema')}` });
  let body: unknown;
  try { body = JSON.parse(text); } catch { mismatches.push(`${where}: body is not JSON`); return; }
  if (!validate(body)) mismatches.push(`${where}: body does not match the schema: ${ajv.errorsText(validate.errors)}; body ${text.slice(0, 300)}`);
}

async function call(method: string, url: string, opts: { token?: string | null; body?: unknown; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Json; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? ADMIN : opts.token;
  if (token) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${url}`, { method: method.toUpperCase(), headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
  const text = await res.text();
  validateResponse(method, url, headers, res, text);
  let body: Json = text;
  try { body = text ? JSON.parse(text) : undefined; } catch { /* text */ }
  return { status: res.status, body, headers: res.headers };
}

test('the served document: operationIds, named schemas, problem+json errors with their codes, headers, operational routes, servers', () => {
  const ids: string[] = [];
  for (const [p, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      assert.ok(op.operationId, `${m} ${p} has an operationId`);
      ids.push(op.operationId);
      const errors = Object.entries(op.responses).filter(([s]) => Number(s) >= 400);
      assert.ok(errors.length > 0, `${m} ${p} declares its errors`);
      for (const [s, r] of errors) {
        const [res] = resolve(r);
        if (p === '/readyz' && s === '503') continue;
        assert.deepEqual(Object.keys(res.content), ['application/problem+json'], `${m} ${p} ${s} is problem+json`);
        assert.ok(res.headers['x-request-id'] && res.headers['Retry-After'], `${m} ${p} ${s} declares x-request-id and Retry-After`);
      }
      if (m === 'post' && p.startsWith('/v1/') && p !== '/v1/invitations/accept') {
        assert.ok(op.parameters.some((x: Json) => x.in === 'header' && x.name === 'Idempotency-Key'), `${m} ${p} declares Idempotency-Key`);
      }
    }
  }
  assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  for (const p of ['/healthz', '/readyz', '/metrics']) assert.ok(doc.paths[p]?.get, `${p} is in the document`);
  assert.ok(doc.servers.length > 0 && doc.servers[0].url);
  const names = Object.keys(doc.components.schemas);
  assert.ok(names.includes('Tenant') && names.includes('Problem'), names.join(', '));
  assert.ok(!names.some((n) => /^def-\d+$/.test(n)), `no def-N schema names: ${names.join(', ')}`);
  const [notFound] = resolve(doc.paths['/v1/tenants/{id}'].get.responses['404']);
  assert.match(notFound.description, /TENANT_NOT_FOUND/, 'an error response names the codes it may carry');
  const [limited] = resolve(doc.paths['/v1/tenant'].get.responses['429']);
  assert.ok(limited.headers['RateLimit-Limit'] && limited.headers['Retry-After']);
  assert.ok(doc.paths['/v1/tenant'].get.parameters.some((x: Json) => x.name === 'X-Tenant-ID'));
});

test('@redocly/cli lint: no errors and no warnings on the served document', async () => {
  const file = path.join(tmp, 'openapi.json');
  writeFileSync(file, JSON.stringify(doc));
  const out = await new Promise<{ code: number; text: string }>((resolveRun) => {
    const child = spawn(path.join(process.cwd(), 'node_modules', '.bin', 'redocly'), ['lint', file, '--format=json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' } });
    let text = '';
    child.stdout.on('data', (d: Buffer) => { text += d.toString(); });
    child.stderr.on('data', () => undefined);
    child.on('close', (code) => resolveRun({ code: code ?? 1, text }));
  });
  const report = JSON.parse(out.text.slice(out.text.indexOf('{'))) as { totals: { errors: number; warnings: number }; problems: { ruleId: string; message: string }[] };
  assert.deepEqual(report.totals, { ...report.totals, errors: 0, warnings: 0 }, report.problems.map((p) => `${p.ruleId}: ${p.message}`).join('\n'));
  assert.equal(out.code, 0);
});

test('real requests through the response validator: every answer matches the served document', async () => {
  const slug = `oa-${randomBytes(3).toString('hex')}`;
  // operational routes
  await call('get', '/healthz', { token: null });
  await call('get', '/readyz', { token: null });
  await call('get', '/metrics', { token: null });
  await call('get', '/openapi.json', { token: null });
  // tenants, with the headers the server reads
  const created = await call('post', '/v1/tenants', { body: { slug, isolation: 'schema' }, headers: { 'Idempotency-Key': `create-${slug}`, 'x-request-id': `req-${slug}` } });
  assert.equal(created.status, 201);
  assert.equal(created.headers.get('x-request-id'), `req-${slug}`);
  const replay = await call('post', '/v1/tenants', { body: { slug, isolation: 'schema' }, headers: { 'Idempotency-Key': `create-${slug}` } });
  assert.equal(replay.status, 201, 'a replay answers the first response');
  assert.equal((await call('post', '/v1/tenants', { body: { slug: `${slug}-x` }, headers: { 'Idempotency-Key': `create-${slug}` } })).status, 422, 'the key with another body');
  assert.equal((await call('post', '/v1/tenants', { body: { slug } })).status, 409);
  assert.equal((await call('post', '/v1/tenants', { body: { slug: 'X' } })).status, 400);
  assert.equal((await call('post', '/v1/tenants', { body: { slug: 'nope-x' }, token: null })).status, 401);
  const id = created.body.id as string;
  const tenantKey = created.body.apiKey as string;
  await call('get', '/v1/tenants?limit=5');
  await call('get', `/v1/tenants/${slug}`);
  assert.equal((await call('get', '/v1/tenants/no-such-tenant')).status, 404);
  await call('patch', `/v1/tenants/${id}`, { body: { name: 'OpenAPI Inc' } });
  await call('post', `/v1/tenants/${id}/suspend`, { body: { reason: 'contract test' } });
  assert.equal((await call('get', '/v1/tenant', { token: tenantKey })).status, 403, 'a suspended tenant');
  await call('post', `/v1/tenants/${id}/activate`);
  // quotas, usage, leases, gauges, plans
  await call('get', `/v1/tenants/${id}/quotas`);
  await call('put', `/v1/tenants/${id}/quotas`, { body: { max_agents: 50 } });
  await call('post', `/v1/tenants/${id}/usage`, { body: { metric: 'llm_tokens', amount: 10 } });
  await call('get', `/v1/tenants/${id}/usage`);
  const lease = await call('post', `/v1/tenants/${id}/leases`, { body: { metric: 'concurrent_agents' } });
  if (lease.status === 201) await call('delete', `/v1/tenants/${id}/leases/${lease.body.leaseId}`);
  await call('put', `/v1/tenants/${id}/gauges/storage_bytes`, { body: { value: 1000 } });
  await call('get', '/v1/plans');
  // keys, members, invitations, features, audit
  const key = await call('post', `/v1/tenants/${id}/api-keys`, { body: { name: 'ci', scopes: ['read', 'sql', 'write'] } });
  assert.equal(key.status, 201);
  await call('get', `/v1/tenants/${id}/api-keys`);
  const rotated = await call('post', `/v1/tenants/${id}/api-keys/${key.body.id}/rotate`, { body: { graceSeconds: 0 } });
  await call('delete', `/v1/tenants/${id}/api-keys/${rotated.body.id ?? key.body.id}`);
  const member = await call('post', `/v1/tenants/${id}/members`, { body: { email: `m-${slug}@example.com`, role: 'member' } });
  await call('get', `/v1/tenants/${id}/members`);
  const userId = member.body.userId ?? member.body.id;
  await call('patch', `/v1/tenants/${id}/members/${userId}`, { body: { role: 'admin' } });
  await call('delete', `/v1/tenants/${id}/members/${userId}`);
  const invitation = await call('post', `/v1/tenants/${id}/invitations`, { body: { email: `i-${slug}@example.com`, role: 'viewer' } });
  await call('get', `/v1/tenants/${id}/invitations`);
  await call('post', '/v1/invitations/accept', { token: null, body: { token: invitation.body.token, name: 'Invited' } });
  const second = await call('post', `/v1/tenants/${id}/invitations`, { body: { email: `j-${slug}@example.com`, role: 'viewer' } });
  await call('delete', `/v1/tenants/${id}/invitations/${second.body.id}`);
  assert.equal((await call('post', '/v1/invitations/accept', { token: null, body: { token: 'tnt_inv_nope' } })).status >= 400, true);
  await call('get', `/v1/tenants/${id}/features`);
  await call('put', `/v1/tenants/${id}/features/sso`, { body: { enabled: true } });
  await call('get', `/v1/tenants/${id}/audit?limit=5`);
  await call('get', `/v1/tenants/${id}/audit/verify`);
  // webhooks (a private address is refused: still a declared answer)
  const hook = await call('post', '/v1/webhooks', { body: { url: 'https://hooks.example.com/tenantry' } });
  await call('get', '/v1/webhooks');
  if (hook.status === 201) {
    await call('get', `/v1/webhooks/${hook.body.id}/deliveries`);
    await call('delete', `/v1/webhooks/${hook.body.id}`);
  }
  // self-service, by key, header and path; rate-limit headers; the SQL endpoint
  const self = await call('get', '/v1/tenant', { token: tenantKey });
  assert.equal(self.status, 200);
  assert.ok(self.headers.get('ratelimit-limit'), 'a tenant key gets RateLimit-* headers');
  await call('get', '/v1/tenant/usage', { token: tenantKey });
  await call('get', '/v1/tenant', { headers: { 'X-Tenant-ID': slug } });
  await call('get', `/v1/t/${slug}`);
  await call('get', `/v1/t/${slug}/usage`);
  await call('post', '/v1/tenant/sql', { token: key.body.key, body: { sql: 'select count(*)::int as n from agents' } });
  await call('post', `/v1/t/${slug}/sql`, { body: { sql: 'select 1 as one' } });
  await call('post', '/v1/tenant/sql', { token: tenantKey, body: { sql: 'select pg_sleep(' } });
  // 429 with Retry-After
  await call('put', `/v1/tenants/${id}/quotas`, { body: { api_calls_per_minute: 1 } });
  let limited = 0;
  for (let i = 0; i < 4; i++) if ((await call('get', '/v1/tenant', { token: tenantKey })).status === 429) limited++;
  assert.ok(limited > 0, 'the rate limit answered 429');
  // backups and long-running operations (202 answers; no job runner here, so they stay queued)
  const op = await call('post', `/v1/tenants/${id}/backups`);
  assert.equal(op.status, 202);
  await call('get', `/v1/operations/${op.body.id}`);
  await call('get', `/v1/tenants/${id}/backups`);
  const noBackup = '00000000-0000-4000-8000-000000000000';
  assert.equal((await call('get', `/v1/tenants/${id}/backups/${noBackup}`)).status, 404);
  assert.equal((await call('get', `/v1/tenants/${id}/backups/${noBackup}/archive`)).status, 404);
  assert.equal((await call('post', `/v1/tenants/${id}/backups/${noBackup}/restore`, { body: { confirm: true } })).status, 404);
  assert.equal((await call('delete', `/v1/tenants/${id}/backups/${noBackup}`)).status, 404);
  assert.equal((await call('post', `/v1/tenants/${id}/export`)).status, 202);
  assert.equal((await call('post', `/v1/tenants/${id}/clone`, { body: { slug: `${slug}-clone` } })).status, 202);
  assert.equal((await call('post', `/v1/tenants/${id}/move`, { body: { to: 'pooled' } })).status, 202);
  // custom domains and billing (issue #15); .test names never resolve, so verification fails with 422
  const domain = `${slug}.example.test`;
  assert.equal((await call('post', `/v1/tenants/${id}/domains`, { body: { domain } })).status, 201);
  assert.equal((await call('post', `/v1/tenants/${id}/domains`, { body: { domain: '127.0.0.1' } })).status, 400);
  await call('get', `/v1/tenants/${id}/domains`);
  await call('get', `/v1/tenants/${id}/domains/${domain}`);
  assert.equal((await call('post', `/v1/tenants/${id}/domains/${domain}/verify`, { body: { method: 'dns' } })).status, 422);
  assert.equal((await call('get', `/v1/domains/tls-ask?domain=${domain}`, { token: null })).status, 404);
  assert.equal((await call('delete', `/v1/tenants/${id}/domains/${domain}`)).status, 204);
  await call('put', `/v1/tenants/${id}/billing`, { body: { customerId: `cus_${slug.replace(/-/g, '_')}` } });
  await call('get', `/v1/tenants/${id}/billing`);
  await call('get', `/v1/tenants/${id}/billing/records`);
  assert.equal((await call('post', '/v1/billing/close', { body: { period: '2020-01' } })).status, 200);
  assert.equal((await call('post', '/v1/billing/stripe/webhook', { token: null, body: { id: 'evt_contract' }, headers: { 'stripe-signature': 't=1,v1=00' } })).status, 404, 'no STRIPE_WEBHOOK_SECRET here: the endpoint is not enabled');
  // lifecycle end
  await call('delete', `/v1/tenants/${id}`);
  await call('post', `/v1/tenants/${id}/restore`);
  await call('delete', `/v1/tenants/${id}`);
  await call('delete', `/v1/tenants/${id}?hard=true`);

  assert.deepEqual(mismatches, [], `responses that differ from the document:\n${mismatches.join('\n')}`);
  const all = Object.values(doc.paths as Record<string, Json>).flatMap((item) => METHODS.filter((m) => item[m]).map((m) => item[m].operationId as string));
  const missed = all.filter((o) => !covered.has(o));
  assert.ok(covered.size >= all.length * 0.85, `most operations exercised (${covered.size}/${all.length}; not: ${missed.join(', ')})`);
});

test('the response validator catches a server that drifts from the document', () => {
  const before = mismatches.length;
  const fake = new Response(JSON.stringify({ id: 1 }), { status: 200, headers: { 'content-type': 'application/json', 'x-surprise': '1' } });
  validateResponse('get', '/v1/tenants/acme', {}, fake, JSON.stringify({ id: 1 }));
  const drift = mismatches.splice(before);
  assert.ok(drift.some((m) => /body does not match/.test(m)), drift.join('\n'));
  assert.ok(drift.some((m) => /x-surprise not declared/.test(m)), drift.join('\n'));
  validateResponse('get', '/v1/tenants/acme', {}, new Response('', { status: 418 }), '');
  assert.ok(mismatches.splice(before).some((m) => /status 418 not declared/.test(m)));
});

test('the committed client types are what the served document generates', async () => {
  const generated = await generateClientTypes(doc);
  assert.equal(readFileSync(CLIENT_TYPES_FILE, 'utf8'), generated, 'src/client/openapi-types.ts is stale: run npx tsx scripts/generate-client.ts');
});

test('tenantry/client: typed calls against the real server', async () => {
  const api = createTenantryClient({ baseUrl: base, token: ADMIN });
  const slug = `oc-${randomBytes(3).toString('hex')}`;
  const made = await api.POST('/v1/tenants', { body: { slug, isolation: 'pooled' } });
  assert.equal(made.response.status, 201);
  assert.equal(made.data?.slug, slug);
  const got = await api.GET('/v1/tenants/{id}', { params: { path: { id: slug } } });
  assert.equal(got.data?.id, made.data?.id);
  const missing = await api.GET('/v1/tenants/{id}', { params: { path: { id: 'no-such-tenant' } } });
  assert.equal(missing.response.status, 404);
  assert.equal(missing.error?.code, 'TENANT_NOT_FOUND', 'errors come back as the typed problem');
  const asTenant = createTenantryClient({ baseUrl: base, token: made.data!.apiKey });
  const self = await asTenant.GET('/v1/tenant');
  assert.equal(self.data?.slug, slug);
});
