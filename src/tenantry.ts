import type { Sql, TransactionSql } from 'postgres';
import { Redis } from 'ioredis';
import { resolveOptions, type TenantryOptions, type ResolvedOptions } from './config.js';
import { silentLogger, type Logger } from './logger.js';
import { TenantryError } from './errors.js';
import { connect, PoolBudget, DATA_ADMIN_MAX_LIFETIME_SECONDS } from './db/connections.js';
import { runInTenant, runAsTenantRole, runtimePool, healOnAuthFailure } from './isolation/tenant-transaction.js';
import { pgbouncerConfig, type PgBouncerConfig, type PgBouncerConfigOptions } from './db/pgbouncer-config.js';
import { loadSqlGuard, checkTenantSql, SqlParseBudget } from './isolation/sql-guard.js';
import { startEmbedded, type EmbeddedServer } from './db/embedded.js';
import { migrateCatalog, catalogVersions } from './catalog/catalog-migrations.js';
import { ContextSigner } from './isolation/context.js';
import { loadMigrationFiles } from './migrations/files.js';
import {
  loadOrCreateInstallation, installationRoles, ensureRoles, ensureSharedDatabase, ensureTemplateDatabase,
  hardenCatalogDatabase, databaseExists, resetRoleDefaults,
} from './installation.js';
import type { Core } from './core.js';
import { ident, literal } from './identifiers.js';
import { TenantCache } from './tenants/cache.js';
import { TenantService } from './tenants/tenants.js';
import { repairInstallation, type RepairReport } from './provisioning/repair.js';
import { startHealer, stopHealer } from './provisioning/healer.js';
import { runDoctor, type DoctorReport } from './doctor/doctor.js';
import { appendAudit, listAudit, type AuditEntry } from './audit/audit.js';
import { uninstall } from './provisioning/uninstall.js';
import { OperatorKey } from './keys/operator-key.js';
import { AuthThrottle } from './ratelimit/auth-throttle.js';
import { QuotaService } from './quotas/quotas.js';
import { FeatureService } from './quotas/features.js';
import { ApiKeyService } from './keys/api-keys.js';
import { MemberService } from './members/members.js';
import { RateLimiter, type RateDecision } from './ratelimit/limiter.js';
import { PostgresRateLimitStore } from './ratelimit/postgres-store.js';
import { RedisRateLimitStore } from './ratelimit/redis-store.js';
import { verifyAuditChain, type AuditVerification } from './audit/verify.js';
import { IdempotencyStore } from './idempotency/idempotency.js';
import { migrateTenants, migrationStatus, recordMigrationFiles, type MigrateOptions, type MigrateReport } from './migrations/tenant-runner.js';
import { TenantryEventEmitter } from './events.js';
import { migrationOverview, recordMigrationRun, type MigrationOverview } from './migrations/run-history.js';
import { statsOverview, type StatsOverview } from './stats/overview.js';
import { SchemaPool } from './provisioning/schema-pool.js';
import { RolePool } from './provisioning/role-pool.js';
import { PlanState, loadPlans } from './plans/state.js';
import { PlanService } from './plans/plans.js';
import { checkingInputs } from './input/safe-text.js';
import { JobRunner, installJobSchema } from './jobs/runner.js';
import { OperationService } from './operations/operations.js';
import { DEFAULT_SERVER, poolKey, serverUrl } from './db/pool-key.js';
import { LifecycleService } from './lifecycle/lifecycle.js';
import { RetentionService, ensureAuditPurge } from './retention/retention.js';
import { WebhookService } from './webhooks/webhooks.js';
import { BackupService } from './backup/backup.js';
import { MoveService } from './move/move.js';
import { isMovingRefusal } from './move/change-log.js';
import { moveOnTierChange } from './move/tier-moves.js';
import { LocalBackupStore, lazyStore } from './backup/store.js';
import { TenantCrypto } from './crypto/tenant-crypto.js';
import { LocalKms, type Kms } from './crypto/kms.js';
import { VaultTransitKms } from './crypto/vault-transit.js';
import { TenantCacheService, type ScopedCache } from './cache/tenant-cache.js';
import { ObjectStorageService, type ScopedObjects } from './objects/object-storage.js';
import { runExternalPurges, pendingExternalPurges } from './lifecycle/external-purges.js';
import { DomainService } from './domains/domains.js';
import { BillingService } from './billing/billing.js';

export type QueryMode = 'all' | 'one' | 'val' | 'execute';

/** What runTenantSql (the HTTP SQL endpoint) hands back: rows up to the cap, and whether more were left unread. */
export interface TenantSqlResult {
  rows: Record<string, unknown>[];
  rowCount: number;
  fields: { name: string; dataTypeId: number }[];
  truncated: boolean;
}
const QUERY_MODES: readonly QueryMode[] = ['all', 'one', 'val', 'execute'];

/** The database the embedded server keeps the catalog in. */
const EMBEDDED_CATALOG_DB = 'tenantry';

