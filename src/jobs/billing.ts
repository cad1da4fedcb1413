import type { JobContext } from './context.js';

/** The last calendar month closed into billing records and pushed to Stripe (idempotent; a no-op once done). */
export async function billingClose(ctx: JobContext, payload: { period?: string }): Promise<unknown> {
  return ctx.billing.closePeriod(typeof payload?.period === 'string' ? { period: payload.period } : {});
}

/** Tenants with an invoice unpaid past the grace suspended (payment_overdue); paid-up ones re-activated. */
export async function billingOverdue(ctx: JobContext, payload: { tenantId?: string }): Promise<{ suspended: number; activated: number }> {
  // one tenant's check (queued after its failed payment) or, without a valid tenant id, the sweep of all
  const one = typeof payload?.tenantId === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(payload.tenantId) ? payload.tenantId : undefined;
  const r = await ctx.billing.reconcile(one);
  // records whose push failed earlier are retried here too, not only at the next period's close
  await ctx.billing.pushPending();
  return { suspended: r.suspended.length, activated: r.activated.length };
}
