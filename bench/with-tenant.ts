/**
 * Tenant queries: `withTenant` reading 100 rows, in each isolation mode, beside the same query
 * hand-written on a plain postgres.js pool (`WHERE tenant_id = $1` on the shared table for pooled, the
 * tenant's schema or database otherwise), run interleaved in this process.
 */
import postgres, { type Sql } from 'postgres';
import type { Isolation } from '../src/index.js';
import { intFromEnv, interleave, median, percentile, ratio, progress, type BenchContext } from './lib.js';

const N = intFromEnv('BENCH_QUERY_N', 2000, 10);
const CONCURRENCY = 8;

export async function benchWithTenant({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  const su = new URL(process.env.DATABASE_URL!);
  const rows: string[] = [];
  const pools: Sql[] = [];
  try {
    for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
      const t = await tenantry.tenants.create({ slug: `wt-${mode}`, isolation: mode });
      // a neighbour with rows too, so the pooled table is shared for real
      const other = await tenantry.tenants.create({ slug: `wt-${mode}-other`, isolation: mode });
      for (const x of [t, other]) {
        await tenantry.withTenant(x.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 100) g`);
      }
      const plain = postgres(inst.urlFor(t.placement.database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: CONCURRENCY });
      pools.push(plain);
      const table = `"${t.placement.schema}".agents`;
      const viaTenantry = (): Promise<unknown> => tenantry.withTenant(t.id, (sql) => sql`select * from agents`);
      const viaPlain = (): Promise<unknown> => plain.unsafe(`select * from ${table} where tenant_id = $1`, [t.id]);
      const check = (await tenantry.withTenant(t.id, (sql) => sql`select count(*)::int as n from agents`))[0]!.n;
      const checkPlain = (await plain.unsafe(`select count(*)::int as n from ${table} where tenant_id = $1`, [t.id]))[0]!.n;
      if (check !== 100 || checkPlain !== 100) throw new Error(`expected 100 rows, got ${check} / ${checkPlain}`);
      const lat = await interleave(N, 200, viaTenantry, viaPlain);
      // throughput with concurrent callers, each side alone
      const rps = async (op: () => Promise<unknown>): Promise<number> => {
        const per = Math.max(50, Math.floor(N / CONCURRENCY));
        const start = performance.now();
        await Promise.all(Array.from({ length: CONCURRENCY }, async () => { for (let i = 0; i < per; i++) await op(); }));
        return (per * CONCURRENCY) / ((performance.now() - start) / 1000);
      };
      const tRps = await rps(viaTenantry);
      const pRps = await rps(viaPlain);
      rows.push(`| ${mode} | ${median(lat.a).toFixed(3)} ms | ${percentile(lat.a, 99).toFixed(3)} ms | ${median(lat.b).toFixed(3)} ms | ${percentile(lat.b, 99).toFixed(3)} ms | ${ratio(median(lat.a), median(lat.b))} | ${tRps.toFixed(0)} / ${pRps.toFixed(0)} |`);
      progress(`with-tenant ${mode}: done`);
    }
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
  return [
    '### Tenant queries: withTenant, 100-row read',
    '',
    `PostgreSQL ${version}; ${N} reads each, interleaved, after 200 warm-up; throughput with ${CONCURRENCY} concurrent callers.`,
    '',
    '| mode | withTenant median | p99 | plain pool median | p99 | ratio | reads/s (withTenant / plain) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
