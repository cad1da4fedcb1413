-- Governance: tiers and quotas, usage metering, feature flags, API keys, members, invitations,
-- rate limits, and a tamper-evident audit log.

create table tenantry_catalog.tiers (
  name text primary key,
  quotas jsonb not null,
  features text[] not null default '{}',
  updated_at timestamptz not null default now()
);
insert into tenantry_catalog.tiers (name, quotas, features) values
  ('free',         '{"max_agents":10,"max_users":1,"api_calls_per_minute":100,"storage_gb":1,"llm_tokens_per_day":10000,"max_concurrent_agents":2,"data_retention_days":30}',
                   '{}'),
  ('starter',      '{"max_agents":100,"max_users":10,"api_calls_per_minute":1000,"storage_gb":10,"llm_tokens_per_day":100000,"max_concurrent_agents":10,"data_retention_days":90}',
                   '{api_access}'),
  ('professional', '{"max_agents":1000,"max_users":100,"api_calls_per_minute":10000,"storage_gb":100,"llm_tokens_per_day":1000000,"max_concurrent_agents":50,"data_retention_days":365}',
                   '{api_access,sql_access,audit_export,custom_domains}'),
  ('enterprise',   '{"max_agents":10000,"max_users":1000,"api_calls_per_minute":100000,"storage_gb":10000,"llm_tokens_per_day":10000000,"max_concurrent_agents":500,"data_retention_days":1825}',
                   '{api_access,sql_access,audit_export,custom_domains,sso,dedicated_database}'),
  ('custom',       '{"max_agents":50000,"max_users":10000,"api_calls_per_minute":100000,"storage_gb":100000,"llm_tokens_per_day":100000000,"max_concurrent_agents":1000,"data_retention_days":3650}',
                   '{api_access,sql_access,audit_export,custom_domains,sso,dedicated_database}');

alter table tenantry_catalog.tenants
  add constraint tenants_tier_fk foreign key (tier) references tenantry_catalog.tiers (name);

create table tenantry_catalog.quota_overrides (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  quota text not null,
  limit_value bigint not null check (limit_value >= 0),
  primary key (tenant_id, quota)
);

-- One row per tenant and metric. Every debit is one UPDATE whose WHERE re-checks the limit, so
-- concurrent debits serialise on the row and can never overshoot; windows reset in the same UPDATE.
create table tenantry_catalog.usage_counters (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  metric text not null,
  used bigint not null default 0 check (used >= 0),
  window_start timestamptz,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, metric)
);

create table tenantry_catalog.usage_idempotency (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  idempotency_key text not null,
  metric text not null,
  amount bigint not null,
  used_after bigint not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, idempotency_key)
);

create table tenantry_catalog.usage_leases (
  id uuid primary key,
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  metric text not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now()
);
create index usage_leases_tenant_idx on tenantry_catalog.usage_leases (tenant_id, metric, expires_at);

-- Daily totals per metric, the source of usage history and billing exports.
create table tenantry_catalog.usage_daily (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  metric text not null,
  day date not null,
  amount bigint not null default 0,
  primary key (tenant_id, metric, day)
);

create table tenantry_catalog.feature_overrides (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  feature text not null,
  enabled boolean not null,
  primary key (tenant_id, feature)
);

-- Rate limiter state (GCRA: the theoretical arrival time per key). UNLOGGED: losing it in a crash
-- only forgets recent traffic, and it spares the WAL one write per request.
create unlogged table tenantry_catalog.rate_limits (
  key text primary key,
  tat_us bigint not null,
  allowed boolean not null default true
);

create table tenantry_catalog.users (
  id uuid primary key,
  email text not null,
  name text,
  created_at timestamptz not null default now()
);
create unique index users_email_idx on tenantry_catalog.users (lower(email));

create table tenantry_catalog.memberships (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  user_id uuid not null references tenantry_catalog.users (id) on delete cascade,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, user_id)
);
create index memberships_user_idx on tenantry_catalog.memberships (user_id);

