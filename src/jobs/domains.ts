import type { JobContext } from './context.js';

/** Verified custom domains re-checked: one whose proof is gone is unverified, audited and announced. */
export async function domainsReverify(ctx: JobContext): Promise<{ checked: number; unverified: number }> {
  const r = await ctx.domains.reverify();
  return { checked: r.checked, unverified: r.unverified.length };
}
