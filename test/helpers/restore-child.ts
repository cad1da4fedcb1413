/**
 * A separate process that restores a backup, so a test can SIGKILL it half-way.
 * Usage: node --import tsx restore-child.ts <adminUrl> <namespace> <backupDir> <backupId>
 */
import { Tenantry } from '../../src/index.js';

const [databaseUrl, namespace, backupDir, backupId] = process.argv.slice(2);
const tenantry = await Tenantry.open({ databaseUrl: databaseUrl!, namespace: namespace!, backupDir: backupDir! });
process.stdout.write('opened\n');
await tenantry.backups.restore(backupId!, { confirm: true, onProgress: (p) => process.stdout.write(`${p.step} ${p.table ?? ''}\n`) });
process.stdout.write('restored\n');
await tenantry.close();
