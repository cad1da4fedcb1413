import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { isTenantryError, TIERS, type Isolation, type Tenant, type Tier } from '../src/index.js';
import { rejectsWith } from './helpers/assertions.js';

/**
 * Tiers and quotas, the three metered kinds (counts, windowed rates, leases), idempotent debits,
 * concurrency (invariant 7: concurrent increments never overshoot), usage summary, history and its
 * exports, storage measured from PostgreSQL, and feature flags.
 */

let inst: TestInstallation;
before(async () => { inst = await freshInstallation(); });
after(async () => { await inst?.cleanup(); });


/** Concurrency tests fail rather than hang when a change makes them deadlock (e.g. on the pool). */
const CONCURRENT = { timeout: 60_000 };

let seq = 0;
async function tenant(tier: Tier = 'starter', isolation: Isolation = 'pooled'): Promise<Tenant> {
  return inst.tenantry.tenants.create({ slug: `q-${process.pid}-${++seq}`, tier, isolation });
}

async function counter(tenantId: string, metric: string): Promise<{ used: number; window_start: Date | null } | undefined> {
  const [r] = await inst.su<{ used: string; window_start: Date | null }[]>`
    select used, window_start from tenantry_catalog.usage_counters where tenant_id = ${tenantId} and metric = ${metric}`;
  return r ? { used: Number(r.used), window_start: r.window_start } : undefined;
}

async function daily(tenantId: string, metric: string): Promise<number> {
  const [r] = await inst.su<{ n: string }[]>`
    select coalesce(sum(amount), 0)::bigint as n from tenantry_catalog.usage_daily where tenant_id = ${tenantId} and metric = ${metric}`;
  return Number(r!.n);
}

/** Waits out the last seconds of a minute, so that a per-minute window stays put for a few seconds. */
async function awayFromMinuteEnd(): Promise<void> {
  const [r] = await inst.su<{ s: number }[]>`select extract(second from now())::float8 as s`;
  if (r!.s > 55) await sleep((60.2 - r!.s) * 1000);
}

async function auditActions(tenantId: string | null): Promise<string[]> {
  const rows = await inst.su<{ action: string }[]>`
    select action from tenantry_catalog.audit_log where tenant_id is not distinct from ${tenantId}::uuid order by chain_seq`;
  return rows.map((r) => r.action);
}

const DEFAULTS = {
  free: { max_agents: 10, max_users: 1, api_calls_per_minute: 100, storage_gb: 1, llm_tokens_per_day: 10_000, max_concurrent_agents: 2, data_retention_days: 30 },
  starter: { max_agents: 100, max_users: 10, api_calls_per_minute: 1000, storage_gb: 10, llm_tokens_per_day: 100_000, max_concurrent_agents: 10, data_retention_days: 90 },
  professional: { max_agents: 1000, max_users: 100, api_calls_per_minute: 10_000, storage_gb: 100, llm_tokens_per_day: 1_000_000, max_concurrent_agents: 50, data_retention_days: 365 },
  enterprise: { max_agents: 10_000, max_users: 1000, api_calls_per_minute: 100_000, storage_gb: 10_000, llm_tokens_per_day: 10_000_000, max_concurrent_agents: 500, data_retention_days: 1825 },
  custom: { max_agents: 50_000, max_users: 10_000, api_calls_per_minute: 100_000, storage_gb: 100_000, llm_tokens_per_day: 100_000_000, max_concurrent_agents: 1000, data_retention_days: 3650 },
} as const;

// ---- tiers and quotas ----

test('the five tiers are seeded with their default quotas, in order', async () => {
  const tiers = await inst.tenantry.quotas.listTiers();
  assert.deepEqual(tiers.map((t) => t.name), [...TIERS]);
  for (const t of tiers) assert.deepEqual(t.quotas, DEFAULTS[t.name], `quotas of ${t.name}`);
  // and a tenant of each tier (named in any case) gets exactly those limits
  for (const name of TIERS) {
    const t = await tenant(name.toUpperCase() as Tier);
    assert.equal(t.tier, name);
    const eff = await inst.tenantry.quotas.effectiveQuotas(t.id);
    for (const [quota, limit] of Object.entries(DEFAULTS[name])) {
      assert.deepEqual(eff[quota as keyof typeof eff], { limit, source: 'tier' }, `${name}.${quota}`);
    }
  }
});

