import { randomUUID } from 'node:crypto';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { isUuid } from '../identifiers.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import { parseWebhookUrl, resolveTarget } from './address-policy.js';
import { newWebhookSecret } from './signature.js';
import { postWebhook } from './deliver.js';

/** Every event a webhook endpoint can receive. */
export const WEBHOOK_EVENTS = [
  'tenant.created', 'tenant.activated', 'tenant.trial_ending', 'tenant.trial_ended', 'tenant.suspended',
  'tenant.deleted', 'tenant.restored', 'tenant.purged', 'tenant.tier_changed', 'quota.at_risk', 'quota.exceeded',
  'key.created', 'key.revoked', 'member.added', 'member.removed', 'retention.purged',
  'domain.verified', 'domain.unverified',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];

export interface WebhookEndpoint {
  id: string;
  /** null: every tenant's events and the installation's */
  tenantId: string | null;
  url: string;
  events: string[];
  allowPrivate: boolean;
  enabled: boolean;
  createdBy: string;
  createdAt: Date;
}

export interface WebhookDelivery {
  id: string;
  eventId: string;
  type: string;
  tenantId: string | null;
  status: 'pending' | 'succeeded' | 'failed';
  attempts: { attempt: number; statusCode: number | null; error: string | null; latencyMs: number; at: Date }[];
  createdAt: Date;
  finishedAt: Date | null;
}

interface EndpointRow { id: string; tenant_id: string | null; url: string; events: string[]; allow_private: boolean; enabled: boolean; created_by: string; created_at: Date }
const toEndpoint = (r: EndpointRow): WebhookEndpoint => ({
  id: r.id, tenantId: r.tenant_id, url: r.url, events: r.events, allowPrivate: r.allow_private, enabled: r.enabled, createdBy: r.created_by, createdAt: r.created_at,
});

export interface WebhookActor extends AuditActor {
  /** registered with a tenant's own API key (not the operator): private targets are refused unless allowed */
  tenantScoped?: boolean;
}

/** Webhook endpoints (per installation or per tenant), their deliveries, and the outbox's drain. */
export class WebhookService {
  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  /**
   * Registers an endpoint; the result carries its signing secret (`whsec_...`), shown this once.
   * `tenant` unset: every tenant's events (operator only).
   */
  async create(input: { tenant?: string | null; url: string; events?: string[] }, who: WebhookActor = {}): Promise<WebhookEndpoint & { secret: string }> {
    if (!input || typeof input !== 'object') throw new TenantryError('INVALID_INPUT', 'create() takes { tenant?, url, events? }.');
    const u = parseWebhookUrl(input.url);
    const events = validateEvents(input.events);
    const tenant = input.tenant === undefined || input.tenant === null ? null : await this.tenants.get(input.tenant);
    if (!tenant && who.tenantScoped) throw new TenantryError('FORBIDDEN', 'Only the operator registers installation-wide webhooks.');
    if (tenant?.status === 'deleted') throw new TenantryError('TENANT_DELETED', `Tenant "${tenant.slug}" is deleted.`);
    // an endpoint a tenant registers may not reach into the operator's network (SSRF), unless allowed;
    // the check is made again at every delivery
    const allowPrivate = !who.tenantScoped || this.core.opts.webhookAllowPrivate;
    if (who.tenantScoped) await resolveTarget(u, allowPrivate);
    const { secret, key } = newWebhookSecret();
    const id = randomUUID();
    const actor = who.actor ?? this.core.opts.actor;
    const row = await this.core.admin.begin(async (tx) => {
      const [r] = await tx<EndpointRow[]>`
        insert into tenantry_catalog.webhook_endpoints (id, tenant_id, url, events, secret, allow_private, created_by)
        values (${id}, ${tenant?.id ?? null}, ${u.toString()}, ${events}, ${key}, ${allowPrivate}, ${actor}) returning *`;
      await appendAudit(tx, { tenantId: tenant?.id ?? null, actor, action: 'webhook.created', target: `webhook:${id}`, requestId: who.requestId, details: { url: u.toString(), events } });
      return r!;
    });
    return { ...toEndpoint(row), secret };
  }

  async list(opts: { tenant?: string | null } = {}): Promise<WebhookEndpoint[]> {
    const sql = this.core.admin;
    const tenantId = opts.tenant === undefined || opts.tenant === null ? undefined : (await this.tenants.get(opts.tenant)).id;
    const rows = await sql<EndpointRow[]>`
      select * from tenantry_catalog.webhook_endpoints ${tenantId ? sql`where tenant_id = ${tenantId}` : sql``} order by created_at, id`;
    return rows.map(toEndpoint);
  }

