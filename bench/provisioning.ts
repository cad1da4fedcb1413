/**
 * Provisioning: how long `tenantry.tenants.create` takes per isolation mode, next to the raw
 * PostgreSQL work a hand-rolled setup would do for the same tenant, then a burst of concurrent creates.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import postgres, { type Sql } from 'postgres';
import { loadMigrationFiles } from '../src/migrations/files.js';
import { EXAMPLE_TENANT_MIGRATIONS_DIR } from '../src/config.js';
import type { Isolation } from '../src/index.js';
import { intFromEnv, median, percentile, ms, progress, timed, type BenchContext } from './lib.js';

const MODES: readonly Isolation[] = ['pooled', 'schema', 'database'];
const N = intFromEnv('BENCH_N', 30, 1);
const WARMUP = 3;
const CONCURRENT = intFromEnv('BENCH_CONCURRENT', 200, 0);
/** the baseline's connections, as many as Tenantry's own admin pool, so bursts compete alike */
const BASELINE_POOL = 10;
/** stands in for tenantry.current_tenant() in the baseline DDL, which has no Tenantry function */
const BASELINE_TENANT = '00000000-0000-4000-8000-000000000001';

/**
 * The raw PostgreSQL work behind one tenant of each mode, as a hand-rolled setup would do it, run by
 * the same CREATEDB + CREATEROLE user Tenantry runs as.
 */
interface Baseline {
  pooled(): Promise<void>;
  schema(): Promise<void>;
  database(): Promise<void>;
  cleanup(): Promise<void>;
}

async function createBaseline(adminUrl: string, namespace: string): Promise<Baseline> {
  const on = (database: string, max: number): Sql => {
    const u = new URL(adminUrl);
    u.pathname = `/${database}`;
    return postgres(u.toString(), { onnotice: () => {}, max });
  };
  const ddl = loadMigrationFiles(EXAMPLE_TENANT_MIGRATIONS_DIR).map((m) => m.sql).join('\n')
    .replaceAll('tenantry.current_tenant()', `'${BASELINE_TENANT}'::uuid`);
  if (/\btenantry\./.test(ddl)) throw new Error('the example DDL calls Tenantry functions the baseline cannot replace');

  const dbName = `${namespace}_bl`;
  const templateName = `${namespace}_bl_template`;
  const admin = on(new URL(adminUrl).pathname.slice(1), 1);
  await admin.unsafe(`create database "${dbName}"`);
  await admin.unsafe(`create database "${templateName}"`);
  const tmpl = on(templateName, 1);
  await tmpl.begin((tx) => tx.unsafe(`create schema app; set local search_path = app; ${ddl}`));
  await tmpl.end({ timeout: 5 });
  // like Tenantry's own template: nobody sits in it, so CREATE DATABASE ... TEMPLATE never waits
  await admin.unsafe(`alter database "${templateName}" allow_connections false`);
  await admin.end({ timeout: 5 });

  const sql = on(dbName, BASELINE_POOL);
  await sql.unsafe(`create table tenants (
    id uuid primary key default gen_random_uuid(), slug text not null unique, name text not null,
    status text not null default 'active', tier text not null default 'free', isolation text not null,
    metadata jsonb not null default '{}'::jsonb, created_at timestamptz not null default now())`);
  let seq = 0;
  const clones: string[] = [];
  return {
    async pooled() {
      const slug = `bl-${++seq}`;
      await sql`insert into tenants (slug, name, isolation) values (${slug}, ${slug}, 'pooled')`;
    },
    async schema() {
      const schema = `s_${++seq}`;
      await sql.begin((tx) => tx.unsafe(`create schema "${schema}"; set local search_path = "${schema}"; ${ddl}`));
    },
    async database() {
      const name = `${namespace}_bl_d${++seq}`;
      clones.push(name);
      await sql.unsafe(`create database "${name}" template "${templateName}"`);
    },
    async cleanup() {
      await sql.end({ timeout: 5 });
      const cleaner = on(new URL(adminUrl).pathname.slice(1), 4);
      try {
        const pending = [...clones, dbName];
        await Promise.all(Array.from({ length: 4 }, async () => {
          for (let name = pending.pop(); name; name = pending.pop()) await cleaner.unsafe(`drop database if exists "${name}" with (force)`);
        }));
        await cleaner.unsafe(`alter database "${templateName}" allow_connections true`).catch(() => undefined);
        await cleaner.unsafe(`drop database if exists "${templateName}" with (force)`);
      } finally {
        await cleaner.end({ timeout: 5 });
      }
    },
  };
}

