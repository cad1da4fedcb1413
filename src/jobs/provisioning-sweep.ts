import { runHealPass } from '../provisioning/healer.js';
import type { JobContext } from './context.js';

/** Removes provisionings abandoned by processes that died, and orphaned schemas, databases and roles. */
export const provisioningSweep = (ctx: JobContext): Promise<void> => runHealPass(ctx.core, { sweep: true });
