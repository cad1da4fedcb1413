import { randomUUID } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { TenantryError, isTenantryError, isDatabaseUnavailable, DATABASE_RETRY_AFTER_SECONDS } from '../errors.js';
import { validateSlug } from '../identifiers.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import {
  validateIsolation, validateMetadata, validateName, validateTier, validateTrialDays,
  toTenant, type Isolation, type Tenant, type TenantRow, type Tier,
} from '../tenants/model.js';
import { STRATEGIES, createTenantRole, dropTenantRole } from '../isolation/modes.js';
import { healProvisioning, scheduleHeal, staleAfterSeconds } from './healer.js';
import type { ProvisionStep } from '../config.js';
import type { ApiKeyService, CreatedApiKey } from '../keys/api-keys.js';

function apiKeyResult(t: Tenant, apiKey: CreatedApiKey | undefined): Tenant & { apiKey?: CreatedApiKey } {
  return apiKey ? { ...t, apiKey } : t;
}

export interface CreateTenantInput {
  slug: string;
  name?: string;
  tier?: Tier;
  isolation?: Isolation;
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
  const trialDays = validateTrialDays(input.trialDays);
  // no tier named: a trial starts on the plans' trial tier, anything else on their default tier
  const tier = validateTier(input.tier ?? (trialDays !== undefined ? core.plans.trialTier()?.name : undefined) ?? core.plans.defaultTier(), core.plans.tierNames());
  const isolation = validateIsolation(input.isolation ?? 'pooled');
  const metadata = validateMetadata(input.metadata);
  const actor = who.actor ?? core.opts.actor;
  const strategy = STRATEGIES[isolation];
  // a pooled signup may take its id (and that id's pre-made role) from the role pool, below
  let placement = strategy.placementFor(core, randomUUID());
  let log = core.logger.child({ tenantId: placement.id, slug, isolation });
  const started = Date.now();

  const step = async (s: ProvisionStep): Promise<void> => {
    await core.opts.onProvisionStep?.(s, { id: placement.id, isolation });
  };

