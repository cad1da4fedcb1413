import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TenantryError } from './errors.js';
import type { Logger } from './logger.js';

/** Where the package itself lives, so built-in SQL files are found from src/ (tsx) and dist/ (built) alike. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The installed package's version (its package.json). */
export const PACKAGE_VERSION: string = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const CATALOG_MIGRATIONS_DIR = path.join(PACKAGE_ROOT, 'migrations', 'catalog');
export const EXAMPLE_TENANT_MIGRATIONS_DIR = path.join(PACKAGE_ROOT, 'migrations', 'tenant-example');

export type ProvisionStep =
  | 'catalog-row'
  | 'role'
  | 'placement'
  | 'migrations'
  | 'activate';

export interface TenantryOptions {
  /** PostgreSQL URL of the catalog database. Default: env DATABASE_URL; when unset, an embedded PostgreSQL is started. */
  databaseUrl?: string;
  /**
   * PostgreSQL URL that reaches the server itself, not through a pooler (same user and catalog database
   * as databaseUrl): used for the catalog, DDL, template clones, LISTEN and advisory locks, which need a
   * session. Default: env TENANTRY_DIRECT_URL; unset: databaseUrl. Required with pooler `transaction`.
   */
  directUrl?: string;
  /**
   * `transaction` when databaseUrl points at a transaction-mode pooler such as PgBouncer: tenant
   * transactions go through it with no startup parameters beyond application_name (session settings are
   * pinned per transaction instead) and unnamed statements only. Default: env TENANTRY_POOLER; unset: `transaction` when directUrl is set and differs
   * from databaseUrl, else `none`.
   */
  pooler?: 'none' | 'transaction';
  /** Folder for the embedded server's data. Default: env TENANTRY_DATA_DIR or `./.tenantry`. */
  dataDir?: string;
  /** Port of the embedded server. Default: env TENANTRY_EMBEDDED_PORT or 54329 (a free port is picked if taken). */
  embeddedPort?: number;
  /**
   * Prefix of the cluster-wide names Tenantry creates (roles, databases): `<ns>_owner`, `<ns>_runtime`,
   * `<ns>_shared`, `<ns>_t_<tenant hex>`. Lets several installations share one server.
   * Default: env TENANTRY_NAMESPACE or `tenantry`. 1-20 chars of [a-z0-9_], starting with a letter.
   */
  namespace?: string;
  /** Folder of numbered `.sql` tenant migrations. Default: env TENANTRY_TENANT_MIGRATIONS or the built-in agent-platform example. */
  tenantMigrations?: string;
  /** Folder where tenant backups are kept (the local backup store). Default: env TENANTRY_BACKUP_DIR or `<dataDir>/backups`. */
  backupDir?: string;
  /**
   * Keep backups in an S3-compatible bucket instead of backupDir. Default: env TENANTRY_BACKUP_S3_BUCKET,
   * TENANTRY_BACKUP_S3_PREFIX, TENANTRY_BACKUP_S3_ENDPOINT, TENANTRY_BACKUP_S3_REGION; credentials from
   * the AWS SDK's own chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles).
   */
  backupS3?: { bucket: string; prefix?: string; endpoint?: string; region?: string };
  /** Upper bound on runtime connections held open across all tenant pools. Default: env TENANTRY_MAX_CONNECTIONS or 40. */
  maxConnections?: number;
  /** Connections per database pool (shared database, each tenant database). Default 5, capped by maxConnections. */
  poolSize?: number;
  /** Seconds after which an idle tenant connection is closed. Default 30. */
  idleTimeoutSeconds?: number;
  /**
   * Milliseconds a tenant transaction waits for a connection when the budget (maxConnections) is all
   * leased, before failing with CONNECTION_BUDGET_EXHAUSTED. Default: env TENANTRY_POOL_WAIT_MS or 30000.
   */
  poolWaitMs?: number;
  /** CONNECTION LIMIT of each tenant's own login role. Default 10. */
  tenantConnectionLimit?: number;
  /** Milliseconds a cached tenant lookup may be used (changes are also pushed by LISTEN/NOTIFY). Default 5000. */
  tenantCacheTtlMs?: number;
  /**
   * Seconds after which a tenant still in `provisioning` counts as abandoned (its process renews the row
   * every few seconds while it works): the background sweep and `repair()` then remove it. Default 60.
   */
  repairAfterSeconds?: number;
  /**
   * Operator token of the HTTP API, at least 32 characters. Default: env TENANTRY_ADMIN_KEY; when unset
   * one is generated on first start and only its hash kept.
   */
  adminKey?: string;
  /** Failed authentications allowed per minute (and in a burst) from one client address. Default: env TENANTRY_AUTH_FAILURES_PER_ADDRESS or 30. */
  authFailuresPerAddress?: number;
  /** Failed authentications allowed per minute (and in a burst) for one API key id. Default: env TENANTRY_AUTH_FAILURES_PER_KEY or 10. */
  authFailuresPerKey?: number;
  /** Pepper for API key hashes (HMAC-SHA-256); unset: plain SHA-256. Default: env TENANTRY_KEY_PEPPER. Changing it invalidates every key. */
  keyPepper?: string;
  /** Redis for the rate limiter. Default: env REDIS_URL; unset: the PostgreSQL store. */
  redisUrl?: string;
  /**
   * Key-encryption key of tenantry.crypto (envelope encryption per tenant): 32 random bytes as base64 or
   * hex. Default: env TENANTRY_MASTER_KEY; unset (and no Vault): encrypt/decrypt refuse with
   * ENCRYPTION_NOT_CONFIGURED. Hard delete shreds tenants' wrapped keys either way.
   */
  masterKey?: string;
  /** Older master keys that still unwrap until `tenantry keys rotate-master` has re-wrapped every data key. Default: env TENANTRY_MASTER_KEY_PREVIOUS (comma-separated). */
  previousMasterKeys?: string[];
  /** `local` (masterKey) or `vault` (Vault transit). Default: env TENANTRY_KMS; unset: vault when vault settings are given, else local. */
  kms?: 'local' | 'vault';
  /** Vault transit as the KMS. Default: env TENANTRY_VAULT_ADDR, TENANTRY_VAULT_TOKEN, TENANTRY_VAULT_TRANSIT_KEY, TENANTRY_VAULT_TRANSIT_MOUNT (transit), TENANTRY_VAULT_NAMESPACE. */
  vault?: { address: string; token: string; key: string; mount?: string; namespace?: string; timeoutMs?: number };
  /** Milliseconds an unwrapped data key stays in memory (0: never cached). Default: env TENANTRY_DATA_KEY_CACHE_TTL_MS or 60000. */
  dataKeyCacheTtlMs?: number;
  /** Unwrapped data keys kept in memory at most (oldest evicted and zeroed). Default: env TENANTRY_DATA_KEY_CACHE_MAX or 1000. */
  dataKeyCacheMax?: number;
  /**
   * tenantry.cache(tenant) connects as a Redis ACL user of that tenant (`t-<id>`, keys `t:<id>:*` only),
   * created on first use; needs a REDIS_URL user allowed ACL SETUSER. Default: env TENANTRY_CACHE_ACL_USERS=true, else false.
   */
  cacheAclUsers?: boolean;
  /**
   * Tenant-scoped object storage (tenantry.objects(tenant)) in an S3-compatible bucket, keys under
   * `<prefix>/tenants/<id>/`. Default: env TENANTRY_OBJECT_STORE_BUCKET, TENANTRY_OBJECT_STORE_PREFIX,
   * TENANTRY_OBJECT_STORE_ENDPOINT, TENANTRY_OBJECT_STORE_REGION; credentials from the AWS SDK's chain.
   */
  objectStore?: { bucket: string; prefix?: string; endpoint?: string; region?: string };
  /** Largest object one put takes, bytes. Default: env TENANTRY_OBJECT_MAX_BYTES or 104857600 (100 MiB). */
  objectMaxBytes?: number;
  /** Seconds between storage measurements of every tenant; 0 turns the schedule off. Default 3600. */
  storageRefreshSeconds?: number;
  /** Statement timeout of the tenant SQL endpoint, ms. Default: env TENANTRY_SQL_TIMEOUT_MS or 5000. */
  sqlTimeoutMs?: number;
  /** Row cap of the tenant SQL endpoint. Default: env TENANTRY_SQL_MAX_ROWS or 1000. */
  sqlMaxRows?: number;
  /** Cap on the bytes of one SQL endpoint result, counted as rows arrive (a bigger one is refused with SQL_RESULT_TOO_LARGE before it is buffered). Default: env TENANTRY_SQL_MAX_RESULT_BYTES or 16 MiB. */
  sqlMaxResultBytes?: number;
  /** lock_timeout of tenant-role sessions (the SQL endpoint), ms: a statement waits no longer for a lock. Default: env TENANTRY_SQL_LOCK_TIMEOUT_MS or 1000. */
  sqlLockTimeoutMs?: number;
  /** work_mem of tenant-role sessions, kB, pinned per transaction (hash_mem_multiplier too). Default: env TENANTRY_SQL_WORK_MEM_KB or 4096. */
  sqlWorkMemKb?: number;
  /** temp_file_limit set on each tenant role, kB, where the installing user may (superuser, or GRANT SET ON PARAMETER temp_file_limit). Default: env TENANTRY_SQL_TEMP_FILE_LIMIT_KB or 262144. */
  sqlTempFileLimitKb?: number;
  /** Pre-created schemas kept ready for schema-mode signups (0: none). Default: env TENANTRY_SCHEMA_POOL_SIZE or 4. */
  schemaPoolSize?: number;
  /** Login roles made in advance for pooled signups, so a signup runs no role DDL (0: none). Default: env TENANTRY_ROLE_POOL_SIZE or 8. */
  rolePoolSize?: number;
  /**
   * The app's plan file (tenantry.plans.json): its metrics, tiers and features. Opening compares it
   * with the catalog and reports a difference; `tenantry plans apply` applies it. Default: env
   * TENANTRY_PLANS; unset: the plans in the catalog (the built-in agent platform until one is applied).
   */
  plans?: string;
  /**
   * Where every scheduled decision takes the time from (trials ending, purge grace, retention cutoffs,
   * webhook backoff): tests move it instead of waiting. Default: the system clock.
   */
  clock?: () => Date;
  /** Jobs one process runs at once (the job runner of `serve` and `worker`). Default: env TENANTRY_JOB_CONCURRENCY or 4. */
  jobConcurrency?: number;
  /** Milliseconds between a job-running process's ticks (heartbeat, schedule, releasing a dead process's jobs). Default: env TENANTRY_JOB_TICK_MS or 5000. */
  jobTickMs?: number;
  /** Seconds without a heartbeat after which a process's locked jobs are released for retry. Default: env TENANTRY_JOB_DEAD_AFTER_SECONDS or 30. */
  jobDeadAfterSeconds?: number;
  /** Period in seconds of each scheduled task, overriding its default (see README). Default: env TENANTRY_SCHEDULE (`task=seconds,...`). */
  schedule?: Record<string, number>;
  /** Days before a trial ends that the `tenant.trial_ending` event is sent. Default: env TENANTRY_TRIAL_ENDING_DAYS or 3. */
  trialEndingDays?: number;
  /** Days a soft-deleted tenant is kept before it is purged (per tier: setPurgeGrace). Default: env TENANTRY_PURGE_GRACE_DAYS or 30. */
  purgeGraceDays?: number;
  /** Retention days per data class and tenant status, over the defaults (see README); null keeps forever. */
  retention?: Record<string, Partial<Record<'active' | 'suspended' | 'deleted', number | null>>>;
  /** Rows one retention batch deletes (each batch its own short transaction). Default: env TENANTRY_RETENTION_BATCH or 5000. */
  retentionBatchSize?: number;
  /** Webhook endpoints registered with a tenant key may target private, loopback and link-local addresses. Default: env TENANTRY_WEBHOOK_ALLOW_PRIVATE=true, else false. */
  webhookAllowPrivate?: boolean;
  /** Milliseconds one webhook delivery may take. Default: env TENANTRY_WEBHOOK_TIMEOUT_MS or 10000. */
  webhookTimeoutMs?: number;
  /** First retry delay of a failed webhook delivery, ms; doubled each attempt (capped at 6 h). Default: env TENANTRY_WEBHOOK_RETRY_BASE_MS or 10000. */
  webhookRetryBaseMs?: number;
  /** Seconds a delivery is retried before it is marked failed. Default: env TENANTRY_WEBHOOK_RETRY_FOR_SECONDS or 86400 (a day). */
  webhookRetryForSeconds?: number;
  /**
   * DNS servers that verify custom domains (TXT records, and the address of the HTTP check), as
   * `host` or `host:port`. Default: env TENANTRY_DNS_SERVERS (comma-separated); unset: the system's.
   */
  dnsServers?: string[];
  /** Milliseconds one domain check (DNS or HTTP) may take. Default: env TENANTRY_DOMAIN_VERIFY_TIMEOUT_MS or 5000. */
  domainVerifyTimeoutMs?: number;
  /** Port of the HTTP domain check (`http://<domain>:<port>/.well-known/tenantry-challenge/<token>`). For tests only. Default: env TENANTRY_DOMAIN_VERIFY_HTTP_PORT or 80. */
  domainVerifyHttpPort?: number;
  /** The HTTP domain check may connect to private, loopback and link-local addresses. For tests only. Default: env TENANTRY_DOMAIN_VERIFY_ALLOW_PRIVATE=true, else false. */
  domainVerifyAllowPrivate?: boolean;
  /** Domains (verified or not) one tenant may hold. Default: env TENANTRY_MAX_DOMAINS_PER_TENANT or 20. */
  maxDomainsPerTenant?: number;
  /** Stripe secret API key. Default: env STRIPE_API_KEY; unset: billing records are made but not pushed. */
  stripeApiKey?: string;
  /** Stripe API base URL (protocol, host, port), for a stand-in in tests. Default: env STRIPE_API_BASE or https://api.stripe.com. */
  stripeApiBase?: string;
  /** Signing secret of Stripe's webhooks (whsec_...). Default: env STRIPE_WEBHOOK_SECRET; unset: the webhook route answers 503. */
  stripeWebhookSecret?: string;
  /** Seconds after a failed payment before the tenant is suspended (payment_overdue). Default: env TENANTRY_BILLING_GRACE_SECONDS or 604800 (7 days). */
  billingGraceSeconds?: number;
  /** pino-compatible logger. Default: silent. */
  logger?: Logger;
  /** Actor recorded in the audit log when a call names none. Default `system`. */
  actor?: string;
  /** Called before each provisioning step; throwing aborts and rolls back provisioning (for fault-injection tests). */
  onProvisionStep?: (step: ProvisionStep, tenant: { id: string; isolation: string }) => void | Promise<void>;
}

