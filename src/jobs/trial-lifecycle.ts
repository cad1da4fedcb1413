import type { JobContext } from './context.js';

/** trial.ending notices, then trials past their end moved to their plan's follow-up. */
export async function trialLifecycle(ctx: JobContext): Promise<{ noticed: number; ended: number }> {
  const noticed = await ctx.lifecycle.noticeTrialsEnding();
  const ended = await ctx.lifecycle.endTrials();
  return { noticed: noticed.length, ended: ended.length };
}
