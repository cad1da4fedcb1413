/**
 * Webhooks (issue #13): events leave through an outbox written in the transaction of the change,
 * signed (Tenantry-Signature, Standard Webhooks scheme), retried with backoff, in order per tenant,
 * and never sent into the operator's network on a tenant's say-so (SSRF).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { verifyWebhook, isPrivateAddress } from '../src/index.js';
import { buildServer } from '../src/server/app.js';

const ADMIN = 'webhooks-test-operator-token-0123456789abcdef';
let inst: TestInstallation;
let app: FastifyInstance;
/** moved forward by tests: the installation's clock is real time plus this */
let offset = 0;
let receiver: http.Server;
let base = '';

interface Received { path: string; headers: http.IncomingHttpHeaders; body: string; type: string; tenantId: string | null; at: number }
const received: Received[] = [];
/** per path: what the next requests get (a status, or 'hang' past the delivery timeout); then 200 */
const script = new Map<string, (number | 'hang' | 'redirect')[]>();

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString('utf8'); });
    req.on('end', () => {
      const path = req.url ?? '/';
      let parsed: { type?: string; data?: { tenantId?: string } } = {};
      try { parsed = JSON.parse(body) as typeof parsed; } catch { /* not JSON */ }
      received.push({ path, headers: req.headers, body, type: parsed.type ?? '', tenantId: parsed.data?.tenantId ?? null, at: Date.now() });
      const next = script.get(path)?.shift() ?? 200;
      if (next === 'hang') return; // never answers: the delivery times out
      if (next === 'redirect') { res.writeHead(302, { location: `${base}/ok` }); res.end(); return; }
      res.writeHead(next); res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  inst = await freshInstallation({
    adminKey: ADMIN, clock: () => new Date(Date.now() + offset), webhookRetryBaseMs: 100, webhookTimeoutMs: 500, jobTickMs: 200,
  });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  await inst.tenantry.startJobs({ kind: 'test', schedule: false });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  receiver.closeAllConnections();
  await new Promise<void>((r) => receiver.close(() => r()));
});

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const at = (path: string): Received[] => received.filter((r) => r.path === path);

test('a delivery is signed: verifyWebhook accepts it and refuses a changed body, another secret, or a replay', async () => {
  const ep = await inst.tenantry.webhooks.create({ url: `${base}/signed`, events: ['tenant.created'] });
  assert.match(ep.secret, /^whsec_/);
  const t = await inst.tenantry.tenants.create({ slug: 'wh-signed', name: 'Signed' });
  const got = await until('the tenant.created delivery', () => at('/signed').find((r) => r.tenantId === t.id));
  assert.equal(got.type, 'tenant.created');
  const headers = got.headers as Record<string, string>;
  const ok = verifyWebhook({ secret: ep.secret, headers, body: got.body, now: new Date(Number(headers['tenantry-timestamp']) * 1000) });
  assert.equal(ok.type, 'tenant.created');
  assert.equal(ok.data.tenantId, t.id);
  const at0 = new Date(Number(headers['tenantry-timestamp']) * 1000);
  assert.throws(() => verifyWebhook({ secret: ep.secret, headers, body: got.body.replace('tenant.created', 'tenant.deleted'), now: at0 }), { code: 'WEBHOOK_SIGNATURE_INVALID' });
  const other = (await inst.tenantry.webhooks.create({ url: `${base}/other`, events: ['tenant.purged'] })).secret;
  assert.throws(() => verifyWebhook({ secret: other, headers, body: got.body, now: at0 }), { code: 'WEBHOOK_SIGNATURE_INVALID' });
  assert.throws(() => verifyWebhook({ secret: ep.secret, headers, body: got.body, now: new Date(at0.getTime() + 3600_000) }), { code: 'WEBHOOK_SIGNATURE_INVALID' });
  // the secret is never listed again
  assert.equal((await inst.tenantry.webhooks.list()).some((e) => 'secret' in e), false);
});

