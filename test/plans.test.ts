import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { Tenantry } from '../src/index.js';
import { BUILTIN_PLANS } from '../src/plans/builtin.js';
import { parsePlansText, validatePlans } from '../src/plans/plan-file.js';

/**
 * Plans that belong to the app: the plan file (parsing, every way it can be wrong), the built-in
 * agent platform as the default, diff and apply (refusals with their own codes and nothing changed,
 * tenants moved and audited, history dropped only when asked), downgrades that never delete,
 * app-defined metrics metered atomically, a differing file reported at open, and the generated types.
 */

const ROOT = path.resolve(import.meta.dirname, '..');
const example = (name: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(ROOT, 'examples', 'plans', `${name}.json`), 'utf8')) as Record<string, unknown>;
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

let inst: TestInstallation;
before(async () => { inst = await freshInstallation(); });
after(async () => { await inst?.cleanup(); });

let seq = 0;
const slug = (): string => `p-${process.pid}-${++seq}`;

/** Everything a plan change could touch, to show that a refused one touched nothing. */
async function catalogSnapshot(): Promise<string> {
  const su = inst.su;
  const parts = await Promise.all([
    su`select * from tenantry_catalog.plan_metrics order by name`,
    su`select * from tenantry_catalog.plan_features order by name`,
    su`select name, quotas, features, position, is_default, trial_of, updated_at from tenantry_catalog.tiers order by name`,
    su`select id, tier, updated_at from tenantry_catalog.tenants order by id`,
    su`select * from tenantry_catalog.usage_counters order by tenant_id, metric`,
    su`select * from tenantry_catalog.usage_daily order by tenant_id, metric, day`,
    su`select * from tenantry_catalog.quota_overrides order by tenant_id, quota`,
    su`select count(*)::int as n from tenantry_catalog.audit_log`,
  ]);
  return JSON.stringify(parts);
}

async function auditOf(action: string): Promise<{ tenant_id: string | null; details: Record<string, unknown> }[]> {
  return inst.su<{ tenant_id: string | null; details: Record<string, unknown> }[]>`
    select tenant_id, details from tenantry_catalog.audit_log where action = ${action} order by id`;
}

// ---- the built-in plans ----

test('without a plan file the built-in agent platform is in force, and examples/plans/agent-platform.json is that same plan', async () => {
  const plans = inst.tenantry.plans.current();
  assert.deepEqual(plans, BUILTIN_PLANS, 'the catalog seeds (0002 + 0020) are the built-in plans');
  assert.deepEqual(validatePlans(example('agent-platform')), BUILTIN_PLANS);
  assert.deepEqual(plans.tiers.map((t) => t.name), ['free', 'starter', 'professional', 'enterprise', 'custom']);
  assert.equal(inst.tenantry.plans.status(), undefined, 'no file named, nothing to report');
  const diff = await inst.tenantry.plans.diff(example('agent-platform'));
  assert.equal(diff.identical, true);
  assert.deepEqual(diff.changes, []);
});

// ---- bad plan files ----

