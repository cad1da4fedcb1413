/**
 * Billing (issue #15): prices in the plan file, a billing customer per tenant, each closed period's
 * usage turned into records and pushed to Stripe (through the official SDK, pointed at a loopback
 * stand-in that records and checks every request) exactly once per tenant, period and line, and
 * Stripe's signed webhooks driving suspension for non-payment after a grace, and re-activation.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { Tenantry, BUILTIN_PLANS, validatePlans, isTenantryError } from '../src/index.js';
import { plansDocument } from '../src/plans/plan-file.js';
import { buildServer } from '../src/server/app.js';

const ADMIN = 'billing-test-operator-token-0123456789abcdef';
const API_KEY = 'sk_test_tenantry_standin_0123456789';
const WEBHOOK_SECRET = 'whsec_tenantry_test_secret_0123456789';
const GRACE_SECONDS = 3 * 86_400;
const PERIOD = '2026-10';
let inst: TestInstallation;
let app: FastifyInstance;
/** the installation's clock is real time plus this */
let offset = 0;

// ---- a loopback stand-in of Stripe's API: form-encoded requests, idempotency keys honoured as Stripe does ----
interface StripeCall { method: string; path: string; headers: http.IncomingHttpHeaders; form: URLSearchParams }
const calls: StripeCall[] = [];
const byKey = new Map<string, { status: number; body: string }>();
let created = 0;
/** idempotency keys whose first request is carried out but answered with a 500 (a lost response) */
const loseFirstAnswer = new Set<string>();
let stripe: http.Server;

function startStripeStandIn(): Promise<number> {
  stripe = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => { raw += c.toString('utf8'); });
    req.on('end', () => {
      const form = new URLSearchParams(raw);
      calls.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, form });
      const send = (status: number, body: unknown, extra: Record<string, string> = {}): void => {
        res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${calls.length}`, ...extra });
        res.end(typeof body === 'string' ? body : JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${API_KEY}`) return send(401, { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } });
      if (req.method !== 'POST' || req.url !== '/v1/invoiceitems') return send(404, { error: { type: 'invalid_request_error', message: `Unrecognized request URL (${req.method}: ${req.url})` } });
      if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) return send(400, { error: { type: 'invalid_request_error', message: 'form-encoded body expected' } });
      const key = req.headers['idempotency-key'];
      if (typeof key !== 'string' || key === '') return send(400, { error: { type: 'invalid_request_error', message: 'this stand-in requires an Idempotency-Key' } });
      const seen = byKey.get(key);
      if (seen) return send(seen.status, seen.body, { 'idempotent-replayed': 'true' });
      for (const f of ['customer', 'amount', 'currency']) if (!form.get(f)) return send(400, { error: { type: 'invalid_request_error', message: `Missing required param: ${f}.` } });
      const item = {
        id: `ii_standin_${++created}`, object: 'invoiceitem', customer: form.get('customer'), amount: Number(form.get('amount')), currency: form.get('currency'),
        description: form.get('description'), metadata: Object.fromEntries([...form.entries()].filter(([k]) => k.startsWith('metadata[')).map(([k, v]) => [k.slice(9, -1), v])),
      };
      const answer = { status: 200, body: JSON.stringify(item) };
      byKey.set(key, answer);
      if (loseFirstAnswer.delete(key)) return send(500, { error: { type: 'api_error', message: 'the answer was lost' } }, { 'stripe-should-retry': 'false' });
      send(answer.status, answer.body);
    });
  });
  return new Promise((r) => stripe.listen(0, '127.0.0.1', () => r((stripe.address() as AddressInfo).port)));
}

/** The built-in plans with prices on starter and professional. */
function pricedPlans(): Record<string, unknown> {
  const doc = plansDocument(BUILTIN_PLANS) as { tiers: Record<string, unknown>[] };
  for (const t of doc.tiers) {
    if (t.name === 'starter') t.price = { currency: 'usd', amount: 2900, metrics: { api_calls: { included: 10_000, unitAmount: 5, perUnits: 1000 }, llm_tokens: { included: 0, unitAmount: 2 } } };
    if (t.name === 'professional') t.price = { currency: 'eur', amount: 9900, metrics: { api_calls: { included: 1_000_000, unitAmount: 1, perUnits: 1000 } } };
  }
  return doc;
}