test('retries after 500s and after a timeout; every attempt is kept with its status and latency', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-retries', name: 'Retries' });
  script.set('/flaky', [500, 500]);
  script.set('/slow', ['hang']);
  const flaky = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/flaky`, events: ['tenant.suspended'] });
  const slow = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/slow`, events: ['tenant.suspended'] });
  await inst.tenantry.tenants.suspend(t.id, 'billing');
  const f = await until('the flaky delivery to succeed', async () => (await inst.tenantry.webhooks.deliveries(flaky.id)).find((d) => d.status === 'succeeded'));
  assert.deepEqual(f.attempts.map((a) => a.statusCode), [500, 500, 200]);
  assert.ok(f.attempts.every((a) => a.latencyMs >= 0));
  const s = await until('the slow delivery to succeed', async () => (await inst.tenantry.webhooks.deliveries(slow.id)).find((d) => d.status === 'succeeded'));
  assert.equal(s.attempts.length, 2);
  assert.equal(s.attempts[0]!.statusCode, null);
  assert.match(String(s.attempts[0]!.error), /timed out|closed/);
  assert.ok(s.attempts[0]!.latencyMs >= 400, `the timed-out attempt took ${s.attempts[0]!.latencyMs} ms`);
  assert.equal(s.attempts[1]!.statusCode, 200);
});

test('events of one tenant arrive in the order of their changes, even when the first delivery is retried', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-order', name: 'Order' });
  script.set('/order', [503, 503]);
  await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/order`, events: ['tenant.suspended', 'tenant.activated'] });
  const expected: string[] = [];
  for (let i = 0; i < 4; i++) {
    await inst.tenantry.tenants.suspend(t.id, `round ${i}`);
    await inst.tenantry.tenants.activate(t.id);
    expected.push('tenant.suspended', 'tenant.activated');
  }
  await until('all eight deliveries', () => at('/order').filter((r) => r.tenantId === t.id).length >= expected.length + 2);
  // the two refused attempts were the first event's; after them, the rest in commit order
  const seen = at('/order').map((r) => `${r.type}:${JSON.parse(r.body).data.details?.reason ?? ''}`);
  assert.deepEqual(at('/order').map((r) => r.type), ['tenant.suspended', 'tenant.suspended', ...expected]);
  assert.equal(seen[0], seen[2], 'the retried head is the same event');
});

test('no event for a change that rolled back', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-rollback', name: 'Rollback' });
  await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/rollback` });
  const before = await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.webhook_events where tenant_id = ${t.id}`;
  // a change whose transaction fails after its audit entry (and so its outbox row) was written
  await assert.rejects(inst.tenantry.catalog.begin(async (tx) => {
    await tx`insert into tenantry_catalog.audit_log (tenant_id, actor, action, target) values (${t.id}, 'test', 'tenant.suspended', ${`tenant:${t.id}`})`;
    throw new Error('the change failed');
  }), /the change failed/);
  // a refused lifecycle change writes nothing either
  await rejectsWith(inst.tenantry.tenants.restore(t.id), 'INVALID_TRANSITION');
  const after = await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.webhook_events where tenant_id = ${t.id}`;
  assert.equal(after[0]!.n, before[0]!.n);
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(at('/rollback').length, 0);
});

