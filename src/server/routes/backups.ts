import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TenantryError } from '../../errors.js';
import { validateSlug } from '../../identifiers.js';
import { ISOLATION_MODES, validateIsolation, validateName, validateTier, type Tenant } from '../../tenants/model.js';
import type { BackupInfo } from '../../backup/backup.js';
import type { Operation, OperationInput } from '../../operations/operations.js';
import { namesTenant } from '../../keys/authorize.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/**
 * Per-tenant backups, restores, exports, clones and moves over HTTP (issue #14). Each long one answers
 * 202 with an operation the caller polls at GET /v1/operations/{opId}; the job runner does the work,
 * so it survives a restart of this server. Everything that changes or hands out data is the
 * operator's; a tenant key with the admin scope may look at its own tenant's backups and operations,
 * and at no other tenant's (answered 404, as if they did not exist).
 */

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const DateTime = Type.String({ format: 'date-time' });

const OperationSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  kind: Type.Union(['backup', 'export', 'restore', 'clone', 'move'].map((k) => Type.Literal(k))),
  tenantId: Type.String({ format: 'uuid' }),
  status: Type.Union(['queued', 'running', 'succeeded', 'failed'].map((k) => Type.Literal(k)), { description: 'queued, then running, then succeeded or failed' }),
  progress: Nullable(Type.Object({ step: Type.String(), table: Type.Optional(Type.String()), done: Type.Integer(), total: Type.Integer() })),
  result: Nullable(Type.Record(Type.String(), Type.Unknown(), { description: 'what the operation made: the backup id, the clone\'s tenant id, rows' })),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  attempts: Type.Integer({ description: 'starts so far (more than one: its process died and it was retried)' }),
  createdAt: DateTime,
  startedAt: Nullable(DateTime),
  finishedAt: Nullable(DateTime),
  updatedAt: DateTime,
  href: Type.String({ description: 'where to poll it' }),
});

const BackupSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  tenantId: Type.String({ format: 'uuid' }),
  kind: Type.Union(['backup', 'export', 'scheduled'].map((k) => Type.Literal(k))),
  store: Type.String(),
  isolation: Type.Union(ISOLATION_MODES.map((k) => Type.Literal(k))),
  migrationVersion: Type.Integer(),
  tenantryVersion: Type.String(),
  rows: Type.Integer(),
  bytes: Type.Integer(),
  tables: Type.Array(Type.Object({ name: Type.String(), rows: Type.Integer(), bytes: Type.Integer() })),
  createdAt: DateTime,
});

const BackupParams = Type.Object({ id: Type.String({ maxLength: 64 }), backupId: Type.String({ maxLength: 64 }) });
const OperationParams = Type.Object({ opId: Type.String({ maxLength: 64 }) });
const RestoreBody = Type.Object({ confirm: Type.Boolean({ description: 'true: replace every row of the tenant with the backup\'s' }) }, { additionalProperties: false });
const CloneBody = Type.Object({
  slug: Type.String({ minLength: 1, maxLength: 63, description: 'the new tenant\'s slug' }),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  isolation: Type.Optional(Type.Union(ISOLATION_MODES.map((k) => Type.Literal(k)), { description: 'default: the mode the backup was taken in' })),
  tier: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z][A-Za-z0-9_-]*$' })),
  backupId: Type.Optional(Type.String({ maxLength: 64, description: 'clone this backup of the tenant; default: a new backup taken now' })),
}, { additionalProperties: false });
const MoveBody = Type.Object({ to: Type.Union(ISOLATION_MODES.map((k) => Type.Literal(k))) }, { additionalProperties: false });

const accepted = { 202: OperationSchema, ...problemResponses };

function operationView(op: Operation): Static<typeof OperationSchema> {
  return { ...(plain(op) as Omit<Static<typeof OperationSchema>, 'href'>), href: `/v1/operations/${op.id}` };
}

function backupView(b: BackupInfo): Static<typeof BackupSchema> {
  return {
    id: b.id, tenantId: b.tenantId, kind: b.kind, store: b.store, isolation: b.isolation, migrationVersion: b.migrationVersion,
    tenantryVersion: b.manifest.tenantryVersion, rows: b.rows, bytes: b.bytes,
    tables: b.manifest.tables.map((t) => ({ name: t.name, rows: t.rows, bytes: t.bytes })), createdAt: b.createdAt.toISOString(),
  };
}

