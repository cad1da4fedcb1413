import type { Sql } from 'postgres';
import type { RateLimitStore } from './limiter.js';

/**
 * GCRA in PostgreSQL: one INSERT ... ON CONFLICT DO UPDATE per decision, on an UNLOGGED table. The
 * row lock of the upsert serialises concurrent decisions on one key; now() is fixed for the statement.
 */
export class PostgresRateLimitStore implements RateLimitStore {
  readonly name = 'postgres';

  constructor(private readonly sql: Sql) {}

  async decide(key: string, intervalUs: number, burstUs: number, costUs: number): Promise<{ allowed: boolean; tatUs: number; nowUs: number }> {
    const [r] = await this.sql<{ tat_us: string; allowed: boolean; now_us: string }[]>`
      with n as (select (extract(epoch from now()) * 1000000)::bigint as now_us)
      insert into tenantry_catalog.rate_limits as r (key, tat_us, allowed)
      select ${key},
             case when ${costUs}::bigint <= ${burstUs}::bigint then n.now_us + ${costUs}::bigint else n.now_us end,
             ${costUs}::bigint <= ${burstUs}::bigint
      from n
      on conflict (key) do update set
        tat_us = case
          when greatest(r.tat_us, (select now_us from n)) + ${costUs}::bigint - ${burstUs}::bigint <= (select now_us from n)
          then greatest(r.tat_us, (select now_us from n)) + ${costUs}::bigint
          else r.tat_us end,
        allowed = greatest(r.tat_us, (select now_us from n)) + ${costUs}::bigint - ${burstUs}::bigint <= (select now_us from n)
      returning r.tat_us, r.allowed, (select now_us from n) as now_us`;
    void intervalUs;
    return { allowed: r!.allowed, tatUs: Number(r!.tat_us), nowUs: Number(r!.now_us) };
  }

  async reset(key: string): Promise<void> {
    await this.sql`delete from tenantry_catalog.rate_limits where key = ${key}`;
  }

  async close(): Promise<void> {}
}