export class Tenantry {
  readonly tenants: TenantService;
  /** the operator token of the HTTP API (TENANTRY_ADMIN_KEY, or generated once and stored hashed) */
  readonly operatorKey: OperatorKey;
  /** tiers, quota overrides, atomic usage metering, leases, usage history and storage */
  readonly quotas: QuotaService;
  /** feature flags: granted by tier, overridden per tenant */
  readonly features: FeatureService;
  /** tenant API keys */
  readonly keys: ApiKeyService;
  /** users, memberships, roles and invitations */
  readonly members: MemberService;
  /** per-tenant rate limiting (PostgreSQL store by default, Redis with REDIS_URL) */
  readonly rateLimiter: RateLimiter;
  /** failed authentications throttled per client address and per key id (in memory, per process) */
  readonly authThrottle: AuthThrottle;
  /** stored responses for the HTTP API's Idempotency-Key */
  readonly idempotency: IdempotencyStore;
  /** the app's plans (metrics, tiers, features): read, diffed against a plan file, applied */
  readonly plans: PlanService;
  /** scheduled lifecycle: trials ending, soft-deleted tenants purged after their grace period */
  readonly lifecycle: LifecycleService;
  /** data past its retention, per data class and tenant status */
  readonly retention: RetentionService;
  /** webhook endpoints and deliveries (events leave through the outbox) */
  readonly webhooks: WebhookService;
  /** per-tenant backups, restores, clones and exports (issue #14) */
  readonly backups: BackupService;
  /** online moves of a tenant between isolation modes (issue #14); `tenants.move()` starts one */
  readonly moves: MoveService;
  /** custom domains: claimed, verified by DNS TXT or HTTP token, resolved from Host headers (issue #15) */
  readonly domains: DomainService;
  /** billing customers, period records pushed to Stripe, Stripe's payment webhooks (issue #15) */
  readonly billing: BillingService;
  /** long-running operations (backup, export, restore, clone, move) the HTTP API answers 202 with */
  readonly operations: OperationService;
  /** the job runner (graphile-worker): `serve` and `tenantry worker` start it */
  readonly jobs: JobRunner;
  /** envelope encryption per tenant (AES-256-GCM data keys wrapped by the KMS), rotation, crypto-shredding */
  readonly crypto: TenantCrypto;
  /** each tenant's share of this thread for judging SQL endpoint statements */
  private readonly sqlParseBudget = new SqlParseBudget();
  private readonly cacheService: TenantCacheService;
  private readonly objectService: ObjectStorageService;
  private closed = false;
  private readonly rateLimits = new Map<string, { limit: number; at: number }>();
  private unlisten: (() => Promise<void>) | undefined;

  private constructor(private readonly core: Core, private readonly embedded: EmbeddedServer | undefined) {
    // every public call checks its text arguments (NUL, lone surrogates, huge values) before PostgreSQL sees them
    this.tenants = checkingInputs(new TenantService(core));
    this.operatorKey = checkingInputs(new OperatorKey(core.admin, core.opts.adminKey));
    this.idempotency = checkingInputs(new IdempotencyStore(core.admin));
    // a changed tenant (a tier change, here or in another process) drops its cached rate limit too
    core.cache.onInvalidate((id) => (id ? this.rateLimits.delete(id) : this.rateLimits.clear()));
    this.quotas = checkingInputs(new QuotaService(core, this.tenants, (tenantId) => {
      if (!tenantId) return this.rateLimits.clear();
      this.rateLimits.delete(tenantId);
      // a new limit starts from a clean slate rather than from state kept under the old interval
      void this.rateLimiter.reset(`tenant:${tenantId}`).catch(() => undefined);
    }));
    this.features = checkingInputs(new FeatureService(core, this.tenants));
    this.keys = checkingInputs(new ApiKeyService(core, this.tenants, core.opts.keyPepper));
    this.members = checkingInputs(new MemberService(core, this.tenants, this.quotas, (tenantId) => this.keys.invalidate(tenantId)));
    this.tenants.attachKeys(this.keys);
    this.moves = checkingInputs(new MoveService(core, this.tenants));
    this.tenants.attachMover(this.moves);
    // applied plans change limits and may move tenants: drop what is cached of either
    this.plans = new PlanService(core, () => { core.cache.clear(); this.rateLimits.clear(); });
    this.authThrottle = new AuthThrottle({ perAddress: core.opts.authFailuresPerAddress, perKey: core.opts.authFailuresPerKey }, {
      onFailure: (e) => core.events.emit('authFailed', e),
      onRefused: (e) => core.events.emit('authRefused', e),
      onThrottled: (e) => {
        core.events.emit('authThrottled', { scope: e.scope });
        // audited once per burst: in the chain of the tenant whose key id is being guessed, when it
        // is a real one (known in memory, no query), else in the installation's own chain
        const tenantId = e.keyId ? this.keys.tenantOfKeyId(e.keyId) ?? null : null;
        void appendAudit(core.admin, {
          tenantId, actor: `address:${e.address}`, action: 'auth.throttled', target: e.scope === 'key' ? `api_key:${e.keyId}` : `address:${e.address}`,
          details: { scope: e.scope, address: e.address, keyId: e.keyId, retryAfterSeconds: e.retryAfterSeconds },
        }).catch((err: unknown) => core.logger.warn({ err }, 'auditing a throttled authentication failed'));
      },
    });
    this.rateLimiter = checkingInputs(new RateLimiter(core.opts.redisUrl
      ? new RedisRateLimitStore(new Redis(core.opts.redisUrl, { maxRetriesPerRequest: 2, enableOfflineQueue: true, lazyConnect: false }))
      : new PostgresRateLimitStore(core.admin)));
    this.lifecycle = checkingInputs(new LifecycleService(core, this.tenants));
    this.retention = checkingInputs(new RetentionService(core));
    this.webhooks = checkingInputs(new WebhookService(core, this.tenants));
    this.backups = checkingInputs(new BackupService(core, this.tenants,
      core.opts.backupS3
        ? lazyStore('s3', async () => new (await import('./backup/s3-store.js')).S3BackupStore(core.opts.backupS3!))
        : new LocalBackupStore(core.opts.backupDir)));
    this.operations = checkingInputs(new OperationService(core, this.tenants, this.backups));
    // a tier whose plan grants dedicated_database moves its tenants there (an operation, in the tier change's transaction)
    this.tenants.attachTierChange((tx, tenant, tier) => moveOnTierChange(core, this.operations, tx, tenant, tier));
    this.domains = checkingInputs(new DomainService(core, this.tenants));
    this.billing = checkingInputs(new BillingService(core, this.tenants));
    this.crypto = checkingInputs(new TenantCrypto(core, this.tenants, kmsOf(core)));
    this.cacheService = new TenantCacheService(core, this.tenants);
    this.objectService = new ObjectStorageService(core, this.tenants);
    this.tenants.attachHardDeleteHook((tenantId) => this.purgeExternal(tenantId));
    this.jobs = new JobRunner(core, { domains: this.domains, billing: this.billing, quotas: this.quotas, keys: this.keys, idempotency: this.idempotency, lifecycle: this.lifecycle, retention: this.retention, webhooks: this.webhooks, backups: this.backups, operations: this.operations, purgeExternal: () => this.purgeExternal() });
    // provisionings whose rollback could not finish, and rows abandoned by processes that died: a
    // timer with a lock until this process runs the job runner (startJobs), whose schedule then sweeps
    startHealer(core);
  }

