import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ISOLATION_MODES, TENANT_STATUSES } from '../tenants/model.js';
import { SCOPES } from '../keys/api-keys.js';
import { MEMBER_ROLES } from '../members/roles.js';

const literalUnion = <T extends readonly string[]>(values: T) => Type.Union(values.map((v) => Type.Literal(v)));
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const DateTime = Type.String({ format: 'date-time' });

/**
 * Names that come from the app's plans (metrics, tiers, quotas, features). Validation takes any
 * well-formed name and the library refuses an undeclared one (so a plan applied while the server runs
 * counts at once); the OpenAPI document lists the declared names as an enum wherever this marker is
 * (see planEnums in app.ts).
 */
export const PLAN_NAME_MARK = 'tenantry:plan-names:';
export const PlanName = (of: 'metric' | 'tier' | 'quota' | 'feature', extra: Record<string, unknown> = {}) =>
  Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z][A-Za-z0-9_-]*$', $comment: `${PLAN_NAME_MARK}${of}`, ...extra });

// ---- responses ----

export const TenantSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  slug: Type.String(),
  name: Type.String(),
  status: literalUnion(TENANT_STATUSES),
  tier: PlanName('tier'),
  isolation: literalUnion(ISOLATION_MODES),
  trialEndsAt: Nullable(DateTime),
  suspendedReason: Nullable(Type.String()),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  createdAt: DateTime,
  updatedAt: DateTime,
}, { $id: 'Tenant' });
export type TenantView = Static<typeof TenantSchema>;

export const CreatedTenantSchema = Type.Intersect([Type.Ref('Tenant'), Type.Object({ apiKey: Type.String({ description: 'the first API key: shown this once' }) })]);

export const ProblemSchema = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  code: Type.String(),
  requestId: Type.Optional(Type.String()),
}, { $id: 'Problem' });

export const TenantPage = Type.Object({ items: Type.Array(Type.Ref('Tenant')), nextCursor: Nullable(Type.String()) });

export const EffectiveQuotasSchema = Type.Record(Type.String(), Type.Object({ limit: Nullable(Type.Integer({ description: 'null: unlimited' })), source: literalUnion(['tier', 'override'] as const) }));

export const UsageSummarySchema = Type.Object({
  tenantId: Type.String(),
  tier: Type.String(),
  atRisk: Type.Boolean(),
  overQuota: Type.Boolean({ description: 'a metric is above its limit (after a downgrade): its debits are refused' }),
  overLimit: Type.Array(PlanName('metric'), { description: 'the metrics above their limit' }),
  metrics: Type.Array(Type.Object({
    metric: PlanName('metric'), kind: literalUnion(['count', 'window', 'lease', 'gauge'] as const), quota: PlanName('quota'),
    used: Type.Number(), limit: Nullable(Type.Number({ description: 'null: unlimited' })),
    utilization: Type.Number(), windowStart: Nullable(DateTime),
  })),
});

export const IncrementResultSchema = Type.Object({ metric: PlanName('metric'), used: Type.Number(), limit: Nullable(Type.Number({ description: 'null: unlimited' })), replayed: Type.Boolean() });
export const LeaseSchema = Type.Object({ leaseId: Type.String({ format: 'uuid' }), expiresAt: DateTime, used: Type.Integer(), limit: Nullable(Type.Integer()) });

const PlanLimit = Type.Union([Type.Integer({ minimum: 0 }), Type.Literal('unlimited')]);
/** A plan as GET /v1/plans shows it and PUT /v1/plans takes it (the plan file's own shape). */
export const PlansDocumentSchema = Type.Object({
  $schema: Type.Optional(Type.String()),
  metrics: Type.Array(Type.Record(Type.String(), Type.Unknown())),
  features: Type.Array(Type.Object({ name: PlanName('feature'), description: Type.String() })),
  tiers: Type.Array(Type.Object({
    name: PlanName('tier'), default: Type.Optional(Type.Boolean()), trialOf: Type.Optional(Type.String()),
    limits: Type.Record(Type.String(), PlanLimit), features: Type.Array(Type.String()),
    rateLimit: Type.Integer(), retentionDays: Type.Integer(),
  })),
});
const PlanChangeSchema = Type.Object({ change: Type.String(), target: Type.String(), from: Type.Optional(Type.Unknown()), to: Type.Optional(Type.Unknown()) });
export const PlansViewSchema = Type.Object({
  plans: PlansDocumentSchema,
  file: Nullable(Type.Object({ path: Type.String(), differs: Type.Boolean(), changes: Type.Array(PlanChangeSchema) })),
});
export const PlanDiffSchema = Type.Object({
  applied: Type.Boolean(),
  identical: Type.Boolean(),
  changes: Type.Array(PlanChangeSchema),
  refusals: Type.Array(Type.Object({ code: Type.String(), target: Type.String(), message: Type.String(), tenants: Type.Integer() })),
  moves: Type.Array(Type.Object({ tenantId: Type.String(), slug: Type.String(), from: Type.String(), to: Type.String() })),
  overLimit: Type.Array(Type.Object({ tenantId: Type.String(), slug: Type.String(), metric: Type.String(), used: Type.Number(), limit: Type.Number() })),
  tenantsAffected: Type.Integer(),
});

