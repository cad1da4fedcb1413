import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { poolKey, DEFAULT_SERVER } from '../src/db/pool-key.js';
import type { Isolation } from '../src/index.js';

/**
 * Placement names its server (issue #14): every pool is keyed by server, database and role, and a
 * tenant whose catalog row names a server this installation does not know is refused (never served
 * from the configured server's same-named database), so a later fleet of servers is data.
 */

let inst: TestInstallation;
before(async () => { inst = await freshInstallation({ schemaPoolSize: 0 }); });
after(async () => { await inst?.cleanup(); });

test('pool keys tell servers, databases and roles apart, and an unnamed server is the configured one', () => {
  const a = poolKey({ server: 'default', database: 'db', role: 'r' });
  assert.notEqual(poolKey({ server: 'eu-2', database: 'db', role: 'r' }), a);
  assert.notEqual(poolKey({ server: 'default', database: 'db2', role: 'r' }), a);
  assert.notEqual(poolKey({ server: 'default', database: 'db', role: 'r2' }), a);
  // no name runs into the next one
  assert.notEqual(poolKey({ server: 'a|b', database: 'c', role: 'r' }), poolKey({ server: 'a', database: 'b|c', role: 'r' }));
  assert.equal(poolKey({ database: 'db', role: 'r' }), poolKey({ server: DEFAULT_SERVER, database: 'db', role: 'r' }));
});

test('a tenant placed on a server this installation does not know is refused, in every mode, not served from the configured server', { timeout: 180_000 }, async () => {
  for (const isolation of ['pooled', 'schema', 'database'] as Isolation[]) {
    const t = await inst.tenantry.tenants.create({ slug: `srv-${isolation}-${process.pid}`, isolation });
    assert.equal(t.placement.server, DEFAULT_SERVER);
    assert.equal((await inst.tenantry.withTenant(t.id, (sql) => sql`select count(*)::int as n from agents`))[0]!.n, 0);
    await inst.su`update tenantry_catalog.tenants set server_name = 'eu-2' where id = ${t.id}`;
    await inst.su`select pg_notify('tenantry_tenant_changed', ${t.id})`;
    // the notification reaches this process's cache shortly
    for (let i = 0; i < 100 && (await inst.tenantry.tenants.get(t.id)).placement.server !== 'eu-2'; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await inst.tenantry.tenants.get(t.id)).placement.server, 'eu-2');
    await rejectsWith(inst.tenantry.withTenant(t.id, (sql) => sql`select 1`), 'INVALID_CONFIG', /server "eu-2"/);
    await rejectsWith(inst.tenantry.withTenantRole(t.id, (sql) => sql`select 1`), 'INVALID_CONFIG', /server "eu-2"/);
    await inst.su`update tenantry_catalog.tenants set server_name = 'default' where id = ${t.id}`;
    await inst.su`select pg_notify('tenantry_tenant_changed', ${t.id})`;
    for (let i = 0; i < 100 && (await inst.tenantry.tenants.get(t.id)).placement.server !== 'default'; i++) await new Promise((r) => setTimeout(r, 50));
    // every cache of this process (by id and by slug) hears the notification shortly; until then the
    // old placement may still be refused, never served from the wrong server
    let served: number | undefined;
    for (let i = 0; i < 100 && served === undefined; i++) {
      try { served = (await inst.tenantry.withTenant(t.id, (sql) => sql`select count(*)::int as n from agents`))[0]!.n; } catch (err) {
        assert.equal((err as { code?: string }).code, 'INVALID_CONFIG', String(err));
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert.equal(served, 0, `${isolation}: served again`);
  }
});
