import type { JobContext } from './context.js';

/** The last calendar month closed into billing records and pushed to Stripe (idempotent; a no-op once done). */
export async function billingClose(ctx: JobContext, payload: { period?: string }): Promise<unknown> {
  return ctx.billing.closePeriod(typeof payload?.period === 'string' ? { period: payload.period } : {});
}

/** Tenants with an invoice unpaid past the grace suspended (payment_overdue); paid-up ones re-activated. */
export async function billingOverdue(ctx: JobContext, payload: { tenantId?: string }): Promise<{ suspended: number; activated: number }> {
  const r = await ctx.billing.reconcile(typeof payload?.tenantId === 'string' ? payload.tenantId : undefined);
  // records whose push failed earlier are retried here too, not only at the next period's close
  await ctx.billing.pushPending();
  return { suspended: r.suspended.length, activated: r.activated.length };
}
