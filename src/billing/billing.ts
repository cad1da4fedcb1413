import type Stripe from 'stripe';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { Tenant } from '../tenants/model.js';
import { addJob } from '../jobs/runner.js';
import { stripeClient, constructStripeEvent } from './stripe-client.js';

/** The reason a tenant is suspended for an invoice left unpaid past the grace. */
export const PAYMENT_OVERDUE = 'payment_overdue';
/** Stripe customer ids (cus_...) and other Stripe object ids: letters, digits, underscore. */
const STRIPE_ID = /^[A-Za-z0-9_]{1,255}$/;
/** The largest raw webhook body read (Stripe's events are a few kB). */
export const MAX_WEBHOOK_BYTES = 512 * 1024;

export interface BillingRecord {
  id: string;
  tenantId: string;
  customerId: string;
  periodStart: Date;
  periodEnd: Date;
  /** `plan` (the tier's price) or a metric's name */
  item: string;
  tier: string;
  quantity: number;
  included: number;
  billable: number;
  unitAmount: number;
  perUnits: number;
  amount: number;
  currency: string;
  status: 'pending' | 'pushed' | 'skipped';
  externalId: string | null;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
  pushedAt: Date | null;
}

interface RecordRow {
  id: string; tenant_id: string; customer_id: string; period_start: Date; period_end: Date; item: string; tier: string;
  quantity: string; included: string; billable: string; unit_amount: string; per_units: string; amount: string; currency: string;
  status: BillingRecord['status']; idempotency_key: string; external_id: string | null; attempts: number; last_error: string | null;
  created_at: Date; pushed_at: Date | null;
}

const view = (r: RecordRow): BillingRecord => ({
  id: r.id, tenantId: r.tenant_id, customerId: r.customer_id, periodStart: r.period_start, periodEnd: r.period_end, item: r.item, tier: r.tier,
  quantity: Number(r.quantity), included: Number(r.included), billable: Number(r.billable), unitAmount: Number(r.unit_amount), perUnits: Number(r.per_units),
  amount: Number(r.amount), currency: r.currency, status: r.status, externalId: r.external_id, attempts: r.attempts, lastError: r.last_error,
  createdAt: r.created_at, pushedAt: r.pushed_at,
});

/** The calendar month (UTC) `period` names (`YYYY-MM`), or the last one that ended before `now`. */
export function billingPeriod(period: string | undefined, now: Date): { start: Date; end: Date; name: string } {
  let y: number;
  let m: number;
  if (period === undefined) {
    y = now.getUTCFullYear();
    m = now.getUTCMonth() - 1;
  } else {
    const match = typeof period === 'string' ? /^(\d{4})-(0[1-9]|1[0-2])$/.exec(period) : null;
    if (!match) throw new TenantryError('INVALID_INPUT', `A billing period is a month written YYYY-MM (such as 2026-10), got ${JSON.stringify(String(period).slice(0, 40))}.`);
    y = Number(match[1]);
    m = Number(match[2]) - 1;
  }
  const start = new Date(Date.UTC(y, m, 1));
  const end = new Date(Date.UTC(y, m + 1, 1));
  return { start, end, name: start.toISOString().slice(0, 7) };
}

export interface ClosePeriodReport {
  period: string;
  /** tenants recorded by this run (a tenant already recorded for the period is not counted again) */
  tenants: number;
  /** records this run created (a second run of the same period creates none) */
  created: number;
  pushed: number;
  failed: number;
  /** records left pending (no STRIPE_API_KEY, or a push that failed and will be retried) */
  pending: number;
}

/**
 * Billing: a billing customer per tenant, each closed period's usage turned into records (the tier's
 * price and usage beyond what it includes, from the plans) and pushed to Stripe as invoice items,
 * and Stripe's payment webhooks driving suspension for non-payment.
 */
export class BillingService {
  private client: Stripe | undefined | null = null;

  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  private stripe(): Stripe | undefined {
    if (this.client === null) this.client = stripeClient(this.core.opts);
    return this.client;
  }

