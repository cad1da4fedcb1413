import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

const RedeliverParams = Type.Object({ webhookId: Type.String({ maxLength: 64 }), deliveryId: Type.String({ maxLength: 40 }) });

/** Sending a finished webhook delivery again (operator): the console's "Redeliver" button. */
export async function webhookRedeliveryRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { actor, operatorOnly } = routeAccess(deps);
  app.post('/v1/webhooks/:webhookId/deliveries/:deliveryId/redeliver', { schema: {
    operationId: 'redeliverWebhookDelivery', tags: ['webhooks'], summary: 'Send a succeeded or failed delivery again as a new delivery (operator)', security: bearer,
    params: RedeliverParams, response: { 202: { type: 'object', additionalProperties: true }, ...problemResponses },
  } }, async (req, reply) => {
    operatorOnly(req);
    const p = req.params as Static<typeof RedeliverParams>;
    return reply.status(202).send(plain(await tenantry.webhooks.redeliver(p.webhookId, p.deliveryId, {}, actor(req))));
  });
}