export interface ResolvedOptions {
  databaseUrl: string | undefined;
  directUrl: string | undefined;
  pooler: 'none' | 'transaction';
  dataDir: string;
  embeddedPort: number;
  namespace: string;
  tenantMigrations: string;
  backupDir: string;
  backupS3: { bucket: string; prefix?: string; endpoint?: string; region?: string } | undefined;
  maxConnections: number;
  poolSize: number;
  idleTimeoutSeconds: number;
  poolWaitMs: number;
  tenantConnectionLimit: number;
  tenantCacheTtlMs: number;
  repairAfterSeconds: number;
  actor: string;
  adminKey: string | undefined;
  authFailuresPerAddress: number;
  authFailuresPerKey: number;
  keyPepper: string | undefined;
  redisUrl: string | undefined;
  /** the KMS of tenantry.crypto (its key material is not enumerable: never logged with the options) */
  kms: KmsSettings;
  dataKeyCacheTtlMs: number;
  dataKeyCacheMax: number;
  cacheAclUsers: boolean;
  objectStore: { bucket: string; prefix: string; endpoint?: string; region?: string } | undefined;
  objectMaxBytes: number;
  storageRefreshSeconds: number;
  sqlTimeoutMs: number;
  sqlMaxRows: number;
  sqlMaxResultBytes: number;
  sqlLockTimeoutMs: number;
  sqlWorkMemKb: number;
  sqlTempFileLimitKb: number;
  schemaPoolSize: number;
  rolePoolSize: number;
  plans: string | undefined;
  onProvisionStep: TenantryOptions['onProvisionStep'];
  clock: () => Date;
  jobConcurrency: number;
  jobTickMs: number;
  jobDeadAfterSeconds: number;
  schedule: Record<string, number>;
  trialEndingDays: number;
  purgeGraceDays: number;
  retention: Record<string, Partial<Record<'active' | 'suspended' | 'deleted', number | null>>>;
  retentionBatchSize: number;
  webhookAllowPrivate: boolean;
  webhookTimeoutMs: number;
  webhookRetryBaseMs: number;
  webhookRetryForSeconds: number;
  dnsServers: string[];
  domainVerifyTimeoutMs: number;
  domainVerifyHttpPort: number;
  domainVerifyAllowPrivate: boolean;
  maxDomainsPerTenant: number;
  stripeApiKey: string | undefined;
  stripeApiBase: URL;
  stripeWebhookSecret: string | undefined;
  billingGraceSeconds: number;
}

