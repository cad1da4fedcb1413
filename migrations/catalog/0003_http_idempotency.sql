-- Responses to POST requests sent with an Idempotency-Key, replayed for 24 hours.
create table tenantry_catalog.http_idempotency (
  principal text not null,
  idempotency_key text not null,
  method text not null,
  path text not null,
  body_sha256 text not null,
  status integer,
  response jsonb,
  created_at timestamptz not null default now(),
  primary key (principal, idempotency_key)
);
create index http_idempotency_created_idx on tenantry_catalog.http_idempotency (created_at);
