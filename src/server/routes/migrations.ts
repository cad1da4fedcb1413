import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

const Isolation = Type.String();
export const MigrationOverviewSchema = Type.Object({
  latestVersion: Type.Integer(),
  behind: Type.Integer({ description: 'tenants below the latest version' }),
  versions: Type.Array(Type.Object({ version: Type.Integer(), isolation: Isolation, tenants: Type.Integer() })),
  lastRun: Type.Union([Type.Null(), Type.Object({
    finishedAt: Type.String(), latestVersion: Type.Integer(), planned: Type.Integer(), migrated: Type.Integer(), durationMs: Type.Integer(),
    failed: Type.Array(Type.Object({ id: Type.String(), slug: Type.String(), isolation: Isolation, error: Type.String() })),
  })]),
});

/** Tenant migration status for the operator: tenants per version and the last run's failures. */
export async function migrationRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { operatorOnly } = routeAccess(deps);
  app.get('/v1/migrations', { schema: {
    operationId: 'getMigrationStatus', tags: ['migrations'], summary: 'Tenants per migration version and the last run\'s failures (operator)', security: bearer,
    response: { 200: MigrationOverviewSchema, ...problemResponses },
  } }, async (req) => {
    operatorOnly(req);
    return plain(await tenantry.migrationOverview());
  });
}
