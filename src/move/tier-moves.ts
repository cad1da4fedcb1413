import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import type { Tenant, Tier } from '../tenants/model.js';
import type { OperationService } from '../operations/operations.js';

/**
 * The plan feature that gives a tier's tenants a database of their own: a tenant whose tier changes to
 * one granting it is moved to database mode, as an operation (run by the job runner, pollable over
 * HTTP) enqueued in the transaction of the tier change itself. A downgrade moves nothing back.
 */
export const DEDICATED_DATABASE_FEATURE = 'dedicated_database';

export async function moveOnTierChange(core: Core, operations: OperationService, tx: TransactionSql, tenant: Tenant, tier: Tier): Promise<void> {
  if (tenant.isolation === 'database') return;
  if (!core.plans.tier(tier)?.features.includes(DEDICATED_DATABASE_FEATURE)) return;
  // one pending move per tenant: a second upgrade while one is queued adds nothing
  const [pending] = await tx`select 1 from tenantry_catalog.operations where tenant_id = ${tenant.id} and kind = 'move' and status in ('queued', 'running')`;
  if (pending) return;
  await operations.startIn(tx, tenant.id, { kind: 'move', to: 'database' }, { actor: `tier:${tier}` });
}
