import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';

/**
 * The schedule: each task and its default period in seconds. Every process that runs the job runner
 * looks at the clock on each tick; the first to record a task's current period enqueues its job (see
 * JobRunner.enqueueDue), so each task runs once per period across all processes.
 */
export const SCHEDULED_TASKS = {
  /** storage re-measured (hourly; storageRefreshSeconds, 0 turns it off) */
  'storage.refresh': (core: Core) => core.opts.storageRefreshSeconds,
  /** provisionings abandoned by processes that died, and orphaned objects */
  'provisioning.sweep': (core: Core) => Math.max(10, Math.ceil(core.opts.repairAfterSeconds / 2)),
  /** expired idempotency records, leases and invitations */
  'expiry.purge': () => 3600,
  /** trial.ending notices, and trials that ended move to their follow-up */
  'trial.lifecycle': () => 3600,
  /** soft-deleted tenants past their grace period are hard-deleted */
  'tenants.purge': () => 3600,
  /** daily usage rolled up into monthly history */
  'usage.rollup': () => 3600,
  /** data past its retention, per tenant (one retention.tenant job each) */
  'retention.purge': () => 86_400,
  /** a drain job for every webhook stream with pending deliveries (a safety net under the outbox trigger) */
  'webhooks.sweep': () => 60,
  /** tenants due a backup by their tier's policy, and retention of old scheduled backups */
  'backups.scheduled': () => 3600,
  /** hard-deleted tenants' Redis keys, Redis ACL users and objects that could not be purged at once */
  'tenants.purge_external': () => 60,
  /** verified custom domains re-checked; one that moved away is unverified */
  'domains.reverify': () => 3600,
  /** the last calendar month's usage turned into billing records and pushed to Stripe (once per period) */
  'billing.close': () => 3600,
  /** unpaid invoices past the grace suspend their tenant; paid ones re-activate it; failed pushes retried */
  'billing.overdue': () => 300,
} as const;

export type ScheduledTask = keyof typeof SCHEDULED_TASKS;
export const SCHEDULED_TASK_NAMES = Object.keys(SCHEDULED_TASKS) as ScheduledTask[];

/** The period of every scheduled task, with the `schedule` option (TENANTRY_SCHEDULE) over the defaults (0: off). */
export function schedulePeriods(core: Core): Record<ScheduledTask, number> {
  for (const k of Object.keys(core.opts.schedule)) {
    if (!(k in SCHEDULED_TASKS)) throw new TenantryError('INVALID_CONFIG', `schedule (TENANTRY_SCHEDULE) names an unknown task ${JSON.stringify(k)}; one of ${SCHEDULED_TASK_NAMES.join(', ')}.`);
  }
  return Object.fromEntries(SCHEDULED_TASK_NAMES.map((t) => [t, core.opts.schedule[t] ?? SCHEDULED_TASKS[t](core)])) as Record<ScheduledTask, number>;
}

/** The start of the period `now` falls in (periods are aligned to the epoch). */
export function periodStart(now: Date, seconds: number): Date {
  const ms = seconds * 1000;
  return new Date(Math.floor(now.getTime() / ms) * ms);
}