  /** Sets (or with null clears) the tenant's billing customer id (Stripe's cus_...). */
  async setCustomer(idOrSlug: string, customerId: string | null, who: AuditActor = {}): Promise<{ tenantId: string; customerId: string | null }> {
    if (customerId !== null && (typeof customerId !== 'string' || !STRIPE_ID.test(customerId))) {
      throw new TenantryError('INVALID_INPUT', 'A billing customer id is 1-255 letters, digits or underscores (Stripe\'s cus_...), or null to clear it.');
    }
    const t = await this.tenants.get(idOrSlug);
    try {
      await this.core.admin.begin(async (tx) => {
        const [before] = await tx<{ customer_id: string }[]>`select customer_id from tenantry_catalog.billing_customers where tenant_id = ${t.id} for update`;
        if (customerId === null) await tx`delete from tenantry_catalog.billing_customers where tenant_id = ${t.id}`;
        else {
          await tx`
            insert into tenantry_catalog.billing_customers (tenant_id, customer_id) values (${t.id}, ${customerId})
            on conflict (tenant_id) do update set customer_id = excluded.customer_id, updated_at = now()`;
        }
        await appendAudit(tx, {
          tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'billing.customer_set', target: `tenant:${t.id}`,
          details: { from: before?.customer_id ?? null, to: customerId }, requestId: who.requestId,
        });
      });
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new TenantryError('BILLING_CUSTOMER_TAKEN', `The billing customer ${customerId} is already another tenant's; one customer pays for one tenant.`);
      throw err;
    }
    return { tenantId: t.id, customerId };
  }

  async getCustomer(idOrSlug: string): Promise<{ tenantId: string; customerId: string | null; overdueSince: Date | null }> {
    const t = await this.tenants.get(idOrSlug);
    const [c] = await this.core.admin<{ customer_id: string }[]>`select customer_id from tenantry_catalog.billing_customers where tenant_id = ${t.id}`;
    const [o] = await this.core.admin<{ since: Date | null }[]>`select min(since) as since from tenantry_catalog.billing_invoices where tenant_id = ${t.id} and status = 'failed'`;
    return { tenantId: t.id, customerId: c?.customer_id ?? null, overdueSince: o?.since ?? null };
  }

  /** A tenant's billing records, newest period first. */
  async records(idOrSlug: string, opts: { period?: string } = {}): Promise<BillingRecord[]> {
    const t = await this.tenants.get(idOrSlug);
    const p = opts.period !== undefined ? billingPeriod(opts.period, this.core.opts.clock()) : undefined;
    const rows = await this.core.admin<RecordRow[]>`
      select * from tenantry_catalog.billing_records where tenant_id = ${t.id} ${p ? this.core.admin`and period_start = ${p.start}` : this.core.admin``}
      order by period_start desc, item`;
    return rows.map(view);
  }