test('a tier is editable: its tenants get the new limit, and the edit is audited on the installation chain', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('custom');
  const other = await tenant('enterprise');
  try {
    const edited = await q.updateTier('CUSTOM', { quotas: { max_agents: 12_345 } }, { actor: 'operator:test' });
    assert.equal(edited.quotas.max_agents, 12_345);
    assert.equal(edited.quotas.max_users, DEFAULTS.custom.max_users, 'quotas are merged, the others kept');
    assert.equal((await q.effectiveQuotas(t.id)).max_agents.limit, 12_345);
    assert.equal((await q.effectiveQuotas(other.id)).max_agents.limit, DEFAULTS.enterprise.max_agents, 'other tiers untouched');
    // and debits are held against the new limit
    await q.setOverrides(t.id, { max_agents: null });
    await q.updateTier('custom', { quotas: { max_agents: 2 } });
    await q.increment(t.id, 'agents', 2);
    await rejectsWith(q.increment(t.id, 'agents', 1), 'QUOTA_EXCEEDED');
    await q.updateTier('custom', { quotas: { max_agents: 3 } });
    assert.equal((await q.increment(t.id, 'agents', 1)).used, 3);

    const [entry] = await inst.su<{ actor: string; target: string; details: { quotas: Record<string, number> } }[]>`
      select actor, target, details from tenantry_catalog.audit_log
      where tenant_id is null and action = 'tier.updated' and details -> 'quotas' ->> 'max_agents' = '12345'`;
    assert.ok(entry, 'tier.updated audited');
    assert.equal(entry.actor, 'operator:test');
    assert.equal(entry.target, 'tier:custom');

    await rejectsWith(q.updateTier('platinum', { quotas: { max_agents: 1 } }), 'INVALID_TIER');
    await rejectsWith(q.updateTier('custom', { quotas: { max_agents: -1 } }), 'INVALID_INPUT');
    await rejectsWith(q.updateTier('custom', { quotas: { bogus: 1 } }), 'INVALID_INPUT');
  } finally {
    await q.updateTier('custom', { quotas: { max_agents: DEFAULTS.custom.max_agents } });
  }
  assert.deepEqual((await q.getTier('custom')).quotas, DEFAULTS.custom);
});

test('per-tenant overrides replace the tier limit; null removes them; both audited', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  const neighbour = await tenant('starter');
  const eff = await q.setOverrides(t.id, { max_agents: 7, storage_gb: 0 });
  assert.deepEqual(eff.max_agents, { limit: 7, source: 'override' });
  assert.deepEqual(eff.storage_gb, { limit: 0, source: 'override' });
  assert.deepEqual(eff.max_users, { limit: 10, source: 'tier' });
  assert.deepEqual((await q.effectiveQuotas(neighbour.id)).max_agents, { limit: 100, source: 'tier' }, 'only this tenant');

  await q.increment(t.id, 'agents', 7);
  await rejectsWith(q.increment(t.id, 'agents', 1), 'QUOTA_EXCEEDED');

  const back = await q.setOverrides(t.slug, { max_agents: null });
  assert.deepEqual(back.max_agents, { limit: 100, source: 'tier' });
  assert.deepEqual(back.storage_gb, { limit: 0, source: 'override' }, 'other overrides kept');
  assert.equal((await q.increment(t.id, 'agents', 1)).used, 8);

  const rows = await inst.su<{ details: { overrides: Record<string, number | null> } }[]>`
    select details from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'quota.overrides_set' order by chain_seq`;
  assert.deepEqual(rows.map((r) => r.details.overrides), [{ max_agents: 7, storage_gb: 0 }, { max_agents: null }]);

  await rejectsWith(q.setOverrides(t.id, { not_a_quota: 1 }), 'INVALID_INPUT');
  await rejectsWith(q.setOverrides(t.id, { max_agents: 1.5 }), 'INVALID_INPUT');
  await rejectsWith(q.setOverrides(t.id, {}), 'INVALID_INPUT');
  assert.equal((await q.effectiveQuotas(t.id)).max_agents.limit, 100, 'a refused change wrote nothing');
});