interface Row { label: string; tenantry: number[]; baseline: number[] }
interface Burst { label: string; totalMs: number; ok: number; errors: string[]; latencies: number[] }

async function burst(label: string, count: number, op: (i: number) => Promise<unknown>): Promise<Burst> {
  const latencies: number[] = [];
  const errors: string[] = [];
  const start = performance.now();
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const t0 = performance.now();
    try {
      await op(i);
      latencies.push(performance.now() - t0);
    } catch (err) {
      errors.push((err as Error)?.message ?? String(err));
    }
  }));
  return { label, totalMs: performance.now() - start, ok: latencies.length, errors, latencies };
}

export async function benchProvisioning({ inst, version }: BenchContext): Promise<string> {
  let baseline: Baseline | undefined;
  try {
    baseline = await createBaseline(inst.adminUrl, inst.namespace);
    const run = randomBytes(2).toString('hex');
    const rows: Row[] = [];

    for (const mode of MODES) {
      const row: Row = { label: mode, tenantry: [], baseline: [] };
      for (let i = 0; i < WARMUP + N; i++) {
        const viaTenantry = (): Promise<number> => timed(() => inst.tenantry.tenants.create({ slug: `b${run}-${mode}-${i}`, isolation: mode }));
        const viaBaseline = (): Promise<number> => timed(() => baseline![mode]());
        // alternate which goes first, so neither always inherits the other's after-effects
        let t: number;
        let b: number;
        if (i % 2 === 0) { t = await viaTenantry(); b = await viaBaseline(); } else { b = await viaBaseline(); t = await viaTenantry(); }
        if (i >= WARMUP) { row.tenantry.push(t); row.baseline.push(b); }
      }
      progress(`${mode}: done`);
      rows.push(row);
    }

    const bursts: Burst[] = [];
    if (CONCURRENT > 0) {
      const modeOf = (i: number): Isolation => MODES[i % MODES.length]!;
      bursts.push(await burst('tenantry', CONCURRENT, (i) => inst.tenantry.tenants.create({ slug: `c${run}-${modeOf(i)}-${i}`, isolation: modeOf(i) })));
      progress('tenantry burst: done');
      bursts.push(await burst('baseline', CONCURRENT, (i) => baseline![modeOf(i)]()));
      progress('baseline burst: done');
      rows.push({ label: `${CONCURRENT} concurrent, mixed (per create)`, tenantry: bursts[0]!.latencies, baseline: bursts[1]!.latencies });
    }

    const lines = [
      `### Provisioning\n\nPostgreSQL ${version}; ${N} sequential creates per mode after ${WARMUP} warm-up, each interleaved with one baseline op.`,
      '',
      '| mode | tenantry median | p95 | baseline median | p95 | ratio (median/median) |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      ...rows.map((r) => r.tenantry.length && r.baseline.length
        ? `| ${r.label} | ${ms(median(r.tenantry))} | ${ms(percentile(r.tenantry, 95))} | ${ms(median(r.baseline))} | ${ms(percentile(r.baseline, 95))} | ${(median(r.tenantry) / median(r.baseline)).toFixed(1)}x |`
        : `| ${r.label} | n/a | n/a | n/a | n/a | n/a |`),
    ];
    if (bursts.length) {
      lines.push(
        '',
        `| ${CONCURRENT} concurrent creates, mixed modes | total | creates/s | errors |`,
        '| --- | ---: | ---: | ---: |',
        ...bursts.map((b) => `| ${b.label} | ${ms(b.totalMs)} | ${(b.ok / (b.totalMs / 1000)).toFixed(0)} | ${b.errors.length} |`),
      );
      for (const b of bursts) {
        const distinct = [...new Set(b.errors)].slice(0, 5);
        for (const e of distinct) lines.push('', `${b.label} error (x${b.errors.filter((x) => x === e).length}): ${e}`);
      }
    }
    return lines.join('\n');
  } finally {
    await baseline?.cleanup().catch((err: unknown) => progress(`baseline cleanup failed: ${String(err)}`));
  }
}