  async get(id: string, opts: { tenant?: string } = {}): Promise<WebhookEndpoint> {
    if (!isUuid(String(id))) throw new TenantryError('WEBHOOK_NOT_FOUND', `No webhook endpoint ${JSON.stringify(id)}.`);
    const [r] = await this.core.admin<EndpointRow[]>`select * from tenantry_catalog.webhook_endpoints where id = ${id}`;
    const tenantId = opts.tenant === undefined ? undefined : (await this.tenants.get(opts.tenant)).id;
    // a tenant asking for another tenant's endpoint is told it does not exist
    if (!r || (tenantId !== undefined && r.tenant_id !== tenantId)) throw new TenantryError('WEBHOOK_NOT_FOUND', `No webhook endpoint ${JSON.stringify(id)}.`);
    return toEndpoint(r);
  }

  async remove(id: string, opts: { tenant?: string } = {}, who: AuditActor = {}): Promise<void> {
    const ep = await this.get(id, opts);
    await this.core.admin.begin(async (tx) => {
      await tx`delete from tenantry_catalog.webhook_endpoints where id = ${ep.id}`;
      await appendAudit(tx, { tenantId: ep.tenantId, actor: who.actor ?? this.core.opts.actor, action: 'webhook.removed', target: `webhook:${ep.id}`, requestId: who.requestId, details: { url: ep.url } });
    });
  }

  /** The endpoint's recent deliveries, newest first, each with every attempt (status and latency). */
  async deliveries(id: string, opts: { tenant?: string; limit?: number } = {}): Promise<WebhookDelivery[]> {
    const ep = await this.get(id, opts);
    const limit = opts.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new TenantryError('INVALID_INPUT', 'limit must be an integer from 1 to 500.');
    const rows = await this.core.admin<{ id: string; event_id: string; type: string; tenant_id: string | null; status: WebhookDelivery['status']; created_at: Date; finished_at: Date | null; attempts: WebhookDelivery['attempts'] | null }[]>`
      select d.id, d.event_id, e.type, e.tenant_id, d.status, d.created_at, d.finished_at,
             (select json_agg(json_build_object('attempt', a.attempt, 'statusCode', a.status_code, 'error', a.error, 'latencyMs', a.latency_ms, 'at', a.at) order by a.attempt)
              from tenantry_catalog.webhook_attempts a where a.delivery_id = d.id) as attempts
      from tenantry_catalog.webhook_deliveries d join tenantry_catalog.webhook_events e on e.id = d.event_id
      where d.endpoint_id = ${ep.id} order by d.id desc limit ${limit}`;
    return rows.map((r) => ({
      id: String(r.id), eventId: r.event_id, type: r.type, tenantId: r.tenant_id, status: r.status, createdAt: r.created_at, finishedAt: r.finished_at,
      attempts: (r.attempts ?? []).map((a) => ({ ...a, at: new Date(a.at) })),
    }));
  }

  /**
   * Sends a delivery again (the console's "Redeliver"): a new pending delivery of the same event to the
   * same endpoint, at the end of its stream, with its drain job enqueued and an audit entry written in
   * the same transaction, so a crash leaves either all of it or none. The old delivery and its attempts
   * stay as they were. A delivery still being attempted is refused: it would go out twice at once.
   */
  async redeliver(endpointId: string, deliveryId: string, opts: { tenant?: string } = {}, who: AuditActor = {}): Promise<WebhookDelivery> {
    const ep = await this.get(endpointId, opts);
    if (typeof deliveryId !== 'string' || !/^[1-9][0-9]{0,17}$/.test(deliveryId)) {
      throw new TenantryError('WEBHOOK_DELIVERY_NOT_FOUND', `No delivery ${JSON.stringify(String(deliveryId).slice(0, 40))} of webhook ${ep.id}; list them with GET /v1/webhooks/${ep.id}/deliveries.`);
    }
    const id = await this.core.admin.begin(async (tx) => {
      // FOR UPDATE: two concurrent redeliveries of one delivery make two new ones, never a lost audit entry
      const [old] = await tx<{ id: string; event_id: string; stream: string; status: string }[]>`
        select id, event_id, stream, status from tenantry_catalog.webhook_deliveries
        where id = ${deliveryId}::bigint and endpoint_id = ${ep.id} for update`;
      if (!old) throw new TenantryError('WEBHOOK_DELIVERY_NOT_FOUND', `No delivery ${deliveryId} of webhook ${ep.id}; list them with GET /v1/webhooks/${ep.id}/deliveries.`);
      if (old.status === 'pending') throw new TenantryError('WEBHOOK_DELIVERY_PENDING', `Delivery ${deliveryId} is still being attempted; redeliver it once it has succeeded or failed.`, { deliveryId });
      const [row] = await tx<{ id: string }[]>`
        insert into tenantry_catalog.webhook_deliveries (event_id, endpoint_id, stream)
        values (${old.event_id}, ${ep.id}, ${old.stream}) returning id`;
      // the same drain job the outbox enqueues (one per stream; its queue runs them one at a time)
      const [jobs] = await tx<{ ok: boolean }[]>`select to_regnamespace('tenantry_jobs') is not null as ok`;
      if (jobs?.ok) {
        await tx`select tenantry_jobs.add_job('webhooks.drain', json_build_object('stream', ${old.stream}::text), queue_name => ${'webhooks:' + old.stream}, job_key => ${'webhooks:' + old.stream}, job_key_mode => 'preserve_run_at', max_attempts => 1000)`;
      }
      await appendAudit(tx, { tenantId: ep.tenantId, actor: who.actor ?? this.core.opts.actor, action: 'webhook.redelivered', target: `webhook:${ep.id}`, requestId: who.requestId, details: { deliveryId: String(old.id), newDeliveryId: String(row!.id), eventId: old.event_id } });
      return String(row!.id);
    });
    const found = (await this.deliveries(ep.id, { ...opts, limit: 500 })).find((d) => d.id === id);
    if (!found) throw new TenantryError('WEBHOOK_DELIVERY_NOT_FOUND', `Delivery ${id} was made but is no longer listed (its endpoint was removed meanwhile).`);
    return found;
  }

