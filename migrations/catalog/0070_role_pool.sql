-- Pre-made login roles for pooled signups (issue #10): creating a tenant's role (CREATE ROLE, its
-- defaults, comment and two grants) was most of a pooled signup's time. A background refill creates
-- roles for tenant ids chosen in advance; a pooled signup takes one of those ids (DELETE ... SKIP
-- LOCKED in its own transaction, so a rollback puts it back) and runs no role DDL at all. `spec`
-- records the settings the role was made with (connection limit, role defaults): a process with
-- other settings never takes it. A pool role belongs to no tenant: repair never calls it an orphan.
create table tenantry_catalog.role_pool (
  tenant_id uuid primary key,
  spec text not null,
  created_at timestamptz not null default now()
);
create index role_pool_spec_idx on tenantry_catalog.role_pool (spec, created_at);
