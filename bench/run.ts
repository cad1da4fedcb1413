/**
 * `npm run bench`: every benchmark section, each comparing Tenantry with its baseline side by side in
 * this one process, printed as Markdown tables (medians and ratios). DATABASE_URL (a superuser URL)
 * when set, otherwise the embedded PostgreSQL. BENCH_ONLY=provisioning,with-tenant,migrations,governance,plans,http,sql-guard,key-checks,chaos,jobs,console,move,backup,crypto
 * selects sections. Everything runs in throwaway installations removed at the end.
 */
import { ensureServer, progress, type BenchContext } from './lib.js';
import { benchProvisioning } from './provisioning.js';
import { benchWithTenant } from './with-tenant.js';
import { benchConnections } from './connections.js';
import { benchScale } from './scale.js';
import { benchMigrations } from './migrations.js';
import { benchGovernance } from './governance.js';
import { benchPlans } from './plans.js';
import { benchHttp } from './http.js';
import { benchSqlGuard } from './sql-guard.js';
import { benchKeyChecks } from './key-checks.js';
import { benchChaos } from './chaos.js';
import { benchJobs } from './jobs.js';
import { benchConsole } from './console.js';
import { benchMove } from './move.js';
import { benchBackup } from './backup.js';
import { benchCrypto } from './crypto.js';

const SECTIONS: Record<string, (ctx: BenchContext) => Promise<string>> = {
  provisioning: benchProvisioning,
  'with-tenant': benchWithTenant,
  connections: benchConnections,
  scale: benchScale,
  migrations: benchMigrations,
  governance: benchGovernance,
  plans: benchPlans,
  http: benchHttp,
  'sql-guard': benchSqlGuard,
  'key-checks': benchKeyChecks,
  chaos: benchChaos,
  jobs: benchJobs,
  console: benchConsole,
  move: benchMove,
  backup: benchBackup,
  crypto: benchCrypto,
};

const only = (process.env.BENCH_ONLY ?? Object.keys(SECTIONS).join(',')).split(',').map((s) => s.trim()).filter(Boolean);
for (const s of only) if (!SECTIONS[s]) throw new Error(`Unknown BENCH_ONLY section ${s}; use ${Object.keys(SECTIONS).join(', ')}`);

const stopEmbedded = await ensureServer();
// imported only now: the helper reads DATABASE_URL when it loads
const { freshInstallation } = await import('../test/helpers/installation.js');
const out: string[] = [];
try {
  for (const name of only) {
    progress(`${name}: starting`);
    const inst = await freshInstallation();
    try {
      const version = (await inst.su<{ v: string }[]>`select current_setting('server_version') as v`)[0]!.v;
      out.push(await SECTIONS[name]!({ inst, version, fresh: freshInstallation }));
    } finally {
      progress(`${name}: removing its installation`);
      await inst.cleanup();
    }
    process.stdout.write(`${out[out.length - 1]}\n\n`);
  }
} finally {
  await stopEmbedded?.();
  progress('done');
}
