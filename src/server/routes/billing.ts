import type { FastifyInstance } from 'fastify';
import { MAX_WEBHOOK_BYTES } from '../../billing/billing.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';
import { assertSafeText } from '../../input/safe-text.js';

const Params = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;
const CustomerBody = { type: 'object', additionalProperties: false, required: ['customerId'], properties: { customerId: { type: ['string', 'null'], minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_]+$' } } } as const;
const BillingSchema = { type: 'object', properties: { tenantId: { type: 'string' }, customerId: { type: ['string', 'null'] }, overdueSince: { type: ['string', 'null'] } } } as const;
const PeriodQuery = { type: 'object', additionalProperties: false, properties: { period: { type: 'string', pattern: '^\\d{4}-(0[1-9]|1[0-2])$' } } } as const;
const CloseBody = { type: ['object', 'null'], additionalProperties: false, properties: { period: { type: 'string', pattern: '^\\d{4}-(0[1-9]|1[0-2])$' } } } as const;
const RecordSchema = { type: 'object', additionalProperties: true } as const;
const WebhookHeaders = { type: 'object', properties: { 'stripe-signature': { type: 'string', maxLength: 4096, description: 'Stripe\'s signature of the raw body (t=...,v1=...)' } } } as const;

/**
 * Billing: a tenant's billing customer (operator only: who pays is not the tenant's to change), its
 * records, closing a period by hand, and Stripe's webhooks (public; the signature authenticates them).
 */
export async function billingRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor, operatorOnly } = routeAccess(deps);

  app.put('/v1/tenants/:id/billing', { schema: { tags: ['billing'], summary: 'Set (or with null clear) the tenant\'s billing customer id (Stripe cus_...)', security: bearer, params: Params, body: CustomerBody, response: { 200: BillingSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    await tenantry.billing.setCustomer(t.id, (req.body as { customerId: string | null }).customerId, actor(req));
    return plain(await tenantry.billing.getCustomer(t.id));
  });
  app.get('/v1/tenants/:id/billing', { schema: { tags: ['billing'], summary: 'The tenant\'s billing customer and since when it is overdue', security: bearer, params: Params, response: { 200: BillingSchema, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return plain(await tenantry.billing.getCustomer(t.id));
  });
  app.get('/v1/tenants/:id/billing/records', { schema: { tags: ['billing'], summary: 'The tenant\'s billing records (one per period and line)', security: bearer, params: Params, querystring: PeriodQuery, response: { 200: { type: 'array', items: RecordSchema }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    const period = (req.query as { period?: string }).period;
    return plain(await tenantry.billing.records(t.id, period ? { period } : {}));
  });
  app.post('/v1/billing/close', { schema: { tags: ['billing'], summary: 'Close a billing period now (default: last month) and push its records to Stripe; idempotent', security: bearer, body: CloseBody, response: { 200: { type: 'object', additionalProperties: true }, ...problemResponses } } }, async (req) => {
    operatorOnly(req);
    const period = (req.body as { period?: string } | null)?.period;
    return tenantry.billing.closePeriod(period ? { period } : {});
  });

  // Stripe signs the exact bytes it sent: the body is kept raw (a parser of this child context only,
  // so the routes above still parse JSON), never re-serialised, and handed to the SDK's signature check.
  await app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_WEBHOOK_BYTES }, (_req, body, done) => { done(null, body); });
    raw.post('/v1/billing/stripe/webhook', { config: { publicRoute: true }, schema: { tags: ['billing'], summary: 'Stripe webhooks (Stripe-Signature checked): invoice.payment_failed suspends after the grace, invoice.paid re-activates', headers: WebhookHeaders, response: { 200: { type: 'object', additionalProperties: true }, 400: { $ref: 'Problem#' }, 404: { $ref: 'Problem#' } } } }, async (req) => {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      // hostile text (NUL, lone surrogates) in the event is refused like any other body, naming the field;
      // what is not JSON is left to the signature check, which refuses it
      let event: unknown;
      try { event = JSON.parse(body.toString('utf8')); } catch { event = undefined; }
      if (event !== undefined) assertSafeText(event, 'body');
      const sig = req.headers['stripe-signature'];
      return tenantry.billing.handleStripeWebhook(body, typeof sig === 'string' ? sig : undefined);
    });
  });
}
