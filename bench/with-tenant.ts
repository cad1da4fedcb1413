/**
 * Tenant queries: `withTenant` reading 100 rows, in each isolation mode, beside two baselines on plain
 * postgres.js pools in the same database, run interleaved in this process:
 * - the plain prepared read: `WHERE tenant_id = $1` (the shared table for pooled, the tenant's schema
 *   or database otherwise), a protocol-level prepared statement, one round trip;
 * - the usual RLS way: a shared table with FORCE ROW LEVEL SECURITY and a policy on
 *   `current_setting('app.tenant_id')`, read by a role that is not its owner, in a transaction that
 *   sets the id with `set_config('app.tenant_id', $1, true)` (prepared statements, the set_config and
 *   the select pipelined: BEGIN, both, COMMIT).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import type { Isolation } from '../src/index.js';
import { intFromEnv, median, percentile, ratio, progress, timed, type BenchContext } from './lib.js';

const N = intFromEnv('BENCH_QUERY_N', 2000, 10);
const CONCURRENCY = 8;
// connections per baseline pool: as many as withTenant's pool has (poolSize, default 5), and the
// server's max_connections is shared
const BASELINE_POOL = 5;

/** Runs three operations N times each (after warm-up), rotating their order so all share the machine's noise. */
async function interleave3(n: number, warmup: number, ...ops: [() => Promise<unknown>, () => Promise<unknown>, () => Promise<unknown>]): Promise<number[][]> {
  const out: number[][] = [[], [], []];
  for (let i = 0; i < warmup + n; i++) {
    for (let k = 0; k < 3; k++) {
      const j = (i + k) % 3;
      const ms = await timed(ops[j]!);
      if (i >= warmup) out[j]!.push(ms);
    }
  }
  return out;
}

