-- The audit chain's "latest entry of this tenant" lookup used `tenant_id is not distinct from ...`,
-- which no index serves: every audit insert (every tenant create writes one) scanned the whole audit
-- log, so creates slowed as tenants grew (20 million rows read for 6,300 inserts at 3,000 tenants).
-- The same lookup written as the expression of audit_log_chain_idx is one index probe. Same rows,
-- same order, same lock: the chain is unchanged.
create or replace function tenantry_catalog.audit_chain() returns trigger
language plpgsql as $$
declare
  last record;
begin
  perform pg_advisory_xact_lock(hashtextextended('tenantry-audit:' || coalesce(new.tenant_id::text, 'installation'), 0));
  select chain_seq, hash into last from tenantry_catalog.audit_log
    where coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
          = coalesce(new.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
    order by coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) desc, chain_seq desc
    limit 1;
  new.chain_seq := coalesce(last.chain_seq, 0) + 1;
  new.prev_hash := last.hash;
  new.hash := tenantry_catalog.audit_entry_hash(last.hash, new);
  return new;
end $$;