  /**
   * Runs the job runner in this process (what `tenantry serve` and `tenantry worker` do): the queue,
   * the schedule (storage, trials, purges, rollups, retention, webhooks) and the heal sweep. The
   * fallback timers of this process stop: the schedule does their work once across all processes.
   */
  async startJobs(opts: { kind?: string; schedule?: boolean; concurrency?: number } = {}): Promise<void> {
    this.assertOpen();
    await this.jobs.start({ ...opts, onTick: () => this.keys.flushLastUsed() });
    await stopHealer(this.core);
    this.keys.flushOnRunnerTick();
  }

  /**
   * One rate-limit decision for a tenant's API traffic, against its api_calls_per_minute quota (burst:
   * the same number). The HTTP layer turns a denial into 429 with Retry-After.
   */
  async rateLimit(idOrSlug: string, cost = 1): Promise<RateDecision> {
    const t = await this.tenants.resolveForWork(idOrSlug);
    // the limit is cached for a few seconds: this runs on every API request
    let cached = this.rateLimits.get(t.id);
    if (!cached || Date.now() - cached.at > 5000) {
      const limits = await this.quotas.effectiveQuotas(t.id);
      // the plans' rate limit (every tier has one); an unlimited override is a very high rate
      cached = { limit: limits.api_calls_per_minute?.limit ?? 1_000_000_000, at: Date.now() };
      this.rateLimits.set(t.id, cached);
    }
    const limit = cached.limit;
    if (limit === 0) {
      // a quota of zero refuses every call (GCRA needs a positive rate)
      this.core.events.emit('rateLimited', { tenantId: t.id });
      return { allowed: false, remaining: 0, retryAfterMs: 60_000, resetAfterMs: 60_000, limit: 0 };
    }
    const decision = await this.rateLimiter.consume(`tenant:${t.id}`, { limit, periodMs: 60_000, burst: limit }, cost);
    if (!decision.allowed) this.core.events.emit('rateLimited', { tenantId: t.id });
    return decision;
  }

  /**
   * A tenant's cache in Redis (REDIS_URL): get/set/del/incr/expire/purge, every key confined to
   * `t:{<tenant id>}:` (and, with cacheAclUsers, sent over the tenant's own Redis ACL user).
   */
  cache(idOrSlug: string): ScopedCache {
    this.assertOpen();
    return checkingInputs(this.cacheService.for(idOrSlug));
  }

  /** The Redis login of a tenant's ACL user (cacheAclUsers): for a process that should reach only that tenant's keys. */
  cacheCredentials(idOrSlug: string): Promise<{ username: string; password: string; keyPattern: string }> {
    this.assertOpen();
    return this.cacheService.aclCredentials(idOrSlug);
  }

  /** A tenant's objects in the S3-compatible bucket (objectStore), every key under `tenants/<id>/`. */
  objects(idOrSlug: string): ScopedObjects {
    this.assertOpen();
    return checkingInputs(this.objectService.for(idOrSlug));
  }

