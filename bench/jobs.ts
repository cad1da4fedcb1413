/**
 * Jobs (issue 13): events per second through the webhook outbox (written with the change, drained by
 * the job runner, signed and POSTed) to a loopback receiver, beside plain signed POSTs of the same
 * bodies at the same concurrency; and the retention purge of a 1,000,000-row tenant table (batches in
 * the tenant's walls) beside one DELETE of the same rows, in rows per second and the longest lock.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { intFromEnv, progress, ratio, type BenchContext } from './lib.js';
import { signWebhook } from '../src/webhooks/signature.js';

const EVENTS = intFromEnv('BENCH_WEBHOOK_EVENTS', 2000, 10);
const STREAMS = intFromEnv('BENCH_WEBHOOK_STREAMS', 20, 1);
const ROWS = intFromEnv('BENCH_RETENTION_ROWS', 1_000_000, 1000);

async function outbox({ inst, fresh }: BenchContext): Promise<string[]> {
  let received = 0;
  let wanted = Infinity;
  let done: () => void = () => undefined;
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(200); res.end(); if (++received >= wanted) done(); });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/bench`;
  const own = await fresh({ schemaPoolSize: 0, jobConcurrency: STREAMS, jobTickMs: 1000 });
  try {
    const { tenantry } = own;
    await tenantry.webhooks.create({ url });
    await tenantry.startJobs({ kind: 'bench', schedule: false });
    const tenants = Array.from({ length: STREAMS }, () => randomUUID());
    progress(`jobs: ${EVENTS} events over ${STREAMS} tenant streams through the outbox`);
    received = 0;
    wanted = EVENTS;
    const all = new Promise<void>((r) => { done = r; });
    const start = performance.now();
    // each event its own transaction, as each change is; the audit append writes it to the outbox
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < EVENTS) {
        const i = next++;
        await tenantry.catalog`insert into tenantry_catalog.audit_log (tenant_id, actor, action, target, details)
                               values (${tenants[i % STREAMS]!}, 'bench', 'tenant.suspended', 'bench', ${tenantry.catalog.json({ i })})`;
      }
    }));
    const written = performance.now() - start;
    await all;
    const outboxMs = performance.now() - start;
    // baseline: the same bodies signed and POSTed straight from the process, one stream per tenant
    const key = Buffer.alloc(32, 7);
    received = 0;
    const direct = performance.now();
    await Promise.all(tenants.map(async (_t, s) => {
      for (let i = s; i < EVENTS; i += STREAMS) {
        const body = JSON.stringify({ type: 'tenant.suspended', data: { i } });
        const id = randomUUID();
        const ts = Math.floor(Date.now() / 1000);
        await new Promise<void>((resolve, reject) => {
          const req = http.request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'tenantry-id': id, 'tenantry-timestamp': String(ts), 'tenantry-signature': signWebhook(key, id, ts, body) } }, (res) => { res.resume(); res.on('end', () => resolve()); });
          req.on('error', reject);
          req.end(body);
        });
      }
    }));
    const directMs = performance.now() - direct;
    const rate = (n: number, msv: number): string => `${Math.round(n / (msv / 1000))}/s`;
    const [lat] = await own.su<{ p50: number; p99: number }[]>`
      select percentile_cont(0.5) within group (order by latency_ms) as p50, percentile_cont(0.99) within group (order by latency_ms) as p99 from tenantry_catalog.webhook_attempts`;
    return [
      `| ${EVENTS} events, ${STREAMS} tenant streams | Tenantry (outbox + graphile-worker, in order per tenant) | baseline (signed POSTs from the process) | ratio |`,
      '| --- | --- | --- | --- |',
      `| events/s end to end | ${rate(EVENTS, outboxMs)} | ${rate(EVENTS, directMs)} | ${ratio(directMs, outboxMs)} |`,
      `| writing the changes (outbox rows in their transactions) | ${rate(EVENTS, written)} | - | - |`,
      `| attempt latency p50 / p99 (recorded per attempt) | ${Number(lat?.p50 ?? 0).toFixed(0)} / ${Number(lat?.p99 ?? 0).toFixed(0)} ms | - | - |`,
    ];
  } finally {
    await own.cleanup();
    receiver.closeAllConnections();
    receiver.close();
    void inst;
  }
}

async function retention({ fresh }: BenchContext): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-bench-retention-'));
  writeFileSync(path.join(dir, '0001_events.sql'), `
-- tenantry:retention table=events class=executions column=created_at
create table events (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  payload text not null,
  created_at timestamptz not null,
  primary key (tenant_id, id)
);
create index events_created_idx on events (tenant_id, created_at);
`);
  const own = await fresh({ schemaPoolSize: 0, tenantMigrations: dir, retentionBatchSize: 5000 });
  try {
    const { tenantry } = own;
    const fill = async (slug: string): Promise<string> => {
      const t = await tenantry.tenants.create({ slug, name: slug, tier: 'free', isolation: 'schema' });
      progress(`jobs: filling ${slug} with ${ROWS} rows (half past the free tier's 30 days)`);
      for (let from = 0; from < ROWS; from += 100_000) {
        const n = Math.min(100_000, ROWS - from);
        await tenantry.withTenant(t.id, (tx) => tx`
          insert into events (payload, created_at)
          select md5(g::text), now() - case when g % 2 = 0 then interval '60 days' else interval '1 day' end
          from generate_series(${from + 1}::int, ${from + n}::int) g`);
      }
      await tenantry.withTenant(t.id, (tx) => tx`analyze events`);
      return t.id;
    };
    const a = await fill('bench-retention');
    progress('jobs: retention purge (batches of 5000 in the tenant\'s walls)');
    const start = performance.now();
    const report = await tenantry.retention.purgeTenant(a);
    const purgeMs = performance.now() - start;
    const b = await fill('bench-retention-base');
    progress('jobs: baseline, one DELETE of the same rows');
    const bStart = performance.now();
    const deleted = await tenantry.withTenant(b, async (tx) => (await tx`delete from events where created_at < now() - interval '30 days'`).count);
    const oneMs = performance.now() - bStart;
    const rows = report.counts.events ?? 0;
    const rate = (n: number, msv: number): string => `${Math.round(n / (msv / 1000)).toLocaleString('en-US')} rows/s`;
    return [
      '',
      `| retention purge, ${ROWS.toLocaleString('en-US')}-row table (schema tenant) | Tenantry (batches of 5000) | baseline (one DELETE) | ratio |`,
      '| --- | --- | --- | --- |',
      `| rows deleted | ${rows.toLocaleString('en-US')} | ${deleted.toLocaleString('en-US')} | - |`,
      `| rate | ${rate(rows, purgeMs)} | ${rate(deleted, oneMs)} | ${ratio(purgeMs, oneMs)} |`,
      `| longest lock held (one transaction) | ${report.longestBatchMs.toFixed(0)} ms | ${oneMs.toFixed(0)} ms | ${ratio(oneMs, report.longestBatchMs)} shorter |`,
    ];
  } finally {
    await own.cleanup();
  }
}

export async function benchJobs(ctx: BenchContext): Promise<string> {
  const lines = [`### Jobs: webhook outbox and retention purge (PostgreSQL ${ctx.version})`, ''];
  lines.push(...await outbox(ctx));
  lines.push(...await retention(ctx));
  return lines.join('\n');
}
