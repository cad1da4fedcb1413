import type { JobContext } from './context.js';

/** Backs up each tenant whose tier's policy says it is due, then keeps only its newest scheduled backups. */
export const scheduledBackups = (ctx: JobContext): Promise<{ backedUp: number; removed: number }> => ctx.backups.runScheduled();
