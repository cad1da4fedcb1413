import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { isTenantryError, type Tenant, type Tier } from '../src/index.js';
import { rejectsWith } from './helpers/assertions.js';

/**
 * Users, memberships and roles, invitations, the last-owner rule (also under concurrency), max_users,
 * and keys tied to a member.
 */

let inst: TestInstallation;
before(async () => { inst = await freshInstallation(); });
after(async () => { await inst?.cleanup(); });


let seq = 0;
async function tenant(tier: Tier = 'starter'): Promise<Tenant> {
  return inst.tenantry.tenants.create({ slug: `m-${process.pid}-${++seq}`, tier });
}
const email = (name: string): string => `${name}.${process.pid}.${++seq}@example.com`;

async function usersUsed(tenantId: string): Promise<number> {
  const [r] = await inst.su<{ used: string }[]>`select used from tenantry_catalog.usage_counters where tenant_id = ${tenantId} and metric = 'users'`;
  return Number(r?.used ?? 0);
}
async function owners(tenantId: string): Promise<number> {
  const [r] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.memberships where tenant_id = ${tenantId} and role = 'owner'`;
  return r!.n;
}
async function auditActions(tenantId: string): Promise<string[]> {
  return (await inst.su<{ action: string }[]>`select action from tenantry_catalog.audit_log where tenant_id = ${tenantId} order by chain_seq`).map((r) => r.action);
}

test('a user is one per email, case-insensitively, across tenants; roles per membership', async () => {
  const m = inst.tenantry.members;
  const a = await tenant();
  const b = await tenant();
  const base = email('Case.Person');
  const inA = await m.add(a.id, { email: base.replace('case', 'Case').replace('example.com', 'Example.COM'), role: 'owner', name: 'Case Person' });
  const inB = await m.add(b.slug, { email: base.toLowerCase(), role: 'viewer' });
  assert.equal(inB.userId, inA.userId, 'the same user in both tenants');
  assert.equal(inA.role, 'owner');
  assert.equal(inB.role, 'viewer');
  // what A stored about the person (name, the email's casing) is A's: B sees only what B gave
  assert.equal(inB.name, null, "B's membership has no name: A's name for the person stays A's");
  assert.equal(inB.email, base.toLowerCase());
  assert.equal((await m.list(a.id))[0]!.name, 'Case Person');
  const [u] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.users where lower(email) = lower(${base})`;
  assert.equal(u!.n, 1);

  // already a member, in any case: refused, nothing written
  await rejectsWith(m.add(a.id, { email: base.toUpperCase(), role: 'member' }), 'MEMBER_EXISTS');
  assert.equal(await usersUsed(a.id), 1);
  assert.deepEqual((await m.list(a.id)).map((x) => [x.userId, x.role]), [[inA.userId, 'owner']]);

  for (const role of ['admin', 'member', 'viewer'] as const) {
    const x = await m.add(a.id, { email: email(role), role });
    assert.equal(x.role, role);
  }
  assert.deepEqual((await m.list(a.id)).map((x) => x.role), ['owner', 'admin', 'member', 'viewer']);
  assert.equal(await usersUsed(a.id), 4);

  await rejectsWith(m.add(a.id, { email: email('x'), role: 'superuser' }), 'INVALID_INPUT');
  await rejectsWith(m.add(a.id, { email: 'not-an-email', role: 'member' }), 'INVALID_INPUT');
  await rejectsWith(m.updateRole(a.id, inA.userId, 'god'), 'INVALID_INPUT');
  await rejectsWith(m.updateRole(a.id, '00000000-0000-4000-8000-000000000000', 'member'), 'MEMBER_NOT_FOUND');
  await rejectsWith(m.remove(b.id, '00000000-0000-4000-8000-000000000000'), 'MEMBER_NOT_FOUND');
  assert.equal((await m.list(a.id)).length, 4);

  const actions = await auditActions(a.id);
  assert.equal(actions.filter((x) => x === 'member.added').length, 4);
});