test('changing a tenant\'s tier changes its effective quotas, and is audited', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('free');
  assert.equal((await q.effectiveQuotas(t.id)).max_agents.limit, 10);
  await q.increment(t.id, 'agents', 10);
  await rejectsWith(q.increment(t.id, 'agents', 1), 'QUOTA_EXCEEDED');

  const up = await inst.tenantry.tenants.update(t.id, { tier: 'PROFESSIONAL' as never });
  assert.equal(up.tier, 'professional');
  const eff = await q.effectiveQuotas(t.id);
  for (const [quota, limit] of Object.entries(DEFAULTS.professional)) assert.equal(eff[quota as keyof typeof eff].limit, limit, quota);
  assert.equal((await q.increment(t.id, 'agents', 1)).used, 11, 'the higher tier admits the debit at once');
  assert.equal((await q.summary(t.id)).tier, 'professional');

  const [entry] = await inst.su<{ details: { changes: { tier?: { from: string; to: string } } } }[]>`
    select details from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'tenant.updated'`;
  assert.deepEqual(entry?.details.changes.tier, { from: 'free', to: 'professional' });

  await inst.tenantry.tenants.update(t.id, { tier: 'free' });
  await rejectsWith(q.increment(t.id, 'agents', 1), 'QUOTA_EXCEEDED');
});

// ---- counts ----

test('counts go up and down; a refused debit changes nothing', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('free'); // max_agents 10
  assert.deepEqual(await q.increment(t.id, 'agents', 4), { metric: 'agents', used: 4, limit: 10, replayed: false });
  assert.equal((await q.increment(t.slug, 'agents')).used, 5);
  assert.deepEqual(await q.decrement(t.id, 'agents', 2), { metric: 'agents', used: 3 });
  assert.equal((await q.increment(t.id, 'agents', 7)).used, 10);

  await assert.rejects(q.increment(t.id, 'agents', 1), (err: unknown) => {
    assert.ok(isTenantryError(err, 'QUOTA_EXCEEDED'), String(err));
    assert.equal(err.status, 429);
    assert.deepEqual(
      { used: err.details?.used, limit: err.details?.limit, requested: err.details?.requested, quota: err.details?.quota },
      { used: 10, limit: 10, requested: 1, quota: 'max_agents' },
    );
    return true;
  });
  assert.equal((await counter(t.id, 'agents'))?.used, 10, 'nothing debited');
  assert.equal(await daily(t.id, 'agents'), 4 + 1 + 7, 'history records only what was debited');

  await q.decrement(t.id, 'agents', 3);
  await rejectsWith(q.increment(t.id, 'agents', 4), 'QUOTA_EXCEEDED');
  assert.equal((await counter(t.id, 'agents'))?.used, 7, 'a too-large debit is refused whole, not partly applied');
  assert.equal((await q.increment(t.id, 'agents', 3)).used, 10);

  assert.equal((await q.decrement(t.id, 'agents', 50)).used, 0, 'never below zero');

  await rejectsWith(q.increment(t.id, 'agents', 0), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'agents', -1), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'agents', 1.5), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'no_such_metric', 1), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'concurrent_agents', 1), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'storage_bytes', 1), 'INVALID_INPUT');
  await rejectsWith(q.decrement(t.id, 'api_calls', 1), 'INVALID_INPUT');
  assert.equal((await counter(t.id, 'agents'))?.used, 0);
});

test('a suspended tenant cannot debit', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('free');
  await q.increment(t.id, 'agents', 1);
  await inst.tenantry.tenants.suspend(t.id, 'unpaid');
  await rejectsWith(q.increment(t.id, 'agents', 1), 'TENANT_SUSPENDED');
  assert.equal((await counter(t.id, 'agents'))?.used, 1);
});

test('500 concurrent count debits against a limit of 100: exactly 100 succeed', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  await q.setOverrides(t.id, { max_agents: 100 });
  // no counter row yet: the first debits also race to create it
  assert.equal(await counter(t.id, 'agents'), undefined);
  const results = await Promise.allSettled(Array.from({ length: 500 }, () => q.increment(t.id, 'agents', 1)));
  const ok = results.filter((r) => r.status === 'fulfilled');
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  for (const f of failed) {
    assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), `unexpected failure: ${String(f.reason)}`);
    // usage only rises in this test, so a true refusal reports the full 100 used
    assert.equal(f.reason.details?.used, 100, `a refusal while below the limit: ${f.reason.message}`);
  }
  assert.equal(ok.length, 100);
  assert.deepEqual(
    ok.map((r) => (r as PromiseFulfilledResult<{ used: number }>).value.used).sort((a, b) => a - b),
    Array.from({ length: 100 }, (_, i) => i + 1),
    'each success saw its own level',
  );
  assert.equal((await counter(t.id, 'agents'))?.used, 100);
  assert.equal(await daily(t.id, 'agents'), 100);
});

