/**
 * The job runner across processes (issue #13): two `tenantry worker`s and a `tenantry serve` at once
 * run each scheduled task once per period; a worker killed mid-job leaves its job to be retried by
 * another; no job is lost when PostgreSQL restarts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { findPgBin, startPgCluster } from './helpers/pg-cluster.js';
import { Tenantry, SCHEDULED_TASK_NAMES } from '../src/index.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const ADMIN = 'jobs-runner-test-operator-token-0123456789';

/** what the child processes wrote to stderr, printed when a test fails */
const stderr: string[] = [];
function spawnCli(inst: Pick<TestInstallation, 'adminUrl' | 'namespace'>, args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_ADMIN_KEY: ADMIN, PORT: '0',
      LOG_LEVEL: 'error', TENANTRY_SCHEMA_POOL_SIZE: '0', TENANTRY_MAX_CONNECTIONS: '6', TENANTRY_JOB_CONCURRENCY: '2', ...env,
    },
  });
  child.stderr!.on('data', (b: Buffer) => { stderr.push(`[${args[0]} ${child.pid}] ${b.toString('utf8')}`); });
  return child;
}
const exited = (c: ChildProcess): Promise<void> => new Promise((r) => { if (c.exitCode !== null || c.signalCode !== null) r(); else c.once('exit', () => r()); });

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; the processes said:\n${stderr.join('').slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('two workers and a server at once: each scheduled task runs once per period', async () => {
  const inst = await freshInstallation({ schemaPoolSize: 0 });
  const children: ChildProcess[] = [];
  try {
    await inst.tenantry.tenants.create({ slug: 'jobs-once', name: 'Once' });
    const env = {
      TENANTRY_SCHEDULE: SCHEDULED_TASK_NAMES.map((t) => `${t}=2`).join(','), TENANTRY_JOB_TICK_MS: '200', TENANTRY_JOB_DEAD_AFTER_SECONDS: '60',
    };
    children.push(spawnCli(inst, ['worker'], env), spawnCli(inst, ['worker'], env), spawnCli(inst, ['serve'], env));
    await until('three processes beating', async () => (await inst.su<{ n: string }[]>`select count(*) as n from tenantry_catalog.job_processes`)[0]!.n === '3', 180_000);
    const kinds = await inst.su<{ kind: string }[]>`select kind from tenantry_catalog.job_processes order by kind`;
    assert.deepEqual(kinds.map((k) => k.kind), ['serve', 'worker', 'worker']);
    const started = new Date();
    // every task through at least four of its 2-second periods with all three processes up
    await until('four finished periods of every task', async () => {
      const rows = await inst.su<{ task: string; n: string }[]>`
        select task, count(*) as n from tenantry_catalog.schedule_runs where period_start >= ${started} and finished_at is not null group by task`;
      return rows.length === SCHEDULED_TASK_NAMES.length && rows.every((r) => Number(r.n) >= 4);
    }, 120_000);
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map(exited));
    const runs = await inst.su<{ task: string; period_start: Date; runs: number }[]>`
      select task, period_start, runs from tenantry_catalog.schedule_runs where finished_at is not null order by task, period_start`;
    // runs counts completed runs: a failed attempt retried by the queue is the same run, not a second one
    const twice = runs.filter((r) => r.runs !== 1);
    assert.deepEqual(twice, [], 'no task ran twice in one period');
    // consecutive periods, none skipped while the processes ran
    for (const task of SCHEDULED_TASK_NAMES) {
      const starts = runs.filter((r) => r.task === task && r.period_start >= started).map((r) => r.period_start.getTime());
      assert.ok(starts.length >= 4, `${task}: ${starts.length} periods`);
    }
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await inst.cleanup();
  }
});