test('invitations: token shown once and stored hashed; accepted once; revocable; expiring', async () => {
  const m = inst.tenantry.members;
  const t = await tenant();
  const invitee = email('Invitee');
  const { invitation, token } = await m.invite(t.id, { email: invitee, role: 'admin', expiresInHours: 24 }, { actor: 'user:owner' });
  assert.match(token, /^tnt_inv_[A-Za-z0-9_-]{32}$/);
  assert.equal(invitation.email, invitee);
  assert.equal(invitation.role, 'admin');
  assert.equal(invitation.invitedBy, 'user:owner');
  assert.ok(Math.abs(invitation.expiresAt.getTime() - Date.now() - 24 * 3_600_000) < 120_000);
  assert.equal('token' in invitation, false);

  // the catalog keeps only SHA-256 of the token; the token itself appears nowhere
  const [row] = await inst.su<{ token_hash: Buffer }[]>`select token_hash from tenantry_catalog.invitations where id = ${invitation.id}`;
  assert.deepEqual(row!.token_hash, createHash('sha256').update(token).digest());
  const secretPart = token.slice('tnt_inv_'.length);
  const cols = await inst.su<{ table_name: string; column_name: string }[]>`
    select c.table_name, c.column_name from information_schema.columns c
    join information_schema.tables t using (table_schema, table_name)
    where c.table_schema = 'tenantry_catalog' and t.table_type = 'BASE TABLE'`;
  for (const needle of [token, secretPart]) {
    for (const c of cols) {
      const [r] = await inst.su.unsafe<{ n: number }[]>(
        `select count(*)::int as n from tenantry_catalog."${c.table_name}" where position($1 in "${c.column_name}"::text) > 0`, [needle]);
      assert.equal(r!.n, 0, `the invitation token is in ${c.table_name}.${c.column_name}`);
    }
  }

  const member = await m.accept(token, { name: 'Ivy' });
  assert.equal(member.tenantId, t.id);
  assert.equal(member.role, 'admin');
  assert.equal(member.email, invitee);
  assert.equal(member.name, 'Ivy');
  assert.deepEqual((await m.list(t.id)).map((x) => [x.userId, x.role]), [[member.userId, 'admin']]);
  await rejectsWith(m.accept(token), 'INVITATION_CLOSED');
  assert.equal((await m.list(t.id)).length, 1, 'a second accept adds nothing');
  assert.equal(await usersUsed(t.id), 1);
  const [accepted] = await inst.su<{ accepted_at: Date | null; accepted_by: string | null }[]>`
    select accepted_at, accepted_by from tenantry_catalog.invitations where id = ${invitation.id}`;
  assert.ok(accepted!.accepted_at);
  assert.equal(accepted!.accepted_by, member.userId);
  await rejectsWith(m.revokeInvitation(t.id, invitation.id), 'INVITATION_NOT_FOUND');

  // revoked
  const second = await m.invite(t.id, { email: email('revoked'), role: 'member' });
  const revoked = await m.revokeInvitation(t.id, second.invitation.id);
  assert.ok(revoked.revokedAt);
  await rejectsWith(m.accept(second.token), 'INVITATION_CLOSED');
  await rejectsWith(m.revokeInvitation(t.id, second.invitation.id), 'INVITATION_NOT_FOUND');

  // expired (the shortest expiry is an hour: move it into the past)
  const third = await m.invite(t.id, { email: email('late'), role: 'viewer', expiresInHours: 1 });
  await inst.su`update tenantry_catalog.invitations set expires_at = now() - interval '1 second' where id = ${third.invitation.id}`;
  await rejectsWith(m.accept(third.token), 'INVITATION_EXPIRED');
  assert.equal((await m.list(t.id)).length, 1);

  await rejectsWith(m.accept('tnt_inv_doesnotexist'), 'INVITATION_NOT_FOUND');
  await rejectsWith(m.accept('garbage'), 'INVITATION_NOT_FOUND');
  await rejectsWith(m.invite(t.id, { email: email('x'), role: 'member', expiresInHours: 0 }), 'INVALID_INPUT');
  await rejectsWith(m.invite(t.id, { email: email('x'), role: 'root' }), 'INVALID_INPUT');

  // another tenant cannot revoke this tenant's invitation
  const other = await tenant();
  const fourth = await m.invite(t.id, { email: email('kept'), role: 'member' });
  await rejectsWith(m.revokeInvitation(other.id, fourth.invitation.id), 'INVITATION_NOT_FOUND');
  assert.equal((await m.accept(fourth.token)).tenantId, t.id);

  // two concurrent accepts of one token: exactly one joins
  const fifth = await m.invite(t.id, { email: email('racer'), role: 'viewer' });
  const race = await Promise.allSettled([m.accept(fifth.token), m.accept(fifth.token), m.accept(fifth.token)]);
  assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1);
  for (const f of race.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
    assert.ok(isTenantryError(f.reason, 'INVITATION_CLOSED'), String(f.reason));
  }

  const list = await m.listInvitations(t.id);
  assert.equal(list.length, 5);
  const actions = await auditActions(t.id);
  assert.equal(actions.filter((a) => a === 'invitation.created').length, 5);
  assert.equal(actions.filter((a) => a === 'invitation.accepted').length, 3);
  assert.equal(actions.filter((a) => a === 'invitation.revoked').length, 1);
});

