/**
 * Connections at scale: withTenant through PgBouncer (transaction mode, Debian's package) beside the
 * same read direct; a database tenant's cold open (its pool made and its first connection opened)
 * beside a warm read; reads round-robin across many database tenants beside reads across 8, with 16
 * callers, under the default connection budget. All in this process, interleaved where paired.
 */
import postgres from 'postgres';
import { Tenantry, type Isolation } from '../src/index.js';
import { startPgBouncer } from '../test/helpers/pgbouncer.js';
import { intFromEnv, interleave, median, percentile, ratio, progress, timed, type BenchContext } from './lib.js';

const N = intFromEnv('BENCH_QUERY_N', 2000, 10);
const DB_TENANTS = intFromEnv('BENCH_DB_TENANTS', 300, 16);
const CALLERS = 16;
// the connection budget of the database-tenant runs (TENANTRY_MAX_CONNECTIONS's default); lower it on a
// server whose max_connections other clients share
const DB_BUDGET = intFromEnv('BENCH_DB_BUDGET', 40, 2);

export async function benchConnections({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  const out: string[] = [];
  const catalogDb = new URL(inst.adminUrl).pathname.slice(1);

  // ---- withTenant through PgBouncer beside direct
  const bouncer = await startPgBouncer({ poolSize: 8, databases: { [catalogDb]: 8 } });
  const viaBouncer = await Tenantry.open({ databaseUrl: bouncer.via(inst.adminUrl), directUrl: inst.adminUrl, namespace: inst.namespace, schemaPoolSize: 0 });
  const rows: string[] = [];
  try {
    for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
      const t = await tenantry.tenants.create({ slug: `cx-${mode}`, isolation: mode });
      await tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 100) g`);
      const direct = (): Promise<unknown> => tenantry.withTenant(t.id, (sql) => sql`select * from agents`);
      const pooled = (): Promise<unknown> => viaBouncer.withTenant(t.id, (sql) => sql`select * from agents`);
      const lat = await interleave(N, 200, pooled, direct);
      rows.push(`| ${mode} | ${median(lat.a).toFixed(3)} ms | ${percentile(lat.a, 99).toFixed(3)} ms | ${median(lat.b).toFixed(3)} ms | ${percentile(lat.b, 99).toFixed(3)} ms | ${ratio(median(lat.a), median(lat.b))} |`);
      progress(`connections: PgBouncer ${mode} done`);
    }
  } finally {
    await viaBouncer.close();
    await bouncer.stop();
  }
  out.push(
    '### Connections: withTenant through PgBouncer (transaction mode) beside direct',
    '',
    `PostgreSQL ${version}, PgBouncer 1.18 on loopback (pool 8 per database and user); a 100-row read, ${N} each, interleaved after 200 warm-up.`,
    '',
    '| mode | through PgBouncer median | p99 | direct median | p99 | ratio |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  );
  progress(`connections:\n${out.join('\n')}`);

  // ---- database tenants: cold open, and round-robin across many under the default budget
  progress(`connections: creating ${DB_TENANTS} database tenants`);
  const ids: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = next++; i < DB_TENANTS; i = next++) {
      const t = await tenantry.tenants.create({ slug: `cx-db-${i}`, isolation: 'database' });
      await tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 20) g`);
      ids.push(t.id);
    }
  }));
  // a fresh instance with the budget (default 40) and the default pool size (5): no pool open yet
  const fresh = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, schemaPoolSize: 0, maxConnections: DB_BUDGET });
  try {
    const read = (id: string) => (): Promise<unknown> => fresh.withTenant(id, (sql) => sql`select * from agents`);
    const cold: number[] = [];
    const warm: number[] = [];
    for (const id of ids.slice(0, Math.min(30, ids.length))) {
      cold.push(await timed(read(id)));
      warm.push(await timed(read(id)));
    }
    const throughput = async (set: string[], seconds: number): Promise<number> => {
      let done = 0;
      let k = 0;
      const until = performance.now() + seconds * 1000;
      await Promise.all(Array.from({ length: CALLERS }, async () => {
        while (performance.now() < until) {
          await read(set[k++ % set.length]!)();
          done++;
        }
      }));
      return done / seconds;
    };
    const few = await throughput(ids.slice(0, 8), 5);
    const many = await throughput(ids, 5);
    const evictions = fresh.poolStats().evictions;
    // its pools closed first, so the churn below does not compete with them for max_connections
    await fresh.close();
    // the ceiling of any round-robin that cannot keep every database open: a new connection per read
    // (plain postgres.js, `select 1`, the installation's admin user), same callers, same databases
    const databases = (await inst.su<{ datname: string }[]>`select database_name as datname from tenantry_catalog.tenants where id = any(${ids})`).map((r) => r.datname);
    let churned = 0;
    let c = 0;
    const churnUntil = performance.now() + 5000;
    await Promise.all(Array.from({ length: CALLERS }, async () => {
      while (performance.now() < churnUntil) {
        const one = postgres(inst.adminUrl, { database: databases[c++ % databases.length]!, max: 1, onnotice: () => {} });
        try {
          await one`select 1`;
        } finally {
          await one.end({ timeout: 5 });
        }
        churned++;
      }
    }));
    out.push(
      '',
      '### Connections: database tenants under one budget',
      '',
      `Budget ${DB_BUDGET} (BENCH_DB_BUDGET; TENANTRY_MAX_CONNECTIONS defaults to 40), pool size 5; pools start with one connection and grow on demand. ${ids.length} database tenants; a 20-row read.`,
      '',
      '| measure | Tenantry | baseline | ratio |',
      '| --- | ---: | ---: | ---: |',
      `| cold open (pool made, first connection) vs warm read, median of ${cold.length} | ${median(cold).toFixed(2)} ms | ${median(warm).toFixed(2)} ms | ${ratio(median(cold), median(warm))} |`,
      `| ${CALLERS} callers round-robin across ${ids.length} databases vs across 8, reads/s | ${many.toFixed(0)} | ${few.toFixed(0)} | ${(many / few).toFixed(2)} |`,
      `| pool evictions during the round-robin | ${evictions} | | |`,
      `| ceiling: a new connection per read across the same ${ids.length} databases (plain postgres.js, \`select 1\`), reads/s vs Tenantry across 8 | ${(churned / 5).toFixed(0)} | ${few.toFixed(0)} | ${(churned / 5 / few).toFixed(2)} |`,
    );
  } finally {
    await fresh.close();
  }
  // on stderr at once too: removing hundreds of tenant databases afterwards takes a while
  progress(`connections:\n${out.join('\n')}`);
  return out.join('\n');
}