export interface ServerOptions {
  /** env PORT, default 8080 */
  port: number;
  /** env TENANTRY_BASE_DOMAIN: tenant routes resolve {slug}.{baseDomain} hosts; unset, subdomains are ignored */
  baseDomain: string | undefined;
  /** env TENANTRY_METRICS_TENANT_LABELS=true: tenant ids as metric labels (unbounded; off by default) */
  tenantLabels: boolean;
  /** env HOST, default 127.0.0.1 */
  host: string;
  /** env LOG_LEVEL, default info */
  logLevel: string;
  /** env TENANTRY_REQUEST_TIMEOUT_MS, default 30000: every request is answered by then (503 REQUEST_TIMEOUT) */
  requestTimeoutMs: number;
}

/** Names a config file may set besides TENANTRY_*: the same as the environment variables. */
const CONFIG_FILE_PLAIN_KEYS = ['DATABASE_URL', 'REDIS_URL', 'PORT', 'HOST', 'LOG_LEVEL'];

/**
 * The environment with a config file beneath it: `TENANTRY_CONFIG` names the file, else
 * `./tenantry.config.json` when it exists. The file is one JSON object whose keys are the environment
 * variables' names (`{"TENANTRY_NAMESPACE": "acme", "PORT": 9000}`); a variable set in the environment
 * wins over the file. A file that cannot be used is refused with INVALID_CONFIG, never half-read.
 */
export function configuredEnv(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): NodeJS.ProcessEnv {
  const named = env.TENANTRY_CONFIG;
  const file = path.resolve(cwd, named || 'tenantry.config.json');
  if (!named && !existsSync(file)) return env;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TenantryError('INVALID_CONFIG', `The config file ${file} could not be read as JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new TenantryError('INVALID_CONFIG', `The config file ${file} must hold one JSON object of environment variable names, like {"TENANTRY_NAMESPACE": "acme"}.`);
  }
  const fromFile: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!(/^TENANTRY_[A-Z0-9_]+$/.test(key) && key !== 'TENANTRY_CONFIG') && !CONFIG_FILE_PLAIN_KEYS.includes(key)) {
      throw new TenantryError('INVALID_CONFIG', `The config file ${file} sets ${JSON.stringify(key)}, which is not a Tenantry setting; its keys are the environment variables' names (TENANTRY_*, ${CONFIG_FILE_PLAIN_KEYS.join(', ')}).`);
    }
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new TenantryError('INVALID_CONFIG', `The config file ${file} sets ${key} to ${JSON.stringify(value)}; values are strings, numbers or booleans.`);
    }
    fromFile[key] = String(value);
  }
  // the environment wins: a deployment overrides the checked-in file without editing it
  const out: NodeJS.ProcessEnv = { ...fromFile };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') out[k] = v;
  return out;
}