  /**
   * Closes a billing period (default: the last calendar month that ended): for every tenant with a
   * billing customer whose tier has a price, one record per line (the tier's price, each priced
   * metric's usage beyond what is included), then pushes pending records to Stripe. Safe to run
   * twice or at once in several processes: the catalog's unique (tenant, period, item) lets a line be
   * recorded once, a push claims its record first, and Stripe's idempotency key (derived from the
   * same three values) makes a push retried after a crash return the first invoice item.
   */
  async closePeriod(opts: { period?: string } = {}): Promise<ClosePeriodReport> {
    const now = this.core.opts.clock();
    const p = billingPeriod(opts.period, now);
    if (p.end.getTime() > now.getTime()) throw new TenantryError('INVALID_INPUT', `The period ${p.name} has not ended yet; it can be closed from ${p.end.toISOString()}.`);
    // tenants whose period is recorded already are skipped (a tenant's lines are recorded in one
    // transaction, so any line means all of them): the hourly schedule costs a query, not a bill
    const customers = await this.core.admin<{ tenant_id: string; customer_id: string; tier: string }[]>`
      select c.tenant_id, c.customer_id, t.tier from tenantry_catalog.billing_customers c
      join tenantry_catalog.tenants t on t.id = c.tenant_id
      where t.status <> 'provisioning'
        and not exists (select 1 from tenantry_catalog.billing_records r where r.tenant_id = c.tenant_id and r.period_start = ${p.start})
      order by t.seq`;
    let created = 0;
    let tenants = 0;
    for (const c of customers) {
      const price = this.core.plans.tier(c.tier)?.price;
      if (!price) continue;
      tenants++;
      const metrics = Object.keys(price.metrics);
      // usage_daily's days are the database's dates; a month is its first day up to the next month's
      const usage = await this.core.admin<{ metric: string; total: string }[]>`
        select metric, sum(amount)::text as total from tenantry_catalog.usage_daily
        where tenant_id = ${c.tenant_id} and metric = any(${metrics}) and day >= ${p.start.toISOString().slice(0, 10)}::date and day < ${p.end.toISOString().slice(0, 10)}::date
        group by metric`;
      const used = new Map(usage.map((u) => [u.metric, Number(u.total)]));
      const lines = [
        { item: 'plan', quantity: 1, included: 0, billable: 1, unitAmount: price.amount, perUnits: 1, amount: price.amount },
        ...metrics.map((m) => {
          const q = used.get(m) ?? 0;
          const mp = price.metrics[m]!;
          const billable = Math.max(0, q - mp.included);
          return { item: m, quantity: q, included: mp.included, billable, unitAmount: mp.unitAmount, perUnits: mp.perUnits, amount: Math.ceil(billable / mp.perUnits) * mp.unitAmount };
        }),
      ];
      const n = await this.core.admin.begin(async (tx) => {
        let made = 0;
        for (const l of lines) {
          const key = `tenantry-${this.core.installationId}-${c.tenant_id}-${p.name}-${l.item}`;
          const rows = await tx`
            insert into tenantry_catalog.billing_records (tenant_id, customer_id, period_start, period_end, item, tier, quantity, included, billable, unit_amount, per_units, amount, currency, status, idempotency_key)
            values (${c.tenant_id}, ${c.customer_id}, ${p.start}, ${p.end}, ${l.item}, ${c.tier}, ${l.quantity}, ${l.included}, ${l.billable}, ${l.unitAmount}, ${l.perUnits}, ${l.amount}, ${price.currency},
              ${l.amount > 0 ? 'pending' : 'skipped'}, ${key})
            on conflict do nothing returning id`;
          made += rows.length;
        }
        if (made > 0) {
          await appendAudit(tx, { tenantId: c.tenant_id, actor: 'system', action: 'billing.period_closed', target: `tenant:${c.tenant_id}`, details: { period: p.name, tier: c.tier, lines: lines.map((l) => ({ item: l.item, quantity: l.quantity, amount: l.amount })), currency: price.currency } });
        }
        return made;
      });
      created += n;
    }
    const pushed = await this.pushPending();
    const [{ pending }] = await this.core.admin<{ pending: number }[]>`select count(*)::int as pending from tenantry_catalog.billing_records where status = 'pending'` as unknown as [{ pending: number }];
    return { period: p.name, tenants, created, pushed: pushed.pushed, failed: pushed.failed, pending };
  }