  /**
   * Runs what hard deletes still owe outside PostgreSQL (a tenant's Redis keys and ACL user, its
   * objects): hard delete tries at once, the job runner's `tenants.purge_external` retries.
   */
  async purgeExternal(tenantId?: string): Promise<{ done: number; failed: number }> {
    this.assertOpen();
    const purgers = {
      ...(this.core.opts.redisUrl ? { cache: (id: string) => this.cacheService.purgeTenant(id) } : {}),
      ...(this.core.opts.redisUrl && this.core.opts.cacheAclUsers ? { cache_acl: (id: string) => this.cacheService.removeAclUser(id) } : {}),
      ...(this.core.opts.objectStore ? { objects: (id: string) => this.objectService.purgeTenant(id) } : {}),
    };
    return runExternalPurges(this.core, purgers, tenantId);
  }

  /** Purges hard deletes still owe outside PostgreSQL, with their attempts and last error. */
  pendingPurges(): ReturnType<typeof pendingExternalPurges> {
    this.assertOpen();
    return pendingExternalPurges(this.core);
  }

  /** Recomputes a tenant's audit hash chain and names the first broken entry, if any. */
  async verifyAudit(idOrSlug: string): Promise<AuditVerification> {
    this.assertOpen();
    return verifyAuditChain(this.core.admin, await this.auditTenantId(idOrSlug));
  }

  /**
   * Connects (starting the embedded PostgreSQL when no databaseUrl / DATABASE_URL is given), creates or
   * upgrades the catalog, Tenantry's roles, the shared database and the template, and returns a ready
   * instance. Safe to call from several processes at once.
   */
  static async open(options: TenantryOptions = {}): Promise<Tenantry> {
    const opts = resolveOptions(options);
    const logger = options.logger ?? silentLogger;
    let embedded: EmbeddedServer | undefined;
    let url = opts.databaseUrl;
    if (!url) {
      embedded = await startEmbedded(opts.dataDir, opts.embeddedPort, logger);
      url = await ensureEmbeddedCatalog(embedded.url);
    }
    try {
      return await Tenantry.openOn(url, opts, logger, embedded);
    } catch (err) {
      await embedded?.stop().catch(() => undefined);
      throw err;
    }
  }

  private static async openOn(url: string, opts: ResolvedOptions, logger: Logger, embedded: EmbeddedServer | undefined): Promise<Tenantry> {
    // Behind a transaction pooler only the tenant traffic goes through it (the runtime role's and the
    // tenant roles' pools, whose every use is one explicit transaction): unnamed statements, settings
    // pinned per transaction. The catalog pool, advisory locks, LISTEN, template clones and DDL use the
    // direct URL: postgres.js pipelines a query with parameters (Parse/Describe/Flush) behind the
    // previous one's Sync outside a transaction, and PgBouncer 1.18 hands the server to another client
    // at that Sync's ReadyForQuery ("got packet 't' from server when not linked"), so the answer went
    // to no one: calls that never returned, tenants "not found" that exist. The catalog pool is small
    // and per process; the connections that grow with tenants and databases are the pooled ones.
    const pooled = opts.pooler === 'transaction';
    const directUrl = opts.directUrl ?? url;
    const admin = connect(directUrl, { max: 10 });
    const direct = admin;
    const adminTo = (database: string, max = 2): Sql => connect(directUrl, { database, max, idle_timeout: 10, max_lifetime: DATA_ADMIN_MAX_LIFETIME_SECONDS });
    const migrations = loadMigrationFiles(opts.tenantMigrations);
    const roles = installationRoles(opts.namespace);
    const sharedDatabase = `${opts.namespace}_shared`;
    const templateDatabase = `${opts.namespace}_template`;
    let signer: ContextSigner | undefined;
    let installationId = '';
    try {
      // before the catalog migrations, so a user that cannot finish leaves nothing half-written
      await assertPrivileges(admin);
      await migrateCatalog(direct, logger, async (lock) => {
        const inst = await loadOrCreateInstallation(lock, opts.namespace);
        installationId = inst.id;
        signer = new ContextSigner(inst.secret);
        await ensureRoles(lock, inst, roles, signer);
        await hardenCatalogDatabase(lock, logger);
        // an edited, already-applied tenant migration is refused before anything runs it
        await recordMigrationFiles(lock, migrations);
        const shared = { lock, adminTo, namespace: opts.namespace, roles, signer, migrations, logger };
        await ensureSharedDatabase({ ...shared, name: sharedDatabase });
        await ensureTemplateDatabase({ ...shared, name: templateDatabase });
        // the job queue's schema, and the audit log's one retention exception
        await installJobSchema({ directUrl, logger });
        await ensureAuditPurge(lock, roles.owner);
      });
    } catch (err) {
      await admin.end({ timeout: 5 });
      throw err;
    }
    const runtimePassword = signer!.rolePassword(roles.runtime);
    const plans = new PlanState(await loadPlans(admin));
    const pools = new PoolBudget(opts.maxConnections, opts.idleTimeoutSeconds * 1000, logger, opts.poolWaitMs);
    const core: Core = {
      opts, logger, url, admin, direct, directUrl, pooled,
      sharedAdmin: adminTo(sharedDatabase, 4),
      installationId, namespace: opts.namespace, roles, sharedDatabase, templateDatabase,
      signer: signer!, migrations, pools,
      cache: new TenantCache(opts.tenantCacheTtlMs),
      events: new TenantryEventEmitter(),
      plans,
      schemaPool: undefined as unknown as SchemaPool,
      rolePool: undefined as unknown as RolePool,
      adminTo,
      runtimeOn: (database, fn, server = DEFAULT_SERVER) => pools.use(poolKey({ server, database, role: roles.runtime }), opts.poolSize, () => runtimePool(core, serverUrl(url, server), database, roles.runtime, runtimePassword),
        (sql) => healOnAuthFailure(core, roles.runtime, () => fn(sql))),
    };
    core.schemaPool = new SchemaPool(core, opts.schemaPoolSize);
    core.schemaPool.refill();
    core.rolePool = new RolePool(core, opts.rolePoolSize);
    core.rolePool.refill();
    const t = new Tenantry(core, embedded);
    // other processes announce tenant changes; drop our cached copy at once (LISTEN needs a session:
    // through a transaction pooler the notifications would go to whichever client held the server last)
    const sub = await direct.listen('tenantry_tenant_changed', (id) => core.cache.invalidate(id), () => core.cache.clear());
    const keySub = await direct.listen('tenantry_key_changed', (tenantId) => t.keys.invalidate(tenantId), () => t.keys.invalidate());
    // another process applied plans: read them again, and drop limits cached under the old ones
    const planSub = await direct.listen('tenantry_plans_changed', () => void t.plans.reload().then(() => { core.cache.clear(); t.rateLimits.clear(); }).catch((err: unknown) => logger.warn({ err }, 'reloading the plans failed')));
    // a domain added, verified, unverified or removed in any process: host answers cached here are dropped
    const domainSub = await direct.listen('tenantry_domain_changed', (domain) => t.domains.invalidate(domain), () => t.domains.invalidate());
    t.unlisten = async () => { await sub.unlisten(); await keySub.unlisten(); await planSub.unlisten(); await domainSub.unlisten(); };
    if (opts.plans) {
      // a plan file that differs from the catalog is reported, never applied behind the operator's back
      try {
        await t.plans.checkFile(opts.plans);
      } catch (err) {
        await t.close().catch(() => undefined);
        throw err;
      }
    }
    // after LISTEN, so no key change falls between the load and the first notification
    t.keys.preload();
    logger.info({ namespace: opts.namespace }, 'tenantry ready');
    return checkingInputs(t);
  }