before(async () => {
  const port = await startStripeStandIn();
  inst = await freshInstallation({
    adminKey: ADMIN, clock: () => new Date(Date.now() + offset),
    stripeApiKey: API_KEY, stripeApiBase: `http://127.0.0.1:${port}`, stripeWebhookSecret: WEBHOOK_SECRET, billingGraceSeconds: GRACE_SECONDS,
  });
  await inst.tenantry.plans.apply(pricedPlans());
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  stripe?.closeAllConnections();
  await new Promise<void>((r) => (stripe ? stripe.close(() => r()) : r()));
});

async function usage(tenantId: string, metric: string, day: string, amount: number): Promise<void> {
  await inst.su`insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount) values (${tenantId}, ${metric}, ${day}, ${amount})
    on conflict (tenant_id, metric, day) do update set amount = usage_daily.amount + excluded.amount`;
}

function signed(event: Record<string, unknown>, secret = WEBHOOK_SECRET): { payload: string; signature: string } {
  const payload = JSON.stringify({ object: 'event', api_version: '2025-01-01', created: Math.floor(Date.now() / 1000), ...event });
  return { payload, signature: Stripe.webhooks.generateTestHeaderString({ payload, secret }) };
}
const postWebhook = (payload: string, signature?: string) => app.inject({
  method: 'POST', url: '/v1/billing/stripe/webhook', payload,
  headers: { 'content-type': 'application/json', ...(signature !== undefined ? { 'stripe-signature': signature } : {}) },
});

test('plan prices: validated (declared, non-gauge metrics; whole minor units; a currency code) and kept through apply', async () => {
  const bad: [string, (t: Record<string, unknown>) => void, RegExp][] = [
    ['an unknown metric', (t) => { t.price = { currency: 'usd', amount: 1, metrics: { teleports: { unitAmount: 1 } } }; }, /price\.metrics\.teleports: unknown metric/],
    ['a gauge', (t) => { t.price = { currency: 'usd', metrics: { storage_bytes: { unitAmount: 1 } } }; }, /a gauge is a level/],
    ['a fractional amount', (t) => { t.price = { currency: 'usd', amount: 9.99 }; }, /price\.amount: must be a whole number/],
    ['a negative unit amount', (t) => { t.price = { currency: 'usd', metrics: { api_calls: { unitAmount: -1 } } }; }, /unitAmount: must be a whole number/],
    ['perUnits of zero', (t) => { t.price = { currency: 'usd', metrics: { api_calls: { unitAmount: 1, perUnits: 0 } } }; }, /perUnits: must be a whole number from 1/],
    ['an uppercase currency', (t) => { t.price = { currency: 'USD' }; }, /price\.currency: must be a lowercase ISO 4217 code/],
    ['an unknown price field', (t) => { t.price = { currency: 'usd', discount: 5 }; }, /price\.discount: unknown field/],
  ];
  for (const [what, mutate, message] of bad) {
    const doc = pricedPlans() as { tiers: Record<string, unknown>[] };
    mutate(doc.tiers[0]!);
    assert.throws(() => validatePlans(doc), (err: unknown) => isTenantryError(err, 'INVALID_PLANS') && message.test((err as Error).message), what);
  }
  const starter = inst.tenantry.plans.current().tiers.find((t) => t.name === 'starter')!;
  assert.deepEqual(starter.price, { currency: 'usd', amount: 2900, metrics: { api_calls: { included: 10_000, unitAmount: 5, perUnits: 1000 }, llm_tokens: { included: 0, unitAmount: 2, perUnits: 1 } } });
  assert.equal(inst.tenantry.plans.current().tiers.find((t) => t.name === 'free')!.price, null, 'a tier without a price is not billed');
  // the plans without prices (every existing plan file) stay valid
  assert.doesNotThrow(() => validatePlans(plansDocument(BUILTIN_PLANS)));
});

