import { randomUUID } from 'node:crypto';
import type { Core } from '../core.js';
import { TenantryError, isTenantryError } from '../errors.js';
import { validateSlug } from '../identifiers.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import {
  validateIsolation, validateMetadata, validateName, validateTier, validateTrialDays,
  toTenant, type Isolation, type Tenant, type TenantRow, type Tier,
} from '../tenants/model.js';
import { STRATEGIES, createTenantRole, dropTenantRole, type TenantPlacement } from '../isolation/modes.js';
import type { ProvisionStep } from '../config.js';
import type { ApiKeyService, CreatedApiKey } from '../keys/api-keys.js';

function apiKeyResult(t: Tenant, apiKey: CreatedApiKey | undefined): Tenant & { apiKey?: CreatedApiKey } {
  return apiKey ? { ...t, apiKey } : t;
}

export interface CreateTenantInput {
  slug: string;
  name?: string;
  tier?: Tier | string;
  isolation?: Isolation | string;
  /** start as `trial`, ending after this many days */
  trialDays?: number;
  metadata?: Record<string, unknown>;
}

/**
 * Creates a tenant: catalog row (`provisioning`), its own role, its schema or database, its tables,
 * then `active` (or `trial`). Any failure undoes every earlier step, removes the catalog row and leaves
 * an audit entry saying why; a crash half-way is cleaned up by `repair()`.
 */
export async function provisionTenant(core: Core, input: CreateTenantInput, who: AuditActor = {}, keys?: ApiKeyService): Promise<Tenant & { apiKey?: CreatedApiKey }> {
  if (!input || typeof input !== 'object') throw new TenantryError('INVALID_INPUT', 'create() takes an object like { slug: "acme-corp" }.');
  const slug = validateSlug(input.slug);
  const name = validateName(input.name, slug);
  const tier = validateTier(input.tier ?? 'free');
  const isolation = validateIsolation(input.isolation ?? 'pooled');
  const trialDays = validateTrialDays(input.trialDays);
  const metadata = validateMetadata(input.metadata);
  const actor = who.actor ?? core.opts.actor;
  const strategy = STRATEGIES[isolation];
  const placement = strategy.placementFor(core, randomUUID());
  const log = core.logger.child({ tenantId: placement.id, slug, isolation });
  const started = Date.now();

  const step = async (s: ProvisionStep): Promise<void> => {
    await core.opts.onProvisionStep?.(s, { id: placement.id, isolation });
  };

  try {
    await step('catalog-row');
    try {
      await core.admin`
        insert into tenantry_catalog.tenants
          (id, slug, name, status, tier, isolation, database_name, schema_name, role_name, metadata)
        values (${placement.id}, ${slug}, ${name}, 'provisioning', ${tier}, ${isolation},
                ${placement.database}, ${placement.schema}, ${placement.role}, ${core.admin.json(metadata as never)})`;
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new TenantryError('SLUG_TAKEN', `The slug "${slug}" is already taken; choose another.`, { slug });
      }
      throw err;
    }
    await step('role');
    await createTenantRole(core, placement);
    await step('placement');
    await strategy.place(core, placement);
    await step('migrations');
    const version = await strategy.migrate(core, placement);
    await step('activate');
    const row = await core.admin.begin(async (tx) => {
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set
          status = ${trialDays ? 'trial' : 'active'},
          trial_ends_at = ${trialDays ? tx`now() + make_interval(days => ${trialDays})` : null},
          schema_version = ${version}, updated_at = now()
        where id = ${placement.id} and status = 'provisioning'
        returning *`;
      if (!r) throw new TenantryError('PROVISIONING_FAILED', 'The tenant row vanished while it was being provisioned (was repair() run at the same time?).');
      await appendAudit(tx, {
        tenantId: placement.id, actor, action: 'tenant.created', target: `tenant:${placement.id}`, requestId: who.requestId,
        details: { slug, name, tier, isolation, trialDays: trialDays ?? null, metadata, durationMs: Date.now() - started },
      });
      // the first API key is issued in the transaction that activates the tenant: both or neither
      const apiKey = keys ? await keys.createIn(tx, { id: placement.id }, { name: 'default', scopes: ['read', 'write', 'admin', 'sql'] }, { actor, ...(who.requestId ? { requestId: who.requestId } : {}) }) : undefined;
      return { r, apiKey };
    });
    const tenant = apiKeyResult(toTenant(row.r), row.apiKey);
    log.info({ durationMs: Date.now() - started }, 'tenant provisioned');
    core.events.emit('provisioned', { isolation, outcome: 'success', durationMs: Date.now() - started });
    return tenant;
  } catch (err) {
    // a taken slug is a refusal, not a failure: nothing was written, so nothing to undo or audit
    if (isTenantryError(err, 'SLUG_TAKEN')) throw err;
    log.warn({ err }, 'provisioning failed; rolling back');
    const reason = err instanceof Error ? err.message : String(err);
    try {
      await teardownTenantObjects(core, placement);
      await core.admin.begin(async (tx) => {
        await tx`delete from tenantry_catalog.tenants where id = ${placement.id} and status = 'provisioning'`;
        await appendAudit(tx, {
          tenantId: placement.id, actor, action: 'tenant.provisioning_failed', target: `tenant:${placement.id}`,
          requestId: who.requestId, details: { slug, isolation, tier, reason },
        });
      });
    } catch (cleanupErr) {
      log.error({ err: cleanupErr }, 'rollback of a failed provisioning did not finish; run repair()');
    }
    core.events.emit('provisioned', { isolation, outcome: 'failure', durationMs: Date.now() - started });
    if (isTenantryError(err, 'PROVISIONING_FAILED')) throw err;
    throw new TenantryError('PROVISIONING_FAILED', `Provisioning tenant "${slug}" failed and was rolled back: ${reason}`, { slug }, { cause: err });
  }
}

/** Removes whatever exists of a tenant's objects (data first, then its role). Idempotent. */
export async function teardownTenantObjects(core: Core, placement: TenantPlacement): Promise<void> {
  await core.pools.drop(`${placement.database}|${placement.role}`);
  await STRATEGIES[placement.isolation].remove(core, placement);
  await dropTenantRole(core, placement.role);
}
