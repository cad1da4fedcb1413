/**
 * A separate process that opens Tenantry with a migrations folder and runs the tenant migrations, so a
 * test can SIGKILL it half-way. Usage: node --import tsx migrate-child.ts <adminUrl> <namespace> <dir> <concurrency>
 */
import { Tenantry } from '../../src/index.js';

const [databaseUrl, namespace, tenantMigrations, concurrency] = process.argv.slice(2);
const tenantry = await Tenantry.open({ databaseUrl: databaseUrl!, namespace: namespace!, tenantMigrations: tenantMigrations! });
process.stdout.write('opened\n');
const report = await tenantry.migrate({ concurrency: Number(concurrency ?? 2) });
process.stdout.write(`${JSON.stringify(report)}\n`);
await tenantry.close();
