import type { JobContext } from './context.js';

/** Retries what hard deletes still owe outside PostgreSQL: a tenant's Redis keys, its Redis ACL user, its objects. */
export async function purgeExternal(ctx: JobContext): Promise<{ done: number; failed: number }> {
  return (await ctx.purgeExternal?.()) ?? { done: 0, failed: 0 };
}
