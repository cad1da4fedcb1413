-- Issue #15: per-tenant data keys (envelope encryption), pending purges of a hard-deleted tenant's
-- cache keys and objects, and the bytes each tenant keeps in object storage.

-- A tenant's data keys, each version stored only wrapped by the KMS's key-encryption key (never in
-- plaintext, never in a tenant backup: backups hold the data plane's rows only). Hard delete removes
-- these rows in the transaction that removes the tenant: crypto-shredding.
create table tenantry_catalog.tenant_data_keys (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  version integer not null check (version between 1 and 2147483647),
  -- the KMS's opaque wrapped key (local: local:<kek id>:<base64>; Vault transit: vault:vN:...)
  wrapped text not null,
  -- which key-encryption key wrapped it, and its version at the KMS
  kek_id text not null,
  kek_version integer not null default 1,
  created_at timestamptz not null default now(),
  rewrapped_at timestamptz,
  primary key (tenant_id, version)
);
create index tenant_data_keys_kek on tenantry_catalog.tenant_data_keys (kek_id, kek_version);

-- What a hard delete still owes outside PostgreSQL: the tenant's Redis keys, its Redis ACL user and
-- its objects. Recorded in the hard delete's own transaction; a row leaves only when that purge has
-- finished, so a purge that Redis or S3 refused is retried (the job runner) until it has.
create table tenantry_catalog.tenant_purges (
  tenant_id uuid not null,
  target text not null check (target in ('cache', 'cache_acl', 'objects')),
  created_at timestamptz not null default now(),
  attempts integer not null default 0,
  last_error text,
  last_attempt_at timestamptz,
  primary key (tenant_id, target)
);

-- Bytes of a tenant's objects in object storage, counted into its storage gauge by refreshStorage.
create table tenantry_catalog.tenant_object_usage (
  tenant_id uuid primary key references tenantry_catalog.tenants (id) on delete cascade,
  bytes bigint not null default 0 check (bytes >= 0),
  objects bigint not null default 0 check (objects >= 0),
  measured_at timestamptz,
  updated_at timestamptz not null default now()
);
