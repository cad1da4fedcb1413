import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { type Tenant, type Tier } from '../src/index.js';
import { appendAudit } from '../src/audit/audit.js';
import { rejectsWith } from './helpers/assertions.js';

/**
 * Invariant 9: the audit log is append-only (refused in the database, by privilege and by trigger)
 * and hash-chained per tenant, so that a changed or removed entry is named by verifyAudit(). Every
 * governance change leaves an entry; secrets never reach it.
 */

let inst: TestInstallation;
let adminSql: Sql;
before(async () => {
  inst = await freshInstallation();
  adminSql = postgres(inst.adminUrl, { onnotice: () => {}, max: 2 });
});
after(async () => {
  await adminSql?.end({ timeout: 5 });
  await inst?.cleanup();
});


let seq = 0;
async function tenant(tier: Tier = 'starter'): Promise<Tenant> {
  return inst.tenantry.tenants.create({ slug: `a-${process.pid}-${++seq}`, tier });
}

interface Row { id: string; chain_seq: string; action: string; details: Record<string, unknown> }
async function chain(tenantId: string): Promise<Row[]> {
  return inst.su<Row[]>`select id, chain_seq, action, details from tenantry_catalog.audit_log where tenant_id = ${tenantId} order by chain_seq`;
}

/** Does something as superuser with the append-only trigger switched off (an attacker with full rights). */
async function tamper(fn: (tx: Sql) => Promise<unknown>): Promise<void> {
  await inst.su.begin(async (tx) => {
    await tx`alter table tenantry_catalog.audit_log disable trigger audit_log_no_update`;
    await fn(tx as unknown as Sql);
    await tx`alter table tenantry_catalog.audit_log enable trigger audit_log_no_update`;
  });
}

test('every governance change leaves an audit entry', async () => {
  const { tenantry } = inst;
  const t = await tenant();
  await tenantry.tenants.update(t.id, { name: 'Audited Inc' });
  await tenantry.tenants.suspend(t.id, 'check');
  await tenantry.tenants.activate(t.id);
  await tenantry.quotas.setOverrides(t.id, { max_agents: 50 });
  await tenantry.tenants.update(t.id, { tier: 'professional' });
  const key = await tenantry.keys.create(t.id, { name: 'k' }, { actor: 'user:alice', requestId: 'req-123' });
  await tenantry.keys.rotate(t.id, key.id, { graceSeconds: 10 });
  await tenantry.keys.revoke(t.id, key.id);
  const owner = await tenantry.members.add(t.id, { email: `owner.${process.pid}@example.com`, role: 'owner' });
  const mem = await tenantry.members.add(t.id, { email: `mem.${process.pid}@example.com`, role: 'member' });
  await tenantry.members.updateRole(t.id, mem.userId, 'viewer');
  await tenantry.members.remove(t.id, mem.userId);
  const inv = await tenantry.members.invite(t.id, { email: `inv.${process.pid}@example.com`, role: 'member' });
  await tenantry.members.accept(inv.token);
  const inv2 = await tenantry.members.invite(t.id, { email: `inv2.${process.pid}@example.com`, role: 'member' });
  await tenantry.members.revokeInvitation(t.id, inv2.invitation.id);
  await tenantry.features.set(t.id, 'sso', true);
  await tenantry.features.set(t.id, 'sso', null);
  await tenantry.quotas.updateTier('enterprise', { quotas: { max_agents: 10_000 } }, { actor: 'operator' });

  const actions = (await chain(t.id)).map((r) => r.action);
  for (const a of [
    'tenant.created', 'tenant.updated', 'tenant.suspended', 'tenant.activated',
    'quota.overrides_set', 'api_key.created', 'api_key.rotated', 'api_key.revoked',
    'member.added', 'member.role_changed', 'member.removed',
    'invitation.created', 'invitation.accepted', 'invitation.revoked',
    'feature.override_set', 'feature.override_removed',
  ]) assert.ok(actions.includes(a), `missing ${a} in ${actions.join(', ')}`);
  assert.equal(actions.filter((a) => a === 'tenant.updated').length, 2, 'the rename and the tier change');
  const [tierEntry] = await inst.su<{ actor: string }[]>`
    select actor from tenantry_catalog.audit_log where tenant_id is null and action = 'tier.updated' and target = 'tier:enterprise'`;
  assert.equal(tierEntry?.actor, 'operator');
  const [keyEntry] = await inst.su<{ actor: string; request_id: string | null; target: string }[]>`
    select actor, request_id, target from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'api_key.created' and target = ${`api_key:${key.id}`}`;
  assert.deepEqual({ ...keyEntry }, { actor: 'user:alice', request_id: 'req-123', target: `api_key:${key.id}` });
  const [memberEntry] = await inst.su<{ target: string }[]>`
    select target from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'member.added' and target = ${`user:${owner.userId}`}`;
  assert.ok(memberEntry);

  // the tenant's API sees the same entries, newest first
  const listed = await tenantry.audit(t.slug, { limit: 1000 });
  assert.deepEqual(listed.map((e) => e.action).reverse(), actions);

  const v = await tenantry.verifyAudit(t.id);
  assert.deepEqual(v, { ok: true, entries: actions.length });
});

