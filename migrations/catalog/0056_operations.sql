-- Long-running operations of the HTTP API (issue #14): backup, export, restore, clone and move answer
-- 202 with one of these rows, which the caller polls. The work itself runs as a job of the job runner
-- (operations.run), so a restart of the server does not lose it: a job whose process died is released
-- and retried, and the row says how far it got.
create table tenantry_catalog.operations (
  id uuid primary key,
  kind text not null check (kind in ('backup', 'export', 'restore', 'clone', 'move')),
  tenant_id uuid not null,
  status text not null default 'queued' check (status in ('queued', 'running', 'succeeded', 'failed')),
  input jsonb not null default '{}',
  progress jsonb,
  result jsonb,
  error jsonb,
  -- what a retry after a crash must undo or finish (a clone's half-made tenant, a backup's partial files)
  state jsonb not null default '{}',
  attempts integer not null default 0,
  actor text not null,
  request_id text,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default now()
);
create index operations_tenant_idx on tenantry_catalog.operations (tenant_id, created_at desc);
create index operations_open_idx on tenantry_catalog.operations (status) where status in ('queued', 'running');
