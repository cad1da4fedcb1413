import type { JobContext } from './context.js';

/** Re-measures every live tenant's storage (the plans' storage gauge). */
export const storageRefresh = (ctx: JobContext): Promise<number> => ctx.quotas.refreshAllStorage();