test('the installation\'s admin user cannot UPDATE, DELETE or TRUNCATE the audit log: no privilege', async () => {
  const t = await tenant();
  const before0 = await chain(t.id);
  assert.ok(before0.length >= 2);
  const [priv] = await adminSql<{ u: boolean; d: boolean; tr: boolean; i: boolean; s: boolean }[]>`
    select has_table_privilege('tenantry_catalog.audit_log', 'UPDATE') as u,
           has_table_privilege('tenantry_catalog.audit_log', 'DELETE') as d,
           has_table_privilege('tenantry_catalog.audit_log', 'TRUNCATE') as tr,
           has_table_privilege('tenantry_catalog.audit_log', 'INSERT') as i,
           has_table_privilege('tenantry_catalog.audit_log', 'SELECT') as s`;
  assert.deepEqual({ ...priv }, { u: false, d: false, tr: false, i: true, s: true });
  const [owner] = await adminSql<{ owns: boolean }[]>`
    select tableowner = current_user as owns from pg_tables where schemaname = 'tenantry_catalog' and tablename = 'audit_log'`;
  assert.equal(owner?.owns, true, 'refused although it owns the table');
  const refusedByPrivilege = (err: unknown): boolean => {
    const e = err as { code?: string; message?: string };
    assert.equal(e.code, '42501', String(e.message));
    assert.match(String(e.message), /permission denied/);
    return true;
  };
  const id = before0[0]!.id;
  await assert.rejects(adminSql`update tenantry_catalog.audit_log set details = '{}' where id = ${id}`, refusedByPrivilege);
  await assert.rejects(adminSql`update tenantry_catalog.audit_log set actor = 'someone else'`, refusedByPrivilege);
  await assert.rejects(adminSql`delete from tenantry_catalog.audit_log where id = ${id}`, refusedByPrivilege);
  await assert.rejects(adminSql`delete from tenantry_catalog.audit_log`, refusedByPrivilege);
  await assert.rejects(adminSql`truncate tenantry_catalog.audit_log`, refusedByPrivilege);
  assert.deepEqual(await chain(t.id), before0, 'unchanged');
  assert.equal((await inst.tenantry.verifyAudit(t.id)).ok, true);
});