test('billing customer ids: validated, one tenant per customer, operator only over HTTP', async () => {
  const a = await inst.tenantry.tenants.create({ slug: 'bill-cust-a', name: 'A', tier: 'starter' });
  const b = await inst.tenantry.tenants.create({ slug: 'bill-cust-b', name: 'B', tier: 'starter' });
  for (const bad of ['', 'cus x', 'cus_\u0000', 'c'.repeat(256), 'cus_é', 'cus_\ud800']) await rejectsWith((async () => inst.tenantry.billing.setCustomer(a.id, bad))(), 'INVALID_INPUT');
  await inst.tenantry.billing.setCustomer(a.id, 'cus_Shared1');
  await rejectsWith(inst.tenantry.billing.setCustomer(b.id, 'cus_Shared1'), 'BILLING_CUSTOMER_TAKEN');
  let res = await app.inject({ method: 'PUT', url: `/v1/tenants/${b.id}/billing`, headers: { authorization: `Bearer ${b.apiKey!.key}` }, payload: { customerId: 'cus_Mine' } });
  assert.equal(res.statusCode, 403, `a tenant key cannot set who pays: ${res.body}`);
  res = await app.inject({ method: 'PUT', url: `/v1/tenants/${b.id}/billing`, headers: { authorization: `Bearer ${ADMIN}` }, payload: { customerId: 'cus_B1' } });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().customerId, 'cus_B1');
  res = await app.inject({ method: 'GET', url: `/v1/tenants/${a.id}/billing`, headers: { authorization: `Bearer ${b.apiKey!.key}` } });
  assert.equal(res.statusCode, 404, 'another tenant\'s billing is not found');
  await inst.tenantry.billing.setCustomer(a.id, null);
  assert.equal((await inst.tenantry.billing.getCustomer(a.id)).customerId, null);
  await inst.tenantry.billing.setCustomer(b.id, null);
});

test('a period with usage produces exactly one invoice item per tenant and line, even when the close runs twice and concurrently', { timeout: 120_000 }, async () => {
  const a = await inst.tenantry.tenants.create({ slug: 'bill-run-a', name: 'A', tier: 'starter' });
  const b = await inst.tenantry.tenants.create({ slug: 'bill-run-b', name: 'B', tier: 'professional' });
  const unbilled = await inst.tenantry.tenants.create({ slug: 'bill-run-none', name: 'No customer', tier: 'starter' });
  await inst.tenantry.billing.setCustomer(a.id, 'cus_RunA');
  await inst.tenantry.billing.setCustomer(b.id, 'cus_RunB');
  // usage in the period, and outside it (which must not count)
  await usage(a.id, 'api_calls', '2026-10-01', 8_000);
  await usage(a.id, 'api_calls', '2026-10-31', 4_500);
  await usage(a.id, 'api_calls', '2026-11-01', 99_999);
  await usage(a.id, 'api_calls', '2026-09-30', 99_999);
  await usage(a.id, 'llm_tokens', '2026-10-15', 7);
  await usage(b.id, 'api_calls', '2026-10-10', 500);
  await usage(unbilled.id, 'api_calls', '2026-10-10', 50_000);
  const before = calls.length;
  const runs = await Promise.all([
    inst.tenantry.billing.closePeriod({ period: PERIOD }),
    inst.tenantry.billing.closePeriod({ period: PERIOD }),
    inst.tenantry.jobs.runNow('billing.close', { period: PERIOD }) as Promise<{ created: number }>,
  ]);
  const again = await inst.tenantry.billing.closePeriod({ period: PERIOD });
  assert.equal(again.created, 0, 'a second run records nothing new');
  assert.equal(runs.reduce((n, r) => n + r.created, 0), 5, 'a: plan, api_calls, llm_tokens; b: plan, api_calls');
  const recA = await inst.tenantry.billing.records(a.id, { period: PERIOD });
  const line = (item: string) => recA.find((r) => r.item === item)!;
  assert.equal(line('plan').amount, 2900);
  assert.equal(line('api_calls').quantity, 12_500);
  assert.equal(line('api_calls').billable, 2_500);
  assert.equal(line('api_calls').amount, 15, 'ceil(2500 / 1000) * 5 cents');
  assert.equal(line('llm_tokens').amount, 14);
  assert.ok(recA.every((r) => r.status === 'pushed' && r.externalId?.startsWith('ii_standin_')));
  const recB = await inst.tenantry.billing.records(b.id, { period: PERIOD });
  assert.equal(recB.find((r) => r.item === 'plan')!.currency, 'eur');
  const bApi = recB.find((r) => r.item === 'api_calls')!;
  assert.equal(bApi.amount, 0, 'within what the tier includes');
  assert.equal(bApi.status, 'skipped', 'a zero line is recorded, not sent');
  assert.deepEqual(await inst.tenantry.billing.records(unbilled.id), [], 'no customer: not billed');

  // what reached "Stripe": one item per non-zero line, each with its own key; nothing for the rest
  const mine = calls.slice(before);
  const keys = new Set(mine.map((c) => c.headers['idempotency-key']));
  assert.equal(keys.size, 4);
  const items = [...keys].map((k) => JSON.parse(byKey.get(k as string)!.body) as { customer: string; amount: number; currency: string; metadata: Record<string, string> });
  assert.deepEqual(items.map((i) => `${i.customer}:${i.metadata.tenantry_item}:${i.amount}:${i.currency}`).sort(),
    ['cus_RunA:api_calls:15:usd', 'cus_RunA:llm_tokens:14:usd', 'cus_RunA:plan:2900:usd', 'cus_RunB:plan:9900:eur']);
  for (const c of mine) {
    assert.equal(c.form.get('period[start]'), String(Date.UTC(2026, 9, 1) / 1000));
    assert.equal(c.form.get('metadata[tenantry_period]'), PERIOD);
    assert.match(String(c.headers['user-agent']), /Stripe\/v1 NodeBindings/);
  }
  const rows = await inst.su`select count(*)::int as n from tenantry_catalog.billing_records where period_start = ${new Date(Date.UTC(2026, 9, 1))}`;
  assert.equal(rows[0]!.n, 5);
  // a period that has not ended cannot be closed
  const next = new Date(Date.now() + offset);
  await rejectsWith(inst.tenantry.billing.closePeriod({ period: next.toISOString().slice(0, 7) }), 'INVALID_INPUT', /has not ended/);
  await rejectsWith(inst.tenantry.billing.closePeriod({ period: '2026-13' }), 'INVALID_INPUT');
});

