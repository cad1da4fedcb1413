-- Changes to API keys and memberships are announced, so every process drops its cached key
-- verifications (revocation, expiry changes, role changes) at once rather than when they expire.
create function tenantry_catalog.notify_key_change() returns trigger
language plpgsql as $$
begin
  perform pg_notify('tenantry_key_changed', coalesce(new.tenant_id, old.tenant_id)::text);
  return null;
end $$;
create trigger api_keys_notify after update or delete on tenantry_catalog.api_keys
  for each row execute function tenantry_catalog.notify_key_change();
create trigger memberships_notify after update or delete on tenantry_catalog.memberships
  for each row execute function tenantry_catalog.notify_key_change();
