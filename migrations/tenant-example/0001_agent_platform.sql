-- Example tenant schema: the agent platform the original design describes.
-- The same file runs in every isolation mode: Tenantry sets search_path to the tenant's schema
-- (the shared `pooled` schema, the tenant's own schema, or `app` in the tenant's database) and
-- applies row-level security to every table that has a tenant_id column afterwards.
-- Every key and every foreign key leads with tenant_id, so a row can only ever point at a row
-- of the same tenant, and every uniqueness is scoped to one tenant.

create table users (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  email text not null,
  display_name text,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (tenant_id, email)
);

create table agents (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  name text not null,
  agent_type text not null,
  config jsonb not null default '{}'::jsonb,
  created_by uuid,
  status text not null default 'active',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (tenant_id, name),
  foreign key (tenant_id, created_by) references users (tenant_id, id)
);
create index agents_type_idx on agents (tenant_id, agent_type);

create table executions (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  agent_id uuid not null,
  status text not null default 'pending',
  input jsonb,
  output jsonb,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index executions_agent_idx on executions (tenant_id, agent_id, started_at desc);

create table memories (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  agent_id uuid not null,
  key text not null,
  content text not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (tenant_id, agent_id, key),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);

create table data_sources (
  tenant_id uuid not null default tenantry.current_tenant(),
  id uuid not null default gen_random_uuid(),
  name text not null,
  kind text not null,
  config jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (tenant_id, name)
);