export const ApiKeySchema = Type.Object({
  id: Type.String(), tenantId: Type.String(), name: Type.String(), scopes: Type.Array(Type.String()),
  memberUserId: Nullable(Type.String()), createdBy: Type.String(), createdAt: DateTime, expiresAt: Nullable(DateTime),
  revokedAt: Nullable(DateTime), lastUsedAt: Nullable(DateTime), rotatedFrom: Nullable(Type.String()),
}, { $id: 'ApiKey' });
export const CreatedApiKeySchema = Type.Intersect([Type.Ref('ApiKey'), Type.Object({ key: Type.String({ description: 'shown this once' }) })]);

export const MemberSchema = Type.Object({ userId: Type.String(), email: Type.String(), name: Nullable(Type.String()), role: literalUnion(MEMBER_ROLES), createdAt: DateTime }, { $id: 'Member' });
export const InvitationSchema = Type.Object({
  id: Type.String(), tenantId: Type.String(), email: Type.String(), role: literalUnion(MEMBER_ROLES), invitedBy: Type.String(),
  expiresAt: DateTime, acceptedAt: Nullable(DateTime), revokedAt: Nullable(DateTime), createdAt: DateTime,
}, { $id: 'Invitation' });
export const FeatureStateSchema = Type.Object({ feature: Type.String(), enabled: Type.Boolean(), source: literalUnion(['tier', 'override'] as const) });
export const AuditEntrySchema = Type.Object({
  id: Type.String(), tenantId: Nullable(Type.String()), actor: Type.String(), action: Type.String(), target: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()), requestId: Nullable(Type.String()), createdAt: DateTime,
});
export const AuditVerificationSchema = Type.Object({
  ok: Type.Boolean(), entries: Type.Integer(),
  firstBroken: Type.Optional(Type.Object({ id: Type.String(), chainSeq: Type.Integer(), reason: Type.String() })),
});
export const SqlResultSchema = Type.Object({
  rows: Type.Array(Type.Record(Type.String(), Type.Unknown())),
  rowCount: Type.Integer(),
  fields: Type.Array(Type.Object({ name: Type.String(), dataTypeId: Type.Integer() })),
  truncated: Type.Boolean(),
});

// ---- requests ----

const Slug = Type.String({ minLength: 1, maxLength: 200 });
export const CreateTenantBody = Type.Object({
  slug: Slug,
  name: Type.Optional(Type.String({ maxLength: 200 })),
  tier: Type.Optional(Type.String({ maxLength: 50 })),
  isolation: Type.Optional(Type.String({ maxLength: 50 })),
  trialDays: Type.Optional(Type.Integer()),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false });
export const UpdateTenantBody = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 200 })),
  tier: Type.Optional(Type.String({ maxLength: 50 })),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false });