test('a push whose answer was lost is retried under the same idempotency key: still one invoice item', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'bill-lost', name: 'Lost', tier: 'starter' });
  await inst.tenantry.billing.setCustomer(t.id, 'cus_Lost');
  const key = `tenantry-${(await inst.su`select id from tenantry_catalog.installation`)[0]!.id}-${t.id}-2026-09-plan`;
  loseFirstAnswer.add(key);
  const first = await inst.tenantry.billing.closePeriod({ period: '2026-09' });
  assert.equal(first.failed, 1);
  let plan = (await inst.tenantry.billing.records(t.id, { period: '2026-09' })).find((r) => r.item === 'plan')!;
  assert.equal(plan.status, 'pending');
  assert.match(plan.lastError ?? '', /lost/);
  // the overdue sweep retries failed pushes too
  await inst.tenantry.jobs.runNow('billing.overdue', {});
  plan = (await inst.tenantry.billing.records(t.id, { period: '2026-09' })).find((r) => r.item === 'plan')!;
  assert.equal(plan.status, 'pushed');
  const items = [...byKey.values()].map((v) => JSON.parse(v.body) as { customer: string; metadata: Record<string, string> }).filter((i) => i.customer === 'cus_Lost');
  assert.deepEqual(items.map((i) => i.metadata.tenantry_item), ['plan'], 'the stand-in made one item for the plan line, not two');
  assert.equal(calls.filter((c) => c.headers['idempotency-key'] === key).length, 2, 'sent twice, under one key');
});

test('a Stripe webhook with a bad signature is refused with 400 and a code, and changes nothing', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'bill-forged', name: 'Forged', tier: 'starter' });
  await inst.tenantry.billing.setCustomer(t.id, 'cus_Forged');
  const snapshot = async () => JSON.stringify([
    await inst.su`select count(*)::int as n from tenantry_catalog.billing_stripe_events`,
    await inst.su`select * from tenantry_catalog.billing_invoices order by invoice_id`,
    await inst.su`select status, suspended_reason from tenantry_catalog.tenants where id = ${t.id}`,
    await inst.su`select count(*)::int as n from tenantry_catalog.audit_log where tenant_id = ${t.id}`,
    await inst.su`select count(*)::int as n from tenantry_jobs._private_jobs j join tenantry_jobs._private_tasks k on k.id = j.task_id where k.identifier = 'billing.overdue'`,
  ]);
  const before = await snapshot();
  const event = { id: 'evt_forged_1', type: 'invoice.payment_failed', data: { object: { id: 'in_forged_1', object: 'invoice', customer: 'cus_Forged' } } };
  const good = signed(event);
  const cases: [string, string, string | undefined][] = [
    ['no signature', good.payload, undefined],
    ['signed with another secret', good.payload, signed(event, 'whsec_attacker').signature],
    ['a tampered body', good.payload.replace('cus_Forged', 'cus_Other'), good.signature],
    ['garbage', good.payload, 't=1,v1=deadbeef'],
    ['a stale signature', good.payload, Stripe.webhooks.generateTestHeaderString({ payload: good.payload, secret: WEBHOOK_SECRET, timestamp: Math.floor(Date.now() / 1000) - 3600 })],
  ];
  for (const [what, payload, sig] of cases) {
    const res = await postWebhook(payload, sig);
    assert.equal(res.statusCode, 400, `${what}: ${res.body}`);
    assert.equal(res.json().code, 'BILLING_SIGNATURE_INVALID', what);
  }
  assert.equal(await snapshot(), before, 'nothing changed');
  await rejectsWith(inst.tenantry.billing.handleStripeWebhook(Buffer.from(good.payload), 'v1=x'), 'BILLING_SIGNATURE_INVALID');
});

