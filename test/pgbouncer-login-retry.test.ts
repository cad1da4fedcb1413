import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { PGBOUNCER_BIN } from './helpers/pgbouncer.js';
import type { Tenant } from '../src/index.js';

/**
 * Why the SQL endpoint's timeout tests and tenant-migrations-runs stalled behind PgBouncer (issue #10):
 * after one failed server login PgBouncer holds every client of that database and user for
 * server_login_retry, 15 s by default. Tenantry meets such failures (a shared server's full
 * max_connections, a role's connection limit, a password it heals after a refused login), so its
 * generated pgbouncer.ini (and the test helper's) set it to 1 s. This forces a failed server login
 * and checks the tenant is served again well before 15 s.
 */
const skip = !existsSync(PGBOUNCER_BIN) ? `PgBouncer not installed at ${PGBOUNCER_BIN} (apt-get install pgbouncer, or PGBOUNCER_BIN)`
  : new URL(SUPERUSER_URL).password ? 'the server asks for passwords (the embedded one): the PgBouncer tests run on a server that trusts loopback logins'
  : false;

let inst: TestInstallation;
let tenant: Tenant;

before(async () => {
  if (skip) return;
  inst = await freshInstallation({ maxConnections: 12, poolSize: 2, sqlTimeoutMs: 5000 }, { pgbouncer: { poolSize: 2 } });
  tenant = await inst.tenantry.tenants.create({ slug: 'login-retry', isolation: 'pooled' });
});
after(async () => {
  await inst?.cleanup();
});

test('a tenant refused one server login behind PgBouncer is served again within a few seconds, not after PgBouncer\'s default 15 s', { skip, timeout: 120_000 }, async () => {
  const { role } = tenant.placement;
  assert.equal(await inst.tenantry.query(tenant.id, 'select 1 as n', [], 'val'), 1);
  // the tenant's own login role refused by the server: PgBouncer's next server login for it fails
  await inst.su.unsafe(`alter role "${role}" connection limit 0`);
  await inst.su`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${role}`;
  await assert.rejects(inst.tenantry.runTenantSql(tenant.id, { sql: 'select 1 as n' }), 'a login the server refuses fails the request');
  await inst.su.unsafe(`alter role "${role}" connection limit ${inst.tenantry.options.tenantConnectionLimit}`);
  const started = Date.now();
  for (;;) {
    try {
      const r = await inst.tenantry.runTenantSql(tenant.id, { sql: 'select 2 as n' });
      assert.deepEqual(r.rows, [{ n: 2 }]);
      break;
    } catch (err) {
      assert.ok(Date.now() - started < 60_000, `still refused after a minute: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  // PgBouncer's default would hold the pool for 15 s after the failed login; 1 s plus a loaded machine's slack
  assert.ok(Date.now() - started < 10_000, `served again after ${Date.now() - started} ms`);
});
