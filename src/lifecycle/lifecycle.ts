import type { Core } from '../core.js';
import { TenantryError, isTenantryError } from '../errors.js';
import { ident } from '../identifiers.js';
import { appendAudit } from '../audit/audit.js';
import { terminateRoleSessions } from '../isolation/modes.js';
import type { TenantRow } from '../tenants/model.js';
import type { TenantService } from '../tenants/tenants.js';

export interface PurgeCandidate {
  id: string;
  slug: string;
  tier: string;
  deletedAt: Date;
  graceDays: number;
  purgeAt: Date;
}

const DAY_MS = 86_400_000;

/**
 * The scheduled lifecycle: trials that end, soft-deleted tenants purged after their grace period.
 * Every decision takes its time from the one clock (options.clock), so tests move the clock.
 */
export class LifecycleService {
  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  /**
   * `tenant.trial_ending` (audited, with its webhook) once per trial, trialEndingDays before it ends.
   * Returns the tenants told.
   */
  async noticeTrialsEnding(): Promise<string[]> {
    const now = this.core.opts.clock();
    const horizon = new Date(now.getTime() + this.core.opts.trialEndingDays * DAY_MS);
    const rows = await this.core.admin<TenantRow[]>`
      select t.* from tenantry_catalog.tenants t
      where t.status = 'trial' and t.trial_ends_at > ${now} and t.trial_ends_at <= ${horizon}
        and not exists (select 1 from tenantry_catalog.audit_log a where a.tenant_id = t.id and a.action = 'tenant.trial_ending'
                        and a.details ->> 'trialEndsAt' = to_char(t.trial_ends_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`;
    const told: string[] = [];
    for (const row of rows) {
      await this.core.admin.begin(async (tx) => {
        // one notice per trial even with two workers at once: the tenant's row is the lock
        const [t] = await tx<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${row.id} and status = 'trial' for update`;
        if (!t?.trial_ends_at) return;
        const endsAt = t.trial_ends_at.toISOString();
        const [seen] = await tx`select 1 from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'tenant.trial_ending' and details ->> 'trialEndsAt' = ${endsAt}`;
        if (seen) return;
        await appendAudit(tx, {
          tenantId: t.id, actor: 'system', action: 'tenant.trial_ending', target: `tenant:${t.id}`,
          details: { trialEndsAt: endsAt, daysLeft: Math.ceil((t.trial_ends_at.getTime() - now.getTime()) / DAY_MS), tier: t.tier },
        });
        told.push(t.id);
      });
    }
    return told;
  }

  /**
   * Trials past their end move to the follow-up their plan names: the tier's `trialOf` (a downgrade,
   * status active), or, when the tier names none, a suspension with reason `trial_ended`. Audited
   * (`tenant.trial_ended`, with its webhook).
   */
  async endTrials(): Promise<{ tenantId: string; followUp: 'downgrade' | 'suspend'; tier: string }[]> {
    const now = this.core.opts.clock();
    const due = await this.core.admin<{ id: string }[]>`
      select id from tenantry_catalog.tenants where status = 'trial' and trial_ends_at <= ${now} order by trial_ends_at`;
    const out: { tenantId: string; followUp: 'downgrade' | 'suspend'; tier: string }[] = [];
    for (const { id } of due) {
      const done = await this.core.admin.begin(async (tx) => {
        const [row] = await tx<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${id} and status = 'trial' and trial_ends_at <= ${now} for update`;
        if (!row) return undefined; // another worker ended it, or it was upgraded meanwhile
        const [tier] = await tx<{ trial_of: string | null }[]>`select trial_of from tenantry_catalog.tiers where name = ${row.tier}`;
        const to = tier?.trial_of ?? null;
        if (to) {
          await tx`update tenantry_catalog.tenants set status = 'active', tier = ${to}, trial_ends_at = null, updated_at = now() where id = ${id}`;
        } else {
          await tx.unsafe(`alter role ${ident(row.role_name)} nologin`);
          await tx`update tenantry_catalog.tenants set status = 'suspended', suspended_reason = 'trial_ended', updated_at = now() where id = ${id}`;
        }
        await appendAudit(tx, {
          tenantId: id, actor: 'system', action: 'tenant.trial_ended', target: `tenant:${id}`,
          details: { trialEndedAt: row.trial_ends_at?.toISOString() ?? null, followUp: to ? 'downgrade' : 'suspend', fromTier: row.tier, ...(to ? { toTier: to } : { reason: 'trial_ended' }) },
        });
        return { tenantId: id, followUp: (to ? 'downgrade' : 'suspend') as 'downgrade' | 'suspend', tier: to ?? row.tier, role: row.role_name };
      });
      if (!done) continue;
      this.core.cache.invalidate(id);
      if (done.followUp === 'suspend') {
        await terminateRoleSessions(this.core.admin, done.role).catch((err: unknown) => this.core.logger.warn({ err, tenantId: id }, 'could not end the tenant role\'s sessions'));
      }
      out.push({ tenantId: done.tenantId, followUp: done.followUp, tier: done.tier });
    }
    return out;
  }

