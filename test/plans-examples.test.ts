import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { freshInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { validatePlans, type Plans } from '../src/plans/plan-file.js';

/**
 * Each example plan file in examples/plans/, applied to a fresh installation through PUT /v1/plans
 * and exercised through the HTTP API: every metric kind debits, refuses at its limit with
 * QUOTA_EXCEEDED, resets its window, and appears in the usage summary, the billing export and the
 * OpenAPI document (as enums generated from the plans); tiers, features, trials and rate limits
 * follow the file. The shipped JSON Schema accepts every example.
 */

const ROOT = path.resolve(import.meta.dirname, '..');
const EXAMPLES = ['agent-platform', 'hackathon-platform', 'developer-platform'] as const;
const load = (name: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(ROOT, 'examples', 'plans', `${name}.json`), 'utf8')) as Record<string, unknown>;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

test('the shipped JSON Schema (schemas/tenantry.plans.schema.json) accepts every example and refuses what the parser refuses', () => {
  const schema = JSON.parse(readFileSync(path.join(ROOT, 'schemas', 'tenantry.plans.schema.json'), 'utf8')) as Record<string, unknown>;
  const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);
  for (const name of EXAMPLES) assert.equal(validate(load(name)), true, `${name}: ${JSON.stringify(validate.errors)}`);
  const h = load('hackathon-platform') as Json;
  const bad: [string, Json][] = [
    ['unknown kind', { ...h, metrics: [{ name: 'x', kind: 'counter' }] }],
    ['window without a unit', { ...h, metrics: [{ name: 'x', kind: 'window' }] }],
    ['negative limit', { ...h, tiers: [{ ...h.tiers[0], limits: { ...h.tiers[0].limits, events: -1 } }] }],
    ['unknown field', { ...h, tiers: [{ ...h.tiers[0], colour: 1 }] }],
    ['a price that is not an object', { ...h, tiers: [{ ...h.tiers[0], price: 1 }] }],
  ];
  for (const [what, doc] of bad) {
    assert.equal(validate(doc), false, `the schema refuses: ${what}`);
    assert.throws(() => validatePlans(doc), { code: 'INVALID_PLANS' }, `the parser refuses: ${what}`);
  }
});