test('no event lost when the process that made the change is killed before any delivery', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-killed', name: 'Killed' });
  await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/killed`, events: ['tenant.suspended'] });
  await inst.tenantry.jobs.stop(); // nobody delivers while the change is made
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', `
    const { Tenantry } = await import(${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)});
    const t = await Tenantry.open({ databaseUrl: ${JSON.stringify(inst.adminUrl)}, namespace: ${JSON.stringify(inst.namespace)} });
    await t.tenants.suspend(${JSON.stringify(t.id)}, 'killed right after the commit');
    process.kill(process.pid, 'SIGKILL');
  `], { stdio: ['ignore', 'inherit', 'inherit'] });
  const signal = await new Promise((r) => child.on('exit', (_c, s) => r(s)));
  assert.equal(signal, 'SIGKILL');
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'suspended');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(at('/killed').length, 0, 'nothing was delivered while no runner ran');
  await inst.tenantry.startJobs({ kind: 'test', schedule: false });
  const got = await until('the event of the killed process', () => at('/killed').find((r) => r.tenantId === t.id));
  assert.equal(got.type, 'tenant.suspended');
});

test('bad webhook URLs get a clear error: not http(s), malformed, with credentials, unresolvable', async () => {
  for (const url of ['ftp://example.com/hook', 'javascript:alert(1)', 'not a url', '', 'http://user:pw@example.com/', `http://x${'a'.repeat(2100)}.com/`]) {
    await rejectsWith(inst.tenantry.webhooks.create({ url }), 'WEBHOOK_URL_INVALID');
  }
  const t = await inst.tenantry.tenants.create({ slug: 'wh-badurl', name: 'Bad' });
  await rejectsWith(inst.tenantry.webhooks.create({ tenant: t.id, url: 'http://no-such-host.invalid/hook' }, { tenantScoped: true }), 'WEBHOOK_URL_INVALID');
  await rejectsWith(inst.tenantry.webhooks.create({ url: `${base}/x`, events: ['tenant.exploded'] }), 'INVALID_INPUT');
  assert.equal((await inst.su`select 1 from tenantry_catalog.webhook_endpoints where tenant_id = ${t.id}`).length, 0, 'nothing half-written');
});