  /**
   * Pushes pending records to Stripe as invoice items. Each record is claimed first (a lease of two
   * minutes, so a process that dies mid-push lets it go): concurrent runs never push the same record
   * at once, and a record pushed by a process that died before marking it is pushed again under the
   * same idempotency key, which Stripe answers with the item it already made.
   */
  async pushPending(opts: { limit?: number } = {}): Promise<{ pushed: number; failed: number }> {
    const stripe = this.stripe();
    if (!stripe) return { pushed: 0, failed: 0 };
    const claimed = await this.core.admin<RecordRow[]>`
      update tenantry_catalog.billing_records set claimed_until = now() + interval '2 minutes', attempts = attempts + 1
      where id in (
        select id from tenantry_catalog.billing_records
        where status = 'pending' and (claimed_until is null or claimed_until < now())
        order by created_at limit ${opts.limit ?? 500} for update skip locked)
      returning *`;
    let pushed = 0;
    let failed = 0;
    for (const r of claimed) {
      const rec = view(r);
      try {
        const item = await stripe.invoiceItems.create({
          customer: rec.customerId,
          amount: rec.amount,
          currency: rec.currency,
          description: rec.item === 'plan' ? `${rec.tier} plan, ${rec.periodStart.toISOString().slice(0, 7)}` : `${rec.item}: ${rec.billable} beyond ${rec.included} included, ${rec.periodStart.toISOString().slice(0, 7)}`,
          period: { start: Math.floor(rec.periodStart.getTime() / 1000), end: Math.floor(rec.periodEnd.getTime() / 1000) - 1 },
          metadata: { tenantry_tenant_id: rec.tenantId, tenantry_period: rec.periodStart.toISOString().slice(0, 7), tenantry_item: rec.item, tenantry_record_id: rec.id },
        }, { idempotencyKey: r.idempotency_key });
        await this.core.admin`
          update tenantry_catalog.billing_records set status = 'pushed', external_id = ${item.id}, pushed_at = now(), claimed_until = null, last_error = null
          where id = ${rec.id}`;
        pushed++;
      } catch (err) {
        failed++;
        const message = (err as Error).message?.slice(0, 500) ?? 'unknown error';
        this.core.logger.warn({ err: { message, type: (err as { type?: string }).type }, record: rec.id }, 'pushing a billing record to Stripe failed; it is retried on the next run');
        await this.core.admin`update tenantry_catalog.billing_records set claimed_until = null, last_error = ${message} where id = ${rec.id}`;
      }
    }
    return { pushed, failed };
  }

  /**
   * One Stripe webhook: the raw body and its Stripe-Signature, checked with the SDK against
   * STRIPE_WEBHOOK_SECRET (a bad or stale signature: BILLING_SIGNATURE_INVALID, nothing changed).
   * `invoice.payment_failed` marks the invoice unpaid and schedules the suspension check after the
   * grace; `invoice.paid` marks it paid and re-activates a tenant suspended for non-payment with no
   * other unpaid invoice. A redelivered event changes nothing twice. Other events are acknowledged.
   */
  async handleStripeWebhook(raw: Buffer, signature: string | undefined): Promise<{ received: true; type: string; handled: boolean; duplicate?: boolean; tenantId?: string }> {
    const secret = this.core.opts.stripeWebhookSecret;
    if (!secret) throw new TenantryError('BILLING_NOT_CONFIGURED', 'Stripe webhooks need STRIPE_WEBHOOK_SECRET (the endpoint\'s signing secret, whsec_...).');
    if (!Buffer.isBuffer(raw) || raw.length > MAX_WEBHOOK_BYTES) throw new TenantryError('INVALID_INPUT', `A webhook body is at most ${MAX_WEBHOOK_BYTES} bytes.`);
    if (typeof signature !== 'string' || signature.length === 0 || signature.length > 4096) throw new TenantryError('BILLING_SIGNATURE_INVALID', 'The Stripe-Signature header is missing.');
    let event: Stripe.Event;
    try {
      event = constructStripeEvent(raw, signature, secret);
    } catch {
      throw new TenantryError('BILLING_SIGNATURE_INVALID', 'The Stripe-Signature does not verify against STRIPE_WEBHOOK_SECRET, or its timestamp is over 5 minutes old.');
    }
    const type = String(event.type);
    if (type !== 'invoice.payment_failed' && type !== 'invoice.paid') return { received: true, type, handled: false };
    const invoice = event.data.object as { id?: unknown; customer?: unknown };
    const customer = typeof invoice.customer === 'string' ? invoice.customer : (invoice.customer as { id?: unknown } | null)?.id;
    if (typeof event.id !== 'string' || !STRIPE_ID.test(event.id) || typeof invoice.id !== 'string' || !STRIPE_ID.test(invoice.id) || typeof customer !== 'string' || !STRIPE_ID.test(customer)) {
      throw new TenantryError('INVALID_INPUT', 'The event names no readable event, invoice or customer id.');
    }
    const invoiceId = invoice.id;
    const now = this.core.opts.clock();
    const out = await this.core.admin.begin(async (tx) => {
      const [fresh] = await tx<{ id: string }[]>`
        insert into tenantry_catalog.billing_stripe_events (id, type) values (${event.id}, ${type}) on conflict (id) do nothing returning id`;
      if (!fresh) return { duplicate: true as const, tenantId: undefined };
      const [c] = await tx<{ tenant_id: string }[]>`select tenant_id from tenantry_catalog.billing_customers where customer_id = ${customer}`;
      if (!c) return { duplicate: false as const, tenantId: undefined };
      await tx`update tenantry_catalog.billing_stripe_events set tenant_id = ${c.tenant_id} where id = ${event.id}`;
      if (type === 'invoice.payment_failed') {
        await tx`
          insert into tenantry_catalog.billing_invoices (invoice_id, tenant_id, status, since) values (${invoiceId}, ${c.tenant_id}, 'failed', ${now})
          on conflict (invoice_id) do update set updated_at = now() where billing_invoices.status = 'failed'`;
        // the check runs when the grace has passed (one pending check per tenant; a later failure keeps its time)
        await addJob(tx as never, 'billing.overdue', { tenantId: c.tenant_id }, { jobKey: `billing.overdue:${c.tenant_id}`, jobKeyMode: 'preserve_run_at', delayMs: this.core.opts.billingGraceSeconds * 1000 + 1000, maxAttempts: 10 });
      } else {
        await tx`
          insert into tenantry_catalog.billing_invoices (invoice_id, tenant_id, status, since) values (${invoiceId}, ${c.tenant_id}, 'paid', ${now})
          on conflict (invoice_id) do update set status = 'paid', updated_at = now()`;
      }
      await appendAudit(tx, { tenantId: c.tenant_id, actor: 'stripe', action: type === 'invoice.paid' ? 'billing.invoice_paid' : 'billing.payment_failed', target: `invoice:${invoiceId}`, details: { eventId: event.id, invoiceId, customer } });
      return { duplicate: false as const, tenantId: c.tenant_id };
    });
    // re-activation after the commit: should this process die in between, the overdue sweep does it
    if (out.tenantId && type === 'invoice.paid') await this.reconcile(out.tenantId);
    return { received: true, type, handled: out.tenantId !== undefined, ...(out.duplicate ? { duplicate: true } : {}), ...(out.tenantId ? { tenantId: out.tenantId } : {}) };
  }