  /**
   * Delivers one stream's pending deliveries in order (the `webhooks.drain` job; graphile-worker's
   * queue runs one drain per stream at a time). The head of the stream is retried with exponential
   * backoff and blocks those behind it, so a receiver sees each tenant's events in order; after
   * webhookRetryForSeconds it is marked failed and the stream moves on. Returns when the stream is
   * empty or when its head waits for a retry (then `retryAt`).
   */
  async drain(stream: string): Promise<{ delivered: number; failed: number; retryAt: Date | null }> {
    const o = this.core.opts;
    let delivered = 0;
    let failed = 0;
    for (;;) {
      const [head] = await this.core.admin<{ id: string; attempts: number; next_attempt_at: Date; first_attempt_at: Date | null; event_id: string; payload: Record<string, unknown>; url: string; secret: Buffer; allow_private: boolean; enabled: boolean }[]>`
        select d.id, d.attempts, d.next_attempt_at, d.first_attempt_at, d.event_id, e.payload, p.url, p.secret, p.allow_private, p.enabled
        from tenantry_catalog.webhook_deliveries d
        join tenantry_catalog.webhook_events e on e.id = d.event_id
        join tenantry_catalog.webhook_endpoints p on p.id = d.endpoint_id
        where d.stream = ${stream} and d.status = 'pending'
        order by d.id limit 1`;
      if (!head) return { delivered, failed, retryAt: null };
      const now = o.clock();
      // a retry waits for its time on the clock; a first attempt goes at once
      if (head.attempts > 0 && head.next_attempt_at.getTime() > now.getTime()) return { delivered, failed, retryAt: head.next_attempt_at };
      const outcome = head.enabled
        ? await postWebhook({ url: head.url, key: head.secret, allowPrivate: head.allow_private, eventId: head.event_id, body: JSON.stringify(head.payload), timeoutMs: o.webhookTimeoutMs, now })
        : { ok: false, statusCode: null, error: 'endpoint disabled', latencyMs: 0 };
      const attempt = head.attempts + 1;
      const first = head.first_attempt_at ?? now;
      const giveUp = !outcome.ok && (now.getTime() - first.getTime()) / 1000 >= o.webhookRetryForSeconds;
      const next = new Date(now.getTime() + Math.min(o.webhookRetryBaseMs * 2 ** (attempt - 1), 6 * 3600_000));
      await this.core.admin.begin(async (tx) => {
        await tx`insert into tenantry_catalog.webhook_attempts (delivery_id, attempt, status_code, error, latency_ms)
                 values (${head.id}, ${attempt}, ${outcome.statusCode}, ${outcome.error}, ${outcome.latencyMs})`;
        await tx`update tenantry_catalog.webhook_deliveries set
                   attempts = ${attempt}, first_attempt_at = ${first},
                   status = ${outcome.ok ? 'succeeded' : giveUp ? 'failed' : 'pending'},
                   next_attempt_at = ${outcome.ok || giveUp ? head.next_attempt_at : next},
                   finished_at = ${outcome.ok || giveUp ? now : null}
                 where id = ${head.id}`;
      });
      if (outcome.ok) delivered++;
      else if (giveUp) failed++;
      else return { delivered, failed, retryAt: next };
    }
  }

  /** Streams with a pending delivery (the sweep job makes sure each has a drain job). */
  async pendingStreams(): Promise<string[]> {
    const rows = await this.core.admin<{ stream: string }[]>`select distinct stream from tenantry_catalog.webhook_deliveries where status = 'pending'`;
    return rows.map((r) => r.stream);
  }
}

function validateEvents(events: unknown): string[] {
  if (events === undefined) return [];
  if (!Array.isArray(events) || events.length > WEBHOOK_EVENTS.length) throw new TenantryError('INVALID_INPUT', `events is an array of event types: ${WEBHOOK_EVENTS.join(', ')}.`);
  for (const e of events) {
    if (!(WEBHOOK_EVENTS as readonly string[]).includes(e as string)) throw new TenantryError('INVALID_INPUT', `Unknown webhook event ${JSON.stringify(e)}; one of ${WEBHOOK_EVENTS.join(', ')}.`);
  }
  return [...new Set(events as string[])];
}
