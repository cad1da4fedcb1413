/**
 * Plans: `increment` on metrics an app declared in its plan file beside `increment` on the built-in
 * agent-platform metrics of the same kind, in the same installation and run (the app's plan is the
 * built-in one plus its own metrics). Both go through the same in-memory plan lookup and the same one
 * UPDATE, so the ratio should be ~1.00x; the bound is 1.1x.
 */
import { BUILTIN_PLANS_DOCUMENT } from '../src/plans/builtin.js';
import { intFromEnv, progress, type BenchContext } from './lib.js';

const OPS = intFromEnv('BENCH_PLANS_OPS', 4000, 100);
const CONCURRENCY = 8;
const ROUNDS = 5;

async function opsPerSecond(total: number, op: (worker: number) => Promise<unknown>): Promise<number> {
  const per = Math.ceil(total / CONCURRENCY);
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, w) => { for (let i = 0; i < per; i++) await op(w); }));
  return (per * CONCURRENCY) / ((performance.now() - start) / 1000);
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

export async function benchPlans({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  // the built-in plans, plus two metrics of the app's own
  const doc = JSON.parse(JSON.stringify(BUILTIN_PLANS_DOCUMENT)) as { metrics: Record<string, unknown>[]; tiers: { limits: Record<string, unknown> }[] };
  doc.metrics.push({ name: 'participants', kind: 'count', unit: 'participants' }, { name: 'emails', kind: 'window', window: 'day', unit: 'emails' });
  for (const t of doc.tiers) Object.assign(t.limits, { participants: 'unlimited', emails: 'unlimited' });
  await tenantry.plans.apply(doc);
  const tenants: { id: string }[] = [];
  for (let w = 0; w < CONCURRENCY; w++) {
    const t = await tenantry.tenants.create({ slug: `plans-${w}`, tier: 'enterprise' });
    await tenantry.quotas.setOverrides(t.id, { max_agents: 1_000_000_000_000, llm_tokens_per_day: 1_000_000_000_000 });
    for (const m of ['agents', 'participants', 'llm_tokens', 'emails']) await tenantry.quotas.increment(t.id, m, 1);
    tenants.push(t);
  }
  const rows: string[] = [];
  for (const [kind, builtin, app] of [['count', 'agents', 'participants'], ['window (per day)', 'llm_tokens', 'emails']] as const) {
    const b: number[] = [];
    const a: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // alternate which side goes first, so neither always gets the warmer cache
      const runB = (): Promise<number> => opsPerSecond(OPS, (w) => tenantry.quotas.increment(tenants[w]!.id, builtin, 1));
      const runA = (): Promise<number> => opsPerSecond(OPS, (w) => tenantry.quotas.increment(tenants[w]!.id, app, 1));
      if (r % 2 === 0) { b.push(await runB()); a.push(await runA()); } else { a.push(await runA()); b.push(await runB()); }
    }
    const [mb, ma] = [median(b), median(a)];
    rows.push(`| \`increment\`, ${kind} | app-defined \`${app}\`: ${ma.toFixed(0)} /s | built-in \`${builtin}\`: ${mb.toFixed(0)} /s | ${(mb / ma).toFixed(2)}x |`);
    progress(`plans: ${kind} done`);
  }
  return [
    '### Plans: app-defined metrics beside the built-in ones',
    '',
    `PostgreSQL ${version}; ${OPS} debits per side per round, ${CONCURRENCY} concurrent callers (one tenant each), median of ${ROUNDS} alternating rounds; ratio = built-in rate / app-defined rate (the issue's bound: 1.1x).`,
    '',
    '| operation | tenantry (app-defined metric) | baseline (built-in metric) | ratio |',
    '| --- | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
