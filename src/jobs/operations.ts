import type { JobContext } from './context.js';

/** Runs one long-running operation of the HTTP API (backup, export, restore, clone, move) to its end. */
export async function operationsRun(ctx: JobContext, payload: { id?: unknown }): Promise<{ status: string }> {
  if (typeof payload?.id !== 'string') return { status: 'ignored' };
  const op = await ctx.operations.run(payload.id);
  return { status: op.status };
}