  /** Events for metrics: provisioned, quotaRejected, rateLimited. */
  get events(): TenantryEventEmitter {
    return this.core.events;
  }

  /** The options in force (secrets excluded). */
  get options(): Readonly<ResolvedOptions> {
    return this.core.opts;
  }

  /** The configured user's pool on the catalog database, for callers that extend the catalog. */
  get catalog(): Sql {
    this.assertOpen();
    return this.core.admin;
  }

  /**
   * Runs `fn` in a transaction bound to one tenant, in any isolation mode. The tenant context is
   * signed and transaction-local (set_config(..., true)), so a connection handed back to the pool
   * carries nothing to its next user, and SQL injected into `fn` cannot act for another tenant.
   * Unqualified table names resolve to the tenant's tables.
   */
  async withTenant<T>(idOrSlug: string, fn: (sql: TransactionSql) => Promise<T>): Promise<T> {
    this.assertOpen();
    if (typeof fn !== 'function') throw new TenantryError('INVALID_INPUT', 'withTenant(idOrSlug, fn) needs a function.');
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    return runInTenant(this.core, tenant, fn).catch((err: unknown) => { throw this.movingRefusal(err, tenant); });
  }

  /**
   * A write refused by the data plane because the tenant is in a move's read-only window becomes
   * TENANT_MOVING; its cached placement is dropped, so the retry finds the new one once it switched.
   */
  private movingRefusal(err: unknown, tenant: { id: string; slug: string }): unknown {
    if (!isMovingRefusal(err)) return err;
    this.core.cache.invalidate(tenant.id);
    return new TenantryError('TENANT_MOVING', `Tenant "${tenant.slug}" is being moved to another isolation mode: writes are refused for a moment (reads go on); retry shortly.`,
      { tenantId: tenant.id, retryAfterSeconds: 1 }, { cause: err });
  }

  /**
   * Runs `fn` on a connection whose *session* user is the tenant's own login role: the primitive for
   * untrusted SQL (the HTTP SQL endpoint). Nothing sent on it can become another role or another
   * tenant: the policies key on the session user, which no statement can change. Optionally read-only
   * and with a statement timeout.
   */
  async withTenantRole<T>(idOrSlug: string, fn: (sql: TransactionSql) => Promise<T>, opts: { readOnly?: boolean; statementTimeoutMs?: number } = {}): Promise<T> {
    this.assertOpen();
    if (typeof fn !== 'function') throw new TenantryError('INVALID_INPUT', 'withTenantRole(idOrSlug, fn) needs a function.');
    const timeout = opts.statementTimeoutMs ?? 0;
    if (!Number.isInteger(timeout) || timeout < 0) throw new TenantryError('INVALID_INPUT', 'statementTimeoutMs must be a non-negative integer.');
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    return runAsTenantRole(this.core, tenant, fn, opts).catch((err: unknown) => { throw this.movingRefusal(err, tenant); });
  }

