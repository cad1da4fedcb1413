/**
 * Tenants that run themselves (issue #13), each decision driven by moving the installation's clock:
 * trials that end, the purge grace period, a restore cancelling a purge, and retention deleting
 * exactly the rows past their limit in the opted-in tables of that tenant only.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';

const DAY = 86_400_000;
let inst: TestInstallation;
/** the installation's clock is real time plus this */
let offset = 0;

const migrations = mkdtempSync(path.join(os.tmpdir(), 'tenantry-retention-'));
writeFileSync(path.join(migrations, '0001_app.sql'), `
-- tenantry:retention table=events class=executions column=created_at
create table events (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  created_at timestamptz not null,
  primary key (tenant_id, id)
);
-- tenantry:retention table=notes class=user_data column=created_at
create table notes (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  created_at timestamptz not null,
  primary key (tenant_id, id)
);
-- not opted in: never purged
create table ledger (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  created_at timestamptz not null,
  primary key (tenant_id, id)
);
`);

before(async () => {
  inst = await freshInstallation({ clock: () => new Date(Date.now() + offset), tenantMigrations: migrations, retentionBatchSize: 2, trialEndingDays: 3 });
});
after(async () => { await inst?.cleanup(); });

const audits = async (tenantId: string, action: string): Promise<{ details: Record<string, unknown> }[]> =>
  inst.su<{ details: Record<string, unknown> }[]>`select details from tenantry_catalog.audit_log where tenant_id = ${tenantId} and action = ${action} order by id`;

test('a trial gets one trial.ending notice days before its end, then moves to the tier its plan names (trialOf)', async () => {
  offset = 0;
  await inst.su`update tenantry_catalog.tiers set trial_of = 'free' where name = 'starter'`;
  // an endpoint listens, so the events are written to the outbox with their change
  await inst.tenantry.webhooks.create({ url: 'http://127.0.0.1:9/unused', events: ['tenant.trial_ending', 'tenant.trial_ended'] });
  const t = await inst.tenantry.tenants.create({ slug: 'trial-down', name: 'Trial', tier: 'starter', trialDays: 10 });
  assert.equal(t.status, 'trial');
  await inst.tenantry.jobs.runNow('trial.lifecycle');
  assert.equal((await audits(t.id, 'tenant.trial_ending')).length, 0, 'not yet: 10 days left');
  offset = 8 * DAY;
  await inst.tenantry.jobs.runNow('trial.lifecycle');
  await inst.tenantry.jobs.runNow('trial.lifecycle');
  const notices = await audits(t.id, 'tenant.trial_ending');
  assert.equal(notices.length, 1, 'one notice per trial, however often the task runs');
  assert.equal(notices[0]!.details.daysLeft, 2);
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'trial');
  offset = 11 * DAY;
  const r = await inst.tenantry.jobs.runNow('trial.lifecycle') as { ended: number };
  assert.equal(r.ended, 1);
  const after = await inst.tenantry.tenants.get(t.id);
  assert.equal(after.status, 'active');
  assert.equal(after.tier, 'free');
  assert.equal(after.trialEndsAt, null);
  const ended = await audits(t.id, 'tenant.trial_ended');
  assert.equal(ended.length, 1);
  assert.deepEqual([ended[0]!.details.followUp, ended[0]!.details.fromTier, ended[0]!.details.toTier], ['downgrade', 'starter', 'free']);
  const events = await inst.su<{ type: string }[]>`select type from tenantry_catalog.webhook_events where tenant_id = ${t.id} order by seq`;
  assert.deepEqual(events.map((e) => e.type), ['tenant.trial_ending', 'tenant.trial_ended']);
  assert.ok((await inst.tenantry.verifyAudit(t.id)).ok);
});

test('a trial on a tier that names no follow-up is suspended with reason trial_ended, and its work refused', async () => {
  offset = 0;
  const t = await inst.tenantry.tenants.create({ slug: 'trial-stop', name: 'Trial', tier: 'enterprise', trialDays: 5 });
  offset = 6 * DAY;
  await inst.tenantry.jobs.runNow('trial.lifecycle');
  const s = await inst.tenantry.tenants.get(t.id);
  assert.equal(s.status, 'suspended');
  assert.equal(s.suspendedReason, 'trial_ended');
  await rejectsWith(inst.tenantry.query(t.id, 'select 1'), 'TENANT_SUSPENDED');
  assert.equal((await audits(t.id, 'tenant.trial_ended'))[0]!.details.followUp, 'suspend');
});

