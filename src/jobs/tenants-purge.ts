import type { JobContext } from './context.js';

/** Soft-deleted tenants whose grace period has passed are hard-deleted. */
export async function tenantsPurge(ctx: JobContext): Promise<{ purged: number }> {
  return { purged: (await ctx.lifecycle.purge()).tenants.length };
}