export function serverOptions(env: NodeJS.ProcessEnv = configuredEnv()): ServerOptions {
  const port = env.PORT ? intFromEnv('PORT', env.PORT) : 8080;
  if (port < 0 || port > 65535) throw new TenantryError('INVALID_CONFIG', `PORT must be 0-65535, got ${port}.`);
  const logLevel = logLevelFrom(env, 'info');
  const baseDomain = env.TENANTRY_BASE_DOMAIN?.toLowerCase().replace(/^\./, '') || undefined;
  const requestTimeoutMs = env.TENANTRY_REQUEST_TIMEOUT_MS ? intFromEnv('TENANTRY_REQUEST_TIMEOUT_MS', env.TENANTRY_REQUEST_TIMEOUT_MS) : 30_000;
  if (requestTimeoutMs < 100 || requestTimeoutMs > 3_600_000) throw new TenantryError('INVALID_CONFIG', `TENANTRY_REQUEST_TIMEOUT_MS must be 100-3600000, got ${requestTimeoutMs}.`);
  return { port, host: env.HOST ?? '127.0.0.1', logLevel, baseDomain, tenantLabels: env.TENANTRY_METRICS_TENANT_LABELS === 'true', requestTimeoutMs };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** LOG_LEVEL, checked; `fallback` when unset. */
function logLevelFrom(env: NodeJS.ProcessEnv, fallback: string): string {
  const logLevel = env.LOG_LEVEL || fallback;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new TenantryError('INVALID_CONFIG', `LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(logLevel)}.`);
  }
  return logLevel;
}

/** What the `tenantry` command reads from the environment (and the config file beneath it). */
export interface CliOptions {
  /** env LOG_LEVEL; default warn for commands (they print results, not logs), info for `tenantry worker` */
  logLevel: string;
  workerLogLevel: string;
  /** env TENANTRY_PLANS: the default plan file of `tenantry plans diff|apply|types`; else ./tenantry.plans.json */
  plansFile: string;
}

export function cliOptions(env: NodeJS.ProcessEnv = configuredEnv()): CliOptions {
  return { logLevel: logLevelFrom(env, 'warn'), workerLogLevel: logLevelFrom(env, 'info'), plansFile: env.TENANTRY_PLANS || 'tenantry.plans.json' };
}

/**
 * The environment a child process (initdb, pg_ctl, postgres) runs with: this process's own, with
 * messages in English so their output can be read. Passed through whole, not read.
 */
export function childProcessEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_MESSAGES: 'C' };
}

