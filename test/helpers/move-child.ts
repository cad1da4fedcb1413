/**
 * A separate process that moves a tenant and kills itself (SIGKILL, no cleanup of any kind) the moment
 * the move reports step MOVE_CRASH_AT, so a test can check what repair makes of each step.
 * Usage: MOVE_CRASH_AT=<step> node --import tsx move-child.ts <adminUrl> <namespace> <migrationsDir> <tenant> <to>
 */
import { Tenantry, type Isolation } from '../../src/index.js';

const [databaseUrl, namespace, tenantMigrations, tenant, to] = process.argv.slice(2);
const crashAt = process.env.MOVE_CRASH_AT;
const tenantry = await Tenantry.open({ databaseUrl: databaseUrl!, namespace: namespace!, tenantMigrations: tenantMigrations!, maxConnections: 8 });
process.stdout.write('opened\n');
await tenantry.tenants.move(tenant!, {
  to: to as Isolation,
  onProgress: (p) => {
    process.stdout.write(`${p.step}\n`);
    if (p.step === crashAt) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write('moved\n');
await tenantry.close();
