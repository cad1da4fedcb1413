// The public surface of the `tenantry` package: everything else is internal.
export { Tenantry, type QueryMode, type TenantSqlResult } from './tenantry.js';
export { TenantryError, isTenantryError, ERROR_CODES, type ErrorCode } from './errors.js';
export { envOptions, configuredEnv, type TenantryOptions, type ResolvedOptions, type ProvisionStep } from './config.js';
export type { Logger } from './logger.js';
export {
  TIERS, ISOLATION_MODES, TENANT_STATUSES,
  type Tenant, type Tier, type Isolation, type TenantStatus,
} from './tenants/model.js';
export type { CreateTenantInput } from './provisioning/provision.js';
export type { ListTenantsOptions, UpdateTenantInput, DeleteTenantOptions } from './tenants/tenants.js';
export type { AuditActor, AuditEntry } from './audit/audit.js';
export type { RepairReport } from './provisioning/repair.js';
export type { MoveService, MoveOptions, MoveResult, MoveInfo, MovePhase, MoveRepairReport } from './move/move.js';
export type { DoctorReport, DoctorCheck } from './doctor/doctor.js';
export type { MigrateOptions, MigrateReport } from './migrations/tenant-runner.js';
export { validateSlug, SLUG_RULE } from './identifiers.js';
export type { PgBouncerConfig, PgBouncerConfigOptions } from './db/pgbouncer-config.js';
export { parsePlansText, validatePlans, type Plans, type PlanMetric, type PlanTier, type PlanFeature, type MetricKind } from './plans/plan-file.js';
export { BUILTIN_PLANS } from './plans/builtin.js';
export type { PlanDiff, PlanChange, PlanRefusal, ApplyPlansOptions, PlanFileStatus, OverLimit } from './plans/plans.js';
export type {
  TenantryPlanTypes, PlanMetricName, DebitMetricName, CountMetricName, LeaseMetricName, GaugeMetricName, PlanFeatureName, PlanQuotaName,
} from './plans/plan-types.js';
export { verifyWebhook, signWebhook, type VerifyWebhookInput, type VerifiedWebhook } from './webhooks/signature.js';
export { isPrivateAddress } from './webhooks/address-policy.js';
export { normalizeDomain } from './domains/normalize.js';
export type { DomainService, TenantDomain, DomainMethod } from './domains/domains.js';
export { PAYMENT_OVERDUE, type BillingService, type BillingRecord, type ClosePeriodReport } from './billing/billing.js';
export type { TierPrice } from './plans/plan-file.js';
export { WEBHOOK_EVENTS, type WebhookEventType, type WebhookEndpoint, type WebhookDelivery } from './webhooks/webhooks.js';
export { DEFAULT_RETENTION, type RetentionDeclaration, type TenantRetentionReport } from './retention/retention.js';
export type { PurgeCandidate } from './lifecycle/lifecycle.js';
export { JOB_NAMES, type JobName } from './jobs/runner.js';
export { SCHEDULED_TASK_NAMES, type ScheduledTask } from './jobs/schedule.js';
// every result type the public calls hand back, so an app can name them
export type { TenantService } from './tenants/tenants.js';
export type {
  QuotaService, TierInfo, EffectiveQuota, UsageLine, UsageSummary, UsageHistoryRow, IncrementResult,
} from './quotas/quotas.js';
export type { FeatureService, FeatureState } from './quotas/features.js';
export { QUOTAS, METRICS, type QuotaName, type MetricName, type WindowUnit } from './quotas/metrics.js';
export {
  SCOPES, type Scope, type ApiKeyService, type ApiKeyInfo, type ApiKeyInfo as ApiKey, type CreatedApiKey, type VerifiedKey,
} from './keys/api-keys.js';
export type { MemberService, Member, Invitation, MemberActor } from './members/members.js';
export { MEMBER_ROLES, ROLE_RANK, type MemberRole, type KeyAuthority } from './members/roles.js';
export type { KeyActor } from './keys/api-keys.js';
export type { AuthThrottle, AuthThrottleRules } from './ratelimit/auth-throttle.js';
export type { AuditVerification } from './audit/verify.js';
export type { RateLimiter, RateLimit, RateDecision } from './ratelimit/limiter.js';
export type { TenantryEvents } from './events.js';
// envelope encryption, tenant-scoped cache and object storage (issue #15)
export type { TenantCrypto, CryptoOptions, DataKeyInfo, MasterRotationReport } from './crypto/tenant-crypto.js';
export type { Kms, WrappedKey } from './crypto/kms.js';
export { tenantKeyPrefix, encodeCacheKey, type ScopedCache, type CacheSetOptions } from './cache/tenant-cache.js';
export { validateObjectKey, type ScopedObjects, type StoredObject, type ObjectBody } from './objects/object-storage.js';
