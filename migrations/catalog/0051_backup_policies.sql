-- Scheduled backups per tier (issue #14): how often each tier's tenants are backed up by the job
-- runner's backups.scheduled task, and how many scheduled backups of each tenant are kept.
create table tenantry_catalog.backup_policies (
  tier text primary key,
  every_seconds integer not null check (every_seconds >= 60),
  keep integer not null check (keep between 1 and 1000),
  updated_at timestamptz not null default now()
);