test('concurrent first debits within the limit are all admitted (the counter row is created under the race)', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  for (const metric of ['agents', 'llm_tokens'] as const) {
    const t = await tenant('starter');
    await q.setOverrides(t.id, { max_agents: 100, llm_tokens_per_day: 100 });
    assert.equal(await counter(t.id, metric), undefined);
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => q.increment(t.id, metric, 1)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.deepEqual(failed.map((f) => String(f.reason)), [], `${metric}: nothing refused below the limit`);
    assert.equal((await counter(t.id, metric))?.used, 40);
  }
});

// ---- windowed rates ----

test('windowed rates: refused within the window, and a new window restarts in the debit itself', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  await q.setOverrides(t.id, { api_calls_per_minute: 5, llm_tokens_per_day: 1000 });

  // per minute (started well clear of a minute's end, so the window cannot turn under the test)
  await awayFromMinuteEnd();
  assert.equal((await q.increment(t.id, 'api_calls', 5)).used, 5);
  await rejectsWith(q.increment(t.id, 'api_calls', 1), 'QUOTA_EXCEEDED');
  const c = await counter(t.id, 'api_calls');
  assert.equal(c?.used, 5);
  const [cur] = await inst.su<{ minute: Date }[]>`select date_trunc('minute', now()) as minute`;
  // the window is the current minute (unless the minute turned just now)
  assert.ok(Math.abs(c!.window_start!.getTime() - cur!.minute.getTime()) <= 60_000);
  await inst.su`update tenantry_catalog.usage_counters set window_start = window_start - interval '1 minute'
    where tenant_id = ${t.id} and metric = 'api_calls'`;
  assert.equal((await q.increment(t.id, 'api_calls', 2)).used, 2, 'the old window\'s usage is dropped');
  const after1 = await counter(t.id, 'api_calls');
  assert.ok(after1!.window_start!.getTime() > c!.window_start!.getTime() - 60_000, 'window_start moved to the current window');

  // per day
  assert.equal((await q.increment(t.id, 'llm_tokens', 600)).used, 600);
  await rejectsWith(q.increment(t.id, 'llm_tokens', 401), 'QUOTA_EXCEEDED');
  assert.equal((await q.increment(t.id, 'llm_tokens', 400)).used, 1000);
  await rejectsWith(q.increment(t.id, 'llm_tokens', 1), 'QUOTA_EXCEEDED');
  assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'llm_tokens')?.used, 1000);
  await inst.su`update tenantry_catalog.usage_counters set window_start = window_start - interval '1 day'
    where tenant_id = ${t.id} and metric = 'llm_tokens'`;
  assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'llm_tokens')?.used, 0, 'a past window counts as unused');
  assert.equal((await q.increment(t.id, 'llm_tokens', 250)).used, 250, 'used restarts at the amount');
  assert.equal((await counter(t.id, 'llm_tokens'))?.used, 250);
  const [today] = await inst.su<{ d: Date }[]>`select date_trunc('day', now()) as d`;
  assert.equal((await counter(t.id, 'llm_tokens'))?.window_start?.getTime(), today!.d.getTime());
  // a debit too large for a fresh window is refused too, and leaves the stale counter for the next debit
  await inst.su`update tenantry_catalog.usage_counters set window_start = window_start - interval '1 day'
    where tenant_id = ${t.id} and metric = 'llm_tokens'`;
  await rejectsWith(q.increment(t.id, 'llm_tokens', 1001), 'QUOTA_EXCEEDED');
  assert.equal((await q.increment(t.id, 'llm_tokens', 1000)).used, 1000);
});

test('500 concurrent windowed debits against a limit of 100: exactly 100 succeed', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  // llm_tokens: a daily window, so the window cannot turn during the test (short of midnight)
  await q.setOverrides(t.id, { llm_tokens_per_day: 100 });
  const results = await Promise.allSettled(Array.from({ length: 500 }, () => q.increment(t.id, 'llm_tokens', 1)));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  for (const f of failed) assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), `unexpected failure: ${String(f.reason)}`);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 100);
  assert.equal((await counter(t.id, 'llm_tokens'))?.used, 100);

  // and again right after a rollover: the stale window resets exactly once
  await inst.su`update tenantry_catalog.usage_counters set window_start = window_start - interval '1 day'
    where tenant_id = ${t.id} and metric = 'llm_tokens'`;
  const again = await Promise.allSettled(Array.from({ length: 300 }, () => q.increment(t.id, 'llm_tokens', 1)));
  for (const f of again.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
    assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), `unexpected failure: ${String(f.reason)}`);
  }
  assert.equal(again.filter((r) => r.status === 'fulfilled').length, 100);
  assert.equal((await counter(t.id, 'llm_tokens'))?.used, 100);
});

