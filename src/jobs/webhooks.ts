import type { JobContext } from './context.js';

/**
 * Delivers one stream's pending webhooks in order. When its head must wait for a retry, the stream's
 * next drain is scheduled for then (in the stream's own queue, so drains never overlap). An event that
 * arrived while this drain ran left a drain job waiting behind it in the queue, which graphile-worker
 * would only notice at its next poll: this drain takes that job over (removes it) and drains again.
 */
export async function webhooksDrain(ctx: JobContext, payload: { stream: string }): Promise<{ delivered: number; failed: number }> {
  const key = `webhooks:${payload.stream}`;
  let delivered = 0;
  let failed = 0;
  for (let round = 0; round < 100; round++) {
    const r = await ctx.webhooks.drain(payload.stream);
    delivered += r.delivered;
    failed += r.failed;
    if (r.retryAt) {
      const delayMs = Math.max(0, r.retryAt.getTime() - ctx.core.opts.clock().getTime());
      await ctx.addJob('webhooks.drain', { stream: payload.stream }, { queue: key, jobKey: key, delayMs, maxAttempts: 1000 });
      break;
    }
    const [taken] = await ctx.core.admin<{ id: string | null; locked: boolean }[]>`
      select (j).id, (j).locked_at is not null as locked from (select tenantry_jobs.remove_job(${key}) as j) x`;
    // none waiting (or only this running job, whose key is now cleared): done
    if (!taken?.id || taken.locked) break;
  }
  return { delivered, failed };
}

/** Makes sure every stream with a pending delivery has its drain job. */
export async function webhooksSweep(ctx: JobContext): Promise<{ streams: number }> {
  const streams = await ctx.webhooks.pendingStreams();
  for (const s of streams) await ctx.addJob('webhooks.drain', { stream: s }, { queue: `webhooks:${s}`, jobKey: `webhooks:${s}`, jobKeyMode: 'preserve_run_at', maxAttempts: 1000 });
  return { streams: streams.length };
}