  const insertRow = async (sql: Sql | TransactionSql, status: 'provisioning' | 'active' | 'trial', version: number): Promise<TenantRow> => {
    try {
      // sent at once (execute), ahead of the statements a pooled signup pipelines behind it
      const [r] = await sql<TenantRow[]>`
        insert into tenantry_catalog.tenants
          (id, slug, name, status, tier, isolation, database_name, schema_name, role_name, metadata, trial_ends_at, schema_version)
        values (${placement.id}, ${slug}, ${name}, ${status}, ${tier}, ${isolation},
                ${placement.database}, ${placement.schema}, ${placement.role}, ${sql.json(metadata as never)},
                ${status === 'trial' ? sql`now() + make_interval(days => ${trialDays!})` : null}, ${version})
        returning *`.execute();
      return r!;
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new TenantryError('SLUG_TAKEN', `The slug "${slug}" is already taken; choose another.`, { slug });
      }
      throw err;
    }
  };
  // audit entry and first API key, in the transaction that makes the tenant live: all or nothing
  // (the audit entry and the key go out together, without waiting for each other's answers)
  const finish = async (tx: TransactionSql): Promise<CreatedApiKey | undefined> => {
    const audited = appendAudit(tx, {
      tenantId: placement.id, actor, action: 'tenant.created', target: `tenant:${placement.id}`, requestId: who.requestId,
      details: { slug, name, tier, isolation, trialDays: trialDays ?? null, metadata, durationMs: Date.now() - started },
    });
    audited.catch(() => undefined);
    const key = keys?.createIn(tx, { id: placement.id }, { name: 'default', scopes: ['read', 'write', 'admin', 'sql'] }, { actor, ...(who.requestId ? { requestId: who.requestId } : {}) });
    key?.catch(() => undefined);
    await audited;
    return key;
  };
  const liveStatus = trialDays ? 'trial' : 'active';

  let heartbeat: NodeJS.Timeout | undefined;
  let tookPooledRole = false;
  try {
    let row: { r: TenantRow; apiKey: CreatedApiKey | undefined };
    if (isolation === 'pooled') {
      // Pooled mode is one catalog transaction: row, role (a pre-made one from the role pool, or CREATE
      // ROLE, which is transactional), audit entry and first key commit together or not at all.
      row = await provisionPooled(core, (pooledId) => {
        if (!pooledId) return;
        placement = strategy.placementFor(core, pooledId);
        log = core.logger.child({ tenantId: placement.id, slug, isolation });
        tookPooledRole = true;
      }, async (tx, pooledId) => {
        // The statements below go out without waiting for each other's answers (one round trip); each
        // is awaited in the order sent, so the first failure (a taken slug first of all) is the one reported.
        const sent: Promise<unknown>[] = [];
        const send = <T>(p: Promise<T>): Promise<T> => { p.catch(() => undefined); sent.push(p); return p; };
        await step('catalog-row');
        const r = send(insertRow(tx, liveStatus, latestVersion(core)));
        await step('role');
        if (!pooledId) send(createTenantRole(core, placement, tx));
        await step('placement');
        await step('migrations');
        await step('activate');
        const apiKey = send(finish(tx));
        for (const p of sent) await p;
        return { r: await r, apiKey: await apiKey };
      });
    } else {
      await step('catalog-row');
      await insertRow(core.admin, 'provisioning', 0);
      // The row's updated_at is this process's heartbeat: a row not renewed for repairAfterSeconds
      // belongs to a process that died, and the background sweep removes it. A row already that stale
      // is never revived, so a sweep tearing it down cannot race a late heartbeat.
      heartbeat = setInterval(() => {
        core.admin`update tenantry_catalog.tenants set updated_at = now()
                   where id = ${placement.id} and status = 'provisioning'
                     and updated_at > now() - make_interval(secs => ${staleAfterSeconds(core)})`
          .catch(() => undefined);
      }, Math.min(10_000, staleAfterSeconds(core) * 250));
      heartbeat.unref();
      await step('role');
      await createTenantRole(core, placement);
      await step('placement');
      await strategy.place(core, placement);
      await step('migrations');
      const version = await strategy.migrate(core, placement);
      await step('activate');
      row = await core.admin.begin(async (tx) => {
        const [r] = await tx<TenantRow[]>`
          update tenantry_catalog.tenants set
            status = ${liveStatus},
            trial_ends_at = ${trialDays ? tx`now() + make_interval(days => ${trialDays})` : null},
            schema_version = ${version}, updated_at = now()
          where id = ${placement.id} and status = 'provisioning'
          returning *`;
        if (!r) throw new TenantryError('PROVISIONING_FAILED', 'The tenant row vanished while it was being provisioned (was repair() run at the same time?).');
        return { r, apiKey: await finish(tx) };
      });
    }
    const tenant = apiKeyResult(toTenant(row.r), row.apiKey);
    log.info({ durationMs: Date.now() - started }, 'tenant provisioned');
    core.events.emit('provisioned', { isolation, outcome: 'success', durationMs: Date.now() - started });
    return tenant;
  } catch (err) {
    // a taken slug is a refusal, not a failure: nothing was written, so nothing to undo or audit
    // (but a pre-made role the refused signup took is dropped, so no role is left named for its id)
    if (isTenantryError(err, 'SLUG_TAKEN')) {
      if (tookPooledRole) await dropTenantRole(core, placement.role).catch((e: unknown) => log.warn({ err: e }, 'dropping the pool role of a refused signup failed; repair removes it'));
      throw err;
    }
    log.warn({ err }, 'provisioning failed; rolling back');
    const reason = err instanceof Error ? err.message : String(err);
    const pending = { placement, slug, actor, requestId: who.requestId, reason, tier };
    let outcome: 'created' | 'removed' | 'unfinished';
    try {
      // a live row means the work committed and only its answer was lost: nothing is undone
      outcome = await healProvisioning(core, pending);
    } catch (cleanupErr) {
      outcome = 'unfinished';
      log.error({ err: cleanupErr }, 'rollback of a failed provisioning did not finish; retrying it in the background');
      scheduleHeal(core, pending);
    }
    core.events.emit('provisioned', { isolation, outcome: 'failure', durationMs: Date.now() - started });
    // The answer never claims a rollback that did not happen.
    if (outcome === 'unfinished') {
      throw new TenantryError('PROVISIONING_INCOMPLETE', `Provisioning tenant "${slug}" failed (${reason}) and its rollback has not finished yet; Tenantry retries it in the background until nothing of it is left. Retry the create (with the same Idempotency-Key) in a few seconds.`,
        { slug, retryAfterSeconds: 5 }, { cause: err });
    }
    if (outcome === 'created' || isDatabaseUnavailable(err)) {
      throw new TenantryError('DATABASE_UNAVAILABLE', `Provisioning tenant "${slug}" was interrupted because PostgreSQL became unreachable (${reason}); ${outcome === 'created' ? 'its work may have committed' : 'nothing of it was kept'}. Retry the create with the same Idempotency-Key.`,
        { slug, retryAfterSeconds: DATABASE_RETRY_AFTER_SECONDS }, { cause: err });
    }
    if (isTenantryError(err, 'PROVISIONING_FAILED')) throw err;
    throw new TenantryError('PROVISIONING_FAILED', `Provisioning tenant "${slug}" failed and was rolled back: ${reason}`, { slug }, { cause: err });
  } finally {
    if (heartbeat) clearInterval(heartbeat);
  }
}

/**
 * A pooled signup. First a pre-made role's tenant id is taken from the role pool, in a transaction of
 * its own that commits at once: the id is this signup's for good, never handed out twice, and whatever
 * the signup then does with it is undone like any other signup's (a crash right after the take leaves a
 * role without a tenant row, which repair removes as an orphan). Then the catalog transaction, whose
 * statements go out without waiting for each other's answers.
 */
async function provisionPooled<T>(core: Core, took: (pooledId: string | undefined) => void, fn: (tx: TransactionSql, pooledId: string | undefined) => Promise<T>): Promise<T> {
  // Plain pool transactions, not a reserved connection: postgres.js 3.4.9 can strand a queued
  // reserve() for good when PostgreSQL ends the connection it waits for (porsager/postgres#1195), and
  // the chaos test caught a signup hanging that way, its Idempotency-Key "in progress" for minutes.
  const pooledId = await core.rolePool.take(core.admin);
  took(pooledId);
  if (pooledId) core.rolePool.refill();
  return core.admin.begin((tx) => fn(tx, pooledId)) as Promise<T>;
}