/** The one place environment variables (and the config file beneath them, configuredEnv) are read. */
export function envOptions(env: NodeJS.ProcessEnv = configuredEnv()): TenantryOptions {
  const out: TenantryOptions = {};
  if (env.DATABASE_URL) out.databaseUrl = env.DATABASE_URL;
  if (env.TENANTRY_DIRECT_URL) out.directUrl = env.TENANTRY_DIRECT_URL;
  if (env.TENANTRY_POOLER) out.pooler = env.TENANTRY_POOLER as TenantryOptions['pooler'];
  if (env.TENANTRY_DATA_DIR) out.dataDir = env.TENANTRY_DATA_DIR;
  if (env.TENANTRY_EMBEDDED_PORT) out.embeddedPort = intFromEnv('TENANTRY_EMBEDDED_PORT', env.TENANTRY_EMBEDDED_PORT);
  if (env.TENANTRY_NAMESPACE) out.namespace = env.TENANTRY_NAMESPACE;
  if (env.TENANTRY_TENANT_MIGRATIONS) out.tenantMigrations = env.TENANTRY_TENANT_MIGRATIONS;
  if (env.TENANTRY_BACKUP_DIR) out.backupDir = env.TENANTRY_BACKUP_DIR;
  if (env.TENANTRY_BACKUP_S3_BUCKET) {
    out.backupS3 = { bucket: env.TENANTRY_BACKUP_S3_BUCKET, prefix: env.TENANTRY_BACKUP_S3_PREFIX, endpoint: env.TENANTRY_BACKUP_S3_ENDPOINT, region: env.TENANTRY_BACKUP_S3_REGION };
  }
  if (env.TENANTRY_ADMIN_KEY) out.adminKey = env.TENANTRY_ADMIN_KEY;
  if (env.TENANTRY_AUTH_FAILURES_PER_ADDRESS) out.authFailuresPerAddress = intFromEnv('TENANTRY_AUTH_FAILURES_PER_ADDRESS', env.TENANTRY_AUTH_FAILURES_PER_ADDRESS);
  if (env.TENANTRY_AUTH_FAILURES_PER_KEY) out.authFailuresPerKey = intFromEnv('TENANTRY_AUTH_FAILURES_PER_KEY', env.TENANTRY_AUTH_FAILURES_PER_KEY);
  if (env.TENANTRY_KEY_PEPPER) out.keyPepper = env.TENANTRY_KEY_PEPPER;
  if (env.REDIS_URL) out.redisUrl = env.REDIS_URL;
  if (env.TENANTRY_MASTER_KEY) out.masterKey = env.TENANTRY_MASTER_KEY;
  if (env.TENANTRY_MASTER_KEY_PREVIOUS) out.previousMasterKeys = env.TENANTRY_MASTER_KEY_PREVIOUS.split(',').map((s) => s.trim()).filter(Boolean);
  if (env.TENANTRY_KMS) out.kms = env.TENANTRY_KMS as TenantryOptions['kms'];
  if (env.TENANTRY_VAULT_ADDR || env.TENANTRY_VAULT_TOKEN || env.TENANTRY_VAULT_TRANSIT_KEY) {
    out.vault = {
      address: env.TENANTRY_VAULT_ADDR ?? '', token: env.TENANTRY_VAULT_TOKEN ?? '', key: env.TENANTRY_VAULT_TRANSIT_KEY ?? '',
      mount: env.TENANTRY_VAULT_TRANSIT_MOUNT, namespace: env.TENANTRY_VAULT_NAMESPACE,
    };
  }
  if (env.TENANTRY_DATA_KEY_CACHE_TTL_MS) out.dataKeyCacheTtlMs = intFromEnv('TENANTRY_DATA_KEY_CACHE_TTL_MS', env.TENANTRY_DATA_KEY_CACHE_TTL_MS);
  if (env.TENANTRY_DATA_KEY_CACHE_MAX) out.dataKeyCacheMax = intFromEnv('TENANTRY_DATA_KEY_CACHE_MAX', env.TENANTRY_DATA_KEY_CACHE_MAX);
  if (env.TENANTRY_CACHE_ACL_USERS) out.cacheAclUsers = env.TENANTRY_CACHE_ACL_USERS === 'true';
  if (env.TENANTRY_OBJECT_STORE_BUCKET) {
    out.objectStore = { bucket: env.TENANTRY_OBJECT_STORE_BUCKET, prefix: env.TENANTRY_OBJECT_STORE_PREFIX, endpoint: env.TENANTRY_OBJECT_STORE_ENDPOINT, region: env.TENANTRY_OBJECT_STORE_REGION };
  }
  if (env.TENANTRY_OBJECT_MAX_BYTES) out.objectMaxBytes = intFromEnv('TENANTRY_OBJECT_MAX_BYTES', env.TENANTRY_OBJECT_MAX_BYTES);
  if (env.TENANTRY_SCHEMA_POOL_SIZE) out.schemaPoolSize = intFromEnv('TENANTRY_SCHEMA_POOL_SIZE', env.TENANTRY_SCHEMA_POOL_SIZE);
  if (env.TENANTRY_ROLE_POOL_SIZE) out.rolePoolSize = intFromEnv('TENANTRY_ROLE_POOL_SIZE', env.TENANTRY_ROLE_POOL_SIZE);
  if (env.TENANTRY_SQL_TIMEOUT_MS) out.sqlTimeoutMs = intFromEnv('TENANTRY_SQL_TIMEOUT_MS', env.TENANTRY_SQL_TIMEOUT_MS);
  if (env.TENANTRY_SQL_MAX_ROWS) out.sqlMaxRows = intFromEnv('TENANTRY_SQL_MAX_ROWS', env.TENANTRY_SQL_MAX_ROWS);
  if (env.TENANTRY_SQL_MAX_RESULT_BYTES) out.sqlMaxResultBytes = intFromEnv('TENANTRY_SQL_MAX_RESULT_BYTES', env.TENANTRY_SQL_MAX_RESULT_BYTES);
  if (env.TENANTRY_SQL_LOCK_TIMEOUT_MS) out.sqlLockTimeoutMs = intFromEnv('TENANTRY_SQL_LOCK_TIMEOUT_MS', env.TENANTRY_SQL_LOCK_TIMEOUT_MS);
  if (env.TENANTRY_SQL_WORK_MEM_KB) out.sqlWorkMemKb = intFromEnv('TENANTRY_SQL_WORK_MEM_KB', env.TENANTRY_SQL_WORK_MEM_KB);
  if (env.TENANTRY_SQL_TEMP_FILE_LIMIT_KB) out.sqlTempFileLimitKb = intFromEnv('TENANTRY_SQL_TEMP_FILE_LIMIT_KB', env.TENANTRY_SQL_TEMP_FILE_LIMIT_KB);
  if (env.TENANTRY_PLANS) out.plans = env.TENANTRY_PLANS;
  if (env.TENANTRY_MAX_CONNECTIONS) out.maxConnections = intFromEnv('TENANTRY_MAX_CONNECTIONS', env.TENANTRY_MAX_CONNECTIONS);
  if (env.TENANTRY_POOL_WAIT_MS) out.poolWaitMs = intFromEnv('TENANTRY_POOL_WAIT_MS', env.TENANTRY_POOL_WAIT_MS);
  if (env.TENANTRY_JOB_CONCURRENCY) out.jobConcurrency = intFromEnv('TENANTRY_JOB_CONCURRENCY', env.TENANTRY_JOB_CONCURRENCY);
  if (env.TENANTRY_JOB_TICK_MS) out.jobTickMs = intFromEnv('TENANTRY_JOB_TICK_MS', env.TENANTRY_JOB_TICK_MS);
  if (env.TENANTRY_JOB_DEAD_AFTER_SECONDS) out.jobDeadAfterSeconds = intFromEnv('TENANTRY_JOB_DEAD_AFTER_SECONDS', env.TENANTRY_JOB_DEAD_AFTER_SECONDS);
  if (env.TENANTRY_SCHEDULE) out.schedule = scheduleFromEnv(env.TENANTRY_SCHEDULE);
  if (env.TENANTRY_TRIAL_ENDING_DAYS) out.trialEndingDays = intFromEnv('TENANTRY_TRIAL_ENDING_DAYS', env.TENANTRY_TRIAL_ENDING_DAYS);
  if (env.TENANTRY_PURGE_GRACE_DAYS) out.purgeGraceDays = intFromEnv('TENANTRY_PURGE_GRACE_DAYS', env.TENANTRY_PURGE_GRACE_DAYS);
  if (env.TENANTRY_RETENTION_BATCH) out.retentionBatchSize = intFromEnv('TENANTRY_RETENTION_BATCH', env.TENANTRY_RETENTION_BATCH);
  if (env.TENANTRY_WEBHOOK_ALLOW_PRIVATE) out.webhookAllowPrivate = env.TENANTRY_WEBHOOK_ALLOW_PRIVATE === 'true';
  if (env.TENANTRY_WEBHOOK_TIMEOUT_MS) out.webhookTimeoutMs = intFromEnv('TENANTRY_WEBHOOK_TIMEOUT_MS', env.TENANTRY_WEBHOOK_TIMEOUT_MS);
  if (env.TENANTRY_WEBHOOK_RETRY_BASE_MS) out.webhookRetryBaseMs = intFromEnv('TENANTRY_WEBHOOK_RETRY_BASE_MS', env.TENANTRY_WEBHOOK_RETRY_BASE_MS);
  if (env.TENANTRY_WEBHOOK_RETRY_FOR_SECONDS) out.webhookRetryForSeconds = intFromEnv('TENANTRY_WEBHOOK_RETRY_FOR_SECONDS', env.TENANTRY_WEBHOOK_RETRY_FOR_SECONDS);
  if (env.TENANTRY_DNS_SERVERS) out.dnsServers = env.TENANTRY_DNS_SERVERS.split(',').map((s) => s.trim()).filter(Boolean);
  if (env.TENANTRY_DOMAIN_VERIFY_TIMEOUT_MS) out.domainVerifyTimeoutMs = intFromEnv('TENANTRY_DOMAIN_VERIFY_TIMEOUT_MS', env.TENANTRY_DOMAIN_VERIFY_TIMEOUT_MS);
  if (env.TENANTRY_DOMAIN_VERIFY_HTTP_PORT) out.domainVerifyHttpPort = intFromEnv('TENANTRY_DOMAIN_VERIFY_HTTP_PORT', env.TENANTRY_DOMAIN_VERIFY_HTTP_PORT);
  if (env.TENANTRY_DOMAIN_VERIFY_ALLOW_PRIVATE) out.domainVerifyAllowPrivate = env.TENANTRY_DOMAIN_VERIFY_ALLOW_PRIVATE === 'true';
  if (env.TENANTRY_MAX_DOMAINS_PER_TENANT) out.maxDomainsPerTenant = intFromEnv('TENANTRY_MAX_DOMAINS_PER_TENANT', env.TENANTRY_MAX_DOMAINS_PER_TENANT);
  if (env.STRIPE_API_KEY) out.stripeApiKey = env.STRIPE_API_KEY;
  if (env.STRIPE_API_BASE) out.stripeApiBase = env.STRIPE_API_BASE;
  if (env.STRIPE_WEBHOOK_SECRET) out.stripeWebhookSecret = env.STRIPE_WEBHOOK_SECRET;
  if (env.TENANTRY_BILLING_GRACE_SECONDS) out.billingGraceSeconds = intFromEnv('TENANTRY_BILLING_GRACE_SECONDS', env.TENANTRY_BILLING_GRACE_SECONDS);
  if (env.TENANTRY_REPAIR_AFTER_SECONDS) out.repairAfterSeconds = intFromEnv('TENANTRY_REPAIR_AFTER_SECONDS', env.TENANTRY_REPAIR_AFTER_SECONDS);
  return out;
}