create table tenantry_catalog.invitations (
  id uuid primary key,
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  email text not null,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  token_hash bytea not null unique,
  invited_by text not null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid,
  revoked_at timestamptz,
  created_at timestamptz not null default now()
);
create index invitations_tenant_idx on tenantry_catalog.invitations (tenant_id, created_at);

create table tenantry_catalog.api_keys (
  id text primary key,
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  name text not null,
  scopes text[] not null,
  secret_hash bytea not null,
  member_user_id uuid references tenantry_catalog.users (id) on delete cascade,
  created_by text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  rotated_from text
);
create index api_keys_tenant_idx on tenantry_catalog.api_keys (tenant_id, created_at);

-- The audit log: hash-chained per tenant and append-only in the database itself.
-- Each entry stores its position in its tenant's chain, the previous entry's hash and its own hash
-- over a canonical serialisation (jsonb's text form is deterministic). A BEFORE INSERT trigger
-- computes them under a transaction-level advisory lock per chain, so concurrent appends to one
-- chain serialise and no two entries claim the same predecessor.
alter table tenantry_catalog.audit_log
  add column chain_seq bigint,
  add column prev_hash bytea,
  add column hash bytea;

create function tenantry_catalog.audit_entry_hash(prev bytea, e tenantry_catalog.audit_log) returns bytea
language sql immutable as $$
  select sha256(coalesce(prev, '\x'::bytea) || convert_to(jsonb_build_object(
    'seq', e.chain_seq, 'tenant_id', e.tenant_id, 'actor', e.actor, 'action', e.action,
    'target', e.target, 'details', e.details, 'request_id', e.request_id,
    'created_at', to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text, 'UTF8'))
$$;

create function tenantry_catalog.audit_chain() returns trigger
language plpgsql as $$
declare
  last record;
begin
  perform pg_advisory_xact_lock(hashtextextended('tenantry-audit:' || coalesce(new.tenant_id::text, 'installation'), 0));
  select chain_seq, hash into last from tenantry_catalog.audit_log
    where tenant_id is not distinct from new.tenant_id order by chain_seq desc limit 1;
  new.chain_seq := coalesce(last.chain_seq, 0) + 1;
  new.prev_hash := last.hash;
  new.hash := tenantry_catalog.audit_entry_hash(last.hash, new);
  return new;
end $$;

-- entries written before this migration join the chain in id order
do $$
declare
  r record;
  prev record;
begin
  for r in select * from tenantry_catalog.audit_log order by id loop
    select chain_seq, hash into prev from tenantry_catalog.audit_log
      where tenant_id is not distinct from r.tenant_id and chain_seq is not null order by chain_seq desc limit 1;
    r.chain_seq := coalesce(prev.chain_seq, 0) + 1;
    update tenantry_catalog.audit_log set chain_seq = r.chain_seq, prev_hash = prev.hash,
      hash = tenantry_catalog.audit_entry_hash(prev.hash, r::tenantry_catalog.audit_log)
      where id = r.id;
  end loop;
end $$;

alter table tenantry_catalog.audit_log alter column chain_seq set not null, alter column hash set not null;
create unique index audit_log_chain_idx on tenantry_catalog.audit_log ((coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)), chain_seq);

create trigger audit_log_chain before insert on tenantry_catalog.audit_log
  for each row execute function tenantry_catalog.audit_chain();

create function tenantry_catalog.audit_refuse_change() returns trigger
language plpgsql as $$
begin
  raise exception 'tenantry: the audit log is append-only (% refused)', tg_op using errcode = '42501';
end $$;
create trigger audit_log_no_update before update or delete on tenantry_catalog.audit_log
  for each row execute function tenantry_catalog.audit_refuse_change();
create trigger audit_log_no_truncate before truncate on tenantry_catalog.audit_log
  for each statement execute function tenantry_catalog.audit_refuse_change();
-- and by privileges: not even the table's owner keeps UPDATE, DELETE or TRUNCATE
revoke update, delete, truncate on tenantry_catalog.audit_log from public;
revoke update, delete, truncate on tenantry_catalog.audit_log from current_user;