  /**
   * Untrusted SQL from a tenant (the HTTP SQL endpoint): one statement (the extended protocol refuses
   * a second one), run as the tenant's own login role inside its walls, with a statement timeout and a
   * row cap; read-only when asked. Rows beyond the cap are not fetched (a cursor reads cap + 1).
   */
  async runTenantSql(idOrSlug: string, input: { sql: string; params?: unknown[]; readOnly?: boolean; maxRows?: number; timeoutMs?: number }): Promise<TenantSqlResult> {
    if (!input || typeof input.sql !== 'string' || input.sql.trim() === '') throw new TenantryError('INVALID_INPUT', 'sql must be a non-empty string.');
    const params = input.params ?? [];
    if (!Array.isArray(params)) throw new TenantryError('INVALID_INPUT', 'params must be an array.');
    const maxRows = input.maxRows ?? this.core.opts.sqlMaxRows;
    const timeoutMs = input.timeoutMs ?? this.core.opts.sqlTimeoutMs;
    // Judged on PostgreSQL's own parse tree before anything is sent (src/isolation/sql-guard.ts): one
    // data statement on the tenant's own tables, built-in data functions only, no EXPLAIN for pooled tenants.
    await loadSqlGuard();
    const tenant = await this.tenants.resolveForWork(idOrSlug);
    // Parsing runs on this process's one thread, before any refusal and outside PostgreSQL's limits: each
    // tenant gets a share of it (red team: 16 parallel 64 KiB refusals from one tenant took another
    // tenant's 2 ms request to 1 s)
    this.sqlParseBudget.take(tenant.id);
    const parseStarted = performance.now();
    try {
      checkTenantSql(input.sql, { isolation: tenant.isolation, schema: tenant.placement.schema });
    } finally {
      this.sqlParseBudget.spend(tenant.id, performance.now() - parseStarted);
    }
    // the cap ends the connection under the transaction, so what reaches the catch below may be the
    // ROLLBACK's CONNECTION_CLOSED rather than the cap's own error: remembered here
    let tooLarge = false;
    try {
      return await this.withTenantRole(tenant.id, async (tx) => {
        const rows: Record<string, unknown>[] = [];
        let fields: { name: string; dataTypeId: number }[] = [];
        let truncated = false;
        let count: number | null = null;
        // simple: false forces the extended protocol, which runs exactly one statement
        const q = tx.unsafe(input.sql, params as never[], { simple: false } as never);
        type Batch = Record<string, unknown>[] & { columns?: { name: string; type: number }[]; count?: number | null };
        const taken = new Set<Batch>();
        const take = (b: Batch): unknown => {
          taken.add(b);
          if (b.columns) fields = b.columns.map((c) => ({ name: c.name, dataTypeId: c.type }));
          // the command tag's count rides on the batch (an INSERT/UPDATE/DELETE without RETURNING has no rows)
          if (typeof b.count === 'number') count = b.count;
          for (const row of b) {
            if (rows.length >= maxRows) { truncated = true; break; }
            rows.push(row);
          }
          // postgres.js's CLOSE (one object for every connection; a transaction's sql does not carry it) ends the cursor
          return truncated ? this.core.admin.CLOSE : undefined;
        };
        // The callback form rather than `for await`: postgres.js passes the last batch to the callback only
        // when its command tag carries a row count, so the rows of SHOW, EXPLAIN or CALL come back only as
        // the query's own result.
        const last = await (q.cursor(Math.min(maxRows + 1, 500), (batch) => take(batch as unknown as Batch) as void) as unknown as Promise<Batch | undefined>)
          .catch((err: unknown) => { if ((err as { code?: string })?.code === 'RESULT_TOO_LARGE') tooLarge = true; throw err; });
        if (last && !taken.has(last)) take(last);
        const done = q as unknown as { count?: number; columns?: { name: string; type: number }[] };
        if (fields.length === 0 && done.columns) fields = done.columns.map((c) => ({ name: c.name, dataTypeId: c.type }));
        if (typeof done.count === 'number') count = done.count;
        return { rows, rowCount: truncated || count === null ? rows.length : Math.max(count, rows.length), fields, truncated };
      }, { readOnly: Boolean(input.readOnly), statementTimeoutMs: timeoutMs });
    } catch (err) {
      const pg = err as { code?: string; message?: string; severity?: string };
      if (tooLarge || (pg && pg.code === 'RESULT_TOO_LARGE')) {
        throw new TenantryError('SQL_RESULT_TOO_LARGE', `The statement's rows came to more than ${this.core.opts.sqlMaxResultBytes} bytes (TENANTRY_SQL_MAX_RESULT_BYTES); select fewer or smaller columns, or page with LIMIT/OFFSET.`, { maxBytes: this.core.opts.sqlMaxResultBytes }, { cause: err });
      }
      if (pg && typeof pg.code === 'string' && pg.severity) {
        // 55P03: the statement waited longer than the endpoint's lock_timeout for a lock
        const code = pg.code === '57014' || pg.code === '55P03' ? 'SQL_TIMEOUT' : pg.code === '42501' || pg.code === '25006' ? 'FORBIDDEN' : 'SQL_ERROR';
        const why = pg.code === '57014' ? `The statement ran longer than ${timeoutMs} ms and was cancelled`
          : pg.code === '55P03' ? `The statement waited longer than ${this.core.opts.sqlLockTimeoutMs} ms for a lock and was cancelled` : 'The statement failed';
        throw new TenantryError(code, `${why}: ${pg.message} (SQLSTATE ${pg.code}).`, { sqlstate: pg.code }, { cause: err });
      }
      throw err;
    }
  }