/** The shortest operator token accepted (TENANTRY_ADMIN_KEY). */
export const MIN_ADMIN_KEY_LENGTH = 32;

/** `storage.refresh=3600,retention.purge=86400`: a period in seconds per scheduled task. */
function scheduleFromEnv(value: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of value.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z][a-z._]*)=(\d+)$/.exec(part);
    if (!m) throw new TenantryError('INVALID_CONFIG', `TENANTRY_SCHEDULE is task=seconds pairs separated by commas, got ${JSON.stringify(part)}.`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

function intFromEnv(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new TenantryError('INVALID_CONFIG', `${name} must be an integer, got ${JSON.stringify(value)}.`);
  return n;
}

function positiveInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TenantryError('INVALID_CONFIG', `${name} must be an integer from ${min} to ${max}, got ${String(value)}.`);
  }
  return value;
}

export function resolveOptions(options: TenantryOptions): ResolvedOptions {
  const merged: TenantryOptions = { ...envOptions(), ...stripUndefined(options) };
  const namespace = merged.namespace ?? 'tenantry';
  if (!/^[a-z][a-z0-9_]{0,19}$/.test(namespace)) {
    throw new TenantryError('INVALID_CONFIG', `namespace (TENANTRY_NAMESPACE) must be 1-20 chars of [a-z0-9_] starting with a letter, got ${JSON.stringify(namespace)}.`);
  }
  const maxConnections = positiveInt('maxConnections (TENANTRY_MAX_CONNECTIONS)', merged.maxConnections ?? 40, 2, 10_000);
  // a short operator token can be guessed; the generated one has 192 random bits
  if (merged.adminKey !== undefined && (typeof merged.adminKey !== 'string' || merged.adminKey.length < MIN_ADMIN_KEY_LENGTH)) {
    throw new TenantryError('INVALID_CONFIG', `The operator token (TENANTRY_ADMIN_KEY, adminKey) must be at least ${MIN_ADMIN_KEY_LENGTH} characters; got ${typeof merged.adminKey === 'string' ? merged.adminKey.length : 'no string'}. Use a random one (e.g. \`openssl rand -base64 32\`), or unset it to have one generated.`);
  }
  const pooler = merged.pooler ?? (merged.directUrl && merged.directUrl !== merged.databaseUrl ? 'transaction' : 'none');
  if (pooler !== 'none' && pooler !== 'transaction') {
    throw new TenantryError('INVALID_CONFIG', `pooler (TENANTRY_POOLER) must be none or transaction, got ${JSON.stringify(pooler)}.`);
  }
  if (pooler === 'transaction' && !merged.directUrl) {
    throw new TenantryError('INVALID_CONFIG', 'Behind a transaction pooler (TENANTRY_POOLER=transaction) Tenantry needs TENANTRY_DIRECT_URL too: the catalog, DDL, template clones, LISTEN and advisory locks need a session of their own.');
  }
  if (merged.directUrl !== undefined && !merged.databaseUrl) {
    throw new TenantryError('INVALID_CONFIG', 'directUrl (TENANTRY_DIRECT_URL) needs databaseUrl (DATABASE_URL) too: the embedded server has no pooler in front of it.');
  }
  return {
    databaseUrl: merged.databaseUrl,
    directUrl: merged.directUrl,
    pooler,
    dataDir: path.resolve(merged.dataDir ?? '.tenantry'),
    embeddedPort: positiveInt('embeddedPort (TENANTRY_EMBEDDED_PORT)', merged.embeddedPort ?? 54329, 1, 65535),
    namespace,
    tenantMigrations: path.resolve(merged.tenantMigrations ?? EXAMPLE_TENANT_MIGRATIONS_DIR),
    backupDir: path.resolve(merged.backupDir ?? path.join(merged.dataDir ?? '.tenantry', 'backups')),
    backupS3: merged.backupS3,
    maxConnections,
    poolSize: Math.min(positiveInt('poolSize', merged.poolSize ?? 5, 1, 1000), maxConnections),
    idleTimeoutSeconds: positiveInt('idleTimeoutSeconds', merged.idleTimeoutSeconds ?? 30, 1, 86_400),
    poolWaitMs: positiveInt('poolWaitMs (TENANTRY_POOL_WAIT_MS)', merged.poolWaitMs ?? 30_000, 1, 600_000),
    tenantConnectionLimit: positiveInt('tenantConnectionLimit', merged.tenantConnectionLimit ?? 10, 1, 10_000),
    tenantCacheTtlMs: positiveInt('tenantCacheTtlMs', merged.tenantCacheTtlMs ?? 5000, 0, 86_400_000),
    repairAfterSeconds: positiveInt('repairAfterSeconds', merged.repairAfterSeconds ?? 60, 0, 86_400 * 30),
    actor: merged.actor ?? 'system',
    adminKey: merged.adminKey,
    authFailuresPerAddress: positiveInt('authFailuresPerAddress (TENANTRY_AUTH_FAILURES_PER_ADDRESS)', merged.authFailuresPerAddress ?? 30, 1, 1_000_000),
    authFailuresPerKey: positiveInt('authFailuresPerKey (TENANTRY_AUTH_FAILURES_PER_KEY)', merged.authFailuresPerKey ?? 10, 1, 1_000_000),
    keyPepper: merged.keyPepper,
    redisUrl: merged.redisUrl,
    kms: kmsSettings(merged),
    dataKeyCacheTtlMs: positiveInt('dataKeyCacheTtlMs (TENANTRY_DATA_KEY_CACHE_TTL_MS)', merged.dataKeyCacheTtlMs ?? 60_000, 0, 3_600_000),
    dataKeyCacheMax: positiveInt('dataKeyCacheMax (TENANTRY_DATA_KEY_CACHE_MAX)', merged.dataKeyCacheMax ?? 1000, 0, 1_000_000),
    cacheAclUsers: merged.cacheAclUsers === true,
    objectStore: objectStoreOption(merged.objectStore),
    objectMaxBytes: positiveInt('objectMaxBytes (TENANTRY_OBJECT_MAX_BYTES)', merged.objectMaxBytes ?? 104_857_600, 1, 5 * 1024 ** 3),
    schemaPoolSize: positiveInt('schemaPoolSize (TENANTRY_SCHEMA_POOL_SIZE)', merged.schemaPoolSize ?? 4, 0, 1000),
    rolePoolSize: positiveInt('rolePoolSize (TENANTRY_ROLE_POOL_SIZE)', merged.rolePoolSize ?? 8, 0, 1000),
    sqlTimeoutMs: positiveInt('sqlTimeoutMs (TENANTRY_SQL_TIMEOUT_MS)', merged.sqlTimeoutMs ?? 5000, 1, 3_600_000),
    sqlMaxRows: positiveInt('sqlMaxRows (TENANTRY_SQL_MAX_ROWS)', merged.sqlMaxRows ?? 1000, 1, 1_000_000),
    sqlMaxResultBytes: positiveInt('sqlMaxResultBytes (TENANTRY_SQL_MAX_RESULT_BYTES)', merged.sqlMaxResultBytes ?? 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    sqlLockTimeoutMs: positiveInt('sqlLockTimeoutMs (TENANTRY_SQL_LOCK_TIMEOUT_MS)', merged.sqlLockTimeoutMs ?? 1000, 1, 3_600_000),
    sqlWorkMemKb: positiveInt('sqlWorkMemKb (TENANTRY_SQL_WORK_MEM_KB)', merged.sqlWorkMemKb ?? 4096, 64, 2_097_151),
    sqlTempFileLimitKb: positiveInt('sqlTempFileLimitKb (TENANTRY_SQL_TEMP_FILE_LIMIT_KB)', merged.sqlTempFileLimitKb ?? 262_144, 1, 2_147_483_647),
    storageRefreshSeconds: positiveInt('storageRefreshSeconds', merged.storageRefreshSeconds ?? 3600, 0, 86_400 * 7),
    plans: merged.plans === undefined ? undefined : path.resolve(merged.plans),
    onProvisionStep: merged.onProvisionStep,
    clock: typeof merged.clock === 'function' ? merged.clock : () => new Date(),
    jobConcurrency: positiveInt('jobConcurrency (TENANTRY_JOB_CONCURRENCY)', merged.jobConcurrency ?? 4, 1, 100),
    jobTickMs: positiveInt('jobTickMs', merged.jobTickMs ?? 5000, 50, 600_000),
    jobDeadAfterSeconds: positiveInt('jobDeadAfterSeconds (TENANTRY_JOB_DEAD_AFTER_SECONDS)', merged.jobDeadAfterSeconds ?? 30, 1, 86_400),
    schedule: Object.fromEntries(Object.entries(merged.schedule ?? {}).map(([k, v]) => [k, positiveInt(`schedule.${k} (TENANTRY_SCHEDULE)`, v, 1, 86_400 * 31)])),
    trialEndingDays: positiveInt('trialEndingDays (TENANTRY_TRIAL_ENDING_DAYS)', merged.trialEndingDays ?? 3, 0, 365),
    purgeGraceDays: positiveInt('purgeGraceDays (TENANTRY_PURGE_GRACE_DAYS)', merged.purgeGraceDays ?? 30, 0, 3650),
    retention: merged.retention ?? {},
    retentionBatchSize: positiveInt('retentionBatchSize (TENANTRY_RETENTION_BATCH)', merged.retentionBatchSize ?? 5000, 1, 1_000_000),
    webhookAllowPrivate: merged.webhookAllowPrivate === true,
    webhookTimeoutMs: positiveInt('webhookTimeoutMs (TENANTRY_WEBHOOK_TIMEOUT_MS)', merged.webhookTimeoutMs ?? 10_000, 50, 120_000),
    webhookRetryBaseMs: positiveInt('webhookRetryBaseMs (TENANTRY_WEBHOOK_RETRY_BASE_MS)', merged.webhookRetryBaseMs ?? 10_000, 1, 3_600_000),
    webhookRetryForSeconds: positiveInt('webhookRetryForSeconds (TENANTRY_WEBHOOK_RETRY_FOR_SECONDS)', merged.webhookRetryForSeconds ?? 86_400, 0, 86_400 * 7),
    dnsServers: dnsServersOption(merged.dnsServers),
    domainVerifyTimeoutMs: positiveInt('domainVerifyTimeoutMs (TENANTRY_DOMAIN_VERIFY_TIMEOUT_MS)', merged.domainVerifyTimeoutMs ?? 5000, 50, 60_000),
    domainVerifyHttpPort: positiveInt('domainVerifyHttpPort (TENANTRY_DOMAIN_VERIFY_HTTP_PORT)', merged.domainVerifyHttpPort ?? 80, 1, 65535),
    domainVerifyAllowPrivate: merged.domainVerifyAllowPrivate === true,
    maxDomainsPerTenant: positiveInt('maxDomainsPerTenant (TENANTRY_MAX_DOMAINS_PER_TENANT)', merged.maxDomainsPerTenant ?? 20, 0, 10_000),
    stripeApiKey: secretOption('stripeApiKey (STRIPE_API_KEY)', merged.stripeApiKey),
    stripeApiBase: stripeBaseOption(merged.stripeApiBase),
    stripeWebhookSecret: secretOption('stripeWebhookSecret (STRIPE_WEBHOOK_SECRET)', merged.stripeWebhookSecret),
    billingGraceSeconds: positiveInt('billingGraceSeconds (TENANTRY_BILLING_GRACE_SECONDS)', merged.billingGraceSeconds ?? 604_800, 0, 86_400 * 365),
  };
}

/** `host` or `host:port` (IPv6 as `[addr]:port`), as dns.Resolver#setServers takes them. */
function dnsServersOption(v: unknown): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 16) throw new TenantryError('INVALID_CONFIG', 'dnsServers (TENANTRY_DNS_SERVERS) is a list of at most 16 host or host:port entries.');
  return v.map((s) => {
    if (typeof s !== 'string' || !/^(?:\[[0-9a-fA-F:.]{2,45}\](?::\d{1,5})?|[0-9a-fA-F:]{2,45}|[0-9.]{7,15}(?::\d{1,5})?)$/.test(s)) {
      throw new TenantryError('INVALID_CONFIG', `dnsServers (TENANTRY_DNS_SERVERS) entries are IP addresses with an optional port (1.1.1.1, 127.0.0.1:5353, [::1]:53); got ${JSON.stringify(s)}.`);
    }
    return s;
  });
}

