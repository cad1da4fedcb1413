/**
 * Chaos (BENCH_ONLY=chaos): a PostgreSQL cluster of its own is kill -9'd and restarted under steady
 * load, BENCH_CHAOS_ROUNDS times (default 5). For the Tenantry server (`tenantry serve`, default 30 s
 * request deadline) and, beside it in this process, a bare Fastify route on a plain postgres.js pool
 * reading the same tenant row: the time from PostgreSQL accepting queries again to /readyz 200 and to
 * the first successful tenant request, and how many requests started during the outage were answered
 * (with any status) and how many hung (no answer within 35 s).
 */
import Fastify from 'fastify';
import postgres from 'postgres';
import { findPgBin, startPgCluster } from '../test/helpers/pg-cluster.js';
import { sleep, startServerProcess } from '../test/helpers/chaos-harness.js';
import { intFromEnv, median, progress, type BenchContext } from './lib.js';

const ROUNDS = intFromEnv('BENCH_CHAOS_ROUNDS', 5, 1);
const CLIENTS = 8;
const HUNG_MS = 35_000;

interface Outcome { started: number; ms: number; status: number | 'hung' | 'error' }

export async function benchChaos(_ctx: BenchContext): Promise<string> {
  if (!findPgBin()) return '**Chaos**: skipped (no PostgreSQL binaries; set PG_BIN).';
  const cluster = await startPgCluster();
  const server = await startServerProcess(cluster, { TENANTRY_REQUEST_TIMEOUT_MS: '30000', TENANTRY_REPAIR_AFTER_SECONDS: '60' });
  const bare = Fastify({ logger: false });
  const pool = postgres(cluster.url, { max: 10, onnotice: () => {} });
  try {
    await server.waitReady(120_000);
    const created = await server.call('POST', '/v1/tenants', { slug: 'chaos-bench', tier: 'enterprise' });
    if (typeof created !== 'object' || created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created)}`);
    const { id, apiKey } = created.body as { id: string; apiKey: string };
    await server.call('PUT', `/v1/tenants/${id}/quotas`, { api_calls_per_minute: 1_000_000_000 });
    bare.get('/tenant', async () => (await pool`select id, slug, status from tenantry_catalog.tenants where id = ${id}`)[0]);
    const bareUrl = await bare.listen({ port: 0, host: '127.0.0.1' });

    const tenantryCall = async (): Promise<Outcome> => {
      const started = Date.now();
      const r = await server.call('GET', '/v1/tenant', undefined, { authorization: `Bearer ${apiKey}` }, HUNG_MS);
      return { started, ms: Date.now() - started, status: r === 'no-answer' ? 'hung' : r === 'connection-error' ? 'error' : r.status };
    };
    const bareCall = async (): Promise<Outcome> => {
      const started = Date.now();
      try {
        const res = await fetch(`${bareUrl}/tenant`, { signal: AbortSignal.timeout(HUNG_MS) });
        await res.text();
        return { started, ms: Date.now() - started, status: res.status };
      } catch (err) {
        return { started, ms: Date.now() - started, status: (err as Error).name === 'TimeoutError' ? 'hung' : 'error' };
      }
    };

    const results = { tenantry: [] as Outcome[], bare: [] as Outcome[] };
    let loading = true;
    const loop = async (call: () => Promise<Outcome>, into: Outcome[]): Promise<void> => {
      while (loading) { into.push(await call()); await sleep(20); }
    };
    const loops = [
      ...Array.from({ length: CLIENTS / 2 }, () => loop(tenantryCall, results.tenantry)),
      ...Array.from({ length: CLIENTS / 2 }, () => loop(bareCall, results.bare)),
    ];
    const rounds: { down: number; up: number; readyMs: number; tenantryFirstMs: number; bareFirstMs: number }[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await sleep(2_000);
      progress(`chaos: round ${i + 1}/${ROUNDS}: kill -9 of the postmaster`);
      const down = Date.now();
      await cluster.kill();
      await sleep(2_000);
      await cluster.start();
      const up = Date.now();
      const readyMs = await server.waitReady(120_000);
      const firstOk = async (into: Outcome[]): Promise<number> => {
        for (;;) {
          const ok = into.find((o) => o.started >= up && o.status === 200);
          if (ok) return ok.started + ok.ms - up;
          if (Date.now() - up > 120_000) return Number.NaN;
          await sleep(10);
        }
      };
      rounds.push({ down, up, readyMs, tenantryFirstMs: await firstOk(results.tenantry), bareFirstMs: await firstOk(results.bare) });
    }
    await sleep(1_000);
    loading = false;
    await Promise.all(loops);

    const during = (xs: Outcome[]): Outcome[] => xs.filter((o) => rounds.some((r) => o.started >= r.down && o.started <= r.up + Math.max(r.tenantryFirstMs, r.bareFirstMs)));
    const summary = (xs: Outcome[]): { answered: number; hung: number; errors: number; p50: number; worst: number } => {
      const d = during(xs);
      const answered = d.filter((o) => typeof o.status === 'number');
      return {
        answered: answered.length, hung: d.filter((o) => o.status === 'hung').length, errors: d.filter((o) => o.status === 'error').length,
        p50: median(answered.map((o) => o.ms)), worst: Math.max(0, ...answered.map((o) => o.ms)),
      };
    };
    const t = summary(results.tenantry);
    const b = summary(results.bare);
    const med = (f: (r: (typeof rounds)[number]) => number): string => `${median(rounds.map(f)).toFixed(0)} ms`;
    return [
      `**Chaos** (\`BENCH_ONLY=chaos\`; PostgreSQL ${cluster.binDir.match(/postgresql\/(\d+)/)?.[1] ?? ''} cluster of its own kill -9'd and restarted ${ROUNDS} times under load, ${CLIENTS / 2} clients each side; medians over the rounds)`,
      '',
      '| what | tenantry (`tenantry serve`) | baseline (bare Fastify + postgres.js pool) |',
      '| --- | ---: | ---: |',
      `| PostgreSQL accepting queries -> /readyz 200 | ${med((r) => r.readyMs)} | - |`,
      `| PostgreSQL accepting queries -> first successful tenant request | ${med((r) => r.tenantryFirstMs)} | ${med((r) => r.bareFirstMs)} |`,
      `| requests started during the outages: answered / hung (>35 s) / connection errors | ${t.answered} / ${t.hung} / ${t.errors} | ${b.answered} / ${b.hung} / ${b.errors} |`,
      `| their latency: median / worst | ${t.p50.toFixed(0)} ms / ${t.worst} ms | ${b.p50.toFixed(0)} ms / ${b.worst} ms |`,
      `| the server process ended on its own | ${server.unexpectedExits.length === 0 ? 'never' : `${server.unexpectedExits.length} time(s)`} | - |`,
    ].join('\n');
  } finally {
    await bare.close().catch(() => undefined);
    await pool.end({ timeout: 2 }).catch(() => undefined);
    await server.stop().catch(() => undefined);
    await cluster.destroy();
  }
}
