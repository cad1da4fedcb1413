/**
 * The SQL endpoint's guard (src/isolation/sql-guard.ts): parse-and-check time per statement, for a
 * 1-line SELECT and a 200-line query, beside the statement's own execution time on a plain postgres.js
 * pool against the same tenant's schema (the baseline), interleaved in this process.
 */
import postgres from 'postgres';
import { loadSqlGuard, checkTenantSql } from '../src/isolation/sql-guard.js';
import { intFromEnv, interleave, median, percentile, ratio, progress, type BenchContext } from './lib.js';

const N = intFromEnv('BENCH_GUARD_N', 2000, 10);

/** A 200-line reporting query over the example schema: a CTE, 190 computed columns, joins, grouping. */
export function twoHundredLineQuery(): string {
  const columns = Array.from({ length: 190 }, (_, i) => {
    const pick = [
      `  coalesce(a.name, 'none-${i}') as c${i}`,
      `  length(a.agent_type) + ${i} as c${i}`,
      `  upper(substr(a.status, 1, ${1 + (i % 5)})) as c${i}`,
      `  date_trunc('day', a.created_at) + interval '${i} minutes' as c${i}`,
      `  (a.config ->> 'k${i}') is null as c${i}`,
    ];
    return pick[i % pick.length]!;
  });
  const lines = [
    'with recent as (',
    '  select id, name, agent_type, status, config, created_at from agents',
    "  where created_at > now() - interval '30 days'",
    ')',
    'select',
    ...columns.map((c, i) => (i < columns.length - 1 ? `${c},` : c)),
    'from recent a',
    'left join users u on u.tenant_id = a.id',
    "where a.agent_type <> 'retired'",
    'order by a.name',
    'limit 50',
  ];
  return lines.join('\n');
}

export async function benchSqlGuard({ inst, version }: BenchContext): Promise<string> {
  await loadSqlGuard();
  const t = await inst.tenantry.tenants.create({ slug: 'bench-guard', isolation: 'schema' });
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 100) g`);
  const su = new URL(process.env.DATABASE_URL!);
  const plain = postgres(inst.urlFor(t.placement.database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 1 });
  const opts = { isolation: 'schema' as const, schema: t.placement.schema };
  const rows: string[] = [];
  try {
    await plain.unsafe(`set search_path = "${t.placement.schema}"`);
    for (const [label, sql, n] of [
      ['1-line SELECT', 'select id, name, status from agents where agent_type = $1 order by name limit 20', N],
      ['200-line query', twoHundredLineQuery(), Math.max(50, Math.floor(N / 10))],
    ] as const) {
      const params = sql.includes('$1') ? ['calculator'] : [];
      const check = checkTenantSql(sql, opts);
      if (check.kind !== 'SELECT') throw new Error(`the guard did not accept the ${label}`);
      // the guard through the endpoint's path too (same tenant, same text), so the query is known to run there
      const through = await inst.tenantry.runTenantSql(t.id, { sql, params });
      if (through.rows.length === 0) throw new Error(`the ${label} returned no rows through runTenantSql`);
      const lat = await interleave(n, 50, async () => { checkTenantSql(sql, opts); }, () => plain.unsafe(sql, params as never[]));
      rows.push(`| ${label} (${sql.split('\n').length} lines, ${sql.length} chars) | ${median(lat.a).toFixed(3)} ms | ${percentile(lat.a, 99).toFixed(3)} ms | ${median(lat.b).toFixed(3)} ms | ${percentile(lat.b, 99).toFixed(3)} ms | ${ratio(median(lat.a), median(lat.b))} |`);
      progress(`sql-guard ${label}: done`);
    }
  } finally {
    await plain.end({ timeout: 5 });
  }
  return [
    '### SQL guard: parse-and-check time per statement',
    '',
    `PostgreSQL ${version}; libpg-query (PostgreSQL's parser in WebAssembly) in this process; interleaved with the statement's own execution on a plain pool (a superuser, the tenant's schema), after 50 warm-up runs.`,
    '',
    '| statement | guard median | guard p99 | execution median | execution p99 | guard / execution |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