test('bad plan files: a clear INVALID_PLANS naming the path (or line), and nothing applied', async () => {
  const h = example('hackathon-platform');
  const cases: [string, unknown, RegExp][] = [
    ['unknown kind', (() => { const d = clone(h) as Json; d.metrics[1].kind = 'counter'; return d; })(), /\$\.metrics\[1\]\.kind: unknown kind "counter"/],
    ['negative limit', (() => { const d = clone(h) as Json; d.tiers[2].limits.participants = -5; return d; })(), /\$\.tiers\[2\]\.limits\.participants: must be a whole number from 0/],
    ['duplicate metric', (() => { const d = clone(h) as Json; d.metrics.push({ ...d.metrics[0] }); return d; })(), /\$\.metrics\[6\]\.name: duplicate metric name "events" \(also \$\.metrics\[0\]\)/],
    ['duplicate tier', (() => { const d = clone(h) as Json; d.tiers.push({ ...d.tiers[1] }); return d; })(), /\$\.tiers\[4\]\.name: duplicate tier name "starter"/],
    ['duplicate feature', (() => { const d = clone(h) as Json; d.features.push({ name: 'sso', description: 'again' }); return d; })(), /\$\.features\[7\]\.name: duplicate feature name "sso"/],
    ['a tier with an unknown metric', (() => { const d = clone(h) as Json; d.tiers[0].limits.judges = 3; return d; })(), /\$\.tiers\[0\]\.limits\.judges: unknown metric "judges"/],
    ['a window without a unit', (() => { const d = clone(h) as Json; delete d.metrics[5].window; return d; })(), /\$\.metrics\[5\]\.window: a window metric needs its window unit/],
    ['a tier missing a metric', (() => { const d = clone(h) as Json; delete d.tiers[3].limits.admins; return d; })(), /\$\.tiers\[3\]\.limits\.admins: missing/],
    ['a tier granting an undeclared feature', (() => { const d = clone(h) as Json; d.tiers[0].features = ['teleport']; return d; })(), /\$\.tiers\[0\]\.features\[0\]: unknown feature "teleport"/],
    ['two default tiers', (() => { const d = clone(h) as Json; d.tiers[1].default = true; return d; })(), /\$\.tiers\[1\]\.default: only one tier is the default/],
    ['trialOf an unknown tier', (() => { const d = clone(h) as Json; d.tiers[2].trialOf = 'gold'; return d; })(), /\$\.tiers\[2\]\.trialOf: unknown tier "gold"/],
    ['an unknown field', (() => { const d = clone(h) as Json; d.tiers[0].colour = 9; return d; })(), /\$\.tiers\[0\]\.colour: unknown field/],
    ['no tiers', { metrics: [], tiers: [] }, /\$\.tiers: declare at least one tier/],
    ['not an object', [1, 2], /\$: a plan file is a JSON object/],
  ];
  const before = await catalogSnapshot();
  for (const [what, doc, message] of cases) {
    const err = await rejectsWith(inst.tenantry.plans.apply(doc), 'INVALID_PLANS', message);
    assert.equal(err.status, 400, what);
    await rejectsWith(inst.tenantry.plans.diff(doc), 'INVALID_PLANS', message);
  }
  // text: broken JSON names its line, and 10 MB is refused before it is parsed
  const broken = '{\n  "metrics": [],\n  "tiers": [\n    { "name": "free", }\n  ]\n}\n';
  await rejectsWith(inst.tenantry.plans.apply(broken), 'INVALID_PLANS', /not valid JSON at line 4/);
  const huge = JSON.stringify({ ...h, padding: 'x'.repeat(10 * 1024 * 1024) });
  assert.throws(() => parsePlansText(huge), { code: 'INVALID_PLANS', message: /is 10\.0 MiB; the limit is 1 MiB/ });
  // through the library, the shared check of every call's text (1 MiB per string) may refuse it first
  await assert.rejects(async () => inst.tenantry.plans.apply(huge), (err: { code?: string; message?: string }) => ['INVALID_PLANS', 'INVALID_INPUT'].includes(err.code!) && /1 MiB|1048576/.test(err.message!));
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-plans-'));
  try {
    const file = path.join(dir, 'tenantry.plans.json');
    writeFileSync(file, huge);
    await rejectsWith(inst.tenantry.plans.apply({ file }), 'INVALID_PLANS', /tenantry\.plans\.json is 10\.0 MiB/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(await catalogSnapshot(), before, 'nothing applied');
  assert.deepEqual(inst.tenantry.plans.current(), BUILTIN_PLANS);
});

// ---- diff and apply ----

test('apply refuses to strand tenants (PLAN_TIER_IN_USE) or their usage (PLAN_METRIC_HAS_USAGE), changing nothing; --move-tenants and --drop-history let it through', async () => {
  const p = inst.tenantry.plans;
  const onCustom = await inst.tenantry.tenants.create({ slug: slug(), tier: 'custom' });
  const onCustom2 = await inst.tenantry.tenants.create({ slug: slug(), tier: 'custom' });
  const onFree = await inst.tenantry.tenants.create({ slug: slug() });
  const hackathon = example('hackathon-platform');

  // the diff shows it all, and changes nothing
  const before = await catalogSnapshot();
  const d = await p.diff(hackathon);
  assert.equal(d.identical, false);
  assert.ok(d.changes.some((c) => c.change === 'tier.removed' && c.target === 'tier:custom'));
  assert.ok(d.changes.some((c) => c.change === 'metric.added' && c.target === 'metric:participants'));
  assert.ok(d.changes.some((c) => c.change === 'metric.removed' && c.target === 'metric:agents'));
  assert.ok(d.changes.some((c) => c.change === 'limit.lowered' && c.target === 'tier:free/storage_bytes') === false, 'removed metrics are not also limit changes');
  assert.deepEqual(d.refusals.map((r) => [r.code, r.target, r.tenants]), [['PLAN_TIER_IN_USE', 'tier:custom', 2]]);
  assert.ok(d.tenantsAffected >= 3, 'every tenant: the metrics change');
  assert.equal(await catalogSnapshot(), before);

  // a tier tenants are on
  const e1 = await rejectsWith(p.apply(hackathon), 'PLAN_TIER_IN_USE', /Tier custom is removed but 2 tenant\(s\) are on it; .*--move-tenants.*Nothing was changed/);
  assert.equal(e1.status, 409);
  assert.equal(await catalogSnapshot(), before, 'refused: nothing changed');

  // a metric with recorded usage
  await inst.tenantry.quotas.increment(onFree.id, 'agents', 3);
  const withUsage = await catalogSnapshot();
  const d2 = await p.diff(hackathon, { moveTenants: 'enterprise' });
  assert.deepEqual(d2.refusals.map((r) => [r.code, r.target, r.tenants]), [['PLAN_METRIC_HAS_USAGE', 'metric:agents', 1]]);
  await rejectsWith(p.apply(hackathon, { moveTenants: 'enterprise' }), 'PLAN_METRIC_HAS_USAGE', /Metric agents is removed but 1 tenant\(s\) have recorded usage.*--drop-history/);
  assert.equal(await catalogSnapshot(), withUsage, 'refused: nothing changed');
  // and a move target that the new plans do not declare
  await rejectsWith(p.apply(hackathon, { moveTenants: 'custom', dropHistory: true }), 'INVALID_TIER', /not a tier of the new plans/);
  assert.equal(await catalogSnapshot(), withUsage);

  // told where the tenants go and that the history may go: applied, in one transaction
  const applied = await p.apply(hackathon, { moveTenants: 'enterprise', dropHistory: true }, { actor: 'operator:test' });
  assert.deepEqual(applied.moves.map((m) => [m.slug, m.from, m.to]).sort(), [[onCustom.slug, 'custom', 'enterprise'], [onCustom2.slug, 'custom', 'enterprise']].sort());
  assert.equal((await inst.tenantry.tenants.get(onCustom.id)).tier, 'enterprise');
  assert.equal((await inst.tenantry.tenants.get(onCustom2.id)).tier, 'enterprise');
  const moved = await auditOf('tenant.tier_changed');
  assert.deepEqual(moved.map((m) => m.tenant_id).sort(), [onCustom.id, onCustom2.id].sort(), 'each moved tenant audited on its own chain');
  assert.deepEqual(moved[0]!.details, { from: 'custom', to: 'enterprise', reason: 'plans.apply: the tier was removed' });
  const [entry] = await auditOf('plans.applied');
  assert.ok(entry, 'plans.applied audited');
  assert.equal(entry.tenant_id, null);
  assert.deepEqual((entry.details as { droppedHistory: string[] }).droppedHistory.includes('agents'), true);
  const [n] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.usage_daily where metric = 'agents'`;
  assert.equal(n!.n, 0, 'the dropped metric\'s history is gone');
  assert.deepEqual(inst.tenantry.plans.current(), validatePlans(hackathon));
  assert.deepEqual((await inst.tenantry.quotas.listTiers()).map((t) => t.name), ['free', 'starter', 'professional', 'enterprise']);
  // the audit chains still verify
  assert.equal((await inst.tenantry.verifyAudit(onCustom.id)).ok, true);
  // the old metrics are gone from metering, the new ones are there
  await rejectsWith(inst.tenantry.quotas.increment(onFree.id, 'agents', 1), 'INVALID_INPUT', /Unknown metric "agents"; use one of events, participants/);
  assert.equal((await inst.tenantry.quotas.increment(onFree.id, 'participants', 50)).used, 50);
  await rejectsWith(inst.tenantry.quotas.increment(onFree.id, 'participants', 1), 'QUOTA_EXCEEDED', /participants/);
  // applying the same file again is a no-op diff
  assert.equal((await p.diff(hackathon)).identical, true);
});

test('a tier renamed through --move-tenants: every tenant moves, each audited, and their usage stays', async () => {
  const p = inst.tenantry.plans;
  const plan = clone(example('hackathon-platform')) as Json;
  const tenants = await Promise.all([1, 2, 3].map(() => inst.tenantry.tenants.create({ slug: slug(), tier: 'starter' })));
  await inst.tenantry.quotas.increment(tenants[0]!.id, 'participants', 120);
  plan.tiers[1].name = 'growth';
  const before = await catalogSnapshot();
  await rejectsWith(p.apply(plan), 'PLAN_TIER_IN_USE', /Tier starter is removed but 3 tenant/);
  assert.equal(await catalogSnapshot(), before);
  const auditBefore = (await auditOf('tenant.tier_changed')).length;
  const r = await p.apply(plan, { moveTenants: 'growth' });
  assert.equal(r.moves.length, 3);
  for (const t of tenants) assert.equal((await inst.tenantry.tenants.get(t.id)).tier, 'growth');
  const audits = (await auditOf('tenant.tier_changed')).slice(auditBefore);
  assert.deepEqual(audits.map((a) => a.tenant_id).sort(), tenants.map((t) => t.id).sort());
  for (const a of audits) assert.deepEqual(a.details, { from: 'starter', to: 'growth', reason: 'plans.apply: the tier was removed' });
  const s = await inst.tenantry.quotas.summary(tenants[0]!.id);
  assert.equal(s.tier, 'growth');
  assert.equal(s.metrics.find((m) => m.metric === 'participants')!.used, 120, 'usage kept');
  await rejectsWith(inst.tenantry.tenants.create({ slug: slug(), tier: 'starter' }), 'INVALID_TIER', /use one of free, growth, professional, enterprise/);
  // back to the example for the tests that follow
  await p.apply(example('hackathon-platform'), { moveTenants: 'starter' });
});

test('a lowered limit never deletes: the tenant is over quota, its debits are refused, summary() says so, and quota.exceeded_by_change names it', async () => {
  const p = inst.tenantry.plans;
  const q = inst.tenantry.quotas;
  const t = await inst.tenantry.tenants.create({ slug: slug(), tier: 'professional' });
  const fine = await inst.tenantry.tenants.create({ slug: slug(), tier: 'professional' });
  await q.increment(t.id, 'events', 15);
  await q.increment(fine.id, 'events', 2);
  const lowered = clone(example('hackathon-platform')) as Json;
  lowered.tiers[2].limits.events = 10;
  const d = await p.diff(lowered);
  assert.deepEqual(d.changes, [{ change: 'limit.lowered', target: 'tier:professional/events', from: 20, to: 10 }]);
  assert.deepEqual(d.overLimit.map((o) => [o.slug, o.metric, o.used, o.limit]), [[t.slug, 'events', 15, 10]]);
  assert.equal((await q.summary(t.id)).overQuota, false, 'a diff changes nothing');

  await p.apply(lowered, {}, { actor: 'operator:test' });
  const s = await q.summary(t.id);
  const line = s.metrics.find((m) => m.metric === 'events')!;
  assert.equal(line.used, 15, 'nothing deleted');
  assert.equal(line.limit, 10);
  assert.equal(s.overQuota, true);
  assert.deepEqual(s.overLimit, ['events']);
  assert.equal((await q.summary(fine.id)).overQuota, false);
  await rejectsWith(q.increment(t.id, 'events', 1), 'QUOTA_EXCEEDED', /15 used of 10/);
  // going down is allowed, and once under the limit debits resume
  await q.decrement(t.id, 'events', 6);
  assert.equal((await q.increment(t.id, 'events', 1)).used, 10);
  const entries = await auditOf('quota.exceeded_by_change');
  const last = entries[entries.length - 1]!;
  assert.equal(last.tenant_id, null);
  assert.deepEqual((last.details as { tenants: { slug: string; metric: string; used: number; limit: number }[] }).tenants.map((x) => [x.slug, x.metric, x.used, x.limit]), [[t.slug, 'events', 15, 10]]);
  await p.apply(example('hackathon-platform'));
});

test('updateTier below a tenant\'s usage: nothing deleted, quota.exceeded_by_change names it, and the plans in force show the new limit', async () => {
  const q = inst.tenantry.quotas;
  const t = await inst.tenantry.tenants.create({ slug: slug(), tier: 'enterprise' });
  await q.increment(t.id, 'admins', 30);
  await q.updateTier('enterprise', { quotas: { admins: 20 } }, { actor: 'operator:test' });
  try {
    assert.equal(inst.tenantry.plans.current().tiers.find((x) => x.name === 'enterprise')!.limits.admins, 20);
    const s = await q.summary(t.id);
    assert.deepEqual(s.overLimit, ['admins']);
    assert.equal(s.metrics.find((m) => m.metric === 'admins')!.used, 30);
    await rejectsWith(q.increment(t.id, 'admins', 1), 'QUOTA_EXCEEDED');
    const entries = await auditOf('quota.exceeded_by_change');
    const last = entries[entries.length - 1]!;
    assert.deepEqual((last.details as { tenants: { tenantId: string; metric: string; used: number; limit: number }[] }).tenants.map((x) => [x.tenantId, x.metric, x.used, x.limit]), [[t.id, 'admins', 30, 20]]);
  } finally {
    await q.updateTier('enterprise', { quotas: { admins: 50 } });
  }
  assert.equal((await inst.tenantry.plans.diff(example('hackathon-platform'))).identical, true);
});

test('a tenant downgraded below its usage keeps everything, is over quota, and quota.exceeded_by_change on its chain names the metrics', async () => {
  const q = inst.tenantry.quotas;
  const t = await inst.tenantry.tenants.create({ slug: slug(), tier: 'professional' });
  await q.increment(t.id, 'participants', 600);
  await q.increment(t.id, 'events', 3);
  await inst.tenantry.tenants.update(t.id, { tier: 'starter' }, { actor: 'operator:test' });
  const s = await q.summary(t.id);
  assert.deepEqual(s.overLimit, ['participants']);
  assert.equal(s.metrics.find((m) => m.metric === 'participants')!.used, 600, 'nothing deleted');
  await rejectsWith(q.increment(t.id, 'participants', 1), 'QUOTA_EXCEEDED', /600 used of 200/);
  assert.equal((await q.increment(t.id, 'events', 1)).used, 4, 'metrics under their limit still debit');
  const [entry] = await inst.su<{ details: { tenants: { metric: string; used: number; limit: number }[]; reason: string } }[]>`
    select details from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'quota.exceeded_by_change'`;
  assert.deepEqual(entry!.details.tenants.map((x) => [x.metric, x.used, x.limit]), [['participants', 600, 200]]);
  assert.equal(entry!.details.reason, 'tier professional -> starter');
  assert.equal((await inst.tenantry.verifyAudit(t.id)).ok, true);
});

test('500 concurrent debits of an app-defined count metric against a limit of 100: exactly 100 succeed', { timeout: 60_000 }, async () => {
  const q = inst.tenantry.quotas;
  const t = await inst.tenantry.tenants.create({ slug: slug(), tier: 'professional' });
  await q.setOverrides(t.id, { participants: 100 });
  const results = await Promise.allSettled(Array.from({ length: 500 }, () => q.increment(t.id, 'participants', 1)));
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  assert.equal(ok, 100);
  for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code: string }).code, 'QUOTA_EXCEEDED');
  const [c] = await inst.su<{ used: string }[]>`select used from tenantry_catalog.usage_counters where tenant_id = ${t.id} and metric = 'participants'`;
  assert.equal(Number(c!.used), 100);
});

test('opening Tenantry with a plan file that differs reports it and applies nothing; another process\'s apply is picked up', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-plans-'));
  const file = path.join(dir, 'tenantry.plans.json');
  const changed = clone(example('hackathon-platform')) as Json;
  changed.tiers[0].limits.participants = 75;
  writeFileSync(file, JSON.stringify(changed, null, 2));
  const before = await catalogSnapshot();
  const other = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 8, plans: file });
  try {
    const st = other.plans.status()!;
    assert.equal(st.path, file);
    assert.equal(st.differs, true);
    assert.deepEqual(st.changes, [{ change: 'limit.raised', target: 'tier:free/participants', from: 50, to: 75 }]);
    assert.equal(await catalogSnapshot(), before, 'not applied');
    assert.equal(other.plans.current().tiers[0]!.limits.participants, 50, 'the catalog\'s plans are in force');
    // applied from the file (as `tenantry plans apply` does): the status clears, and this process hears of it
    await other.plans.apply({ file });
    assert.equal(other.plans.status()!.differs, false);
    for (let i = 0; i < 50 && inst.tenantry.plans.current().tiers[0]!.limits.participants !== 75; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(inst.tenantry.plans.current().tiers[0]!.limits.participants, 75, 'NOTIFY tenantry_plans_changed reloads other processes');
    // a broken file at open is a clear error, not a silent fallback
    writeFileSync(file, '{ "tiers": [ }');
    await rejectsWith(Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 8, plans: file }), 'INVALID_PLANS', /not valid JSON at line 1/);
  } finally {
    await other.close();
    rmSync(dir, { recursive: true, force: true });
  }
  await inst.tenantry.plans.apply(example('hackathon-platform'));
});

test('plans types: the generated .d.ts makes increment(tenant, "participants", 1) type-check and a misspelt metric fail (tsc)', { timeout: 400_000 }, async () => {
  const dts = inst.tenantry.plans.types(example('hackathon-platform'), 'examples/plans/hackathon-platform.json');
  assert.match(dts, /debitMetric: "events" \| "participants" \| "admins" \| "emails";/);
  assert.match(dts, /tier: "free" \| "starter" \| "professional" \| "enterprise";/);
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-plans-types-'));
  try {
    writeFileSync(path.join(dir, 'tenantry-plans.d.ts'), dts);
    writeFileSync(path.join(dir, 'use.ts'), [
      `import type { Tenantry } from 'tenantry';`,
      `export async function good(t: Tenantry): Promise<void> {`,
      `  await t.quotas.increment('acme', 'participants', 1);`,
      `  await t.quotas.decrement('acme', 'events', 1);`,
      `  await t.quotas.acquireLease('acme', 'judging_sessions');`,
      `  await t.tenants.create({ slug: 'acme', tier: 'starter' });`,
      `}`,
      `export async function typo(t: Tenantry): Promise<void> {`,
      `  await t.quotas.increment('acme', 'partcipants', 1);`,
      `}`,
      `export async function leaseIsNotDebited(t: Tenantry): Promise<void> {`,
      `  await t.quotas.increment('acme', 'judging_sessions', 1);`,
      `}`,
      ``,
    ].join('\n'));
    writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2023'], types: ['node'], strict: true,
        noEmit: true, skipLibCheck: true, paths: { tenantry: [path.join(ROOT, 'src', 'index.ts')] }, typeRoots: [path.join(ROOT, 'node_modules', '@types')],
      },
      files: ['use.ts', 'tenantry-plans.d.ts'],
    }));
    const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', dir], { encoding: 'utf8', timeout: 390_000 });
    const errors = r.stdout.split('\n').filter((l) => l.includes('use.ts('));
    assert.equal(errors.length, 2, r.stdout + r.stderr);
    assert.match(errors[0]!, /use\.ts\(9,\d+\): error TS2345: Argument of type '"partcipants"'/);
    assert.match(errors[1]!, /use\.ts\(12,\d+\): error TS2345: Argument of type '"judging_sessions"'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI: plans diff (exit 4 on a refusal), plans apply refused then --move-tenants, plans show, plans types', { timeout: 900_000 }, async () => {
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, LOG_LEVEL: 'silent' };
    for (const k of ['NODE_TEST_CONTEXT', 'TENANTRY_ADMIN_KEY', 'TENANTRY_PLANS']) delete env[k];
    // each run starts a process that compiles the CLI and opens Tenantry: slow on a loaded machine
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 150_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-plans-cli-'));
  try {
    const onStarter = await inst.tenantry.tenants.create({ slug: slug(), tier: 'starter' });
    const renamed = clone(example('hackathon-platform')) as Json;
    renamed.tiers[1].name = 'growth';
    const file = path.join(dir, 'tenantry.plans.json');
    writeFileSync(file, JSON.stringify(renamed, null, 2));
    const before = await catalogSnapshot();

    const diff = run(['plans', 'diff', file, '--json']);
    assert.equal(diff.code, 4, diff.stderr);
    const d = JSON.parse(diff.stdout) as { refusals: { code: string }[]; changes: { change: string; target: string }[] };
    assert.deepEqual(d.refusals.map((r) => r.code), ['PLAN_TIER_IN_USE']);
    assert.ok(d.changes.some((c) => c.change === 'tier.added' && c.target === 'tier:growth'));
    const human = run(['plans', 'diff', file]);
    assert.match(human.stdout, /REFUSED:\n {2}PLAN_TIER_IN_USE: Tier starter is removed/);

    const refused = run(['plans', 'apply', file]);
    assert.equal(refused.code, 4, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /PLAN_TIER_IN_USE|Tier starter is removed/);
    assert.equal(await catalogSnapshot(), before, 'refused by the CLI: nothing changed');

    const applied = run(['plans', 'apply', file, '--move-tenants', 'growth']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    assert.match(applied.stdout, /applied\./);
    assert.equal((await inst.tenantry.tenants.get(onStarter.id)).tier, 'growth');

    const show = run(['plans', 'show']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^TIER +EVENTS +PARTICIPANTS +STORAGE +ADMINS +JUDGING_SESSIONS +EMAILS +RATE_LIMIT +RETENTION_DAYS +FEATURES$/m);
    assert.match(show.stdout, /^growth +5 +200 +5 +3 +5 +1000 +300 +90 +custom_branding,analytics$/m);

    const types = run(['plans', 'types', file, '--out', '-']);
    assert.equal(types.code, 0, types.stderr);
    assert.match(types.stdout, /tier: "free" \| "growth" \| "professional" \| "enterprise";/);
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ tiers: [{ name: 'x', limits: { nope: 1 }, rateLimit: 1, retentionDays: 1 }] }));
    const badRun = run(['plans', 'types', bad, '--out', '-']);
    assert.equal(badRun.code, 2, 'a bad plan file is a usage error');
    assert.match(badRun.stderr, /\$\.tiers\[0\]\.limits\.nope: unknown metric/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await inst.tenantry.plans.apply(example('hackathon-platform'), { moveTenants: 'starter' });
});

test('parsePlansText and validatePlans fill in defaults: scale 1, quota = name, lease TTL 300, app gauges, the first tier as default', () => {
  const p = parsePlansText(JSON.stringify({
    metrics: [{ name: 'seats', kind: 'count' }, { name: 'slots', kind: 'lease' }, { name: 'gb', kind: 'gauge' }],
    tiers: [{ name: 'solo', limits: { seats: 1, slots: 'unlimited', gb: 2 }, rateLimit: 10, retentionDays: 7 }],
  }));
  assert.deepEqual(p.metrics.map((m) => [m.name, m.quota, m.scale, m.ttlSeconds, m.source, m.unit]), [
    ['seats', 'seats', 1, null, null, 'seats'], ['slots', 'slots', 1, 300, null, 'slots'], ['gb', 'gb', 1, null, 'app', 'gb'],
  ]);
  assert.equal(p.tiers[0]!.default, true);
  assert.equal(p.tiers[0]!.limits.slots, null, 'unlimited');
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