test('a soft-deleted tenant is purged once its grace period passes (30 days by default, per tier when set); --dry-run lists it first', async () => {
  offset = 0;
  const t = await inst.tenantry.tenants.create({ slug: 'grace-default', name: 'Grace', tier: 'free' });
  const e = await inst.tenantry.tenants.create({ slug: 'grace-enterprise', name: 'Grace', tier: 'enterprise' });
  await inst.tenantry.lifecycle.setPurgeGrace('enterprise', 3);
  await inst.tenantry.tenants.delete(t.id);
  await inst.tenantry.tenants.delete(e.id);
  offset = 2 * DAY;
  assert.deepEqual((await inst.tenantry.lifecycle.purge({ dryRun: true })).tenants.map((c) => c.slug), []);
  offset = 4 * DAY;
  assert.deepEqual((await inst.tenantry.lifecycle.purge({ dryRun: true })).tenants.map((c) => c.slug), ['grace-enterprise']);
  await inst.tenantry.jobs.runNow('tenants.purge');
  assert.equal(await inst.tenantry.tenants.find(e.id), undefined, 'the enterprise tenant is gone after its 3 days');
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'deleted', 'the free tenant waits its 30 days');
  offset = 29 * DAY;
  await inst.tenantry.jobs.runNow('tenants.purge');
  assert.ok(await inst.tenantry.tenants.find(t.id));
  offset = 31 * DAY;
  const due = await inst.tenantry.lifecycle.purge({ dryRun: true });
  assert.deepEqual(due.tenants.map((c) => [c.slug, c.graceDays]), [['grace-default', 30]]);
  assert.ok(await inst.tenantry.tenants.find(t.id), 'a dry run removes nothing');
  await inst.tenantry.jobs.runNow('tenants.purge');
  assert.equal(await inst.tenantry.tenants.find(t.id), undefined);
  const purged = await inst.su<{ action: string }[]>`select action from tenantry_catalog.audit_log where tenant_id = ${t.id} order by id desc limit 1`;
  assert.equal(purged[0]!.action, 'tenant.hard_deleted');
  assert.ok((await inst.tenantry.verifyAudit(t.id)).ok);
});

test('a restore cancels the purge: a restored tenant is never due, and a delete after it starts a new grace period', async () => {
  offset = 0;
  const t = await inst.tenantry.tenants.create({ slug: 'grace-restored', name: 'Restored', tier: 'free' });
  await inst.tenantry.tenants.delete(t.id);
  offset = 10 * DAY;
  await inst.tenantry.tenants.restore(t.id);
  offset = 40 * DAY;
  assert.equal((await inst.tenantry.lifecycle.purge({ dryRun: true })).tenants.some((c) => c.id === t.id), false);
  await inst.tenantry.jobs.runNow('tenants.purge');
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'active');
  // deleted again: due 30 days from this delete, not from the first one
  offset = 0;
  await inst.tenantry.tenants.delete(t.id);
  offset = 29 * DAY;
  assert.equal((await inst.tenantry.lifecycle.purge({ dryRun: true })).tenants.some((c) => c.id === t.id), false);
  // the purge's hard delete re-checks under the row lock: a tenant restored after it was listed stays
  offset = 31 * DAY;
  const listed = await inst.tenantry.lifecycle.purgeDue();
  assert.ok(listed.some((c) => c.id === t.id));
  await inst.tenantry.tenants.restore(t.id);
  await inst.tenantry.jobs.runNow('tenants.purge');
  assert.equal((await inst.tenantry.tenants.get(t.id)).status, 'active');
});