test('SSRF attack: a tenant key registering a loopback, link-local or private target is refused (HTTP 400 WEBHOOK_URL_FORBIDDEN)', async () => {
  const r = await app.inject({ method: 'POST', url: '/v1/tenants', headers: { authorization: `Bearer ${ADMIN}` }, payload: { slug: 'wh-ssrf', name: 'SSRF' } });
  const { id, apiKey } = r.json() as { id: string; apiKey: string };
  for (const url of ['http://127.0.0.1:5432/', 'http://localhost/', 'http://169.254.169.254/latest/meta-data/', 'http://10.1.2.3/', 'http://192.168.0.1/',
    'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://[fe80::1]/', 'http://0.0.0.0/', 'http://100.64.0.1/', 'http://[::ffff:a9fe:a9fe]/',
    // IPv4 inside transition ranges (the red team's 201s): IPv4-compatible, 6to4, Teredo
    'http://[::127.0.0.1]/', 'http://[2002:7f00:1::]/', 'http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/']) {
    const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: { authorization: `Bearer ${apiKey}` }, payload: { url } });
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`);
    assert.equal((res.json() as { code: string }).code, 'WEBHOOK_URL_FORBIDDEN', url);
  }
  // a tenant key may not register for every tenant, nor for another tenant
  const other = await inst.tenantry.tenants.create({ slug: 'wh-ssrf-other', name: 'Other' });
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: { authorization: `Bearer ${apiKey}` }, payload: { url: 'https://example.com/', tenant: other.id } });
  assert.equal(res.statusCode, 404);
  assert.equal((await inst.su`select 1 from tenantry_catalog.webhook_endpoints where tenant_id = ${id}`).length, 0);
  // the operator may target its own network
  const op = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: { authorization: `Bearer ${ADMIN}` }, payload: { url: `${base}/operator`, tenant: id } });
  assert.equal(op.statusCode, 201, op.body);
  assert.ok(isPrivateAddress('::ffff:10.0.0.1') && isPrivateAddress('172.20.1.1') && !isPrivateAddress('93.184.216.34'));
  assert.ok(isPrivateAddress('::7f00:1') && isPrivateAddress('2002:a9fe:a9fe::1') && !isPrivateAddress('2606:4700::1111'));
});

test('SSRF attack at delivery time: a tenant endpoint whose name now points inside, or that redirects, is not followed', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-rebind', name: 'Rebind' });
  // as if registered while its name resolved to a public address, now resolving to loopback (DNS rebinding)
  const ep = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/rebound`, events: ['tenant.suspended'] });
  await inst.su`update tenantry_catalog.webhook_endpoints set allow_private = false where id = ${ep.id}`;
  script.set('/redirect', ['redirect']);
  const redirecting = await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/redirect`, events: ['tenant.suspended'] });
  const okBefore = at('/ok').length;
  await inst.tenantry.tenants.suspend(t.id, 'rebinding');
  const d = await until('a refused attempt', async () => (await inst.tenantry.webhooks.deliveries(ep.id))[0]?.attempts[0]);
  assert.match(String(d.error), /WEBHOOK_URL_FORBIDDEN/);
  assert.equal(at('/rebound').length, 0, 'nothing reached the internal address');
  const r = await until('the redirect attempt', async () => (await inst.tenantry.webhooks.deliveries(redirecting.id))[0]?.attempts[0]);
  assert.equal(r.statusCode, 302);
  assert.match(String(r.error), /redirect not followed/);
  assert.equal(at('/ok').length, okBefore, 'the redirect was not followed');
});

test('an unreachable endpoint fails each attempt and is marked failed once retries have run for a day', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-dead', name: 'Dead' });
  const ep = await inst.tenantry.webhooks.create({ tenant: t.id, url: 'http://127.0.0.1:1/nothing-listens', events: ['tenant.suspended'] });
  await inst.tenantry.tenants.suspend(t.id, 'dead endpoint');
  await until('two failed attempts', async () => ((await inst.tenantry.webhooks.deliveries(ep.id))[0]?.attempts.length ?? 0) >= 2);
  offset += 86_400_000 + 1000; // a day later
  const d = await until('the delivery to be marked failed', async () => (await inst.tenantry.webhooks.deliveries(ep.id)).find((x) => x.status === 'failed'));
  assert.ok(d.attempts.every((a) => a.statusCode === null && /ECONNREFUSED|connect/.test(String(a.error))));
  assert.ok(d.finishedAt);
});

test('every tenant event reaches the outbox with its change: lifecycle, tier, keys, members, quota at risk and exceeded', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'wh-events', name: 'Events', tier: 'free' });
  await inst.tenantry.webhooks.create({ tenant: t.id, url: `${base}/events` });
  // a tenant's own endpoints go with its hard delete: its purge reaches installation-wide ones
  await inst.tenantry.webhooks.create({ url: `${base}/purges`, events: ['tenant.purged'] });
  await inst.tenantry.quotas.setOverrides(t.id, { llm_tokens_per_day: 100, max_users: 10 });
  await inst.tenantry.quotas.increment(t.id, 'llm_tokens', 50);
  await inst.tenantry.quotas.increment(t.id, 'llm_tokens', 40); // 90%: at risk
  await inst.tenantry.quotas.increment(t.id, 'llm_tokens', 5); // still at risk, not again
  await inst.tenantry.quotas.increment(t.id, 'llm_tokens', 5); // the limit: exceeded
  const key = await inst.tenantry.keys.create(t.id, { name: 'hook-key' });
  await inst.tenantry.keys.revoke(t.id, key.id);
  const m = await inst.tenantry.members.add(t.id, { email: 'hook@example.com', role: 'member' });
  await inst.tenantry.members.remove(t.id, m.userId);
  await inst.tenantry.tenants.update(t.id, { tier: 'starter' });
  await inst.tenantry.tenants.suspend(t.id, 'events');
  await inst.tenantry.tenants.activate(t.id);
  await inst.tenantry.tenants.delete(t.id);
  await inst.tenantry.tenants.restore(t.id);
  await inst.tenantry.tenants.delete(t.id);
  await inst.tenantry.tenants.delete(t.id, { hard: true });
  // (tenant.created went out before this test's endpoints existed: an earlier test's endpoint listens for it)
  const types = (await inst.su<{ type: string }[]>`select type from tenantry_catalog.webhook_events where tenant_id = ${t.id} order by seq`).map((r) => r.type).filter((x) => x !== 'tenant.created');
  assert.deepEqual(types, ['quota.at_risk', 'quota.exceeded', 'key.created', 'key.revoked', 'member.added', 'member.removed', 'tenant.tier_changed',
    'tenant.suspended', 'tenant.activated', 'tenant.deleted', 'tenant.restored', 'tenant.deleted', 'tenant.purged']);
});