export async function backupRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);

  /** A backup of the tenant the path names; another tenant's backup is 404, as an unknown one. */
  const backupOf = async (t: Tenant, backupId: string): Promise<BackupInfo> => {
    const b = await tenantry.backups.get(backupId);
    if (b.tenantId !== t.id) throw new TenantryError('BACKUP_NOT_FOUND', `No backup ${backupId} of tenant ${t.slug}.`);
    return b;
  };
  const start = async (req: FastifyRequest, t: Tenant, input: OperationInput): Promise<Static<typeof OperationSchema>> => {
    const { actor: who, requestId } = actor(req);
    return operationView(await tenantry.operations.start(t.id, input, { actor: who, requestId }));
  };

  app.post('/v1/tenants/:id/backups', { schema: { tags: ['backups'], summary: 'Back up a tenant (202: poll the operation)', security: bearer, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: accepted } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return reply.status(202).send(await start(req, t, { kind: 'backup' }));
  });
  app.get('/v1/tenants/:id/backups', { schema: { tags: ['backups'], summary: 'A tenant\'s backups, newest first', security: bearer, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: { 200: Type.Object({ items: Type.Array(BackupSchema) }), ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return { items: (await tenantry.backups.list(t.id)).map(backupView) };
  });
  app.get('/v1/tenants/:id/backups/:backupId', { schema: { tags: ['backups'], summary: 'One backup: its tables, rows and bytes', security: bearer, params: BackupParams, response: { 200: BackupSchema, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof BackupParams>;
    const t = await access(req, p.id, 'admin');
    return backupView(await backupOf(t, p.backupId));
  });
  app.get('/v1/tenants/:id/backups/:backupId/archive', {
    schema: {
      tags: ['backups'], summary: 'Download a backup or export as one tar file (operator only)', security: bearer, params: BackupParams,
      response: {
        200: { description: 'the backup\'s files (compressed COPY text, the signed manifest, an export\'s JSON Lines and CSV) under a folder named by its id', headers: { 'Content-Disposition': { type: 'string', description: 'attachment; filename="tenantry-<kind>-<tenant id>-<backup id>.tar"' } }, content: { 'application/x-tar': { schema: { type: 'string', format: 'binary' } } } },
        ...problemResponses,
      },
    },
  }, async (req, reply) => {
    const p = req.params as Static<typeof BackupParams>;
    const t = await access(req, p.id, 'operator');
    const b = await backupOf(t, p.backupId);
    const { filename, stream } = await tenantry.backups.archive(b.id);
    return reply.type('application/x-tar').header('content-disposition', `attachment; filename="${filename}"`).send(stream);
  });
  app.post('/v1/tenants/:id/backups/:backupId/restore', { schema: { tags: ['backups'], summary: 'Restore a backup over its tenant, replacing its rows (confirm: true; 202: poll the operation)', security: bearer, params: BackupParams, body: RestoreBody, response: accepted } }, async (req, reply) => {
    const p = req.params as Static<typeof BackupParams>;
    const t = await access(req, p.id, 'operator');
    const b = await backupOf(t, p.backupId);
    if ((req.body as Static<typeof RestoreBody>).confirm !== true) {
      throw new TenantryError('RESTORE_CONFIRMATION_REQUIRED', `Restoring backup ${b.id} replaces every row of tenant ${t.slug}; send {"confirm": true} to do it.`);
    }
    return reply.status(202).send(await start(req, t, { kind: 'restore', backupId: b.id, confirm: true }));
  });
  app.delete('/v1/tenants/:id/backups/:backupId', { schema: { tags: ['backups'], summary: 'Delete a backup (its files and its record)', security: bearer, params: BackupParams, response: { 204: { type: 'null' }, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as Static<typeof BackupParams>;
    const t = await access(req, p.id, 'operator');
    const b = await backupOf(t, p.backupId);
    const { actor: who, requestId } = actor(req);
    await tenantry.backups.delete(b.id, { actor: who, requestId });
    return reply.status(204).send();
  });
  app.post('/v1/tenants/:id/export', { schema: { tags: ['backups'], summary: 'Export a tenant\'s data for a leaving customer: a backup plus JSON Lines and CSV per table (202: poll the operation)', security: bearer, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: accepted } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    return reply.status(202).send(await start(req, t, { kind: 'export' }));
  });
  app.post('/v1/tenants/:id/clone', { schema: { tags: ['backups'], summary: 'A new tenant with a copy of this tenant\'s data, in any mode (202: poll the operation)', security: bearer, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), body: CloneBody, response: accepted } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    const b = req.body as Static<typeof CloneBody>;
    // what can be judged now is judged now (a 4xx, not a failed operation later)
    const slug = validateSlug(b.slug);
    if (await tenantry.tenants.find(slug)) throw new TenantryError('SLUG_TAKEN', `Slug "${slug}" is already taken; pick another for the clone.`, { slug });
    if (b.name !== undefined) validateName(b.name);
    if (b.tier !== undefined) validateTier(b.tier, tenantry.plans.current().tiers.map((x) => x.name));
    if (b.isolation !== undefined) validateIsolation(b.isolation);
    if (b.backupId !== undefined) await backupOf(t, b.backupId);
    return reply.status(202).send(await start(req, t, { kind: 'clone', clone: { slug, ...(b.name !== undefined ? { name: b.name } : {}), ...(b.isolation !== undefined ? { isolation: b.isolation } : {}), ...(b.tier !== undefined ? { tier: b.tier } : {}), ...(b.backupId !== undefined ? { backupId: b.backupId } : {}) } }));
  });
  app.post('/v1/tenants/:id/move', { schema: { tags: ['backups'], summary: 'Move a tenant to another isolation mode, online (202: poll the operation)', security: bearer, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), body: MoveBody, response: accepted } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'operator');
    const to = validateIsolation((req.body as Static<typeof MoveBody>).to);
    if (t.isolation === to) throw new TenantryError('INVALID_TRANSITION', `Tenant ${t.slug} is in ${to} mode already.`);
    return reply.status(202).send(await start(req, t, { kind: 'move', to }));
  });

  app.get('/v1/operations/:opId', { schema: { tags: ['backups'], summary: 'A long-running operation: its status, progress, result or error', security: bearer, params: OperationParams, response: { 200: OperationSchema, ...problemResponses } } }, async (req) => {
    const { opId } = req.params as Static<typeof OperationParams>;
    const op = await tenantry.operations.get(opId);
    const p = req.principal!;
    if (p.kind === 'tenant') {
      // another tenant's operation answers as an unknown one: a key cannot learn it exists
      if (!namesTenant(p.tenant, op.tenantId)) throw new TenantryError('OPERATION_NOT_FOUND', `No operation ${opId}.`);
      await access(req, op.tenantId, 'admin');
    }
    return operationView(op);
  });
}