export async function benchWithTenant({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  const su = new URL(process.env.DATABASE_URL!);
  const rows: string[] = [];
  const pools: Sql[] = [];
  // the usual RLS way's role: not the owner of its table, not a superuser (both would bypass the policy)
  const rlsRole = `${inst.namespace}_bench_rls`;
  const rlsPassword = randomBytes(12).toString('hex');
  await inst.su.unsafe(`create role "${rlsRole}" login password '${rlsPassword}'`);
  const rlsDatabases = new Set<string>();
  try {
    for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
      const t = await tenantry.tenants.create({ slug: `wt-${mode}`, isolation: mode });
      // a neighbour with rows too, so the pooled table is shared for real
      const other = await tenantry.tenants.create({ slug: `wt-${mode}-other`, isolation: mode });
      for (const x of [t, other]) {
        await tenantry.withTenant(x.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 100) g`);
      }
      const plain = postgres(inst.urlFor(t.placement.database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: BASELINE_POOL });
      pools.push(plain);
      const table = `"${t.placement.schema}".agents`;
      // the usual RLS way's shared table: this tenant's 100 rows and 100 of a neighbour's
      const neighbour = randomUUID();
      if (!rlsDatabases.has(t.placement.database)) {
        rlsDatabases.add(t.placement.database);
        await plain.unsafe(`create schema bench_rls; grant usage on schema bench_rls to "${rlsRole}"; grant connect on database "${t.placement.database}" to "${rlsRole}"`);
      }
      const rlsTable = `bench_rls.agents_${mode}`;
      await plain.unsafe(`create table ${rlsTable} (like ${table} including defaults including constraints including indexes)`);
      await plain.unsafe(`alter table ${rlsTable} alter column tenant_id drop default`);
      await plain.unsafe(`insert into ${rlsTable} select * from ${table} where tenant_id = $1`, [t.id]);
      const cols = (await plain<{ attname: string }[]>`select attname from pg_attribute where attrelid = ${rlsTable}::regclass and attnum > 0 and not attisdropped order by attnum`).map((c) => c.attname);
      const copy = cols.map((c) => (c === 'tenant_id' ? '$2::uuid' : c === 'id' ? 'gen_random_uuid()' : `"${c}"`)).join(', ');
      await plain.unsafe(`insert into ${rlsTable} select ${copy} from ${rlsTable} where tenant_id = $1`, [t.id, neighbour]);
      await plain.unsafe(`alter table ${rlsTable} enable row level security; alter table ${rlsTable} force row level security;
        create policy tenant_isolation on ${rlsTable} using (tenant_id = current_setting('app.tenant_id')::uuid);
        grant select on ${rlsTable} to "${rlsRole}"; analyze ${rlsTable}`);
      const rls = postgres(inst.urlFor(t.placement.database, rlsRole, rlsPassword), { onnotice: () => {}, max: BASELINE_POOL });
      pools.push(rls);
      const viaTenantry = (): Promise<unknown> => tenantry.withTenant(t.id, (sql) => sql`select * from agents`);
      const viaPlain = (): Promise<unknown> => plain.unsafe(`select * from ${table} where tenant_id = $1`, [t.id], { prepare: true });
      const viaRls = (): Promise<unknown> => rls.begin((tx) => [tx`select set_config('app.tenant_id', ${t.id}, true)`, tx.unsafe(`select * from ${rlsTable}`, [], { prepare: true })]);
      const check = (await tenantry.withTenant(t.id, (sql) => sql`select count(*)::int as n from agents`))[0]!.n;
      const checkPlain = (await plain.unsafe(`select count(*)::int as n from ${table} where tenant_id = $1`, [t.id]))[0]!.n;
      const checkRls = (await rls.begin((tx) => [tx`select set_config('app.tenant_id', ${t.id}, true)`, tx.unsafe(`select count(*)::int as n from ${rlsTable}`)]))[1]![0]!.n;
      const checkRlsAll = (await plain.unsafe(`select count(*)::int as n from ${rlsTable}`))[0]!.n;
      if (check !== 100 || checkPlain !== 100 || checkRls !== 100 || checkRlsAll !== 200) throw new Error(`expected 100 rows, got ${check} / ${checkPlain} / ${checkRls} (of ${checkRlsAll})`);
      const lat = await interleave3(N, 200, viaTenantry, viaPlain, viaRls);
      // throughput with concurrent callers, each side alone
      const rps = async (op: () => Promise<unknown>): Promise<number> => {
        const per = Math.max(50, Math.floor(N / CONCURRENCY));
        const start = performance.now();
        await Promise.all(Array.from({ length: CONCURRENCY }, async () => { for (let i = 0; i < per; i++) await op(); }));
        return (per * CONCURRENCY) / ((performance.now() - start) / 1000);
      };
      const tRps = await rps(viaTenantry);
      const pRps = await rps(viaPlain);
      const rRps = await rps(viaRls);
      const [tm, pm, rm] = lat.map((xs) => median(xs)) as [number, number, number];
      rows.push(`| ${mode} | ${tm.toFixed(3)} ms | ${percentile(lat[0]!, 99).toFixed(3)} ms | ${pm.toFixed(3)} ms | ${rm.toFixed(3)} ms | **${ratio(tm, pm)}** | **${ratio(tm, rm)}** | ${ratio(rm, pm)} | ${tRps.toFixed(0)} / ${pRps.toFixed(0)} / ${rRps.toFixed(0)} |`);
      progress(`with-tenant ${mode}: done (${rows[rows.length - 1]})`);
      // the server's connections are shared: close this mode's baseline pools before the next mode
      await Promise.all(pools.splice(0).map((p) => p.end({ timeout: 5 })));
    }
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
    for (const db of rlsDatabases) {
      const s = postgres(inst.urlFor(db, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 1 });
      await s.unsafe(`drop schema if exists bench_rls cascade; revoke connect on database "${db}" from "${rlsRole}"`).finally(() => s.end({ timeout: 5 }));
    }
    await inst.su.unsafe(`drop role if exists "${rlsRole}"`);
  }
  return [
    '### Tenant queries: withTenant, 100-row read',
    '',
    `PostgreSQL ${version}; ${N} reads each of the three, interleaved, after 200 warm-up; throughput with ${CONCURRENCY} concurrent callers, each side a pool of ${BASELINE_POOL} connections.`,
    'withTenant: `withTenant(id, sql => sql\`select * from agents\`)` (the batch form: one round trip). Plain: `select * from <table> where tenant_id = $1`, prepared (one round trip).',
    'The usual RLS way: `set_config(\'app.tenant_id\', $1, true)` then the select, prepared and pipelined in one transaction (BEGIN, both, COMMIT: three round trips), on a FORCE RLS table read by a non-owner role.',
    'Targets (issue #10): withTenant at most 1.6x plain and 1.15x the usual RLS way.',
    '',
    '| mode | withTenant median | p99 | plain median | usual RLS way median | withTenant / plain | withTenant / RLS way | RLS way / plain | reads/s (withTenant / plain / RLS way) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