// ---- idempotency ----

test('the same idempotency key is applied once, also when retried concurrently', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  const first = await q.increment(t.id, 'agents', 3, { idempotencyKey: 'create-agent-1' });
  assert.deepEqual(first, { metric: 'agents', used: 3, limit: 100, replayed: false });
  const retry = await q.increment(t.id, 'agents', 3, { idempotencyKey: 'create-agent-1' });
  assert.deepEqual(retry, { metric: 'agents', used: 3, limit: 100, replayed: true });
  assert.equal((await counter(t.id, 'agents'))?.used, 3);
  await rejectsWith(q.increment(t.id, 'agents', 4, { idempotencyKey: 'create-agent-1' }), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'llm_tokens', 3, { idempotencyKey: 'create-agent-1' }), 'INVALID_INPUT');
  assert.equal((await counter(t.id, 'agents'))?.used, 3, 'a mismatched reuse debits nothing');

  // keys are per tenant
  const other = await tenant('starter');
  assert.equal((await q.increment(other.id, 'agents', 3, { idempotencyKey: 'create-agent-1' })).replayed, false);

  // 50 concurrent retries of one new key: applied once, every caller sees the same outcome
  const burst = await Promise.all(Array.from({ length: 50 }, () => q.increment(t.id, 'agents', 2, { idempotencyKey: 'create-agent-2' })));
  assert.equal(burst.filter((r) => !r.replayed).length, 1, 'exactly one applied');
  assert.ok(burst.every((r) => r.used === 5), `every caller sees used 5: ${JSON.stringify(burst.map((r) => r.used))}`);
  assert.equal((await counter(t.id, 'agents'))?.used, 5);
  assert.equal(await daily(t.id, 'agents'), 5);

  // a refused first attempt does not burn the key: the retry after the limit is raised applies
  await q.setOverrides(t.id, { max_agents: 5 });
  await rejectsWith(q.increment(t.id, 'agents', 1, { idempotencyKey: 'create-agent-3' }), 'QUOTA_EXCEEDED');
  const [claimed] = await inst.su<{ n: number }[]>`
    select count(*)::int as n from tenantry_catalog.usage_idempotency where tenant_id = ${t.id} and idempotency_key = 'create-agent-3'`;
  assert.equal(claimed!.n, 0, 'the refused debit left no idempotency record');
  await q.setOverrides(t.id, { max_agents: 6 });
  assert.deepEqual(await q.increment(t.id, 'agents', 1, { idempotencyKey: 'create-agent-3' }), { metric: 'agents', used: 6, limit: 6, replayed: false });

  await rejectsWith(q.increment(t.id, 'agents', 1, { idempotencyKey: '' }), 'INVALID_INPUT');
  await rejectsWith(q.increment(t.id, 'agents', 1, { idempotencyKey: 'x'.repeat(201) }), 'INVALID_INPUT');
});