test('the last owner can be neither removed nor demoted', async () => {
  const m = inst.tenantry.members;
  const t = await tenant();
  const o1 = await m.add(t.id, { email: email('owner1'), role: 'owner' });
  const admin = await m.add(t.id, { email: email('admin'), role: 'admin' });
  await rejectsWith(m.remove(t.id, o1.userId), 'LAST_OWNER');
  for (const role of ['admin', 'member', 'viewer']) await rejectsWith(m.updateRole(t.id, o1.userId, role), 'LAST_OWNER');
  assert.equal(await owners(t.id), 1);
  assert.equal((await m.list(t.id)).length, 2, 'nothing changed');
  assert.equal(await m.updateRole(t.id, o1.userId, 'owner').then((x) => x.role), 'owner', 'owner to owner is fine');

  // with a second owner, the first may go
  await m.updateRole(t.id, admin.userId, 'owner');
  const demoted = await m.updateRole(t.id, o1.userId, 'member');
  assert.equal(demoted.role, 'member');
  await rejectsWith(m.remove(t.id, admin.userId), 'LAST_OWNER');
  await rejectsWith(m.updateRole(t.id, admin.userId, 'viewer'), 'LAST_OWNER');
  await m.remove(t.id, o1.userId);
  assert.deepEqual((await m.list(t.id)).map((x) => [x.userId, x.role]), [[admin.userId, 'owner']]);
  assert.equal(await usersUsed(t.id), 1, 'removal gives the seat back');

  const actions = await auditActions(t.id);
  assert.ok(actions.includes('member.role_changed'));
  assert.ok(actions.includes('member.removed'));
});

test('two concurrent demotions (or removals) of two owners: exactly one succeeds', { timeout: 60_000 }, async () => {
  const m = inst.tenantry.members;
  for (let round = 0; round < 6; round++) {
    const t = await tenant();
    const o1 = await m.add(t.id, { email: email('o1'), role: 'owner' });
    const o2 = await m.add(t.id, { email: email('o2'), role: 'owner' });
    await m.add(t.id, { email: email('bystander'), role: 'member' });
    const ops = round % 2 === 0
      ? [m.updateRole(t.id, o1.userId, 'admin'), m.updateRole(t.id, o2.userId, 'member')]
      : [m.remove(t.id, o1.userId), m.updateRole(t.id, o2.userId, 'viewer')];
    const results = await Promise.allSettled(ops);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(failed.length, 1, `round ${round}: exactly one must fail`);
    assert.ok(isTenantryError(failed[0]!.reason, 'LAST_OWNER'), String(failed[0]!.reason));
    assert.equal(await owners(t.id), 1, `round ${round}: one owner left`);
  }
});

