/**
 * Ten thousand schema tenants on one server (issue #10): creates at concurrency 8, the last tenth's
 * median beside the first tenth's; a read of a random tenant among all of them beside a read of a hot
 * set of 50; every tenant migrated (a column and an index). The tenants live in a throwaway
 * installation of their own (catalog, shared database, roles), removed afterwards.
 */
import { mkdtempSync, copyFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Tenantry } from '../src/index.js';
import { EXAMPLE_TENANT_MIGRATIONS_DIR } from '../src/config.js';
import { intFromEnv, interleave, median, percentile, ratio, progress, type BenchContext } from './lib.js';

const TENANTS = intFromEnv('BENCH_SCALE_TENANTS', 10_000, 100);
const READS = intFromEnv('BENCH_SCALE_READS', 2000, 10);
const CONCURRENCY = 8;
const HOT = 50;
const V2 = 'alter table agents add column priority integer not null default 0;\ncreate index agents_priority_idx on agents (tenant_id, priority);\n';

export async function benchScale({ version, fresh }: BenchContext): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tenantry-bench-scale-'));
  copyFileSync(path.join(EXAMPLE_TENANT_MIGRATIONS_DIR, '0001_agent_platform.sql'), path.join(dir, '0001_agent_platform.sql'));
  const own = await fresh({ tenantMigrations: dir, maxConnections: 24 });
  try {
    // ---- creates, CONCURRENCY at a time, each latency kept by its position
    const lat = new Array<number>(TENANTS);
    const ids = new Array<string>(TENANTS);
    let next = 0;
    const started = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < TENANTS; i = next++) {
        const t0 = performance.now();
        const t = await own.tenantry.tenants.create({ slug: `sc-${i}`, isolation: 'schema' });
        lat[i] = performance.now() - t0;
        ids[i] = t.id;
        if ((i + 1) % 1000 === 0) progress(`scale: ${i + 1}/${TENANTS} schema tenants created`);
      }
    }));
    const createSeconds = (performance.now() - started) / 1000;
    const tenth = Math.max(1, Math.floor(TENANTS / 10));
    const firstTenth = median(lat.slice(0, tenth));
    const lastTenth = median(lat.slice(TENANTS - tenth));
    // a few rows in every tenant, so a read has something to return
    next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < TENANTS; i = next++) {
        await own.tenantry.withTenant(ids[i]!, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 5) g`);
      }
    }));
    progress('scale: rows inserted');

    // ---- a read of a random tenant among all, beside a read of a hot set of 50 (interleaved)
    const read = (id: string) => own.tenantry.withTenant(id, (sql) => sql`select * from agents`);
    // warm the hot set's tenant cache and the random side's catalog lookups alike: both resolve the tenant first
    const reads = await interleave(READS, 200,
      () => read(ids[Math.floor(Math.random() * TENANTS)]!),
      (i) => read(ids[i % HOT]!));
    progress('scale: reads done');

    // ---- every tenant migrated to version 2 (a column and an index)
    writeFileSync(path.join(dir, '0002_priority.sql'), V2);
    const next2 = await Tenantry.open({ databaseUrl: own.adminUrl, namespace: own.namespace, tenantMigrations: dir, schemaPoolSize: 0 });
    let report;
    try {
      report = await next2.migrate();
    } finally {
      await next2.close();
    }
    if (report.failed.length || report.migrated !== TENANTS) throw new Error(`migrate: ${report.migrated} migrated, ${report.failed.length} failed`);
    progress('scale: migrated');
    const out = [
      `### Ten thousand schema tenants (\`BENCH_ONLY=scale\`, ${TENANTS} tenants)`,
      '',
      `PostgreSQL ${version}; ${TENANTS} schema tenants (BENCH_SCALE_TENANTS) created at concurrency ${CONCURRENCY} in a throwaway installation; schema pool of the default size; reads of 5 rows, ${READS} per side interleaved after 200 warm-up.`,
      '',
      '| measure | Tenantry | baseline | ratio | target |',
      '| --- | ---: | ---: | ---: | ---: |',
      `| create: median of the last tenth vs the first tenth | ${lastTenth.toFixed(1)} ms | ${firstTenth.toFixed(1)} ms | ${ratio(lastTenth, firstTenth)} | <= 1.3x |`,
      `| creates per second over all ${TENANTS} | ${(TENANTS / createSeconds).toFixed(0)} | | | |`,
      `| read of a random tenant among ${TENANTS} vs a hot set of ${HOT}, median | ${median(reads.a).toFixed(3)} ms | ${median(reads.b).toFixed(3)} ms | ${ratio(median(reads.a), median(reads.b))} | <= 1.3x |`,
      `| the same, p99 | ${percentile(reads.a, 99).toFixed(3)} ms | ${percentile(reads.b, 99).toFixed(3)} ms | ${ratio(percentile(reads.a, 99), percentile(reads.b, 99))} | |`,
      `| migrate all ${TENANTS} (a column and an index) | ${(report.durationMs / 1000).toFixed(1)} s | | | < 30 s |`,
    ];
    progress(`scale:\n${out.join('\n')}`);
    return out.join('\n');
  } finally {
    progress('scale: removing the tenants');
    await own.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}
