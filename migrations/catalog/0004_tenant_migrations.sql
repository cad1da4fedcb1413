-- The tenant migration files this installation has applied, with their checksums: a run with nothing
-- to do is decided from the catalog alone, and an edited applied file is refused before any tenant
-- is visited.
create table tenantry_catalog.tenant_migrations (
  version integer primary key,
  name text not null,
  checksum text not null,
  recorded_at timestamptz not null default now()
);
create index tenants_version_idx on tenantry_catalog.tenants (schema_version, isolation);
