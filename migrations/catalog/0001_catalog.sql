-- Tenantry's control-plane catalog. Only the configured (privileged) user touches this schema:
-- nothing is granted to PUBLIC, to the runtime role or to any tenant role.
create table tenantry_catalog.installation (
  singleton boolean primary key default true check (singleton),
  id uuid not null,
  namespace text not null,
  -- master secret: derives the context HMAC key and every Tenantry role's password
  secret bytea not null,
  created_at timestamptz not null default now()
);

create table tenantry_catalog.tenants (
  id uuid primary key,
  seq bigint generated always as identity unique,
  slug text not null unique
    check (slug ~ '^[a-z0-9]([a-z0-9-]{1,61})[a-z0-9]$' and slug !~ '--'),
  name text not null,
  status text not null
    check (status in ('provisioning', 'active', 'trial', 'suspended', 'deleted')),
  tier text not null,
  isolation text not null check (isolation in ('pooled', 'schema', 'database')),
  database_name text not null,
  schema_name text not null,
  role_name text not null unique,
  metadata jsonb not null default '{}'::jsonb,
  trial_ends_at timestamptz,
  suspended_reason text,
  schema_version integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create index tenants_status_idx on tenantry_catalog.tenants (status);

-- Every change to a tenant row is announced so that other processes drop their cached copy.
create function tenantry_catalog.notify_tenant_change() returns trigger
language plpgsql as $$
begin
  perform pg_notify('tenantry_tenant_changed', coalesce(new.id, old.id)::text);
  return null;
end $$;
create trigger tenants_notify after insert or update or delete on tenantry_catalog.tenants
  for each row execute function tenantry_catalog.notify_tenant_change();

create table tenantry_catalog.audit_log (
  id bigserial primary key,
  -- no foreign key: the trail of a hard-deleted or never-completed tenant must survive it
  tenant_id uuid,
  actor text not null,
  action text not null,
  target text not null,
  details jsonb not null default '{}'::jsonb,
  request_id text,
  created_at timestamptz not null default clock_timestamp()
);
create index audit_log_tenant_idx on tenantry_catalog.audit_log (tenant_id, id);

-- small key/value state of the installation (e.g. which tenant migrations the template holds)
create table tenantry_catalog.settings (
  key text primary key,
  value jsonb not null,
  updated_at timestamptz not null default now()
);