test('members count against max_users: free allows one; a refused add writes nothing', async () => {
  const m = inst.tenantry.members;
  const t = await tenant('free'); // max_users 1
  const first = await m.add(t.id, { email: email('first'), role: 'owner' });
  const second = email('second');
  await assert.rejects(m.add(t.id, { email: second, role: 'member' }), (err: unknown) => {
    assert.ok(isTenantryError(err, 'QUOTA_EXCEEDED'), String(err));
    assert.equal(err.details?.quota, 'max_users');
    return true;
  });
  assert.deepEqual((await m.list(t.id)).map((x) => x.userId), [first.userId]);
  assert.equal(await usersUsed(t.id), 1);
  const [u] = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.users where lower(email) = lower(${second})`;
  assert.equal(u!.n, 0, 'no user row left behind');
  const [a] = await inst.su<{ n: number }[]>`
    select count(*)::int as n from tenantry_catalog.audit_log where tenant_id = ${t.id} and details ->> 'email' = ${second}`;
  assert.equal(a!.n, 0, 'no audit entry for what did not happen');

  // an invitation is held to the same limit, and stays open when refused
  const inv = await m.invite(t.id, { email: second, role: 'member' });
  await rejectsWith(m.accept(inv.token), 'QUOTA_EXCEEDED');
  const [open] = await inst.su<{ accepted_at: Date | null }[]>`select accepted_at from tenantry_catalog.invitations where id = ${inv.invitation.id}`;
  assert.equal(open!.accepted_at, null);

  // more room (a tier change): the invitation can be accepted now
  await inst.tenantry.tenants.update(t.id, { tier: 'starter' });
  assert.equal((await m.accept(inv.token)).email, second);
  assert.equal(await usersUsed(t.id), 2);
});

test('concurrent adds never pass max_users', { timeout: 60_000 }, async () => {
  const m = inst.tenantry.members;
  const t = await tenant();
  await inst.tenantry.quotas.setOverrides(t.id, { max_users: 5 });
  const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => m.add(t.id, { email: email(`c${i}`), role: 'member' })));
  for (const f of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
    assert.ok(isTenantryError(f.reason, 'QUOTA_EXCEEDED'), String(f.reason));
  }
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 5);
  assert.equal((await m.list(t.id)).length, 5);
  assert.equal(await usersUsed(t.id), 5);
});

test('a key tied to a member can do what both its scopes and the member\'s role allow, and dies with the membership', async () => {
  const { members: m, keys } = inst.tenantry;
  const t = await tenant();
  const owner = await m.add(t.id, { email: email('boss'), role: 'owner' });
  const dev = await m.add(t.id, { email: email('dev'), role: 'member' });
  const all = await keys.create(t.id, { name: 'dev all', scopes: ['read', 'write', 'admin', 'sql'], memberUserId: dev.userId });
  const narrow = await keys.create(t.id, { name: 'dev narrow', scopes: ['read', 'sql'], memberUserId: dev.userId });
  const ownerKey = await keys.create(t.id, { name: 'boss', scopes: ['read', 'admin'], memberUserId: owner.userId });
  assert.equal(all.memberUserId, dev.userId);

  const perms = async (key: string): Promise<string[]> => [...(await keys.verify(key)).permissions].sort();
  assert.deepEqual(await perms(all.key), ['read', 'write'], 'member: read and write only');
  assert.deepEqual(await perms(narrow.key), ['read']);
  assert.deepEqual(await perms(ownerKey.key), ['admin', 'read'], 'owner: the key\'s own scopes');

  await m.updateRole(t.id, dev.userId, 'viewer');
  assert.deepEqual(await perms(all.key), ['read']);
  await m.updateRole(t.id, dev.userId, 'admin');
  assert.deepEqual(await perms(all.key), ['admin', 'read', 'sql', 'write']);
  assert.deepEqual(await perms(narrow.key), ['read', 'sql']);
  assert.deepEqual((await keys.verify(all.key)).key.scopes, ['read', 'write', 'admin', 'sql'], 'the stored scopes do not change');

  await m.remove(t.id, dev.userId);
  await rejectsWith(keys.verify(all.key), 'API_KEY_REVOKED');
  await rejectsWith(keys.verify(narrow.key), 'API_KEY_REVOKED');
  assert.deepEqual(await perms(ownerKey.key), ['admin', 'read'], 'other members\' keys live on');
  assert.equal((await keys.verify((await inst.tenantry.keys.create(t.id, { name: 'tenant key', scopes: ['write'] })).key)).permissions[0], 'write');

  // a key can only be tied to a member of its own tenant
  const other = await tenant();
  await rejectsWith(keys.create(other.id, { name: 'foreign', memberUserId: owner.userId }), 'MEMBER_NOT_FOUND');
  await rejectsWith(keys.create(t.id, { name: 'former', memberUserId: dev.userId }), 'MEMBER_NOT_FOUND');
});
