import type { JobContext } from './context.js';

/** Expired idempotency records (HTTP and metering), expired leases and long-dead invitations. */
export async function expiryPurge(ctx: JobContext): Promise<Record<string, number>> {
  const now = ctx.core.opts.clock();
  const sql = ctx.core.admin;
  const http = await ctx.idempotency.purgeExpired();
  const metering = await sql`delete from tenantry_catalog.usage_idempotency where created_at < ${now}::timestamptz - interval '7 days' returning 1`;
  const leases = await sql`delete from tenantry_catalog.usage_leases where expires_at < ${now} returning 1`;
  // kept a week past their end, so "expired" and "revoked" answers stay accurate for a while
  const invitations = await sql`
    delete from tenantry_catalog.invitations
    where accepted_at is null and (coalesce(revoked_at, expires_at) < ${now}::timestamptz - interval '7 days') returning 1`;
  return { httpIdempotency: http, usageIdempotency: metering.length, leases: leases.length, invitations: invitations.length };
}
