-- The console's overview (issue #17) reads the last day's provisionings (tenant.created carries its
-- durationMs) and failures (tenant.provisioning_failed) from the audit log; this partial index keeps
-- that read to the day's few rows however long the log grows.
create index audit_log_provisioning_idx on tenantry_catalog.audit_log (created_at)
  where action in ('tenant.created', 'tenant.provisioning_failed');
-- and the day's failed webhook deliveries
create index webhook_deliveries_failed_idx on tenantry_catalog.webhook_deliveries (finished_at)
  where status = 'failed';