test('payment failed suspends (payment_overdue) only after the grace, scheduled by the job runner; paid re-activates', { timeout: 120_000 }, async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'bill-overdue', name: 'Overdue', tier: 'starter' });
  const bystander = await inst.tenantry.tenants.create({ slug: 'bill-bystander', name: 'Bystander', tier: 'starter' });
  await inst.tenantry.billing.setCustomer(t.id, 'cus_Overdue');
  await inst.tenantry.billing.setCustomer(bystander.id, 'cus_Bystander');
  const failed = signed({ id: 'evt_fail_1', type: 'invoice.payment_failed', data: { object: { id: 'in_over_1', object: 'invoice', customer: 'cus_Overdue' } } });
  let res = await postWebhook(failed.payload, failed.signature);
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().handled, true);
  // redelivered: acknowledged, changes nothing twice
  res = await postWebhook(failed.payload, failed.signature);
  assert.equal(res.json().duplicate, true);
  // the suspension check is queued for when the grace ends
  const jobs = await inst.su`select run_at from tenantry_jobs._private_jobs where key = ${`billing.overdue:${t.id}`}`;
  assert.equal(jobs.length, 1);
  const due = (jobs[0]!.run_at as Date).getTime() - Date.now();
  assert.ok(due > (GRACE_SECONDS - 60) * 1000 && due < (GRACE_SECONDS + 60) * 1000, `the check runs after the grace (in ${due} ms)`);
  // within the grace: still active
  await inst.tenantry.jobs.runNow('billing.overdue', { tenantId: t.id });
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'active');
  // past the grace
  offset = (GRACE_SECONDS + 60) * 1000;
  try {
    await inst.tenantry.jobs.runNow('billing.overdue', { tenantId: t.id });
    let got = await inst.tenantry.tenants.get(t.id);
    assert.equal(got.status, 'suspended');
    assert.equal(got.suspendedReason, 'payment_overdue');
    assert.equal((await inst.tenantry.tenants.get(bystander.id)).status, 'active', 'another tenant is untouched');
    assert.ok((await inst.tenantry.billing.getCustomer(t.id)).overdueSince);
    // a late payment_failed for a paid invoice does not count; a paid event re-activates
    const paid = signed({ id: 'evt_paid_1', type: 'invoice.paid', data: { object: { id: 'in_over_1', object: 'invoice', customer: 'cus_Overdue' } } });
    res = await postWebhook(paid.payload, paid.signature);
    assert.equal(res.statusCode, 200, res.body);
    got = await inst.tenantry.tenants.get(t.id);
    assert.equal(got.status, 'active');
    assert.equal(got.suspendedReason, null);
    const late = signed({ id: 'evt_fail_late', type: 'invoice.payment_failed', data: { object: { id: 'in_over_1', object: 'invoice', customer: 'cus_Overdue' } } });
    await postWebhook(late.payload, late.signature);
    await inst.tenantry.jobs.runNow('billing.overdue', {});
    assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'active', 'an invoice already paid stays paid');
    // paid never lifts a suspension with another reason
    await inst.tenantry.tenants.suspend(bystander.id, 'abuse');
    const paidOther = signed({ id: 'evt_paid_2', type: 'invoice.paid', data: { object: { id: 'in_by_1', object: 'invoice', customer: 'cus_Bystander' } } });
    await postWebhook(paidOther.payload, paidOther.signature);
    assert.equal((await inst.tenantry.tenants.get(bystander.id)).suspendedReason, 'abuse');
  } finally {
    offset = 0;
  }
  const actions = (await inst.tenantry.audit(t.id, { limit: 20 })).map((e) => e.action);
  for (const a of ['billing.payment_failed', 'tenant.suspended', 'billing.invoice_paid', 'tenant.activated']) assert.ok(actions.includes(a), a);
  assert.ok((await inst.tenantry.verifyAudit(t.id)).ok);
  // events of other types, and for customers Tenantry does not know, are acknowledged and ignored
  const other = signed({ id: 'evt_other', type: 'customer.created', data: { object: { id: 'cus_New', object: 'customer' } } });
  res = await postWebhook(other.payload, other.signature);
  assert.equal(res.statusCode, 200);
  assert.equal(res.json().handled, false);
});

