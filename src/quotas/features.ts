import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import { validateFeature } from './quotas.js';

export interface FeatureState {
  feature: string;
  enabled: boolean;
  /** `tier` when the tier grants it and no override applies, `override` when a per-tenant override decides */
  source: 'tier' | 'override';
}

/** Feature flags: each tier grants a set of features; per-tenant overrides add or remove one. */
export class FeatureService {
  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  /** Every feature the tier grants or an override names, with its state for this tenant. */
  async list(idOrSlug: string): Promise<FeatureState[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<FeatureState[]>`
      with granted as (select unnest(features) as feature from tenantry_catalog.tiers where name = ${t.tier}),
           overrides as (select feature, enabled from tenantry_catalog.feature_overrides where tenant_id = ${t.id})
      select coalesce(o.feature, g.feature) as feature,
             coalesce(o.enabled, true) as enabled,
             case when o.feature is null then 'tier' else 'override' end as source
      from granted g full join overrides o on o.feature = g.feature
      order by 1`;
    return [...rows];
  }

  async isEnabled(idOrSlug: string, feature: string): Promise<boolean> {
    const f = validateFeature(feature);
    const t = await this.tenants.get(idOrSlug);
    const [r] = await this.core.admin<{ enabled: boolean }[]>`
      select coalesce(
        (select enabled from tenantry_catalog.feature_overrides where tenant_id = ${t.id} and feature = ${f}),
        (select ${f} = any(features) from tenantry_catalog.tiers where name = ${t.tier}),
        false) as enabled`;
    return r!.enabled;
  }

  /** `true`/`false` overrides the tier for this tenant; `null` removes the override. Audited. */
  async set(idOrSlug: string, feature: string, enabled: boolean | null, who: AuditActor = {}): Promise<FeatureState[]> {
    const f = validateFeature(feature);
    if (enabled !== null && typeof enabled !== 'boolean') throw new TenantryError('INVALID_INPUT', 'enabled must be true, false or null (back to the tier default).');
    const t = await this.tenants.get(idOrSlug);
    await this.core.admin.begin(async (tx) => {
      if (enabled === null) await tx`delete from tenantry_catalog.feature_overrides where tenant_id = ${t.id} and feature = ${f}`;
      else await tx`
        insert into tenantry_catalog.feature_overrides (tenant_id, feature, enabled) values (${t.id}, ${f}, ${enabled})
        on conflict (tenant_id, feature) do update set enabled = excluded.enabled`;
      await appendAudit(tx, {
        tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: enabled === null ? 'feature.override_removed' : 'feature.override_set',
        target: `feature:${f}`, requestId: who.requestId, details: { feature: f, enabled },
      });
    });
    return this.list(t.id);
  }
}
