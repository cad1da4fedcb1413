-- The limit of one quota for one tenant, in one place: its override if set, else its tier's.
create function tenantry_catalog.quota_limit(p_tenant uuid, p_quota text) returns bigint
language sql stable as $$
  select coalesce(o.limit_value, (ti.quotas ->> p_quota)::bigint)
  from tenantry_catalog.tenants t
  join tenantry_catalog.tiers ti on ti.name = t.tier
  left join tenantry_catalog.quota_overrides o on o.tenant_id = t.id and o.quota = p_quota
  where t.id = p_tenant
$$;
