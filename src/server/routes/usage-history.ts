import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { TenantryError } from '../../errors.js';
import * as S from '../schemas.js';
import { bearer, problemResponses, routeAccess, type RouteDeps } from './shared.js';

const Day = Type.String({ pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$', maxLength: 10, description: 'a UTC day, YYYY-MM-DD' });
export const UsageHistoryQuery = Type.Object({
  metric: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'one metric (default: every metric)' })),
  from: Type.Optional(Day),
  to: Type.Optional(Day),
  period: Type.Optional(Type.Union([Type.Literal('day'), Type.Literal('month')])),
}, { additionalProperties: false });
export const UsageHistorySchema = Type.Object({
  tenantId: Type.String(),
  period: Type.String(),
  from: Type.String(),
  to: Type.String(),
  points: Type.Array(Type.Object({ period: Type.String(), metric: Type.String(), amount: Type.Integer() })),
});

/** The longest span one request reads: ten years of days is still a few thousand rows per metric. */
const MAX_DAYS = 3700;

function day(value: string, field: string): Date {
  const d = new Date(`${value}T00:00:00Z`);
  // 2026-02-31 parses to March: refuse what is not a real day rather than read a different one
  if (Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== value) {
    throw new TenantryError('INVALID_INPUT', `${field} must be a real day as YYYY-MM-DD, got ${JSON.stringify(value)}.`, { field });
  }
  return d;
}

/** A tenant's usage over time (the console's usage chart): the operator for any tenant, a tenant key (read) for its own. */
export async function usageHistoryRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access } = routeAccess(deps);
  app.get('/v1/tenants/:id/usage/history', { schema: {
    operationId: 'getUsageHistory', tags: ['quotas'], summary: 'Usage per day or month over a span (default: the last 30 days)', security: bearer,
    params: S.IdParams, querystring: UsageHistoryQuery, response: { 200: UsageHistorySchema, ...problemResponses },
  } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    const q = req.query as Static<typeof UsageHistoryQuery>;
    const to = q.to === undefined ? new Date(new Date().toISOString().slice(0, 10) + 'T00:00:00Z') : day(q.to, 'to');
    const from = q.from === undefined ? new Date(to.getTime() - 29 * 86_400_000) : day(q.from, 'from');
    if (from.getTime() > to.getTime()) throw new TenantryError('INVALID_INPUT', 'from must be on or before to.', { field: 'from' });
    if ((to.getTime() - from.getTime()) / 86_400_000 > MAX_DAYS) throw new TenantryError('INVALID_INPUT', `from and to may span at most ${MAX_DAYS} days; ask for a shorter span.`, { field: 'from' });
    const period = q.period ?? 'day';
    const rows = await tenantry.quotas.history({ tenant: t.id, from, to, period, ...(q.metric !== undefined ? { metric: q.metric } : {}) });
    return {
      tenantId: t.id, period, from: from.toISOString().slice(0, 10), to: to.toISOString().slice(0, 10),
      points: rows.map((r) => ({ period: r.period, metric: r.metric, amount: r.amount })),
    };
  });
}
