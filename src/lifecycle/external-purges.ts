import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { shredTenantKeys } from '../crypto/tenant-crypto.js';

export type PurgeTarget = 'cache' | 'cache_acl' | 'objects';

export interface ExternalPurgers {
  cache?: (tenantId: string) => Promise<unknown>;
  cache_acl?: (tenantId: string) => Promise<unknown>;
  objects?: (tenantId: string) => Promise<unknown>;
}

/**
 * Inside the hard delete's final transaction (the one that removes the tenant's row and writes its
 * audit entry): the tenant's wrapped data keys are destroyed (crypto-shredding), and what it owns
 * outside PostgreSQL (Redis keys, its Redis ACL user, objects) is recorded as owed. Either all of
 * that commits with the delete, or none of it does.
 */
export async function shredAndRecordPurges(core: Core, tx: TransactionSql, tenantId: string): Promise<{ dataKeysDestroyed: number; purgesPending: PurgeTarget[] }> {
  const dataKeysDestroyed = await shredTenantKeys(tx, tenantId);
  const targets: PurgeTarget[] = [];
  if (core.opts.redisUrl) targets.push('cache');
  if (core.opts.redisUrl && core.opts.cacheAclUsers) targets.push('cache_acl');
  if (core.opts.objectStore) targets.push('objects');
  if (targets.length) {
    await tx`
      insert into tenantry_catalog.tenant_purges (tenant_id, target)
      select ${tenantId}, unnest(${targets}::text[]) on conflict do nothing`;
  }
  return { dataKeysDestroyed, purgesPending: targets };
}

/**
 * Runs what hard deletes still owe outside PostgreSQL: right after a hard delete, and from the job
 * runner's `tenants.purge_external` task until each one has finished. Each row is taken under a row
 * lock (SKIP LOCKED: two processes never purge the same one) and removed only when its purge
 * succeeded; a failure is counted and kept for the next run.
 */
export async function runExternalPurges(core: Core, purgers: ExternalPurgers, tenantId?: string): Promise<{ done: number; failed: number }> {
  let done = 0;
  let failed = 0;
  const tried = new Set<string>();
  for (;;) {
    const outcome = await core.admin.begin(async (tx) => {
      const [row] = await tx<{ tenant_id: string; target: PurgeTarget }[]>`
        select tenant_id, target from tenantry_catalog.tenant_purges
        where (${tenantId ?? null}::uuid is null or tenant_id = ${tenantId ?? null}::uuid)
          and not ((tenant_id::text || ':' || target) = any(${[...tried]}::text[]))
        order by created_at, tenant_id, target limit 1 for update skip locked`;
      if (!row) return undefined;
      tried.add(`${row.tenant_id}:${row.target}`);
      const fn = purgers[row.target];
      try {
        if (!fn) throw new Error(`${row.target} is not configured in this process`);
        await fn(row.tenant_id);
        await tx`delete from tenantry_catalog.tenant_purges where tenant_id = ${row.tenant_id} and target = ${row.target}`;
        return 'done' as const;
      } catch (err) {
        const message = String((err as Error)?.message ?? err).slice(0, 500);
        await tx`
          update tenantry_catalog.tenant_purges set attempts = attempts + 1, last_error = ${message}, last_attempt_at = now()
          where tenant_id = ${row.tenant_id} and target = ${row.target}`;
        core.logger.warn({ tenantId: row.tenant_id, target: row.target, err: message }, 'purging a hard-deleted tenant\'s data outside PostgreSQL failed; it is retried');
        return 'failed' as const;
      }
    });
    if (!outcome) break;
    if (outcome === 'done') done++;
    else failed++;
  }
  return { done, failed };
}

/** What hard deletes still owe (for doctor and operators). */
export async function pendingExternalPurges(core: Core): Promise<{ tenantId: string; target: PurgeTarget; attempts: number; lastError: string | null; createdAt: Date }[]> {
  const rows = await core.admin<{ tenant_id: string; target: PurgeTarget; attempts: number; last_error: string | null; created_at: Date }[]>`
    select tenant_id, target, attempts, last_error, created_at from tenantry_catalog.tenant_purges order by created_at`;
  return rows.map((r) => ({ tenantId: r.tenant_id, target: r.target, attempts: r.attempts, lastError: r.last_error, createdAt: r.created_at }));
}
