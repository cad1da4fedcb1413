import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Sql } from 'postgres';
import { run, runMigrations, Logger as WorkerLogger, type Runner, type Task, type TaskList, type WorkerEvents } from 'graphile-worker';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import type { JobContext, AddJobOptions } from './context.js';
import { SCHEDULED_TASK_NAMES, schedulePeriods, periodStart, type ScheduledTask } from './schedule.js';
import { storageRefresh } from './storage-refresh.js';
import { provisioningSweep } from './provisioning-sweep.js';
import { expiryPurge } from './expiry-purge.js';
import { trialLifecycle } from './trial-lifecycle.js';
import { tenantsPurge } from './tenants-purge.js';
import { usageRollup } from './usage-rollup.js';
import { retentionPurge, retentionTenant } from './retention-purge.js';
import { webhooksDrain, webhooksSweep } from './webhooks.js';
import { scheduledBackups } from './scheduled-backups.js';
import { purgeExternal } from './purge-external.js';
import { domainsReverify } from './domains.js';
import { billingClose, billingOverdue } from './billing.js';
import { operationsRun } from './operations.js';

/** graphile-worker's schema, in the catalog database of this installation (so per installation). */
export const JOBS_SCHEMA = 'tenantry_jobs';

type JobFn = (ctx: JobContext, payload: never) => Promise<unknown>;

/** Every job: the scheduled tasks, then the jobs they fan out to. Each is a thin call into the library. */
const JOBS: Record<ScheduledTask | 'retention.tenant' | 'webhooks.drain' | 'operations.run', JobFn> = {
  'storage.refresh': storageRefresh,
  'provisioning.sweep': provisioningSweep,
  'expiry.purge': expiryPurge,
  'trial.lifecycle': trialLifecycle,
  'tenants.purge': tenantsPurge,
  'usage.rollup': usageRollup,
  'retention.purge': retentionPurge,
  'webhooks.sweep': webhooksSweep,
  'backups.scheduled': scheduledBackups,
  'tenants.purge_external': purgeExternal,
  'domains.reverify': domainsReverify,
  'billing.close': billingClose as JobFn,
  'billing.overdue': billingOverdue as JobFn,
  'retention.tenant': retentionTenant as JobFn,
  'webhooks.drain': webhooksDrain as JobFn,
  'operations.run': operationsRun as JobFn,
};
export type JobName = keyof typeof JOBS;
export const JOB_NAMES = Object.keys(JOBS) as JobName[];

function workerLogger(core: Core): WorkerLogger {
  return new WorkerLogger((scope) => (level, message, meta) => {
    const fields = { ...scope, ...(meta ?? {}) };
    if (level === 'error') core.logger.error(fields, message);
    else if (level === 'warning') core.logger.warn(fields, message);
    else core.logger.debug?.(fields, message);
  });
}

/** Installs or upgrades graphile-worker's schema (on open, under the catalog lock). */
export async function installJobSchema(core: Pick<Core, 'directUrl' | 'logger'>): Promise<void> {
  await runMigrations({ connectionString: core.directUrl, schema: JOBS_SCHEMA, logger: workerLogger(core as Core) });
}

/** Adds a job in SQL, so it can join the caller's transaction. */
export async function addJob(sql: Sql, task: string, payload: Record<string, unknown>, o: AddJobOptions = {}): Promise<void> {
  await sql`
    select tenantry_jobs.add_job(${task}, ${sql.json(payload as never)}::json,
      queue_name => ${o.queue ?? null}::text,
      run_at => now() + make_interval(secs => ${(o.delayMs ?? 0) / 1000}),
      max_attempts => ${o.maxAttempts ?? 25}::int,
      job_key => ${o.jobKey ?? null}::text,
      job_key_mode => ${o.jobKeyMode ?? 'replace'}::text)`;
}

/**
 * The job runner on graphile-worker. `start()` runs the queue in this process (serve and `tenantry
 * worker` do); any number of processes may. Each tick it beats, releases the jobs of processes whose
 * beat stopped (graphile-worker would keep them locked for four hours), and enqueues the scheduled
 * tasks whose period began: once per period across every process.
 */
export class JobRunner {
  readonly processId = randomUUID();
  private runner: Runner | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private readonly workerIds = new Set<string>();
  /** jobs running in this process now, by id */
  private readonly active = new Set<string>();
  private scheduleOn = true;
  private kind = 'library';
  private onTick: (() => Promise<void>) | undefined;
  readonly ctx: JobContext;

  constructor(private readonly core: Core, services: Omit<JobContext, 'core' | 'addJob'>) {
    this.ctx = { core, ...services, addJob: (task, payload, opts) => addJob(core.admin, task, payload, opts) };
  }

  get running(): boolean {
    return this.runner !== undefined;
  }

  /**
   * Runs the queue here. `schedule: false` only works jobs (another process keeps the schedule).
   * `onTick` runs each tick in this process (what only this process holds, such as buffered key use).
   */
  async start(opts: { kind?: string; schedule?: boolean; concurrency?: number; onTick?: () => Promise<void> } = {}): Promise<void> {
    if (this.runner) return;
    this.kind = opts.kind ?? 'library';
    this.scheduleOn = opts.schedule ?? true;
    this.onTick = opts.onTick;
    schedulePeriods(this.core); // a bad schedule fails the start, not a tick
    const events = new EventEmitter() as WorkerEvents;
    // jobs are locked by the pool's id (batched fetching) or a worker's: both are this process's
    events.on('pool:create', ({ workerPool }) => { this.workerIds.add(workerPool.id); });
    events.on('worker:create', ({ worker }) => { this.workerIds.add(worker.workerId); });
    events.on('job:start', ({ job }) => { this.active.add(String(job.id)); });
    events.on('job:complete', ({ job }) => { this.active.delete(String(job.id)); });
    const concurrency = opts.concurrency ?? this.core.opts.jobConcurrency;
    const taskList: TaskList = {};
    for (const name of JOB_NAMES) taskList[name] = this.task(name);
    // LISTEN for new jobs needs a session: the direct URL, never a transaction pooler
    this.runner = await run({
      connectionString: this.core.directUrl, schema: JOBS_SCHEMA, concurrency, taskList, events,
      noHandleSignals: true, pollInterval: 2000, maxPoolSize: concurrency + 2, logger: workerLogger(this.core),
    });
    await this.tick();
    const loop = (): void => {
      this.timer = setTimeout(() => {
        this.ticking = this.tick().finally(() => { this.ticking = undefined; if (this.runner) loop(); });
      }, this.core.opts.jobTickMs);
      this.timer.unref();
    };
    loop();
  }

