import type { JobContext } from './context.js';

/** Daily usage (written by every debit) rolled up into monthly history: this month and the last. */
export async function usageRollup(ctx: JobContext): Promise<{ rows: number }> {
  const now = ctx.core.opts.clock();
  const rows = await ctx.core.admin`
    insert into tenantry_catalog.usage_monthly (tenant_id, metric, month, amount)
    select tenant_id, metric, date_trunc('month', day)::date, sum(amount)::bigint
    from tenantry_catalog.usage_daily
    where day >= (date_trunc('month', ${now}::timestamptz) - interval '1 month')::date
    group by 1, 2, 3
    on conflict (tenant_id, metric, month) do update set amount = excluded.amount, rolled_up_at = now()
    returning 1`;
  return { rows: rows.length };
}