  /**
   * One statement for one tenant (the original design's execute_query): `all` rows, `one` row (or
   * null), `val` the first column of the first row (or null), `execute` the affected row count.
   * Overloaded by mode, so each mode's result has its own type.
   */
  query<R = Record<string, unknown>>(idOrSlug: string, text: string, params?: unknown[], mode?: 'all'): Promise<R[]>;
  query<R = Record<string, unknown>>(idOrSlug: string, text: string, params: unknown[], mode: 'one'): Promise<R | null>;
  query<V = unknown>(idOrSlug: string, text: string, params: unknown[], mode: 'val'): Promise<V | null>;
  query(idOrSlug: string, text: string, params: unknown[], mode: 'execute'): Promise<number>;
  query<R = Record<string, unknown>>(idOrSlug: string, text: string, params?: unknown[], mode?: QueryMode): Promise<R[] | R | number | null>;
  async query<R = Record<string, unknown>>(idOrSlug: string, text: string, params: unknown[] = [], mode: QueryMode = 'all'): Promise<R[] | R | number | null> {
    if (typeof text !== 'string' || text.trim() === '') throw new TenantryError('INVALID_INPUT', 'query() needs SQL text.');
    if (!Array.isArray(params)) throw new TenantryError('INVALID_INPUT', 'query() params must be an array.');
    if (!QUERY_MODES.includes(mode)) throw new TenantryError('INVALID_INPUT', `query() mode must be one of ${QUERY_MODES.join(', ')}, got ${JSON.stringify(mode)}.`);
    // the statement is handed back unawaited, so BEGIN, context, statement and COMMIT share one round trip
    // (two more when params has an untyped value: postgres.js asks the server for the types first)
    const rows = await this.withTenant(idOrSlug, (sql) => sql.unsafe(text, params as never[]) as unknown as Promise<Record<string, unknown>[] & { count: number }>);
    {
      switch (mode) {
        case 'all': return [...rows] as R[];
        case 'one': return (rows[0] as R | undefined) ?? null;
        case 'val': {
          const first = rows[0] as Record<string, unknown> | undefined;
          return first ? (Object.values(first)[0] as R) ?? null : null;
        }
        case 'execute': return rows.count;
      }
    }
  }

  /**
   * Applies pending tenant migrations to every schema and database tenant (bounded parallelism, each
   * tenant in its own transaction, failures isolated and reported). With nothing pending it decides
   * from the catalog alone. Resumable: run it again after a crash.
   */
  async migrate(opts: MigrateOptions = {}): Promise<MigrateReport> {
    this.assertOpen();
    const report = await migrateTenants(this.core, opts);
    // pool schemas behind the latest version are replaced
    if (!opts.dryRun) this.core.schemaPool.refill();
    // the console's migrations page shows the last run's failures
    if (!opts.dryRun) await recordMigrationRun(this.core, report);
    return report;
  }

  /** How many tenants sit at each tenant migration version. */
  migrationStatus(): ReturnType<typeof migrationStatus> {
    this.assertOpen();
    return migrationStatus(this.core);
  }

  /** Operator overview: tenants at risk and over quota, the last day's provisioning, the job queue and failed webhooks. */
  statsOverview(): Promise<StatsOverview> {
    this.assertOpen();
    return statsOverview(this.core);
  }

  /** The migration status with the last recorded run (its failures) — the console's migrations page. */
  migrationOverview(): Promise<MigrationOverview> {
    this.assertOpen();
    return migrationOverview(this.core);
  }

  /** Audit entries of one tenant, newest first. */
  async audit(idOrSlug: string, opts: { limit?: number; before?: string } = {}): Promise<AuditEntry[]> {
    this.assertOpen();
    const limit = opts.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TenantryError('INVALID_INPUT', 'limit must be an integer from 1 to 1000.');
    // 19 digits can still pass bigint's range (9223372036854775807): that was a 500 from PostgreSQL
    if (opts.before !== undefined && (!/^[0-9]{1,19}$/.test(opts.before) || BigInt(opts.before) > 9223372036854775807n)) throw new TenantryError('INVALID_INPUT', 'before must be an audit entry id (the nextCursor of the previous page).');
    return listAudit(this.core.admin, await this.auditTenantId(idOrSlug), { limit, ...(opts.before ? { before: opts.before } : {}) });
  }