test('concurrent idempotent debits with distinct keys against a limit still never overshoot', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  await q.setOverrides(t.id, { max_agents: 30 });
  // 100 requests, each retried 3 times concurrently
  const calls = Array.from({ length: 100 }, (_, i) => i).flatMap((i) => [0, 1, 2].map(() => q.increment(t.id, 'agents', 1, { idempotencyKey: `req-${i}` })));
  const results = await Promise.allSettled(calls);
  for (const f of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
    assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), `unexpected failure: ${String(f.reason)}`);
  }
  const applied = results.filter((r) => r.status === 'fulfilled' && !r.value.replayed).length;
  assert.equal(applied, 30);
  assert.equal((await counter(t.id, 'agents'))?.used, 30);
  const [keys] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.usage_idempotency where tenant_id = ${t.id}`;
  assert.equal(keys!.n, 30, 'one record per applied request');
});

// ---- leases ----

test('leases: slots up to the limit, release frees one, and a crashed holder\'s slot frees on expiry', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('free'); // max_concurrent_agents 2
  const a = await q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 60 });
  assert.equal(a.used, 1);
  assert.equal(a.limit, 2);
  assert.ok(a.expiresAt.getTime() > Date.now() + 50_000);
  const b = await q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 60 });
  assert.equal(b.used, 2);
  assert.notEqual(a.leaseId, b.leaseId);
  await rejectsWith(q.acquireLease(t.id, 'concurrent_agents'), 'QUOTA_EXCEEDED');
  assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'concurrent_agents')?.used, 2);

  assert.equal(await q.releaseLease(t.id, a.leaseId), true);
  assert.equal(await q.releaseLease(t.id, a.leaseId), false, 'released once');
  const c = await q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 1 });
  assert.equal(c.used, 2);
  await rejectsWith(q.acquireLease(t.id, 'concurrent_agents'), 'QUOTA_EXCEEDED');

  // c's holder "crashes": never releases; its slot frees when the lease expires
  await sleep(1200);
  assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'concurrent_agents')?.used, 1, 'an expired lease no longer counts');
  const d = await q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 60 });
  assert.equal(d.used, 2);
  assert.equal(await q.releaseLease(t.id, c.leaseId), false, 'an expired lease cannot be released');
  assert.equal(await q.renewLease(t.id, c.leaseId), false, 'nor renewed');
  assert.equal(await q.renewLease(t.id, b.leaseId, { ttlSeconds: 120 }), true);
  const [held] = await inst.su<{ n: number }[]>`
    select count(*)::int as n from tenantry_catalog.usage_leases where tenant_id = ${t.id} and expires_at > clock_timestamp()`;
  assert.equal(held!.n, 2);

  // a lease of another tenant cannot be released from here
  const other = await tenant('free');
  assert.equal(await q.releaseLease(other.id, d.leaseId), false);
  assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'concurrent_agents')?.used, 2);

  await rejectsWith(q.acquireLease(t.id, 'agents'), 'INVALID_INPUT');
  await rejectsWith(q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 0 }), 'INVALID_INPUT');
  await rejectsWith(q.releaseLease(t.id, 'not-a-lease'), 'INVALID_INPUT');
});

test('concurrent lease acquisitions never exceed the limit', CONCURRENT, async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  await q.setOverrides(t.id, { max_concurrent_agents: 7 });
  const results = await Promise.allSettled(Array.from({ length: 60 }, () => q.acquireLease(t.id, 'concurrent_agents', { ttlSeconds: 60 })));
  for (const f of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
    assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), `unexpected failure: ${String(f.reason)}`);
  }
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 7);
  const [held] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.usage_leases where tenant_id = ${t.id}`;
  assert.equal(held!.n, 7);
});

// ---- reporting ----

test('usage summary: used, limit and utilization per metric; at risk above 90%', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  await q.setOverrides(t.id, { max_agents: 10, llm_tokens_per_day: 1000 });
  await q.increment(t.id, 'agents', 9);
  await q.increment(t.id, 'llm_tokens', 250); // of 1000
  let s = await q.summary(t.id);
  assert.equal(s.tenantId, t.id);
  assert.equal(s.tier, 'starter');
  assert.deepEqual(s.metrics.map((m) => m.metric).sort(), ['agents', 'api_calls', 'concurrent_agents', 'llm_tokens', 'storage_bytes', 'users']);
  const line = (metric: string) => s.metrics.find((m) => m.metric === metric)!;
  assert.deepEqual({ ...line('agents') }, { metric: 'agents', kind: 'count', quota: 'max_agents', used: 9, limit: 10, utilization: 90, windowStart: null });
  assert.equal(line('llm_tokens').used, 250);
  assert.equal(line('llm_tokens').limit, 1000);
  assert.equal(line('llm_tokens').utilization, 25);
  assert.ok(line('llm_tokens').windowStart instanceof Date);
  assert.equal(line('api_calls').used, 0);
  assert.equal(line('api_calls').limit, 1000);
  assert.equal(line('users').used, 0);
  assert.equal(line('users').utilization, 0);
  assert.equal(line('storage_bytes').limit, 10 * 1_000_000_000, 'storage_gb in bytes');
  assert.equal(s.atRisk, false, 'exactly 90% is not yet at risk');

  await q.increment(t.id, 'agents', 1);
  s = await q.summary(t.id);
  assert.equal(line('agents').utilization, 100);
  assert.equal(s.atRisk, true);

  await q.decrement(t.id, 'agents', 5);
  s = await q.summary(t.id);
  assert.equal(line('agents').utilization, 50);
  assert.equal(s.atRisk, false);
  await q.increment(t.id, 'llm_tokens', 660); // 910 of 1000 = 91%
  s = await q.summary(t.id);
  assert.equal(line('llm_tokens').utilization, 91);
  assert.equal(s.atRisk, true, 'a windowed metric puts the tenant at risk too');
});