function secretOption(name: string, v: unknown): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (typeof v !== 'string' || v.length > 500 || !/^[\x21-\x7e]+$/.test(v)) throw new TenantryError('INVALID_CONFIG', `${name} must be printable ASCII of at most 500 characters.`);
  return v;
}

/** STRIPE_API_BASE: an http(s) origin (a stand-in on loopback in tests); nothing after the port. */
function stripeBaseOption(v: unknown): URL {
  const raw = v === undefined || v === '' ? 'https://api.stripe.com' : v;
  let u: URL | undefined;
  try { u = typeof raw === 'string' ? new URL(raw) : undefined; } catch { u = undefined; }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password || (u.pathname !== '/' && u.pathname !== '') || u.search) {
    throw new TenantryError('INVALID_CONFIG', `stripeApiBase (STRIPE_API_BASE) is an http(s) origin such as https://api.stripe.com or http://127.0.0.1:12111; got ${JSON.stringify(String(raw)).slice(0, 200)}.`);
  }
  return u;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** What tenantry.crypto wraps data keys with; key material and tokens are non-enumerable properties. */
export type KmsSettings =
  | { kind: 'none' }
  | { kind: 'local'; masterKey: Buffer; previous: Buffer[] }
  | { kind: 'vault'; vault: { address: string; token: string; key: string; mount?: string; namespace?: string; timeoutMs?: number } };

