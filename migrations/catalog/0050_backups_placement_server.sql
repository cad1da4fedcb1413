-- Per-tenant backups and the server a placement names (issue #14).

-- Placement names its server: today every tenant lives on the one server, 'default'; a later fleet of
-- servers is rows here, not a rewrite. Pools are keyed by server as well as database and role.
alter table tenantry_catalog.tenants add column server_name text not null default 'default';

-- One row per backup taken; the archive itself lives in a backup store (a local folder or S3).
create table tenantry_catalog.backups (
  id uuid primary key,
  tenant_id uuid not null,
  store text not null,
  location text not null,
  isolation text not null,
  migration_version integer not null,
  rows bigint not null,
  bytes bigint not null,
  manifest jsonb not null,
  kind text not null default 'backup' check (kind in ('backup', 'export', 'scheduled')),
  created_at timestamptz not null default now()
);
create index backups_tenant_idx on tenantry_catalog.backups (tenant_id, created_at desc);
