-- Custom domains (issue #15). A tenant claims a domain, proves it controls it (a DNS TXT record or a
-- token served over HTTP), and from then on requests for that host resolve to it.
--
-- Squatting: any number of tenants may hold an unverified claim on the same name, each with its own
-- token, so an early claim by someone who does not control the domain never blocks its true owner.
-- Only one claim per name can be verified (the partial unique index decides a race between two
-- verifications); while one is verified, new claims by other tenants are refused.
create table tenantry_catalog.tenant_domains (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  -- normalised: lowercase ASCII (IDN in punycode), no trailing dot, at most 253 characters
  domain text not null check (domain ~ '^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$' and length(domain) <= 253),
  token text not null check (token ~ '^[A-Za-z0-9_-]{43}$'),
  verified_at timestamptz,
  -- how it was last verified
  method text check (method in ('dns', 'http')),
  last_checked_at timestamptz,
  last_error text,
  -- failed re-verifications in a row that may be transient (timeouts, resolver failures)
  failures integer not null default 0,
  created_at timestamptz not null default now(),
  unique (tenant_id, domain),
  check (verified_at is null or method is not null)
);
create unique index tenant_domains_verified_uq on tenantry_catalog.tenant_domains (domain) where verified_at is not null;
create index tenant_domains_domain_idx on tenantry_catalog.tenant_domains (domain);
create index tenant_domains_recheck_idx on tenantry_catalog.tenant_domains (last_checked_at) where verified_at is not null;

-- Every change is announced so that every process drops its cached host -> tenant answer at once.
create function tenantry_catalog.notify_domain_change() returns trigger
language plpgsql as $$
begin
  perform pg_notify('tenantry_domain_changed', coalesce(new.domain, old.domain));
  return null;
end $$;
create trigger tenant_domains_notify after insert or update or delete on tenantry_catalog.tenant_domains
  for each row execute function tenantry_catalog.notify_domain_change();
