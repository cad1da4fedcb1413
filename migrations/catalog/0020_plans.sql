-- Plans that belong to the app: the metrics and features join the tiers in the catalog, so an app's
-- own plan file (tenantry.plans.json) can replace the agent platform's. These seeds are the built-in
-- agent platform (src/plans/builtin.ts, examples/plans/agent-platform.json): without a plan file,
-- nothing changes.

create table tenantry_catalog.plan_metrics (
  name text primary key,
  position integer not null,
  kind text not null check (kind in ('count', 'window', 'lease', 'gauge')),
  -- the key of its limit in tiers.quotas and quota_overrides
  quota text not null unique,
  unit text not null,
  scale bigint not null default 1 check (scale >= 1),
  window_unit text check (window_unit in ('minute', 'hour', 'day', 'month')),
  ttl_seconds integer check (ttl_seconds between 1 and 86400),
  gauge_source text check (gauge_source in ('storage', 'app')),
  description text not null default '',
  check ((kind = 'window') = (window_unit is not null)),
  check ((kind = 'lease') = (ttl_seconds is not null)),
  check ((kind = 'gauge') = (gauge_source is not null))
);
insert into tenantry_catalog.plan_metrics (name, position, kind, quota, unit, scale, window_unit, ttl_seconds, gauge_source, description) values
  ('agents',            0, 'count',  'max_agents',            'agents', 1,          null,     null, null,      'Agents the tenant has defined'),
  ('users',             1, 'count',  'max_users',             'users',  1,          null,     null, null,      'Members of the tenant'),
  ('api_calls',         2, 'window', 'api_calls_per_minute',  'calls',  1,          'minute', null, null,      'API calls per minute (also the rate limit)'),
  ('llm_tokens',        3, 'window', 'llm_tokens_per_day',    'tokens', 1,          'day',    null, null,      'LLM tokens per day'),
  ('concurrent_agents', 4, 'lease',  'max_concurrent_agents', 'agents', 1,          null,     300,  null,      'Agents running at once'),
  ('storage_bytes',     5, 'gauge',  'storage_gb',            'GB',     1000000000, null,     null, 'storage', 'Storage measured from PostgreSQL, in bytes; limits in GB');

create table tenantry_catalog.plan_features (
  name text primary key,
  position integer not null,
  description text not null default ''
);
insert into tenantry_catalog.plan_features (name, position, description) values
  ('api_access',         0, 'Programmatic access through tenant API keys'),
  ('sql_access',         1, 'The tenant SQL endpoint (one statement inside the tenant''s walls)'),
  ('audit_export',       2, 'Export of the tenant''s audit log'),
  ('custom_domains',     3, 'The tenant''s own domains in front of the app'),
  ('sso',                4, 'Single sign-on for the tenant''s members'),
  ('dedicated_database', 5, 'A database of the tenant''s own');

-- tiers in order (for upgrades and downgrades), the one new tenants land on, the one trials run on
alter table tenantry_catalog.tiers
  add column position integer,
  add column is_default boolean not null default false,
  add column trial_of text;
update tenantry_catalog.tiers set position = array_position(array['free', 'starter', 'professional', 'enterprise', 'custom'], name) - 1;
update tenantry_catalog.tiers set position = 1000 where position is null;
update tenantry_catalog.tiers set is_default = true where name = 'free';
alter table tenantry_catalog.tiers alter column position set not null;
create unique index tiers_one_default on tenantry_catalog.tiers (is_default) where is_default;

-- A limit of JSON null in a tier is unlimited: the largest bigint, so the debit's `used + n <= limit`
-- admits every amount while the metering statement stays the same one UPDATE.
create or replace function tenantry_catalog.quota_limit(p_tenant uuid, p_quota text) returns bigint
language sql stable as $$
  select coalesce(o.limit_value,
    case when jsonb_typeof(ti.quotas -> p_quota) = 'null' then 9223372036854775807 else (ti.quotas ->> p_quota)::bigint end)
  from tenantry_catalog.tenants t
  join tenantry_catalog.tiers ti on ti.name = t.tier
  left join tenantry_catalog.quota_overrides o on o.tenant_id = t.id and o.quota = p_quota
  where t.id = p_tenant
$$;
