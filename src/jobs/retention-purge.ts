import type { JobContext } from './context.js';
import type { TenantRetentionReport } from '../retention/retention.js';

/** One retention.tenant job per tenant (each carries its tenant), and the installation's own trail. */
export async function retentionPurge(ctx: JobContext): Promise<{ tenants: number; installationAudit: number }> {
  const ids = await ctx.core.admin<{ id: string }[]>`select id from tenantry_catalog.tenants where status <> 'provisioning'`;
  for (const { id } of ids) await ctx.addJob('retention.tenant', { tenantId: id }, { jobKey: `retention:${id}` });
  return { tenants: ids.length, installationAudit: await ctx.retention.purgeInstallationAudit() };
}

/** Purges one tenant's data past retention, inside its walls. */
export const retentionTenant = (ctx: JobContext, payload: { tenantId: string }): Promise<TenantRetentionReport> =>
  ctx.retention.purgeTenant(payload.tenantId);