function hidden<T extends object>(o: T, secrets: Record<string, unknown>): T {
  for (const [k, v] of Object.entries(secrets)) Object.defineProperty(o, k, { value: v, enumerable: false });
  return o;
}

function kmsSettings(merged: TenantryOptions): KmsSettings {
  const kind = merged.kms ?? (merged.vault ? 'vault' : 'local');
  if (kind !== 'local' && kind !== 'vault') throw new TenantryError('INVALID_CONFIG', `kms (TENANTRY_KMS) must be local or vault, got ${JSON.stringify(kind)}.`);
  if (kind === 'vault') {
    const v = merged.vault;
    if (!v || !v.address || !v.token || !v.key) {
      throw new TenantryError('INVALID_CONFIG', 'TENANTRY_KMS=vault needs TENANTRY_VAULT_ADDR, TENANTRY_VAULT_TOKEN and TENANTRY_VAULT_TRANSIT_KEY.');
    }
    const { token, ...rest } = v;
    return { kind: 'vault', vault: hidden({ ...rest, token: '' }, { token }) };
  }
  if (merged.masterKey === undefined) {
    if (merged.previousMasterKeys?.length) throw new TenantryError('INVALID_CONFIG', 'TENANTRY_MASTER_KEY_PREVIOUS is set without TENANTRY_MASTER_KEY: set the new master key too.');
    return { kind: 'none' };
  }
  const masterKey = parseKey(merged.masterKey, 'TENANTRY_MASTER_KEY (masterKey)');
  const previous = (merged.previousMasterKeys ?? []).map((k, i) => parseKey(k, `TENANTRY_MASTER_KEY_PREVIOUS (entry ${i + 1})`));
  return hidden({ kind: 'local' } as { kind: 'local'; masterKey: Buffer; previous: Buffer[] }, { masterKey, previous });
}

/** 32 bytes as base64 (44 characters) or hex (64); anything else is INVALID_CONFIG. */
function parseKey(value: unknown, name: string): Buffer {
  const v = typeof value === 'string' ? value.trim() : '';
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(v)) key = Buffer.from(v, 'hex');
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(v)) key = Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!key || key.length !== 32) {
    throw new TenantryError('INVALID_CONFIG', `${name} must be 32 random bytes written as base64 (44 characters) or hex (64 characters); got ${typeof value === 'string' ? `${v.length} characters that are neither` : typeof value}. Make one with \`openssl rand -base64 32\`.`);
  }
  return key;
}

function objectStoreOption(o: TenantryOptions['objectStore']): ResolvedOptions['objectStore'] {
  if (o === undefined) return undefined;
  if (!o || typeof o.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(o.bucket)) {
    throw new TenantryError('INVALID_CONFIG', `objectStore.bucket (TENANTRY_OBJECT_STORE_BUCKET) must be an S3 bucket name (3-63 of [a-z0-9.-]), got ${JSON.stringify(o?.bucket)}.`);
  }
  const prefix = (o.prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix && (!/^[A-Za-z0-9!_.*'()/-]{1,200}$/.test(prefix) || prefix.split('/').some((p) => p === '' || p === '.' || p === '..'))) {
    throw new TenantryError('INVALID_CONFIG', `objectStore.prefix (TENANTRY_OBJECT_STORE_PREFIX) must be path segments of [A-Za-z0-9!_.*'()-], got ${JSON.stringify(o.prefix)}.`);
  }
  return { bucket: o.bucket, prefix, ...(o.endpoint ? { endpoint: o.endpoint } : {}), ...(o.region ? { region: o.region } : {}) };
}