  async stop(): Promise<void> {
    const r = this.runner;
    this.runner = undefined;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    if (!r) return;
    await r.stop().catch((err: unknown) => this.core.logger.warn({ err }, 'stopping the job runner failed'));
    await this.core.admin`delete from tenantry_catalog.job_processes where id = ${this.processId}`.catch(() => undefined);
  }

  /** One tick: beat, release dead processes' jobs, enqueue what is due, this process's own hook. */
  async tick(): Promise<void> {
    try {
      await this.beat();
      if (this.scheduleOn) await this.enqueueDue();
      await this.onTick?.();
    } catch (err) {
      // PostgreSQL away: the next tick tries again; nothing was half-done (each step is one transaction)
      this.core.logger.warn({ err }, 'job runner tick failed; retrying next tick');
    }
  }

  private async beat(): Promise<void> {
    const ids = [...this.workerIds];
    const dead = await this.core.admin.begin(async (tx) => {
      await tx`
        insert into tenantry_catalog.job_processes (id, kind, worker_ids, pid, host) values (${this.processId}, ${this.kind}, ${ids}, ${process.pid}, ${os.hostname()})
        on conflict (id) do update set worker_ids = excluded.worker_ids, seen_at = now()`;
      // liveness is real time (the database's), not the injectable clock
      const rows = await tx<{ worker_ids: string[] }[]>`
        delete from tenantry_catalog.job_processes
        where seen_at < now() - make_interval(secs => ${this.core.opts.jobDeadAfterSeconds}) returning worker_ids`;
      const workers = rows.flatMap((r) => r.worker_ids);
      if (workers.length) await tx`select tenantry_jobs.force_unlock_workers(${workers}::text[])`;
      // A job this process finished while PostgreSQL was away keeps its lock (graphile-worker could not
      // record the outcome and gives up): locked by a live process that no longer runs it, it would
      // wait four hours. Jobs (and their queues) locked by this process but not running here are released.
      if (ids.length) {
        const running = [...this.active];
        await tx`
          with j as (
            update tenantry_jobs._private_jobs set locked_at = null, locked_by = null
            where locked_by = any(${ids}::text[]) and not (id::text = any(${running}::text[])) and locked_at < now() - interval '5 seconds'
            returning id)
          update tenantry_jobs._private_job_queues q set locked_at = null, locked_by = null
          where q.locked_by = any(${ids}::text[]) and q.locked_at < now() - interval '5 seconds'
            and not exists (select 1 from tenantry_jobs._private_jobs r where r.job_queue_id = q.id and r.id::text = any(${running}::text[]))`;
      }
      return workers;
    });
    if (dead.length) this.core.logger.warn({ workers: dead }, 'released the jobs of a job process that stopped beating; they will be retried');
  }

  /**
   * Enqueues each scheduled task whose current period has no run yet, in one statement: the period's
   * row and its job commit together, and a second process's insert of the same row does nothing.
   * Returns the tasks enqueued.
   */
  async enqueueDue(now: Date = this.core.opts.clock()): Promise<ScheduledTask[]> {
    const periods = schedulePeriods(this.core);
    const tasks = SCHEDULED_TASK_NAMES.filter((t) => periods[t] > 0);
    const starts = tasks.map((t) => periodStart(now, periods[t]).toISOString());
    const rows = await this.core.admin<{ task: ScheduledTask }[]>`
      with due as (
        insert into tenantry_catalog.schedule_runs (task, period_start)
        select * from unnest(${tasks}::text[], ${starts}::timestamptz[])
        on conflict do nothing
        returning task, period_start)
      select task, tenantry_jobs.add_job(task, json_build_object('task', task, 'periodStart', period_start), max_attempts => 5) is not null as added
      from due`;
    return rows.map((r) => r.task);
  }

  /** Runs one job now in this process, outside the queue (the CLI, tests). */
  async runNow(name: string, payload: Record<string, unknown> = {}): Promise<unknown> {
    const fn = JOBS[name as JobName];
    if (!fn) throw new TenantryError('JOB_UNKNOWN', `Unknown job ${JSON.stringify(name)}; one of ${JOB_NAMES.join(', ')}.`);
    return fn(this.ctx, payload as never);
  }

  private task(name: JobName): Task {
    return async (payload) => {
      const p = (payload ?? {}) as { task?: string; periodStart?: string };
      const scheduled = p.task === name && typeof p.periodStart === 'string';
      if (scheduled) await this.core.admin`update tenantry_catalog.schedule_runs set started_at = now() where task = ${name} and period_start = ${p.periodStart!}`;
      const result = await JOBS[name](this.ctx, payload as never);
      if (scheduled) {
        await this.core.admin`
          update tenantry_catalog.schedule_runs set finished_at = now(), runs = runs + 1, result = ${this.core.admin.json((result ?? null) as never)}
          where task = ${name} and period_start = ${p.periodStart!}`;
      }
    };
  }
}
