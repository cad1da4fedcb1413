-- Online moves of a tenant between isolation modes (issue #14). One row per move; its phase tells
-- repair what to do when the process running it died: before 'switched' the move is undone (the
-- change log and freeze on the source removed, the half-filled target removed), from 'switched' on
-- it is finished (the old placement removed). The tenant row itself stays the truth of where the
-- tenant lives: repair decides by it when the phase and the catalog disagree (a lost COMMIT answer).
create table tenantry_catalog.moves (
  id uuid primary key,
  tenant_id uuid not null,
  from_isolation text not null,
  to_isolation text not null,
  from_placement jsonb not null,
  to_placement jsonb not null,
  phase text not null default 'preparing'
    check (phase in ('preparing', 'copying', 'frozen', 'switched', 'done', 'failed')),
  rows bigint,
  read_only_ms integer,
  error text,
  actor text not null,
  request_id text,
  started_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
-- one move at a time per tenant
create unique index moves_one_active_idx on tenantry_catalog.moves (tenant_id) where phase not in ('done', 'failed');
create index moves_tenant_idx on tenantry_catalog.moves (tenant_id, started_at desc);