  /** Days a soft-deleted tenant of this tier is kept (the tier's setting, else purgeGraceDays). */
  async graceDays(tier: string): Promise<number> {
    const [r] = await this.core.admin<{ d: number }[]>`select purge_grace_days as d from tenantry_catalog.tier_lifecycle where tier = ${tier}`;
    return r?.d ?? this.core.opts.purgeGraceDays;
  }

  /** Sets (or with null, removes) one tier's purge grace period, in days. */
  async setPurgeGrace(tier: string, days: number | null): Promise<void> {
    if (!this.core.plans.tierNames().includes(tier)) throw new TenantryError('INVALID_TIER', `Unknown tier ${JSON.stringify(tier)}; one of ${this.core.plans.tierNames().join(', ')}.`);
    if (days !== null && (!Number.isInteger(days) || days < 0 || days > 3650)) throw new TenantryError('INVALID_INPUT', 'The grace period is an integer from 0 to 3650 days.');
    await this.core.admin.begin(async (tx) => {
      if (days === null) await tx`delete from tenantry_catalog.tier_lifecycle where tier = ${tier}`;
      else await tx`insert into tenantry_catalog.tier_lifecycle (tier, purge_grace_days) values (${tier}, ${days}) on conflict (tier) do update set purge_grace_days = excluded.purge_grace_days, updated_at = now()`;
      await appendAudit(tx, { tenantId: null, actor: this.core.opts.actor, action: 'tier.purge_grace_set', target: `tier:${tier}`, details: { days } });
    });
  }

  /** Soft-deleted tenants whose grace period has passed (what `tenantry tenants purge --dry-run` lists). */
  async purgeDue(): Promise<PurgeCandidate[]> {
    const now = this.core.opts.clock();
    const rows = await this.core.admin<{ id: string; slug: string; tier: string; deleted_at: Date; grace: number }[]>`
      select t.id, t.slug, t.tier, t.deleted_at, coalesce(l.purge_grace_days, ${this.core.opts.purgeGraceDays}::int) as grace
      from tenantry_catalog.tenants t left join tenantry_catalog.tier_lifecycle l on l.tier = t.tier
      where t.status = 'deleted' and t.deleted_at is not null
        and t.deleted_at + make_interval(days => coalesce(l.purge_grace_days, ${this.core.opts.purgeGraceDays}::int)) <= ${now}
      order by t.deleted_at`;
    return rows.map((r) => ({ id: r.id, slug: r.slug, tier: r.tier, deletedAt: r.deleted_at, graceDays: r.grace, purgeAt: new Date(r.deleted_at.getTime() + r.grace * DAY_MS) }));
  }

  /**
   * Hard-deletes every tenant whose grace period has passed (`tenant.purged` webhook); `dryRun` only
   * lists them. A tenant restored meanwhile is left alone: the hard delete refuses a tenant that is no
   * longer deleted.
   */
  async purge(opts: { dryRun?: boolean } = {}): Promise<{ dryRun: boolean; tenants: PurgeCandidate[] }> {
    const due = await this.purgeDue();
    if (opts.dryRun) return { dryRun: true, tenants: due };
    const purged: PurgeCandidate[] = [];
    for (const c of due) {
      try {
        await this.tenants.delete(c.id, { hard: true, actor: 'system' });
        purged.push(c);
      } catch (err) {
        if (isTenantryError(err, 'INVALID_TRANSITION') || isTenantryError(err, 'TENANT_NOT_FOUND')) continue;
        this.core.logger.warn({ err, tenantId: c.id }, 'purging a deleted tenant failed; the next run retries');
      }
    }
    return { dryRun: false, tenants: purged };
  }
}

