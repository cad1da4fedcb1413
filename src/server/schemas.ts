import { Type, type Static } from '@sinclair/typebox';
import { TIERS, ISOLATION_MODES, TENANT_STATUSES } from '../tenants/model.js';

const literalUnion = <T extends readonly string[]>(values: T) => Type.Union(values.map((v) => Type.Literal(v)));

export const TenantSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  slug: Type.String(),
  name: Type.String(),
  status: literalUnion(TENANT_STATUSES),
  tier: literalUnion(TIERS),
  isolation: literalUnion(ISOLATION_MODES),
  trialEndsAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  suspendedReason: Type.Union([Type.String(), Type.Null()]),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
}, { $id: 'Tenant' });

export const ProblemSchema = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  code: Type.String(),
  requestId: Type.Optional(Type.String()),
}, { $id: 'Problem' });

export const CreateTenantBody = Type.Object({
  slug: Type.String(),
  name: Type.Optional(Type.String()),
  tier: Type.Optional(Type.String()),
  isolation: Type.Optional(Type.String()),
  trialDays: Type.Optional(Type.Integer()),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false });

export const UpdateTenantBody = Type.Object({
  name: Type.Optional(Type.String()),
  tier: Type.Optional(Type.String()),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false });

export const ListTenantsQuery = Type.Object({
  status: Type.Optional(Type.String()),
  tier: Type.Optional(Type.String()),
  isolation: Type.Optional(Type.String()),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  cursor: Type.Optional(Type.String()),
});

export const SuspendBody = Type.Object({ reason: Type.String() }, { additionalProperties: false });
export const IdParams = Type.Object({ id: Type.String() });
export const DeleteQuery = Type.Object({ hard: Type.Optional(Type.Boolean()), force: Type.Optional(Type.Boolean()) });

export type CreateTenantBodyT = Static<typeof CreateTenantBody>;
export type UpdateTenantBodyT = Static<typeof UpdateTenantBody>;
export type ListTenantsQueryT = Static<typeof ListTenantsQuery>;