async function seed(tenantId: string): Promise<void> {
  const now = Date.now();
  await inst.tenantry.withTenant(tenantId, async (tx) => {
    for (const [table, ages] of [['events', [40, 40, 40, 40, 40, 10, 10, 10]], ['notes', [400, 400, 10, 10]], ['ledger', [1000, 1000]]] as const) {
      for (const age of ages) await tx.unsafe(`insert into ${table} (created_at) values ($1)`, [new Date(now - age * DAY)]);
    }
  });
}
const counts = async (tenantId: string): Promise<Record<string, number>> => inst.tenantry.withTenant(tenantId, async (tx) => {
  const [r] = await tx<{ events: string; notes: string; ledger: string }[]>`
    select (select count(*) from events) as events, (select count(*) from notes) as notes, (select count(*) from ledger) as ledger`;
  return { events: Number(r!.events), notes: Number(r!.notes), ledger: Number(r!.ledger) };
});

test('retention deletes exactly the rows past the limit, in the opted-in tables of that tenant only (pooled and schema)', async () => {
  offset = 0;
  const a = await inst.tenantry.tenants.create({ slug: 'ret-a', name: 'A', tier: 'free' });
  const b = await inst.tenantry.tenants.create({ slug: 'ret-b', name: 'B', tier: 'free', isolation: 'schema' });
  const c = await inst.tenantry.tenants.create({ slug: 'ret-c', name: 'C', tier: 'free' });
  for (const t of [a, b, c]) await seed(t.id);
  assert.deepEqual(inst.tenantry.retention.declarations.map((d) => [d.table, d.dataClass, d.column]), [['events', 'executions', 'created_at'], ['notes', 'user_data', 'created_at']]);
  // dry run: counts only
  const dry = await inst.tenantry.retention.purgeTenant(a.id, { dryRun: true });
  assert.deepEqual(dry.counts, { events: 5, notes: 0, audit_log: 0 });
  assert.deepEqual(await counts(a.id), { events: 8, notes: 4, ledger: 2 });
  // active on free: executions kept the tier's 30 days, user data kept while active
  const ra = await inst.tenantry.jobs.runNow('retention.tenant', { tenantId: a.id }) as { counts: Record<string, number> };
  assert.deepEqual(ra.counts, { events: 5, notes: 0, audit_log: 0 });
  assert.deepEqual(await counts(a.id), { events: 3, notes: 4, ledger: 2 });
  assert.deepEqual(await counts(b.id), { events: 8, notes: 4, ledger: 2 }, 'another tenant (schema mode) untouched');
  assert.deepEqual(await counts(c.id), { events: 8, notes: 4, ledger: 2 }, 'another tenant in the same shared tables untouched');
  const audited = await audits(a.id, 'retention.purged');
  assert.deepEqual((audited[0]!.details as { counts: Record<string, number> }).counts, { events: 5, notes: 0, audit_log: 0 });
  // suspended: user data kept a year, so the 400-day-old notes go too (schema mode, batches of 2)
  await inst.tenantry.tenants.suspend(b.id, 'unpaid');
  const rb = await inst.tenantry.retention.purgeTenant(b.id);
  assert.deepEqual(rb.counts, { events: 5, notes: 2, audit_log: 0 });
  await inst.tenantry.tenants.activate(b.id);
  assert.deepEqual(await counts(b.id), { events: 3, notes: 2, ledger: 2 });
  assert.deepEqual(await counts(c.id), { events: 8, notes: 4, ledger: 2 });
  // a second run finds nothing more
  assert.deepEqual((await inst.tenantry.retention.purgeTenant(a.id)).counts, { events: 0, notes: 0, audit_log: 0 });
});