test('a worker killed mid-job leaves its job to be retried by another worker', async () => {
  const inst = await freshInstallation({ schemaPoolSize: 0 });
  const children: ChildProcess[] = [];
  const hold = await inst.su.reserve();
  try {
    const t = await inst.tenantry.tenants.create({ slug: 'jobs-killed', name: 'Killed' });
    const month = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), 1)).toISOString().slice(0, 10);
    await inst.su`insert into tenantry_catalog.usage_daily (tenant_id, metric, day, amount) values (${t.id}, 'llm_tokens', current_date, 5)
                  on conflict (tenant_id, metric, day) do update set amount = 5`;
    await inst.su`insert into tenantry_catalog.usage_monthly (tenant_id, metric, month, amount) values (${t.id}, 'llm_tokens', ${month}, 0)`;
    // the rollup job will wait on this row lock: the worker is mid-job when it is killed
    await hold`begin`;
    await hold`select 1 from tenantry_catalog.usage_monthly where tenant_id = ${t.id} for update`;
    await inst.su`select tenantry_jobs.add_job('usage.rollup', '{}'::json, max_attempts => 5)`;
    const a = spawnCli(inst, ['worker', '--no-schedule'], { TENANTRY_JOB_TICK_MS: '200' });
    children.push(a);
    const locked = await until('worker A to take the job', async () => (await inst.su<{ locked_by: string | null }[]>`select locked_by from tenantry_jobs.jobs where task_identifier = 'usage.rollup'`)[0]?.locked_by ?? undefined);
    await new Promise((r) => setTimeout(r, 500));
    a.kill('SIGKILL');
    await exited(a);
    await hold`commit`;
    const [still] = await inst.su<{ locked_by: string | null; attempts: number }[]>`select locked_by, attempts from tenantry_jobs.jobs where task_identifier = 'usage.rollup'`;
    assert.equal(still?.locked_by, locked, 'graphile-worker alone would keep it locked for four hours');
    const b = spawnCli(inst, ['worker', '--no-schedule'], { TENANTRY_JOB_TICK_MS: '200', TENANTRY_JOB_DEAD_AFTER_SECONDS: '3' });
    children.push(b);
    await until('worker B to finish the job', async () => (await inst.su`select 1 from tenantry_jobs.jobs where task_identifier = 'usage.rollup'`).length === 0);
    const [m] = await inst.su<{ amount: string }[]>`select amount from tenantry_catalog.usage_monthly where tenant_id = ${t.id} and metric = 'llm_tokens'`;
    assert.equal(Number(m!.amount), 5, 'the retried job did its work');
  } finally {
    await hold`rollback`.catch(() => undefined);
    hold.release();
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map(exited));
    await inst.cleanup();
  }
});

test('no job is lost when PostgreSQL restarts: webhook deliveries queued before a kill -9 all arrive after it', { skip: findPgBin() ? false : 'no PostgreSQL binaries' }, async () => {
  const cluster = await startPgCluster({ maxConnections: 60 });
  let healthy = false;
  const got = new Map<string, number>();
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const id = String(req.headers['tenantry-id']);
      if (healthy) got.set(id, (got.get(id) ?? 0) + 1);
      res.writeHead(healthy ? 200 : 503); res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/restart`;
  let lib: Tenantry | undefined;
  let worker: ChildProcess | undefined;
  try {
    lib = await Tenantry.open({ databaseUrl: cluster.url, namespace: 'jobsrestart', schemaPoolSize: 0 });
    await lib.webhooks.create({ url });
    // the runner in a process of its own, as in production: `tenantry worker`
    worker = spawnCli({ adminUrl: cluster.url, namespace: 'jobsrestart' }, ['worker', '--no-schedule'],
      { TENANTRY_JOB_TICK_MS: '200', TENANTRY_WEBHOOK_RETRY_BASE_MS: '200' });
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      await lib.catalog`insert into tenantry_catalog.audit_log (tenant_id, actor, action, target) values (null, 'test', 'tenant.suspended', ${`restart:${i}`})`;
    }
    for (const r of await lib.catalog<{ id: string }[]>`select id from tenantry_catalog.webhook_events order by seq`) ids.push(r.id);
    assert.equal(ids.length, 10);
    await until('the first refused attempt', async () => (await lib!.catalog`select 1 from tenantry_catalog.webhook_attempts limit 1`).length > 0);
    await cluster.kill();
    await new Promise((r) => setTimeout(r, 1000));
    await cluster.start();
    healthy = true;
    await until('all ten events delivered', async () => ids.every((id) => got.has(id)), 90_000);
    const check = postgres(cluster.url, { max: 1, onnotice: () => {} });
    try {
      const pending = await check`select status, count(*) from tenantry_catalog.webhook_deliveries group by status`;
      assert.deepEqual(pending.map((r) => r.status), ['succeeded']);
    } finally {
      await check.end();
    }
  } finally {
    worker?.kill('SIGKILL');
    if (worker) await exited(worker);
    await lib?.close().catch(() => undefined);
    receiver.closeAllConnections();
    receiver.close();
    await cluster.destroy();
  }
});