test('usage history per day and per month, exported as CSV and JSON', async () => {
  const q = inst.tenantry.quotas;
  const t = await tenant('starter');
  const other = await tenant('starter');
  await q.increment(t.id, 'agents', 3);
  await q.increment(t.id, 'agents', 2);
  await q.increment(t.id, 'llm_tokens', 700);
  await q.increment(other.id, 'agents', 1);
  // earlier days, as the debits of past days would have left them
  await inst.su`
    insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount) values
      (${t.id}, 'llm_tokens', '2024-01-15', 100), (${t.id}, 'llm_tokens', '2024-01-20', 50),
      (${t.id}, 'llm_tokens', '2024-02-01', 7)`;
  const [today] = await inst.su<{ day: string; month: string }[]>`select to_char(current_date, 'YYYY-MM-DD') as day, to_char(current_date, 'YYYY-MM') as month`;

  const days = await q.history({ tenant: t.slug });
  assert.deepEqual(days.map((r) => [r.period, r.metric, r.amount]), [
    ['2024-01-15', 'llm_tokens', 100], ['2024-01-20', 'llm_tokens', 50], ['2024-02-01', 'llm_tokens', 7],
    [today!.day, 'agents', 5], [today!.day, 'llm_tokens', 700],
  ]);
  assert.ok(days.every((r) => r.tenantId === t.id && r.slug === t.slug));

  const months = await q.history({ tenant: t.id, period: 'month', metric: 'llm_tokens' });
  assert.deepEqual(months.map((r) => [r.period, r.amount]), [['2024-01', 150], ['2024-02', 7], [today!.month, 700]]);
  const jan = await q.history({ tenant: t.id, from: new Date('2024-01-16T00:00:00Z'), to: new Date('2024-01-31T00:00:00Z') });
  assert.deepEqual(jan.map((r) => [r.period, r.amount]), [['2024-01-20', 50]]);

  const all = await q.history({ metric: 'agents' });
  assert.ok(all.some((r) => r.tenantId === other.id && r.amount === 1), 'without a tenant: every tenant');
  assert.ok(all.some((r) => r.tenantId === t.id && r.amount === 5));

  const csv = await q.exportHistory('csv', { tenant: t.id, period: 'month' });
  const lines = csv.trimEnd().split('\n');
  assert.equal(lines[0], 'period,tenant_id,slug,metric,amount');
  assert.deepEqual(lines.slice(1), [
    `2024-01,${t.id},${t.slug},llm_tokens,150`,
    `2024-02,${t.id},${t.slug},llm_tokens,7`,
    `${today!.month},${t.id},${t.slug},agents,5`,
    `${today!.month},${t.id},${t.slug},llm_tokens,700`,
  ]);
  const json = JSON.parse(await q.exportHistory('json', { tenant: t.id })) as unknown;
  assert.deepEqual(json, days);

  await rejectsWith(q.exportHistory('xml' as 'csv'), 'INVALID_INPUT');
  await rejectsWith(q.history({ period: 'week' as 'day' }), 'INVALID_INPUT');
  await rejectsWith(q.history({ from: new Date('nope') }), 'INVALID_INPUT');
});

for (const isolation of ['pooled', 'schema', 'database'] as const) {
  test(`${isolation}: storage is measured from PostgreSQL and grows with the tenant's rows`, async () => {
    const q = inst.tenantry.quotas;
    const t = await tenant('starter', isolation);
    const neighbour = await tenant('starter', isolation);
    const before0 = await q.refreshStorage(t.id);
    const neighbourBefore = await q.refreshStorage(neighbour.id);
    assert.ok(before0 >= 0);
    await inst.tenantry.withTenant(t.id, (sql) => sql`
      insert into agents (name, agent_type, config)
      select 'agent-' || g, 'calculator', jsonb_build_object('notes', repeat('x', 400)) from generate_series(1, 500) g`);
    const after0 = await q.refreshStorage(t.id);
    assert.ok(after0 > 0, `${isolation}: storage > 0`);
    assert.ok(after0 > before0 + 100_000, `${isolation}: 500 rows of ~500 bytes grow the figure (${before0} -> ${after0})`);
    assert.equal((await counter(t.id, 'storage_bytes'))?.used, after0, 'stored as storage_bytes');
    assert.equal((await q.summary(t.id)).metrics.find((m) => m.metric === 'storage_bytes')?.used, after0);
    if (isolation === 'pooled') {
      // pooled: only the tenant's own rows count
      assert.equal(await q.refreshStorage(neighbour.id), neighbourBefore, 'a neighbour\'s rows are not counted');
    }
  });
}