test('the audit log follows its class: old entries purged through the one exception, and the chain still verifies from its anchor', async () => {
  offset = 0;
  const t = await inst.tenantry.tenants.create({ slug: 'ret-audit', name: 'Audit', tier: 'free' });
  for (let i = 0; i < 3; i++) { await inst.tenantry.tenants.suspend(t.id, `r${i}`); await inst.tenantry.tenants.activate(t.id); }
  const before = (await inst.tenantry.verifyAudit(t.id)).entries;
  assert.ok(before >= 7);
  offset = 8 * 365 * DAY; // past the 7 years an active tenant's trail is kept
  const dry = await inst.tenantry.retention.purgeTenant(t.id, { dryRun: true });
  assert.equal(dry.counts.audit_log, before - 1, 'all but the newest entry, which the chain continues from');
  const r = await inst.tenantry.retention.purgeTenant(t.id);
  assert.equal(r.counts.audit_log, before - 1);
  const v = await inst.tenantry.verifyAudit(t.id);
  assert.equal(v.ok, true, JSON.stringify(v));
  assert.equal(v.entries, 2, 'the kept entry and the retention.purged entry');
  // tampering is still caught after the purge: removing the anchored first entry is a gap
  await inst.su.begin(async (tx) => {
    await tx`alter table tenantry_catalog.audit_log disable trigger audit_log_no_update`;
    await tx`delete from tenantry_catalog.audit_log where tenant_id = ${t.id} and chain_seq = (select min(chain_seq) from tenantry_catalog.audit_log where tenant_id = ${t.id})`;
    await tx`alter table tenantry_catalog.audit_log enable trigger audit_log_no_update`;
  });
  assert.equal((await inst.tenantry.verifyAudit(t.id)).ok, false);
});

test('attack: the audit purge exception cannot be used directly to delete an entry (no DELETE privilege, middle entries refused)', async () => {
  const t = await inst.tenantry.tenants.create({ slug: 'ret-tamper', name: 'Tamper', tier: 'free' });
  await inst.tenantry.tenants.suspend(t.id, 'x');
  const admin = (await import('postgres')).default(inst.adminUrl, { onnotice: () => {}, max: 1 });
  try {
    await assert.rejects(admin.begin(async (tx) => {
      await tx`select set_config('tenantry.audit_purge', 'on', true)`;
      await tx`delete from tenantry_catalog.audit_log where tenant_id = ${t.id}`;
    }), (e: { code?: string }) => e.code === '42501');
    // even a role holding DELETE may only trim the oldest entries of a chain while the flag is on
    await assert.rejects(inst.su.begin(async (tx) => {
      await tx`select set_config('tenantry.audit_purge', 'on', true)`;
      await tx`delete from tenantry_catalog.audit_log where tenant_id = ${t.id} and chain_seq = 2`;
    }), /only the oldest entries/);
  } finally {
    await admin.end();
  }
  assert.ok((await inst.tenantry.verifyAudit(t.id)).ok);
});

test('expiry.purge removes expired idempotency records, leases and long-dead invitations, and nothing still live', async () => {
  offset = 0;
  const t = await inst.tenantry.tenants.create({ slug: 'expiry', name: 'Expiry', tier: 'enterprise' });
  await inst.su`insert into tenantry_catalog.http_idempotency (principal, idempotency_key, method, path, body_sha256, created_at)
                values ('operator', 'old', 'POST', '/v1/tenants', 'x', now() - interval '2 days'), ('operator', 'fresh', 'POST', '/v1/tenants', 'x', now())`;
  await inst.su`insert into tenantry_catalog.usage_leases (id, tenant_id, metric, expires_at)
                values (gen_random_uuid(), ${t.id}, 'concurrent_agents', now() - interval '1 minute'), (gen_random_uuid(), ${t.id}, 'concurrent_agents', now() + interval '1 hour')`;
  const old = await inst.tenantry.members.invite(t.id, { email: 'old@example.com', role: 'member' });
  const live = await inst.tenantry.members.invite(t.id, { email: 'live@example.com', role: 'member' });
  await inst.su`update tenantry_catalog.invitations set expires_at = now() - interval '8 days' where id = ${old.invitation.id}`;
  const r = await inst.tenantry.jobs.runNow('expiry.purge') as Record<string, number>;
  assert.deepEqual([r.httpIdempotency, r.leases, r.invitations], [1, 1, 1]);
  assert.deepEqual((await inst.su<{ k: string }[]>`select idempotency_key as k from tenantry_catalog.http_idempotency`).map((x) => x.k), ['fresh']);
  assert.equal((await inst.su`select 1 from tenantry_catalog.usage_leases where tenant_id = ${t.id}`).length, 1);
  assert.deepEqual((await inst.su<{ id: string }[]>`select id from tenantry_catalog.invitations where tenant_id = ${t.id}`).map((x) => x.id), [live.invitation.id]);
});
