-- Tenants that run themselves (issue #13): the job runner's bookkeeping, the schedule, usage rollups,
-- per-tier lifecycle settings, the webhook outbox and the audit log's retention exception.
-- The queue itself is graphile-worker's, in the schema tenantry_jobs of this same catalog database.

-- Processes running the job runner beat here. graphile-worker leaves a job locked by a worker that
-- died for four hours; a live process releases the jobs of a process whose beat stopped
-- (force_unlock_workers), so a killed worker's job is retried within seconds.
create table tenantry_catalog.job_processes (
  id text primary key,
  kind text not null,
  worker_ids text[] not null default '{}',
  pid integer,
  host text,
  started_at timestamptz not null default now(),
  seen_at timestamptz not null default now()
);

-- Each scheduled task once per period across every process: the first process to insert the period's
-- row enqueues its job in the same transaction; every other process's insert does nothing.
create table tenantry_catalog.schedule_runs (
  task text not null,
  period_start timestamptz not null,
  enqueued_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  runs integer not null default 0,
  result jsonb,
  primary key (task, period_start)
);

-- Monthly history rolled up from usage_daily (the daily history is written by every debit).
create table tenantry_catalog.usage_monthly (
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  metric text not null,
  month date not null,
  amount bigint not null,
  rolled_up_at timestamptz not null default now(),
  primary key (tenant_id, metric, month)
);

-- Per-tier lifecycle settings beside the plans: the grace before a soft-deleted tenant is purged.
create table tenantry_catalog.tier_lifecycle (
  tier text primary key,
  purge_grace_days integer not null check (purge_grace_days between 0 and 3650),
  updated_at timestamptz not null default now()
);

-- Webhook endpoints: installation-wide (tenant_id null) or one tenant's.
create table tenantry_catalog.webhook_endpoints (
  id uuid primary key,
  tenant_id uuid references tenantry_catalog.tenants (id) on delete cascade,
  url text not null,
  -- empty: every event type
  events text[] not null default '{}',
  -- the signing key (needed in the clear to sign, as in Standard Webhooks); never returned after creation
  secret bytea not null,
  -- private, loopback and link-local targets: allowed for endpoints an operator registered, or when
  -- the operator allows them for tenants (TENANTRY_WEBHOOK_ALLOW_PRIVATE)
  allow_private boolean not null default false,
  enabled boolean not null default true,
  created_by text not null,
  created_at timestamptz not null default now()
);
create index webhook_endpoints_tenant_idx on tenantry_catalog.webhook_endpoints (tenant_id);

-- The outbox: written in the transaction of the change, so a rolled-back change has no event and a
-- committed one is never lost.
create table tenantry_catalog.webhook_events (
  id uuid primary key,
  seq bigint generated always as identity,
  tenant_id uuid,
  type text not null,
  payload jsonb not null,
  created_at timestamptz not null default clock_timestamp()
);

create table tenantry_catalog.webhook_deliveries (
  id bigint generated always as identity primary key,
  event_id uuid not null references tenantry_catalog.webhook_events (id) on delete cascade,
  endpoint_id uuid not null references tenantry_catalog.webhook_endpoints (id) on delete cascade,
  -- deliveries of one stream (endpoint and tenant) go out in order, one at a time
  stream text not null,
  status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  first_attempt_at timestamptz,
  finished_at timestamptz,
  created_at timestamptz not null default now()
);
create index webhook_deliveries_stream_idx on tenantry_catalog.webhook_deliveries (stream, id) where status = 'pending';
create index webhook_deliveries_endpoint_idx on tenantry_catalog.webhook_deliveries (endpoint_id, id);

create table tenantry_catalog.webhook_attempts (
  id bigint generated always as identity primary key,
  delivery_id bigint not null references tenantry_catalog.webhook_deliveries (id) on delete cascade,
  attempt integer not null,
  status_code integer,
  error text,
  latency_ms integer not null,
  at timestamptz not null default now()
);
create index webhook_attempts_delivery_idx on tenantry_catalog.webhook_attempts (delivery_id);

-- Writes one event to the outbox with one delivery per listening endpoint, and the drain job of each
-- stream (graphile-worker's add_job in this same transaction; its job key keeps one per stream, its
-- queue runs them one at a time). Nothing is written when no endpoint listens.
create function tenantry_catalog.webhook_enqueue(p_tenant uuid, p_type text, p_data jsonb) returns void
language plpgsql as $$
declare
  ev uuid := gen_random_uuid();
  s text;
begin
  if not exists (select 1 from tenantry_catalog.webhook_endpoints e
                 where e.enabled and (e.tenant_id is null or e.tenant_id = p_tenant)
                   and (cardinality(e.events) = 0 or p_type = any (e.events))) then
    return;
  end if;
  insert into tenantry_catalog.webhook_events (id, tenant_id, type, payload)
  values (ev, p_tenant, p_type, jsonb_build_object(
    'type', p_type,
    'timestamp', to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'data', coalesce(p_data, '{}'::jsonb) || jsonb_build_object('tenantId', p_tenant)));
  for s in
    insert into tenantry_catalog.webhook_deliveries (event_id, endpoint_id, stream)
    select ev, e.id, e.id::text || ':' || coalesce(p_tenant::text, 'installation')
    from tenantry_catalog.webhook_endpoints e
    where e.enabled and (e.tenant_id is null or e.tenant_id = p_tenant)
      and (cardinality(e.events) = 0 or p_type = any (e.events))
    returning stream
  loop
    -- the runner's schema is installed on open; should it be missing the sweep job enqueues later
    if to_regnamespace('tenantry_jobs') is not null then
      execute 'select tenantry_jobs.add_job($1, $2, queue_name => $3, job_key => $3, job_key_mode => ''preserve_run_at'', max_attempts => 1000)'
        using 'webhooks.drain', json_build_object('stream', s), 'webhooks:' || s;
    end if;
  end loop;
end $$;

-- Tenant events ride on the audit entry of their change (same transaction).
create function tenantry_catalog.audit_to_webhook() returns trigger
language plpgsql as $$
declare
  t text;
begin
  t := case new.action
    when 'tenant.created' then 'tenant.created'
    when 'tenant.activated' then 'tenant.activated'
    when 'tenant.trial_ending' then 'tenant.trial_ending'
    when 'tenant.trial_ended' then 'tenant.trial_ended'
    when 'tenant.suspended' then 'tenant.suspended'
    when 'tenant.deleted' then 'tenant.deleted'
    when 'tenant.restored' then 'tenant.restored'
    when 'tenant.hard_deleted' then 'tenant.purged'
    when 'tenant.purged' then 'tenant.purged'
    when 'tenant.tier_changed' then 'tenant.tier_changed'
    when 'api_key.created' then 'key.created'
    when 'api_key.revoked' then 'key.revoked'
    when 'member.added' then 'member.added'
    when 'member.joined' then 'member.added'
    when 'member.removed' then 'member.removed'
    when 'retention.purged' then 'retention.purged'
    when 'quota.exceeded_by_change' then 'quota.exceeded'
    else null end;
  if t is null and new.action = 'tenant.updated' and new.details #> '{changes,tier}' is not null then
    t := 'tenant.tier_changed';
  end if;
  if t is not null then
    perform tenantry_catalog.webhook_enqueue(new.tenant_id, t,
      jsonb_build_object('action', new.action, 'actor', new.actor, 'target', new.target, 'details', new.details, 'auditId', new.id));
  end if;
  return null;
end $$;
create trigger audit_log_webhooks after insert on tenantry_catalog.audit_log
  for each row execute function tenantry_catalog.audit_to_webhook();

-- Quota at risk (crossing 90%) and exceeded (reaching the limit), on the debit's own UPDATE.
create function tenantry_catalog.usage_to_webhook() returns trigger
language plpgsql as $$
declare
  q text;
  lim bigint;
  before bigint := case when tg_op = 'UPDATE' then old.used else 0 end;
begin
  if new.used <= before then return null; end if;
  select m.quota into q from tenantry_catalog.plan_metrics m where m.name = new.metric and m.kind <> 'gauge';
  if q is null then return null; end if;
  lim := tenantry_catalog.quota_limit(new.tenant_id, q);
  if lim is null or lim <= 0 or lim = 9223372036854775807 then return null; end if;
  if before < lim and new.used >= lim then
    perform tenantry_catalog.webhook_enqueue(new.tenant_id, 'quota.exceeded',
      jsonb_build_object('metric', new.metric, 'quota', q, 'used', new.used, 'limit', lim));
  elsif before * 10 < lim * 9 and new.used * 10 >= lim * 9 then
    perform tenantry_catalog.webhook_enqueue(new.tenant_id, 'quota.at_risk',
      jsonb_build_object('metric', new.metric, 'quota', q, 'used', new.used, 'limit', lim));
  end if;
  return null;
end $$;
create trigger usage_counters_webhooks after insert or update of used on tenantry_catalog.usage_counters
  for each row execute function tenantry_catalog.usage_to_webhook();

-- Retention of the audit log. The log stays append-only: no role keeps UPDATE or DELETE, the
-- triggers refuse both. The one exception is tenantry_catalog.audit_purge() (SECURITY DEFINER, owned
-- by the installation's NOLOGIN owner role, which alone holds DELETE; set up on open): it removes
-- only the oldest entries of one chain (a prefix, never a middle entry), records the last removed
-- entry's position and hash as the chain's anchor, and verifyAudit starts from that anchor.
create table tenantry_catalog.audit_anchors (
  chain uuid primary key,
  chain_seq bigint not null,
  hash bytea not null,
  purged integer not null default 0,
  updated_at timestamptz not null default now()
);
revoke all on tenantry_catalog.audit_anchors from public;

create or replace function tenantry_catalog.audit_refuse_change() returns trigger
language plpgsql as $$
declare
  oldest bigint;
begin
  if tg_op = 'DELETE' and current_setting('tenantry.audit_purge', true) = 'on' then
    select min(chain_seq) into oldest from tenantry_catalog.audit_log where tenant_id is not distinct from old.tenant_id;
    if old.chain_seq = oldest then
      return old;
    end if;
    raise exception 'tenantry: audit retention removes only the oldest entries of a chain' using errcode = '42501';
  end if;
  raise exception 'tenantry: the audit log is append-only (% refused)', tg_op using errcode = '42501';
end $$;

create function tenantry_catalog.audit_purge(p_tenant uuid, p_before timestamptz, p_limit integer) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  r record;
  n integer := 0;
  chain_key uuid := coalesce(p_tenant, '00000000-0000-0000-0000-000000000000'::uuid);
begin
  perform pg_advisory_xact_lock(hashtextextended('tenantry-audit:' || coalesce(p_tenant::text, 'installation'), 0));
  perform set_config('tenantry.audit_purge', 'on', true);
  for r in
    select id, chain_seq, hash from tenantry_catalog.audit_log
    where tenant_id is not distinct from p_tenant and created_at < p_before
      -- the newest entry of a chain is always kept: new entries chain onto it
      and chain_seq < (select max(chain_seq) from tenantry_catalog.audit_log where tenant_id is not distinct from p_tenant)
    order by chain_seq limit greatest(p_limit, 0)
  loop
    delete from tenantry_catalog.audit_log where id = r.id;
    insert into tenantry_catalog.audit_anchors as a (chain, chain_seq, hash, purged) values (chain_key, r.chain_seq, r.hash, 1)
      on conflict (chain) do update set chain_seq = excluded.chain_seq, hash = excluded.hash, purged = a.purged + 1, updated_at = now();
    n := n + 1;
  end loop;
  perform set_config('tenantry.audit_purge', 'off', true);
  return n;
end $$;
revoke all on function tenantry_catalog.audit_purge(uuid, timestamptz, integer) from public;