test('without STRIPE_WEBHOOK_SECRET the webhook answers 404 BILLING_NOT_CONFIGURED (the endpoint is not enabled here), not a 5xx', async () => {
  // a second process of the same installation, configured without the secret (small pools: the test
  // server's connections are shared)
  const bare = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, adminKey: ADMIN, maxConnections: 4, schemaPoolSize: 0, rolePoolSize: 0 });
  try {
    const server = await buildServer({ tenantry: bare, logLevel: 'silent' });
    const s = signed({ id: 'evt_x', type: 'invoice.paid', data: { object: { id: 'in_x', customer: 'cus_x' } } });
    const res = await server.inject({ method: 'POST', url: '/v1/billing/stripe/webhook', payload: s.payload, headers: { 'content-type': 'application/json', 'stripe-signature': s.signature } });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().code, 'BILLING_NOT_CONFIGURED');
    await server.close();
  } finally {
    await bare.close();
  }
});

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

test('CLI: billing customer (set, show, refused when taken), close and records', { timeout: 300_000 }, async () => {
  const port = (stripe.address() as AddressInfo).port;
  const cli = (args: string[]): Promise<{ code: number; out: unknown; err: string }> => new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, '--json', ...args], {
      env: {
        ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_ADMIN_KEY: ADMIN, LOG_LEVEL: 'error',
        TENANTRY_SCHEMA_POOL_SIZE: '0', TENANTRY_ROLE_POOL_SIZE: '0', TENANTRY_MAX_CONNECTIONS: '4',
        STRIPE_API_KEY: API_KEY, STRIPE_API_BASE: `http://127.0.0.1:${port}`,
      },
      timeout: 120_000,
    }, (error, stdout, stderr) => {
      let out: unknown = stdout;
      try { out = JSON.parse(stdout); } catch { /* text */ }
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, out, err: stderr });
    });
  });
  const t = await inst.tenantry.tenants.create({ slug: 'bill-cli', name: 'CLI', tier: 'starter' });
  const set = await cli(['billing', 'customer', 'bill-cli', 'cus_Cli1']);
  assert.equal(set.code, 0, set.err);
  assert.equal((set.out as { customerId: string }).customerId, 'cus_Cli1');
  const other = await inst.tenantry.tenants.create({ slug: 'bill-cli-other', name: 'Other', tier: 'starter' });
  assert.equal((await cli(['billing', 'customer', other.slug, 'cus_Cli1'])).code, 4, 'BILLING_CUSTOMER_TAKEN is a conflict');
  assert.equal((await cli(['billing', 'customer', other.slug, 'not a customer'])).code, 2);
  const closed = await cli(['billing', 'close', '--period', '2026-08']);
  assert.equal(closed.code, 0, closed.err);
  assert.ok((closed.out as { created: number }).created >= 3, 'this tenant\'s plan, api_calls and llm_tokens lines');
  const again = await cli(['billing', 'close', '--period', '2026-08']);
  assert.equal((again.out as { created: number }).created, 0);
  const records = await cli(['billing', 'records', 'bill-cli', '--period', '2026-08']);
  const plan = (records.out as { item: string; status: string; amount: number }[]).find((r) => r.item === 'plan')!;
  assert.equal(plan.amount, 2900);
  assert.equal(plan.status, 'pushed');
  assert.equal((await cli(['billing', 'customer', 'bill-cli', '--clear'])).code, 0);
  assert.equal((await inst.tenantry.billing.getCustomer(t.id)).customerId, null);
});
