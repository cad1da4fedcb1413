import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as S from '../schemas.js';
import { bearer, plain, problemResponses, routeAccess, tenantReply, tenantView, type RouteDeps } from './shared.js';

/** Tenant self-service under /v1/tenant and /v1/t/{slug}: the tenant, its usage, and SQL inside its walls. */
export async function tenantSelfRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { self } = routeAccess(deps);
  for (const prefix of ['/v1/tenant', '/v1/t/:slug']) {
    const params = prefix.includes(':slug') ? { params: S.SlugParams } : {};
    const slugOf = (req: FastifyRequest): string | undefined => (req.params as { slug?: string }).slug;
    app.get(prefix, { schema: { tags: ['self-service'], summary: 'The key\'s own tenant', security: bearer, ...params, response: tenantReply } }, async (req) => tenantView(await self(req, slugOf(req), 'read')));
    app.get(`${prefix}/usage`, { schema: { tags: ['self-service'], summary: 'The key\'s own usage against quotas', security: bearer, ...params, response: { 200: S.UsageSummarySchema, ...problemResponses } } }, async (req) => {
      const t = await self(req, slugOf(req), 'read');
      return plain(await tenantry.quotas.summary(t.id));
    });
    app.post(`${prefix}/sql`, { schema: { tags: ['self-service'], summary: 'Run one SQL statement inside the tenant\'s walls (sql scope)', security: bearer, ...params, body: S.SqlBody, response: { 200: S.SqlResultSchema, ...problemResponses } } }, async (req) => {
      const t = await self(req, slugOf(req), 'sql');
      const b = req.body as Static<typeof S.SqlBody>;
      const p = req.principal!;
      const readOnly = Boolean(b.readOnly) || (p.kind === 'tenant' && !p.permissions.includes('write'));
      return plain(await tenantry.runTenantSql(t.id, { sql: b.sql, params: b.params ?? [], readOnly }));
    });
  }
}