  /** The tenant whose audit trail is asked for: a live tenant by id or slug, or a hard-deleted one by id. */
  private async auditTenantId(idOrSlug: string): Promise<string> {
    const id = (await this.tenants.find(idOrSlug))?.id ?? (/^[0-9a-f-]{36}$/.test(idOrSlug) ? idOrSlug : undefined);
    if (!id) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(idOrSlug)}.`);
    return id;
  }

  /**
   * Finds tenants stuck in `provisioning` (older than `olderThanSeconds`, default repairAfterSeconds)
   * and schemas, databases and roles that no catalog row owns, and removes them.
   */
  repair(opts: { olderThanSeconds?: number; actor?: string } = {}): Promise<RepairReport> {
    this.assertOpen();
    return repairInstallation(this.core, opts);
  }

  /** Checks the live installation against the isolation invariants; each failure says how to fix it. */
  doctor(opts: Parameters<typeof runDoctor>[1] = {}): Promise<DoctorReport> {
    this.assertOpen();
    return runDoctor(this.core, opts);
  }

  private probe: Sql | undefined;

  /**
   * One round trip to PostgreSQL on a connection of its own, for health probes: a probe queued behind
   * busy pools would report an outage that is only load.
   */
  async ping(): Promise<void> {
    this.assertOpen();
    this.probe ??= connect(this.core.directUrl, { max: 1, idle_timeout: 10, connect_timeout: 5 });
    await this.probe`select 1`;
  }

  /** Whether the catalog is reachable and at this code's version (for readiness probes). */
  async ready(): Promise<{ ok: boolean; catalogVersion: number; expectedVersion: number }> {
    const v = await catalogVersions(this.core.admin);
    return { ok: v.current === v.expected, catalogVersion: v.current, expectedVersion: v.expected };
  }

  /**
   * A pgbouncer.ini (transaction mode, in front of this installation's server) and its userlist, for
   * running Tenantry behind PgBouncer: see `tenantry pgbouncer-config`.
   */
  pgbouncerConfig(opts: PgBouncerConfigOptions = {}): Promise<PgBouncerConfig> {
    this.assertOpen();
    return pgbouncerConfig(this.core, opts);
  }

  /** Connection pool figures, for metrics. */
  poolStats(): ReturnType<PoolBudget['stats']> {
    return this.core.pools.stats();
  }

  /**
   * Removes the whole installation: every tenant database and role, the shared and template databases,
   * Tenantry's roles and its catalog schema. Irreversible; `confirm` must repeat the namespace.
   */
  async uninstall(opts: { confirm: string }): Promise<void> {
    this.assertOpen();
    if (opts?.confirm !== this.core.namespace) {
      throw new TenantryError('INVALID_INPUT', `uninstall() destroys every tenant; pass { confirm: "${this.core.namespace}" } to proceed.`);
    }
    await this.jobs.stop();
    await stopHealer(this.core);
    await this.core.schemaPool.stop();
    await this.core.rolePool.stop();
    await this.unlisten?.().catch(() => undefined);
    this.unlisten = undefined;
    await this.core.pools.end();
    await uninstall(this.core);
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.jobs.stop();
    await stopHealer(this.core);
    await this.core.schemaPool.stop();
    await this.core.rolePool.stop();
    this.quotas.stop();
    await this.keys.stop();
    await this.rateLimiter.close();
    await this.crypto.close();
    await this.cacheService.close();
    this.objectService.close();
    await this.unlisten?.().catch(() => undefined);
    await this.core.pools.end();
    await Promise.all([this.core.sharedAdmin.end({ timeout: 5 }), this.core.admin.end({ timeout: 5 })]);
    await this.probe?.end({ timeout: 1 }).catch(() => undefined);
    await this.embedded?.stop();
  }

  private assertOpen(): void {
    if (this.closed) throw new TenantryError('CLOSED', 'This Tenantry instance has been closed; open a new one.');
  }
}

/** The KMS the options name: Vault transit, the local master key, or none (encryption then refuses). */
function kmsOf(core: Core): Kms | undefined {
  const k = core.opts.kms;
  if (k.kind === 'vault') return new VaultTransitKms(k.vault);
  if (k.kind === 'local') return new LocalKms(k.masterKey, k.previous);
  return undefined;
}

/** The embedded server keeps the catalog in its own database rather than in `postgres`. */
async function ensureEmbeddedCatalog(serverUrl: string): Promise<string> {
  const sql = connect(serverUrl, { max: 1 });
  try {
    if (!(await databaseExists(sql, EMBEDDED_CATALOG_DB))) {
      await sql.unsafe(`create database ${EMBEDDED_CATALOG_DB}`).catch((err: { code?: string }) => {
        if (err.code !== '42P04') throw err; // created by a concurrent start
      });
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  const u = new URL(serverUrl);
  u.pathname = `/${EMBEDDED_CATALOG_DB}`;
  return u.toString();
}

/** Tenantry needs CREATEDB and CREATEROLE (or superuser); say so up front rather than half-way. */
async function assertPrivileges(sql: Sql): Promise<void> {
  const [r] = await sql<{ super: boolean; createdb: boolean; createrole: boolean; user: string }[]>`
    select rolsuper as super, rolcreatedb as createdb, rolcreaterole as createrole, rolname as user
    from pg_roles where rolname = current_user`;
  if (!r || (!r.super && (!r.createdb || !r.createrole))) {
    throw new TenantryError('INSUFFICIENT_PRIVILEGE', `The database user ${r?.user ?? '?'} needs CREATEDB and CREATEROLE (ALTER ROLE ${r?.user ?? 'you'} CREATEDB CREATEROLE), as on managed PostgreSQL services.`);
  }
}
