-- Each finished tenant migration run (not dry runs), so the console's migrations page can show the
-- last run's failures after the process that ran it is gone (issue #17). Only the newest rows matter;
-- recordMigrationRun keeps the last 100.
create table tenantry_catalog.tenant_migration_runs (
  id bigint generated always as identity primary key,
  finished_at timestamptz not null default now(),
  latest_version integer not null,
  planned integer not null check (planned >= 0),
  migrated integer not null check (migrated >= 0),
  -- [{id, slug, isolation, error}], the error text capped at 2000 characters
  failed jsonb not null default '[]'::jsonb,
  duration_ms integer not null check (duration_ms >= 0)
);