for (const name of EXAMPLES) {
  test(`${name}: applied through PUT /v1/plans, every metric kind debits, refuses, resets, and shows in the summary, the export and OpenAPI`, { timeout: 400_000 }, async () => {
    const admin = `op_${randomBytes(18).toString('hex')}`;
    const inst = await freshInstallation({ adminKey: admin });
    const app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
    const call = async (method: string, url: string, body?: unknown, token = admin): Promise<{ status: number; body: Json; headers: Record<string, unknown> }> => {
      const r = await app.inject({ method: method as 'GET', url, headers: { authorization: `Bearer ${token}` }, ...(body !== undefined ? { payload: body as Record<string, unknown> } : {}) });
      return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : null, headers: r.headers };
    };
    try {
      const file = load(name);
      const plans: Plans = validatePlans(file);

      // the diff first (nothing changes), then the apply
      const dry = await call('PUT', '/v1/plans', { plans: file, dryRun: true });
      assert.equal(dry.status, 200, JSON.stringify(dry.body));
      assert.equal(dry.body.applied, false);
      assert.equal(dry.body.identical, name === 'agent-platform', 'the agent platform is the built-in plan');
      const put = await call('PUT', '/v1/plans', { plans: file });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      assert.equal(put.body.applied, true);
      assert.deepEqual(put.body.refusals, []);
      const got = await call('GET', '/v1/plans');
      assert.equal(got.status, 200);
      assert.deepEqual(validatePlans(got.body.plans), plans, 'GET /v1/plans reads back the applied plan');

      // a tenant on the default tier, named by its slug
      const slug = `ex-${name.split('-')[0]}`;
      const created = await call('POST', '/v1/tenants', { slug });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const defaultTier = plans.tiers.find((t) => t.default)!;
      assert.equal(created.body.tier, defaultTier.name);
      const id = created.body.id as string;
      const tenantKey = created.body.apiKey as string;
      const limitOf = (metric: string): number => defaultTier.limits[metric] as number;

      // the tier's rate limit governs the tenant's own key
      const self = await call('GET', '/v1/tenant', undefined, tenantKey);
      assert.equal(self.status, 200);
      assert.equal(Number(self.headers['ratelimit-limit']), defaultTier.rateLimit);
      // its features are the tier's
      const features = await call('GET', `/v1/tenants/${id}/features`);
      assert.deepEqual(features.body.map((f: Json) => f.feature).sort(), [...defaultTier.features].sort());

      const [minute] = await inst.su<{ s: number }[]>`select extract(second from now())::float8 as s`;
      if (minute!.s > 50) await sleep((60.5 - minute!.s) * 1000);
      for (const m of plans.metrics) {
        const limit = limitOf(m.name);
        const what = `${name}: ${m.name} (${m.kind})`;
        if (m.kind === 'count' || m.kind === 'window') {
          const ok = await call('POST', `/v1/tenants/${id}/usage`, { metric: m.name, amount: limit });
          assert.equal(ok.status, 200, `${what}: ${JSON.stringify(ok.body)}`);
          assert.equal(ok.body.used, limit);
          const over = await call('POST', `/v1/tenants/${id}/usage`, { metric: m.name, amount: 1 });
          assert.equal(over.status, 429, what);
          assert.equal(over.body.code, 'QUOTA_EXCEEDED', what);
          if (m.kind === 'window') {
            // the next window starts over, in the debit itself
            await inst.su`update tenantry_catalog.usage_counters set window_start = window_start - ${`1 ${m.window}`}::interval
              where tenant_id = ${id} and metric = ${m.name}`;
            const fresh = await call('POST', `/v1/tenants/${id}/usage`, { metric: m.name, amount: 1 });
            assert.equal(fresh.status, 200, what);
            assert.equal(fresh.body.used, 1, `${what}: reset with the window`);
          }
        } else if (m.kind === 'lease') {
          const leases: string[] = [];
          for (let i = 0; i < limit; i++) {
            const l = await call('POST', `/v1/tenants/${id}/leases`, { metric: m.name });
            assert.equal(l.status, 201, `${what}: ${JSON.stringify(l.body)}`);
            leases.push(l.body.leaseId);
          }
          const over = await call('POST', `/v1/tenants/${id}/leases`, { metric: m.name });
          assert.equal(over.status, 429, what);
          assert.equal(over.body.code, 'QUOTA_EXCEEDED', what);
          assert.deepEqual((await call('DELETE', `/v1/tenants/${id}/leases/${leases[0]}`)).body, { released: true });
          assert.equal((await call('POST', `/v1/tenants/${id}/leases`, { metric: m.name })).status, 201, `${what}: a released slot is free again`);
        } else if (m.source === 'app') {
          const top = limit * m.scale;
          const ok = await call('PUT', `/v1/tenants/${id}/gauges/${m.name}`, { value: top });
          assert.equal(ok.status, 200, `${what}: ${JSON.stringify(ok.body)}`);
          assert.equal(ok.body.used, top);
          const over = await call('PUT', `/v1/tenants/${id}/gauges/${m.name}`, { value: top + 1 });
          assert.equal(over.status, 429, what);
          assert.equal(over.body.code, 'QUOTA_EXCEEDED', what);
          assert.equal((await call('PUT', `/v1/tenants/${id}/gauges/${m.name}`, { value: 3 })).body.used, 3, `${what}: a gauge goes down too`);
        } else {
          // measured storage: Tenantry measures it; the app cannot set it
          const refused = await call('PUT', `/v1/tenants/${id}/gauges/${m.name}`, { value: 1 });
          assert.equal(refused.status, 400, what);
          assert.ok(await inst.tenantry.quotas.refreshStorage(id) >= 0);
        }
      }

      // the summary shows every declared metric, with the tier's limits (gauges in measured units)
      const usage = await call('GET', `/v1/tenants/${id}/usage`);
      assert.equal(usage.status, 200);
      assert.deepEqual(usage.body.metrics.map((l: Json) => l.metric), plans.metrics.map((m) => m.name));
      for (const l of usage.body.metrics) {
        const m = plans.metrics.find((x) => x.name === l.metric)!;
        assert.equal(l.kind, m.kind);
        assert.equal(l.limit, limitOf(m.name) * (m.kind === 'gauge' ? m.scale : 1), `${l.metric} limit`);
      }
      assert.equal(usage.body.overQuota, false);
      assert.equal(usage.body.atRisk, true, 'metrics at their limit put the tenant at risk');

      // the billing export has every debited metric
      const csv = await inst.tenantry.quotas.exportHistory('csv', { tenant: id });
      for (const m of plans.metrics) assert.match(csv, new RegExp(`,${slug},${m.name},\\d+$`, 'm'), `${m.name} in the export`);
      // a gauge's history is its peak of the day, not the sum of what was set
      for (const m of plans.metrics.filter((x) => x.source === 'app')) {
        assert.match(csv, new RegExp(`,${slug},${m.name},${limitOf(m.name) * m.scale}$`, 'm'), `${m.name}: the day's peak`);
      }

      // OpenAPI lists the plan's names as enums
      const doc = (await call('GET', '/openapi.json')).body;
      const usageBody = doc.paths['/v1/tenants/{id}/usage'].post.requestBody.content['application/json'].schema;
      assert.deepEqual(usageBody.properties.metric.enum, plans.metrics.map((m) => m.name));
      const tenantSchema = Object.values(doc.components.schemas as Record<string, Json>).find((x) => x.properties?.slug && x.properties?.tier);
      assert.deepEqual(tenantSchema.properties.tier.enum, plans.tiers.map((t) => t.name));
      const leaseBody = doc.paths['/v1/tenants/{id}/leases'].post.requestBody.content['application/json'].schema;
      assert.deepEqual(leaseBody.properties.metric.enum, plans.metrics.map((m) => m.name));
      assert.ok(!JSON.stringify(doc).includes('tenantry:plan-names:'), 'no marker left in the document');

      // a metric of another plan is refused with a clear code, and writes nothing
      const foreign = name === 'agent-platform' ? 'participants' : 'agents';
      const refused = await call('POST', `/v1/tenants/${id}/usage`, { metric: foreign, amount: 1 });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, 'INVALID_INPUT');
      assert.match(refused.body.detail, new RegExp(`Unknown metric "${foreign}"`));

      // a trial with no tier named runs on the plans' trial tier
      const trialTier = plans.tiers.find((t) => t.trialOf !== null);
      const trial = await call('POST', '/v1/tenants', { slug: `${slug}-trial`, trialDays: 14 });
      assert.equal(trial.status, 201, JSON.stringify(trial.body));
      assert.equal(trial.body.status, 'trial');
      assert.equal(trial.body.tier, trialTier?.name ?? defaultTier.name);
    } finally {
      await app.close();
      await inst.cleanup();
    }
  });
}
