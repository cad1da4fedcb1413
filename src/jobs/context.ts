import type { Core } from '../core.js';
import type { QuotaService } from '../quotas/quotas.js';
import type { ApiKeyService } from '../keys/api-keys.js';
import type { IdempotencyStore } from '../idempotency/idempotency.js';
import type { LifecycleService } from '../lifecycle/lifecycle.js';
import type { RetentionService } from '../retention/retention.js';
import type { WebhookService } from '../webhooks/webhooks.js';
import type { BackupService } from '../backup/backup.js';
import type { DomainService } from '../domains/domains.js';
import type { BillingService } from '../billing/billing.js';
import type { OperationService } from '../operations/operations.js';

export interface AddJobOptions {
  /** jobs of one queue run one at a time, in order */
  queue?: string;
  /** at most one pending job per key */
  jobKey?: string;
  jobKeyMode?: 'replace' | 'preserve_run_at';
  delayMs?: number;
  maxAttempts?: number;
}

/** What the jobs use: the services they are thin calls into. */
export interface JobContext {
  core: Core;
  quotas: QuotaService;
  keys: ApiKeyService;
  idempotency: IdempotencyStore;
  lifecycle: LifecycleService;
  retention: RetentionService;
  webhooks: WebhookService;
  backups: BackupService;
  domains: DomainService;
  billing: BillingService;
  /** the HTTP API's long-running operations */
  operations: OperationService;
  /** runs the purges hard deletes still owe outside PostgreSQL (cache keys, Redis ACL users, objects) */
  purgeExternal?: () => Promise<{ done: number; failed: number }>;
  addJob(task: string, payload: Record<string, unknown>, opts?: AddJobOptions): Promise<void>;
}