export const ListTenantsQuery = Type.Object({
  status: Type.Optional(Type.String({ maxLength: 50 })),
  tier: Type.Optional(Type.String({ maxLength: 50 })),
  isolation: Type.Optional(Type.String({ maxLength: 50 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  cursor: Type.Optional(Type.String({ maxLength: 2048, description: 'nextCursor of the previous page, with the same q, sort and order' })),
  q: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'case-insensitive prefix of the slug or the name' })),
  sort: Type.Optional(Type.Union([Type.Literal('slug'), Type.Literal('name'), Type.Literal('created_at'), Type.Literal('status'), Type.Literal('tier')], { description: 'sort column (default: creation order)' })),
  order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
}, { additionalProperties: false });
export const SuspendBody = Type.Object({ reason: Type.String({ minLength: 1, maxLength: 500 }) }, { additionalProperties: false });
export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
export const DeleteQuery = Type.Object({ hard: Type.Optional(Type.Boolean()), force: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
// Partial: a Record over literal keys makes every key required, and an override names only the quotas it changes
export const QuotasBody = Type.Record(Type.String({ maxLength: 63 }), Nullable(Type.Integer({ minimum: 0 })), { minProperties: 1, maxProperties: 200, propertyNames: PlanName('quota') });
export const UsageBody = Type.Object({
  metric: PlanName('metric'),
  amount: Type.Integer({ minimum: 1, maximum: 1_000_000_000_000 }),
  idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
}, { additionalProperties: false });
export const CreateKeyBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  scopes: Type.Optional(Type.Array(literalUnion(SCOPES), { minItems: 1, maxItems: 4 })),
  expiresAt: Type.Optional(Nullable(DateTime)),
  memberUserId: Type.Optional(Nullable(Type.String({ format: 'uuid' }))),
}, { additionalProperties: false });
export const RotateKeyBody = Type.Object({ graceSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_592_000 })) }, { additionalProperties: false });
export const KeyParams = Type.Object({ id: Type.String({ maxLength: 64 }), keyId: Type.String({ maxLength: 64 }) });
export const AddMemberBody = Type.Object({ email: Type.String({ maxLength: 320 }), name: Type.Optional(Type.String({ maxLength: 200 })), role: literalUnion(MEMBER_ROLES) }, { additionalProperties: false });
export const MemberParams = Type.Object({ id: Type.String({ maxLength: 64 }), userId: Type.String({ maxLength: 64 }) });
export const UpdateMemberBody = Type.Object({ role: literalUnion(MEMBER_ROLES) }, { additionalProperties: false });
export const InviteBody = Type.Object({ email: Type.String({ maxLength: 320 }), role: literalUnion(MEMBER_ROLES), expiresInHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 2160 })) }, { additionalProperties: false });
export const InvitationParams = Type.Object({ id: Type.String({ maxLength: 64 }), invitationId: Type.String({ maxLength: 64 }) });
export const AcceptInvitationBody = Type.Object({ token: Type.String({ maxLength: 200 }), name: Type.Optional(Type.String({ maxLength: 200 })) }, { additionalProperties: false });
export const FeatureParams = Type.Object({ id: Type.String({ maxLength: 64 }), feature: Type.String({ maxLength: 63 }) });
export const FeatureBody = Type.Object({ enabled: Nullable(Type.Boolean()) }, { additionalProperties: false });
export const AuditQuery = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })), cursor: Type.Optional(Type.String({ maxLength: 20 })) }, { additionalProperties: false });
export const SqlBody = Type.Object({
  sql: Type.String({ minLength: 1, maxLength: 100_000 }),
  params: Type.Optional(Type.Array(Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null()]), { maxItems: 1000 })),
  readOnly: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
export const SlugParams = Type.Object({ slug: Type.String({ maxLength: 64 }) });
export const LeaseBody = Type.Object({ metric: PlanName('metric'), ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })) }, { additionalProperties: false });
export const LeaseParams = Type.Object({ id: Type.String({ maxLength: 64 }), leaseId: Type.String({ maxLength: 64 }) });
export const GaugeParams = Type.Object({ id: Type.String({ maxLength: 64 }), metric: PlanName('metric') });
export const GaugeBody = Type.Object({ value: Type.Integer({ minimum: 0, maximum: 1_000_000_000_000_000 }) }, { additionalProperties: false });
export const PutPlansBody = Type.Object({
  plans: Type.Record(Type.String(), Type.Unknown(), { description: 'the plan file\'s content (tenantry.plans.json)' }),
  moveTenants: Type.Optional(PlanName('tier', { description: 'tenants on a removed tier move here' })),
  dropHistory: Type.Optional(Type.Boolean({ description: 'removing a metric deletes its recorded usage' })),
  dryRun: Type.Optional(Type.Boolean({ description: 'only show the diff' })),
}, { additionalProperties: false });
