import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';

let inst: TestInstallation;
before(async () => { inst = await freshInstallation(); });
after(async () => { await inst?.cleanup(); });


for (const isolation of ['pooled', 'schema', 'database'] as const) {
  test(`${isolation}: every lifecycle transition, with audit entries`, async () => {
    const { tenantry } = inst;
    const t = await tenantry.tenants.create({ slug: `life-${isolation}`, isolation, tier: 'ENTERPRISE' as never, name: 'Life Inc', metadata: { plan: 'x' } });
    assert.equal(t.status, 'active');
    assert.equal(t.tier, 'enterprise');
    assert.equal(t.isolation, isolation);
    assert.deepEqual(t.metadata, { plan: 'x' });
    assert.equal((await tenantry.tenants.get(t.slug)).id, t.id);
    assert.equal((await tenantry.tenants.get(t.id)).slug, t.slug);

    await tenantry.withTenant(t.slug, (sql) => sql`insert into agents (name, agent_type) values ('a1', 'calculator')`);

    const updated = await tenantry.tenants.update(t.id, { name: 'Life Corp', tier: 'starter', metadata: { plan: 'y' } });
    assert.equal(updated.name, 'Life Corp');
    assert.equal(updated.tier, 'starter');

    const suspended = await tenantry.tenants.suspend(t.id, 'payment overdue');
    assert.equal(suspended.status, 'suspended');
    assert.equal(suspended.suspendedReason, 'payment overdue');
    await rejectsWith(tenantry.withTenant(t.id, async () => 1), 'TENANT_SUSPENDED');
    await rejectsWith(tenantry.query(t.slug, 'select 1'), 'TENANT_SUSPENDED');
    await rejectsWith(tenantry.tenants.suspend(t.id, 'again'), 'INVALID_TRANSITION');
    const [role] = await inst.su<{ rolcanlogin: boolean }[]>`select rolcanlogin from pg_roles where rolname = ${t.placement.role}`;
    assert.equal(role!.rolcanlogin, false, 'a suspended tenant\'s role cannot log in');

    const active = await tenantry.tenants.activate(t.id);
    assert.equal(active.status, 'active');
    assert.equal(active.suspendedReason, null);
    assert.equal(await tenantry.query(t.id, 'select count(*)::int from agents', [], 'val'), 1);
    await rejectsWith(tenantry.tenants.activate(t.id), 'INVALID_TRANSITION');

    await rejectsWith(tenantry.tenants.delete(t.id, { hard: true }), 'INVALID_TRANSITION');
    const deleted = await tenantry.tenants.delete(t.id);
    assert.equal(deleted.status, 'deleted');
    assert.ok(deleted.deletedAt);
    await rejectsWith(tenantry.withTenant(t.id, async () => 1), 'TENANT_DELETED');
    await rejectsWith(tenantry.tenants.delete(t.id), 'INVALID_TRANSITION');

    const restored = await tenantry.tenants.restore(t.id);
    assert.equal(restored.status, 'active');
    assert.equal(await tenantry.query(t.id, 'select count(*)::int from agents', [], 'val'), 1, 'a restore keeps the data');
    await rejectsWith(tenantry.tenants.restore(t.id), 'INVALID_TRANSITION');

    await tenantry.tenants.delete(t.id);
    await tenantry.tenants.delete(t.id, { hard: true });
    await rejectsWith(tenantry.tenants.get(t.id), 'TENANT_NOT_FOUND');
    const [gone] = await inst.su<{ roles: number; dbs: number }[]>`
      select (select count(*)::int from pg_roles where rolname = ${t.placement.role}) as roles,
             (select count(*)::int from pg_database where datname = ${t.placement.database}) as dbs`;
    assert.equal(gone!.roles, 0, 'role removed');
    if (isolation === 'database') assert.equal(gone!.dbs, 0, 'database removed');

    const actions = (await inst.su<{ action: string }[]>`select action from tenantry_catalog.audit_log where tenant_id = ${t.id} order by id`).map((r) => r.action);
    assert.deepEqual(actions, [
      'tenant.created', 'api_key.created', 'tenant.updated', 'tenant.suspended', 'tenant.activated',
      'tenant.deleted', 'tenant.restored', 'tenant.deleted', 'tenant.hard_deleted',
    ]);
    const [created] = await inst.su<{ actor: string; target: string }[]>`select actor, target from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'tenant.created'`;
    assert.equal(created!.actor, 'system');
    assert.equal(created!.target, `tenant:${t.id}`);
  });
}
