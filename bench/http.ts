/**
 * HTTP: requests per second and latency of `GET /v1/tenant` with a tenant API key (key check, rate
 * limit, tenant lookup) beside a bare Fastify route returning the same JSON, same process, same load
 * tool (autocannon), once with the PostgreSQL limiter store and once with the Redis store.
 */
import autocannon from 'autocannon';
import Fastify from 'fastify';
import { Tenantry } from '../src/index.js';
import { buildServer, tenantView } from '../src/server/app.js';
import { intFromEnv, progress, type BenchContext } from './lib.js';

const SECONDS = intFromEnv('BENCH_HTTP_SECONDS', 8, 1);
const CONNECTIONS = 32;

async function load(url: string, headers: Record<string, string>): Promise<{ rps: number; p50: number; p99: number; errors: number; non2xx: number }> {
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, headers });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx };
}

export async function benchHttp({ inst, version }: BenchContext): Promise<string> {
  const rows: string[] = [];
  const t = await inst.tenantry.tenants.create({ slug: 'http-bench', tier: 'enterprise' });
  await inst.tenantry.quotas.setOverrides(t.id, { api_calls_per_minute: 1_000_000_000 });
  const key = t.apiKey!.key;
  const body = tenantView(await inst.tenantry.tenants.get(t.id));

  const bare = Fastify({ logger: false });
  bare.get('/v1/tenant', async () => body);
  const bareUrl = await bare.listen({ port: 0, host: '127.0.0.1' });

  let redisAvailable = true;
  for (const store of ['postgres', 'redis'] as const) {
    let tenantry: Tenantry;
    if (store === 'postgres') tenantry = inst.tenantry;
    else {
      try {
        tenantry = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', schemaPoolSize: 0 });
        await tenantry.rateLimit(t.id);
      } catch {
        redisAvailable = false;
        continue;
      }
    }
    const app = await buildServer({ tenantry, logLevel: 'silent' });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const headers = { authorization: `Bearer ${key}` };
      // warm up both, then alternate so they share the machine's noise
      await load(`${url}/v1/tenant`, headers);
      await load(`${bareUrl}/v1/tenant`, {});
      const a = await load(`${url}/v1/tenant`, headers);
      const b = await load(`${bareUrl}/v1/tenant`, {});
      if (a.non2xx || a.errors) throw new Error(`GET /v1/tenant answered ${a.non2xx} non-2xx and ${a.errors} errors under load`);
      rows.push(`| ${store} limiter | ${a.rps.toFixed(0)} | ${a.p50} / ${a.p99} ms | ${b.rps.toFixed(0)} | ${b.p50} / ${b.p99} ms | ${((a.rps / b.rps) * 100).toFixed(0)}% |`);
      progress(`http: ${store} limiter done`);
    } finally {
      await app.close();
      if (store === 'redis') await tenantry.close();
    }
  }
  await bare.close();
  if (!redisAvailable) rows.push('| redis limiter | (no Redis reachable) | | | | |');
  return [
    '### HTTP API: GET /v1/tenant with a tenant key',
    '',
    `PostgreSQL ${version}; autocannon, ${CONNECTIONS} connections, ${SECONDS} s per run after a warm-up run, server and load tool in this one process.`,
    '',
    '| store | tenantry req/s | p50 / p99 | bare Fastify req/s | p50 / p99 | tenantry / bare |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}
