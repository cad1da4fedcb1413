/**
 * Tenant migrations: `migrate()` bringing 1,000 schema tenants to a new version (a column and an
 * index) beside a serial loop of the same DDL over 1,000 plain schemas; then a run with nothing
 * pending over 10,000 tenants (catalog rows; nothing to visit).
 */
import { mkdtempSync, copyFileSync, writeFileSync, rmSync, symlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import postgres from 'postgres';
import { Tenantry } from '../src/index.js';
import { EXAMPLE_TENANT_MIGRATIONS_DIR, PACKAGE_ROOT } from '../src/config.js';
import { intFromEnv, median, progress, type BenchContext } from './lib.js';

const TENANTS = intFromEnv('BENCH_MIGRATE_TENANTS', 1000, 1);
const IDLE_TENANTS = intFromEnv('BENCH_IDLE_TENANTS', 10000, 1);
const PROCESS_RUNS = intFromEnv('BENCH_MIGRATE_PROCESS_RUNS', 7, 1);

/**
 * The CLI as it ships (built JavaScript, not tsx): compiled from this checkout into a scratch folder
 * beside package.json and migrations/, exactly as `npm run build` lays out dist/.
 */
function buildCli(): { bin: string; cleanup(): void } {
  const root = mkdtempSync(path.join(tmpdir(), 'tenantry-bench-cli-'));
  for (const f of ['package.json', 'migrations', 'node_modules']) symlinkSync(path.join(PACKAGE_ROOT, f), path.join(root, f));
  mkdirSync(path.join(root, 'bin'));
  copyFileSync(path.join(PACKAGE_ROOT, 'bin', 'tenantry.js'), path.join(root, 'bin', 'tenantry.js'));
  try {
    execFileSync(process.execPath, [path.join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(PACKAGE_ROOT, 'tsconfig.json'), '--outDir', path.join(root, 'dist'), '--declaration', 'false'], { stdio: 'ignore' });
  } catch {
    // tsc exits non-zero on a type error anywhere but still writes the JavaScript
  }
  return { bin: path.join(root, 'bin', 'tenantry.js'), cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** Wall time of a process from spawn to exit, ms; throws unless it exits 0. */
function runProcess(args: string[], env: NodeJS.ProcessEnv, cwd: string): number {
  const t = performance.now();
  const r = spawnSync(process.execPath, args, { env, cwd, encoding: 'utf8' });
  const took = performance.now() - t;
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  return took;
}
const V2 = 'alter table agents add column priority integer not null default 0;\ncreate index agents_priority_idx on agents (tenant_id, priority);\n';

export async function benchMigrations({ inst, version, fresh }: BenchContext): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-bench-mig-'));
  copyFileSync(path.join(EXAMPLE_TENANT_MIGRATIONS_DIR, '0001_agent_platform.sql'), path.join(dir, '0001_agent_platform.sql'));
  const own = await fresh({ tenantMigrations: dir, schemaPoolSize: 0 });
  const su = new URL(process.env.DATABASE_URL!);
  const plain = postgres(inst.urlFor(`${own.namespace}_shared`, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 1 });
  try {
    // 1,000 schema tenants at version 1, created concurrently
    let made = 0;
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; i < TENANTS; i += 8) {
        await own.tenantry.tenants.create({ slug: `mig-${i}`, isolation: 'schema' });
        if (++made % 200 === 0) progress(`migrations: ${made}/${TENANTS} schema tenants created`);
      }
    }));
    // the baseline: as many plain schemas with the same tables, migrated by a serial loop
    const ddl1 = (await import('node:fs')).readFileSync(path.join(dir, '0001_agent_platform.sql'), 'utf8').replaceAll('tenantry.current_tenant()', "'00000000-0000-4000-8000-000000000001'::uuid");
    for (let i = 0; i < TENANTS; i++) await plain.unsafe(`create schema bl_${i}; set search_path = bl_${i}; ${ddl1}; reset search_path`);
    progress('migrations: baseline schemas created');

    writeFileSync(path.join(dir, '0002_priority.sql'), V2);
    const next = await Tenantry.open({ databaseUrl: own.adminUrl, namespace: own.namespace, tenantMigrations: dir, schemaPoolSize: 0 });
    let report;
    try {
      report = await next.migrate();
      if (report.failed.length || report.migrated !== TENANTS) throw new Error(`migrate: ${report.migrated} migrated, ${report.failed.length} failed`);
    } finally {
      await next.close();
    }
    const t0 = performance.now();
    for (let i = 0; i < TENANTS; i++) {
      await plain.begin((tx) => tx.unsafe(`set local search_path = bl_${i}; ${V2}`));
    }
    const serialMs = performance.now() - t0;
    progress('migrations: 1,000 tenants done');

    // nothing pending across 10,000 tenants: catalog rows at the latest version (inserted directly;
    // the run must decide from the catalog alone, so no tenant objects are needed to measure it)
    await own.su`
      insert into tenantry_catalog.tenants (id, slug, name, status, tier, isolation, database_name, schema_name, role_name, schema_version)
      select gen_random_uuid(), 'idle-' || g, 'idle', 'active', 'free', 'schema', ${own.namespace + '_shared'}, 't_idle_' || g, ${own.namespace} || '_idle_' || g, 2
      from generate_series(1, ${IDLE_TENANTS - TENANTS}) g`;
    const idle = await Tenantry.open({ databaseUrl: own.adminUrl, namespace: own.namespace, tenantMigrations: dir, schemaPoolSize: 0 });
    const idleRuns: number[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const r = await idle.migrate();
        if (r.planned !== 0) throw new Error(`expected nothing pending, got ${r.planned}`);
        idleRuns.push(r.durationMs);
      }
    } finally {
      await idle.close();
    }
    // `tenantry migrate` as a process, built, nothing pending (the 10,000 catalog rows above), beside
    // the floor of any such command: a node process that opens one connection and runs one query
    progress('migrations: timing `tenantry migrate` as a process');
    const cli = buildCli();
    const processRuns: number[] = [];
    const floorRuns: number[] = [];
    try {
      const env = { ...process.env, DATABASE_URL: own.adminUrl, TENANTRY_NAMESPACE: own.namespace, TENANTRY_TENANT_MIGRATIONS: dir };
      const floorScript = `import postgres from ${JSON.stringify(path.join(PACKAGE_ROOT, 'node_modules', 'postgres', 'src', 'index.js'))}; const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} }); await sql\`select count(*) from tenantry_catalog.tenants\`; await sql.end();`;
      const out = spawnSync(process.execPath, [cli.bin, 'migrate'], { env, cwd: dir, encoding: 'utf8' });
      if (out.status !== 0 || !/nothing to do/.test(out.stdout)) throw new Error(`tenantry migrate: ${out.stdout} ${out.stderr}`);
      for (let i = 0; i < PROCESS_RUNS; i++) {
        processRuns.push(runProcess([cli.bin, 'migrate'], env, dir));
        floorRuns.push(runProcess(['--input-type=module', '-e', floorScript], env, dir));
      }
    } finally {
      cli.cleanup();
    }
    await own.su`delete from tenantry_catalog.tenants where slug like 'idle-%'`;
    return [
      '### Tenant migrations',
      '',
      `PostgreSQL ${version}; migration 0002 adds a column and an index to \`agents\`.`,
      '',
      '| what | tenantry | baseline | ratio |',
      '| --- | ---: | ---: | ---: |',
      `| migrate ${TENANTS} schema tenants (concurrency ${'default'}) | ${(report.durationMs / 1000).toFixed(2)} s | ${(serialMs / 1000).toFixed(2)} s (serial loop of the same DDL) | ${(report.durationMs / serialMs).toFixed(2)}x |`,
      `| migrate ${IDLE_TENANTS} tenants, nothing pending (median of 5) | ${median(idleRuns).toFixed(0)} ms | - | - |`,
      `| \`tenantry migrate\` as a process (built), nothing pending over ${IDLE_TENANTS} tenants, spawn to exit (median of ${PROCESS_RUNS}) | ${median(processRuns).toFixed(0)} ms | ${median(floorRuns).toFixed(0)} ms (node + postgres.js: connect, one query, exit) | ${(median(processRuns) / median(floorRuns)).toFixed(2)}x |`,
    ].join('\n');
  } finally {
    await plain.end({ timeout: 5 });
    await own.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}
