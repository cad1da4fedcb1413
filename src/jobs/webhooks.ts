import type { JobContext } from './context.js';

/**
 * Delivers one stream's pending webhooks in order. When its head must wait for a retry, the stream's
 * next drain is scheduled for then (in the stream's own queue, so drains never overlap).
 */
export async function webhooksDrain(ctx: JobContext, payload: { stream: string }): Promise<{ delivered: number; failed: number }> {
  const r = await ctx.webhooks.drain(payload.stream);
  if (r.retryAt) {
    const delayMs = Math.max(0, r.retryAt.getTime() - ctx.core.opts.clock().getTime());
    await ctx.addJob('webhooks.drain', { stream: payload.stream }, { queue: `webhooks:${payload.stream}`, jobKey: `webhooks:${payload.stream}`, delayMs, maxAttempts: 1000 });
  }
  return { delivered: r.delivered, failed: r.failed };
}

/** Makes sure every stream with a pending delivery has its drain job. */
export async function webhooksSweep(ctx: JobContext): Promise<{ streams: number }> {
  const streams = await ctx.webhooks.pendingStreams();
  for (const s of streams) await ctx.addJob('webhooks.drain', { stream: s }, { queue: `webhooks:${s}`, jobKey: `webhooks:${s}`, jobKeyMode: 'preserve_run_at', maxAttempts: 1000 });
  return { streams: streams.length };
}
