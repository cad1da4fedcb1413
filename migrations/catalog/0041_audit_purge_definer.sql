-- The audit log's retention exception, without a role that holds DELETE: the configured user (the
-- table's owner) is a member of every role it creates and would inherit the privilege from any of
-- them. audit_purge() instead grants DELETE to its owner for the length of its own transaction and
-- revokes it before returning: the grant and the revoke commit together, so no other session ever
-- sees the privilege, and the triggers still allow only a chain's oldest entries while it runs.
create or replace function tenantry_catalog.audit_purge(p_tenant uuid, p_before timestamptz, p_limit integer) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  r record;
  n integer := 0;
  chain_key uuid := coalesce(p_tenant, '00000000-0000-0000-0000-000000000000'::uuid);
begin
  perform pg_advisory_xact_lock(hashtextextended('tenantry-audit:' || coalesce(p_tenant::text, 'installation'), 0));
  perform set_config('tenantry.audit_purge', 'on', true);
  execute format('grant delete on tenantry_catalog.audit_log to %I', current_user);
  for r in
    select id, chain_seq, hash from tenantry_catalog.audit_log
    where tenant_id is not distinct from p_tenant and created_at < p_before
      -- the newest entry of a chain is always kept: new entries chain onto it
      and chain_seq < (select max(chain_seq) from tenantry_catalog.audit_log where tenant_id is not distinct from p_tenant)
    order by chain_seq limit greatest(p_limit, 0)
  loop
    delete from tenantry_catalog.audit_log where id = r.id;
    insert into tenantry_catalog.audit_anchors as a (chain, chain_seq, hash, purged) values (chain_key, r.chain_seq, r.hash, 1)
      on conflict (chain) do update set chain_seq = excluded.chain_seq, hash = excluded.hash, purged = a.purged + 1, updated_at = now();
    n := n + 1;
  end loop;
  execute format('revoke delete on tenantry_catalog.audit_log from %I', current_user);
  perform set_config('tenantry.audit_purge', 'off', true);
  return n;
end $$;
revoke all on function tenantry_catalog.audit_purge(uuid, timestamptz, integer) from public;