test('even a superuser\'s UPDATE, DELETE and TRUNCATE are refused, by trigger', async () => {
  const t = await tenant();
  const before0 = await chain(t.id);
  const id = before0[0]!.id;
  const refusedByTrigger = (op: string) => (err: unknown): boolean => {
    const e = err as { code?: string; message?: string };
    assert.equal(e.code, '42501', String(e.message));
    assert.match(String(e.message), new RegExp(`append-only \\(${op} refused\\)`));
    return true;
  };
  await assert.rejects(inst.su`update tenantry_catalog.audit_log set details = '{"forged":true}' where id = ${id}`, refusedByTrigger('UPDATE'));
  await assert.rejects(inst.su`delete from tenantry_catalog.audit_log where id = ${id}`, refusedByTrigger('DELETE'));
  await assert.rejects(inst.su`truncate tenantry_catalog.audit_log`, refusedByTrigger('TRUNCATE'));
  await assert.rejects(inst.su`truncate tenantry_catalog.audit_log cascade`, refusedByTrigger('TRUNCATE'));
  assert.deepEqual(await chain(t.id), before0, 'unchanged');
  const [all] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.audit_log`;
  assert.ok(all!.n > 0, 'the truncate did not go through');
});

test('verifyAudit: ok on an intact chain; names a changed entry', async () => {
  const t = await tenant();
  const bystander = await tenant();
  for (let i = 0; i < 5; i++) await inst.tenantry.features.set(t.id, `flag_${i}`, true);
  const rows = await chain(t.id);
  assert.deepEqual(rows.map((r) => Number(r.chain_seq)), rows.map((_, i) => i + 1), 'one chain per tenant, numbered from 1');
  assert.deepEqual(await inst.tenantry.verifyAudit(t.slug), { ok: true, entries: rows.length });

  const victim = rows[3]!;
  await tamper((tx) => tx`update tenantry_catalog.audit_log set details = details || '{"enabled":false}' where id = ${victim.id}`);
  const v = await inst.tenantry.verifyAudit(t.id);
  assert.equal(v.ok, false);
  assert.equal(v.entries, rows.length);
  assert.deepEqual(v.firstBroken, { id: String(victim.id), chainSeq: Number(victim.chain_seq), reason: 'content does not match its hash' });
  assert.equal((await inst.tenantry.verifyAudit(bystander.id)).ok, true, 'other chains are unaffected');
  // the trigger is back on
  await assert.rejects(inst.su`update tenantry_catalog.audit_log set details = '{}' where id = ${victim.id}`, /append-only/);
});

test('verifyAudit: a changed entry whose hash was recomputed breaks the link to the next one', async () => {
  const t = await tenant();
  for (let i = 0; i < 4; i++) await inst.tenantry.features.set(t.id, `f_${i}`, i % 2 === 0);
  const rows = await chain(t.id);
  const victim = rows[2]!;
  await tamper(async (tx) => {
    await tx`update tenantry_catalog.audit_log set actor = 'forged' where id = ${victim.id}`;
    await tx`update tenantry_catalog.audit_log a set hash = tenantry_catalog.audit_entry_hash(a.prev_hash, a) where id = ${victim.id}`;
  });
  const v = await inst.tenantry.verifyAudit(t.id);
  assert.equal(v.ok, false);
  assert.deepEqual(v.firstBroken, { id: String(rows[3]!.id), chainSeq: Number(rows[3]!.chain_seq), reason: 'previous hash mismatch' });
});

test('verifyAudit: a deleted entry is a sequence gap, named by the entry after it', async () => {
  const t = await tenant();
  for (let i = 0; i < 4; i++) await inst.tenantry.quotas.setOverrides(t.id, { max_agents: 10 + i });
  const rows = await chain(t.id);
  const [removed, next] = [rows[2]!, rows[3]!];
  await tamper((tx) => tx`delete from tenantry_catalog.audit_log where id = ${removed.id}`);
  const v = await inst.tenantry.verifyAudit(t.id);
  assert.equal(v.ok, false);
  assert.equal(v.entries, rows.length - 1);
  assert.deepEqual(v.firstBroken, { id: String(next.id), chainSeq: Number(next.chain_seq), reason: 'sequence gap' });

  // removing the first entry is caught too
  const t2 = await tenant();
  const rows2 = await chain(t2.id);
  await tamper((tx) => tx`delete from tenantry_catalog.audit_log where id = ${rows2[0]!.id}`);
  assert.deepEqual((await inst.tenantry.verifyAudit(t2.id)).firstBroken, { id: String(rows2[1]!.id), chainSeq: 2, reason: 'sequence gap' });
});

test('a hard-deleted tenant\'s chain stays and verifies', async () => {
  const t = await tenant();
  await inst.tenantry.tenants.delete(t.id);
  await inst.tenantry.tenants.delete(t.id, { hard: true });
  const v = await inst.tenantry.verifyAudit(t.id);
  assert.equal(v.ok, true);
  assert.ok(v.entries >= 4);
  assert.equal((await chain(t.id)).at(-1)?.action, 'tenant.hard_deleted');
});

test('secrets in audit details are redacted at any depth', async () => {
  const t = await tenant();
  await appendAudit(inst.tenantry.catalog, {
    tenantId: t.id, actor: 'test', action: 'test.secrets', target: `tenant:${t.id}`,
    details: {
      apiKey: 'x-api-key-value-123', nested: { password: 'y-password-value-456', keep: 'visible' },
      list: [{ client_secret: 'z-secret-789' }], authorization: 'Bearer abc', token: 't0k', plain: 42,
    },
  });
  const [row] = await inst.su<{ details: Record<string, unknown>; text: string }[]>`
    select details, details::text as text from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'test.secrets'`;
  assert.deepEqual(row!.details, {
    apiKey: '[redacted]', nested: { password: '[redacted]', keep: 'visible' },
    list: [{ client_secret: '[redacted]' }], authorization: '[redacted]', token: '[redacted]', plain: 42,
  });
  for (const secret of ['x-api-key-value-123', 'y-password-value-456', 'z-secret-789', 'Bearer abc', 't0k']) {
    assert.ok(!row!.text.includes(secret), `${secret} reached the audit log`);
  }
  assert.equal((await inst.tenantry.verifyAudit(t.id)).ok, true);
});

test('500 concurrent appends to one tenant\'s chain keep it valid', { timeout: 60_000 }, async () => {
  const t = await tenant();
  const before0 = (await chain(t.id)).length;
  await Promise.all(Array.from({ length: 500 }, (_, i) => appendAudit(inst.tenantry.catalog, {
    tenantId: t.id, actor: 'load', action: 'test.append', target: `n:${i}`, details: { i },
  })));
  const rows = await chain(t.id);
  assert.equal(rows.length, before0 + 500);
  assert.deepEqual(rows.map((r) => Number(r.chain_seq)), rows.map((_, i) => i + 1), 'no gaps, no duplicates');
  assert.deepEqual(new Set(rows.filter((r) => r.action === 'test.append').map((r) => r.details.i)).size, 500);
  assert.deepEqual(await inst.tenantry.verifyAudit(t.id), { ok: true, entries: before0 + 500 });

  // concurrent governance changes on one tenant (each in its own transaction) chain just as well
  await Promise.all(Array.from({ length: 50 }, (_, i) => inst.tenantry.features.set(t.id, `c_${i}`, true)));
  assert.deepEqual(await inst.tenantry.verifyAudit(t.id), { ok: true, entries: before0 + 550 });
  await rejectsWith(inst.tenantry.verifyAudit('no-such-tenant'), 'TENANT_NOT_FOUND');
});
