import type { Core } from '../core.js';
import { appendAudit } from '../audit/audit.js';
import type { TenantPlacement } from '../isolation/modes.js';
import { findOrphans, repairUnlocked, teardownTenantObjects, underRepairLock } from './repair.js';
import type { TenantRow } from '../tenants/model.js';
import { repairMoves } from '../move/move.js';

interface PendingHeal {
  placement: TenantPlacement;
  slug: string;
  actor: string;
  requestId: string | undefined;
  reason: string;
  tier?: string;
}

interface HealerState {
  pending: Map<string, PendingHeal>;
  timer: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
  periodic: boolean;
  ticks: number;
  /** orphans seen by the previous sweep: one is removed only when a second sweep still finds it */
  seenOrphans: Set<string>;
}

const healers = new WeakMap<Core, HealerState>();

function stateOf(core: Core): HealerState {
  let s = healers.get(core);
  if (!s) {
    s = { pending: new Map(), timer: undefined, running: undefined, periodic: false, ticks: 0, seenOrphans: new Set() };
    healers.set(core, s);
  }
  return s;
}

/**
 * Seconds without a heartbeat after which the background sweep treats a `provisioning` row as abandoned
 * (never under 5 s, so an in-flight provisioning always gets to renew its row first).
 */
export function staleAfterSeconds(core: Core): number {
  return Math.max(5, core.opts.repairAfterSeconds);
}

/** Milliseconds between background passes. */
export const HEAL_INTERVAL_MS = 2_000;

/**
 * Ends a provisioning that failed: if its catalog row is live the work committed (a lost COMMIT answer)
 * and nothing is touched; otherwise every object of the tenant is removed, then its `provisioning`
 * row, with an audit entry. Idempotent; throws while PostgreSQL is unreachable.
 */
export async function healProvisioning(core: Core, p: PendingHeal, action = 'tenant.provisioning_failed'): Promise<'created' | 'removed'> {
  const [row] = await core.admin<{ status: string }[]>`select status from tenantry_catalog.tenants where id = ${p.placement.id}`;
  if (row && row.status !== 'provisioning') return 'created';
  await teardownTenantObjects(core, p.placement);
  await core.admin.begin(async (tx) => {
    await tx`delete from tenantry_catalog.tenants where id = ${p.placement.id} and status = 'provisioning'`;
    await appendAudit(tx, {
      tenantId: p.placement.id, actor: p.actor, action, target: `tenant:${p.placement.id}`,
      requestId: p.requestId, details: { slug: p.slug, isolation: p.placement.isolation, ...(p.tier ? { tier: p.tier } : {}), reason: p.reason, removed: true },
    });
  });
  return 'removed';
}

/**
 * Hands a provisioning whose rollback could not finish (PostgreSQL went away mid-way) to the background
 * healer of this process, which retries it until the tenant is fully gone (or found fully created).
 */
export function scheduleHeal(core: Core, p: PendingHeal): void {
  const s = stateOf(core);
  s.pending.set(p.placement.id, p);
  ensureTimer(core, s);
}

/** Tenants this process is still healing (for doctor and tests). */
export function pendingHeals(core: Core): string[] {
  return [...(healers.get(core)?.pending.keys() ?? [])];
}

/**
 * Starts the background pass: pending rollbacks of this process every HEAL_INTERVAL_MS, and, under a
 * transaction-scoped advisory lock (one process at a time, also behind a transaction pooler), rows left
 * in `provisioning` longer than repairAfterSeconds by a process that died. A job runner replaces this
 * timer once there is one (#13).
 */
export function startHealer(core: Core): void {
  const s = stateOf(core);
  s.periodic = true;
  ensureTimer(core, s);
}

export async function stopHealer(core: Core): Promise<void> {
  const s = healers.get(core);
  if (!s) return;
  s.periodic = false;
  if (s.timer) clearInterval(s.timer);
  s.timer = undefined;
  await s.running?.catch(() => undefined);
}

/** Runs one pass now (tests, and the first pass after a rollback failed). */
export async function runHealPass(core: Core, opts: { sweep?: boolean } = {}): Promise<void> {
  const s = stateOf(core);
  if (s.running) return s.running;
  s.running = pass(core, s, opts.sweep ?? false).finally(() => { s.running = undefined; });
  return s.running;
}

function ensureTimer(core: Core, s: HealerState): void {
  if (s.timer) return;
  s.timer = setInterval(() => {
    s.ticks++;
    // rows abandoned by processes that died are looked for about twice per repairAfterSeconds
    const sweepEvery = Math.max(1, Math.ceil((staleAfterSeconds(core) * 500) / HEAL_INTERVAL_MS));
    const sweep = s.periodic && s.ticks % sweepEvery === 0;
    if (!sweep && s.pending.size === 0) {
      if (!s.periodic) { clearInterval(s.timer); s.timer = undefined; }
      return;
    }
    void runHealPass(core, { sweep });
  }, HEAL_INTERVAL_MS);
  s.timer.unref();
}

async function pass(core: Core, s: HealerState, sweep: boolean): Promise<void> {
  for (const [id, p] of [...s.pending]) {
    try {
      const outcome = await healProvisioning(core, p);
      s.pending.delete(id);
      core.logger.info({ tenantId: id, slug: p.slug, outcome }, 'healed a provisioning whose rollback had not finished');
    } catch (err) {
      core.logger.warn({ err, tenantId: id }, 'healing a failed provisioning did not finish yet; retrying');
      return; // PostgreSQL is likely still away: the next pass retries
    }
  }
  if (!sweep) return;
  try {
    await underRepairLock(core, false, async () => {
      const stuck = await core.admin<TenantRow[]>`
        select * from tenantry_catalog.tenants
        where status = 'provisioning' and updated_at < now() - make_interval(secs => ${staleAfterSeconds(core)})`;
      for (const row of stuck) {
        if (s.pending.has(row.id)) continue;
        await healProvisioning(core, {
          placement: { id: row.id, isolation: row.isolation, server: row.server_name ?? 'default', database: row.database_name, schema: row.schema_name, role: row.role_name },
          slug: row.slug, actor: core.opts.actor, requestId: undefined, reason: 'abandoned by a process that stopped',
        }, 'tenant.provisioning_repaired');
        core.logger.info({ tenantId: row.id, slug: row.slug }, 'removed a provisioning abandoned by a stopped process');
      }
      // moves whose process died: undone (the tenant writable again in its old placement) or finished
      await repairMoves(core, core.opts.actor);
      // An object without a row is removed only when two sweeps in a row find it (half a repair period
      // apart): one a hard delete or a repair is removing right now is left to it.
      const found = await findOrphans(core);
      const now = new Set([...found.databases, ...found.schemas, ...found.roles]);
      const seen = s.seenOrphans;
      s.seenOrphans = now;
      if ([...now].some((n) => seen.has(n))) {
        await repairUnlocked(core, { olderThanSeconds: staleAfterSeconds(core), purgeClaims: false, orphanFilter: (n) => seen.has(n) });
      }
    });
  } catch (err) {
    core.logger.warn({ err }, 'background sweep of abandoned provisionings did not finish; retrying later');
  }
}