// ---- feature flags ----

test('feature flags: granted by tier, overridden per tenant, back to the tier with null; audited', async () => {
  const f = inst.tenantry.features;
  const t = await tenant('starter');
  assert.equal(await f.isEnabled(t.id, 'api_access'), true, 'starter grants api_access');
  assert.equal(await f.isEnabled(t.id, 'sql_access'), false, 'starter does not grant sql_access');
  assert.equal(await f.isEnabled(t.id, 'never_heard_of'), false);
  assert.deepEqual(await f.list(t.id), [{ feature: 'api_access', enabled: true, source: 'tier' }]);

  await f.set(t.id, 'sql_access', true);
  await f.set(t.id, 'api_access', false);
  assert.equal(await f.isEnabled(t.id, 'sql_access'), true, 'an override adds a feature');
  assert.equal(await f.isEnabled(t.id, 'api_access'), false, 'an override removes a tier feature');
  assert.deepEqual(await f.list(t.slug), [
    { feature: 'api_access', enabled: false, source: 'override' },
    { feature: 'sql_access', enabled: true, source: 'override' },
  ]);
  const other = await tenant('starter');
  assert.equal(await f.isEnabled(other.id, 'sql_access'), false, 'only this tenant');
  assert.equal(await f.isEnabled(other.id, 'api_access'), true);

  await f.set(t.id, 'api_access', null);
  assert.equal(await f.isEnabled(t.id, 'api_access'), true, 'null: back to the tier');

  // the tier decides for features without an override
  await inst.tenantry.tenants.update(t.id, { tier: 'enterprise' });
  assert.equal(await f.isEnabled(t.id, 'sso'), true);
  await inst.tenantry.tenants.update(t.id, { tier: 'free' });
  assert.equal(await f.isEnabled(t.id, 'sso'), false);
  assert.equal(await f.isEnabled(t.id, 'api_access'), false);
  assert.equal(await f.isEnabled(t.id, 'sql_access'), true, 'the override survives a tier change');

  // a tier's feature set is editable
  try {
    await inst.tenantry.quotas.updateTier('free', { features: ['api_access'] });
    assert.equal(await f.isEnabled(t.id, 'api_access'), true);
  } finally {
    await inst.tenantry.quotas.updateTier('free', { features: [] });
  }
  assert.equal(await f.isEnabled(t.id, 'api_access'), false);

  const entries = await inst.su<{ action: string; target: string; details: { feature: string; enabled: boolean | null } }[]>`
    select action, target, details from tenantry_catalog.audit_log
    where tenant_id = ${t.id} and action like 'feature.%' order by chain_seq`;
  assert.deepEqual(entries.map((e) => [e.action, e.target, e.details.enabled]), [
    ['feature.override_set', 'feature:sql_access', true],
    ['feature.override_set', 'feature:api_access', false],
    ['feature.override_removed', 'feature:api_access', null],
  ]);

  await rejectsWith(f.set(t.id, 'Bad Name', true), 'INVALID_INPUT');
  await rejectsWith(f.isEnabled(t.id, ''), 'INVALID_INPUT');
  await rejectsWith(f.set(t.id, 'sso', 'yes' as unknown as boolean), 'INVALID_INPUT');
  assert.equal(await f.isEnabled(t.id, 'sso'), false);
});

test('quota and tier changes leave audit entries', async () => {
  const t = await tenant('starter');
  await inst.tenantry.quotas.setOverrides(t.id, { max_users: 3 });
  await inst.tenantry.tenants.update(t.id, { tier: 'professional' });
  const actions = await auditActions(t.id);
  assert.ok(actions.includes('quota.overrides_set'));
  assert.ok(actions.includes('tenant.updated'));
  assert.ok((await auditActions(null)).includes('tier.updated'), 'tier edits on the installation chain');
});
