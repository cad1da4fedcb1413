-- An in-progress Idempotency-Key claim is a lease: its holder renews locked_until while the request
-- runs, so a claim whose process died (kill -9, a lost release) expires within seconds and a retry
-- takes it over, instead of answering IDEMPOTENCY_IN_PROGRESS until the 24-hour expiry.
-- request_id is the request that first claimed the key: a takeover looks for what that request committed.
alter table tenantry_catalog.http_idempotency
  add column locked_until timestamptz,
  add column request_id text;
update tenantry_catalog.http_idempotency set locked_until = now() where status is null;
create index http_idempotency_open_idx on tenantry_catalog.http_idempotency (locked_until) where status is null;