  /**
   * Suspends (reason payment_overdue) tenants with an invoice unpaid for longer than the grace, and
   * re-activates tenants suspended for that reason that owe nothing now. The `billing.overdue` job
   * (scheduled after each failed payment, and every few minutes as a sweep) runs it.
   */
  async reconcile(tenantId?: string): Promise<{ suspended: string[]; activated: string[] }> {
    const cutoff = new Date(this.core.opts.clock().getTime() - this.core.opts.billingGraceSeconds * 1000);
    const only = tenantId ? this.core.admin`and t.id = ${tenantId}` : this.core.admin``;
    const due = await this.core.admin<{ id: string }[]>`
      select t.id from tenantry_catalog.tenants t
      where t.status in ('active', 'trial') ${only}
        and exists (select 1 from tenantry_catalog.billing_invoices i where i.tenant_id = t.id and i.status = 'failed' and i.since <= ${cutoff})`;
    const paid = await this.core.admin<{ id: string }[]>`
      select t.id from tenantry_catalog.tenants t
      where t.status = 'suspended' and t.suspended_reason = ${PAYMENT_OVERDUE} ${only}
        and not exists (select 1 from tenantry_catalog.billing_invoices i where i.tenant_id = t.id and i.status = 'failed')`;
    const suspended: string[] = [];
    const activated: string[] = [];
    for (const { id } of due) {
      if (await this.quietly(() => this.tenants.suspend(id, PAYMENT_OVERDUE, { actor: 'billing' }))) suspended.push(id);
    }
    for (const { id } of paid) {
      if (await this.quietly(() => this.tenants.activate(id, { actor: 'billing' }))) activated.push(id);
    }
    return { suspended, activated };
  }

  /** A transition another change overtook (INVALID_TRANSITION) is skipped, not a failure of the sweep. */
  private async quietly(fn: () => Promise<Tenant>): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (err) {
      if (err instanceof TenantryError && (err.code === 'INVALID_TRANSITION' || err.code === 'TENANT_NOT_FOUND')) return false;
      throw err;
    }
  }
}
