-- Billing (issue #15): a billing customer per tenant, prices on tiers, the records each closed period
-- produces, and what Stripe's webhooks said about payment.

-- The price of a tier (validated by the plan file's parser): {"currency","amount","metrics":{...}}.
alter table tenantry_catalog.tiers add column price jsonb;

create table tenantry_catalog.billing_customers (
  tenant_id uuid primary key references tenantry_catalog.tenants (id) on delete cascade,
  provider text not null default 'stripe' check (provider = 'stripe'),
  customer_id text not null unique check (customer_id ~ '^[A-Za-z0-9_]{1,255}$'),
  updated_at timestamptz not null default now()
);

-- One row per tenant, period and line (the tier's price, or one metric's usage beyond what the tier
-- includes). The unique constraint is the catalog's half of "never billed twice": a retried, doubled
-- or concurrent close of the same period inserts nothing new; the idempotency key, derived from the
-- same three values, is the provider's half (a push retried after a crash creates no second item).
create table tenantry_catalog.billing_records (
  id uuid primary key default gen_random_uuid(),
  -- no foreign key: what was billed must outlive a tenant's hard delete
  tenant_id uuid not null,
  customer_id text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  item text not null,
  tier text not null,
  quantity bigint not null check (quantity >= 0),
  included bigint not null default 0 check (included >= 0),
  billable bigint not null default 0 check (billable >= 0),
  unit_amount bigint not null default 0 check (unit_amount >= 0),
  per_units bigint not null default 1 check (per_units >= 1),
  amount bigint not null check (amount >= 0),
  currency text not null check (currency ~ '^[a-z]{3}$'),
  status text not null default 'pending' check (status in ('pending', 'pushed', 'skipped')),
  idempotency_key text not null unique,
  external_id text,
  attempts integer not null default 0,
  -- a push in flight holds the row until then; a process that died lets it go when it passes
  claimed_until timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  pushed_at timestamptz,
  unique (tenant_id, period_start, item)
);
create index billing_records_pending_idx on tenantry_catalog.billing_records (created_at) where status = 'pending';

-- Invoices Stripe's webhooks told of: failed (unpaid) or paid. A tenant is overdue while it has a
-- failed one; a paid invoice stays paid even when a late payment_failed for it arrives afterwards
-- (Stripe does not promise order). `since` is the first failure, by Tenantry's clock.
create table tenantry_catalog.billing_invoices (
  invoice_id text primary key check (invoice_id ~ '^[A-Za-z0-9_]{1,255}$'),
  tenant_id uuid not null references tenantry_catalog.tenants (id) on delete cascade,
  status text not null check (status in ('failed', 'paid')),
  since timestamptz not null,
  updated_at timestamptz not null default now()
);
create index billing_invoices_failed_idx on tenantry_catalog.billing_invoices (tenant_id) where status = 'failed';

-- Stripe event ids already handled: a redelivered event changes nothing twice.
create table tenantry_catalog.billing_stripe_events (
  id text primary key,
  type text not null,
  tenant_id uuid,
  received_at timestamptz not null default now()
);
