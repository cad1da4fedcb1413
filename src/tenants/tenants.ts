import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { textProblem } from '../input/safe-text.js';
import { ident, isUuid } from '../identifiers.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import { overLimitTenants } from '../plans/plans.js';
import {
  toTenant, validateIsolation, validateMetadata, validateName, validateReason, validateStatus, validateTier,
  type Isolation, type Tenant, type TenantRow, type TenantStatus, type Tier,
} from './model.js';
import { provisionTenant, type CreateTenantInput } from '../provisioning/provision.js';
import { teardownTenantObjects } from '../provisioning/repair.js';
import { terminateRoleSessions } from '../isolation/modes.js';
import type { ApiKeyService, CreatedApiKey } from '../keys/api-keys.js';
import type { MoveService, MoveOptions, MoveResult } from '../move/move.js';
import { shredAndRecordPurges } from '../lifecycle/external-purges.js';

export interface ListTenantsOptions {
  status?: TenantStatus | string;
  tier?: Tier;
  isolation?: Isolation;
  /** 1-500, default 50 */
  limit?: number;
  /** `nextCursor` of the previous page */
  cursor?: string;
  /** include soft-deleted tenants when no status filter is given (default false) */
  includeDeleted?: boolean;
  /** case-insensitive prefix of the slug or the name (1-100 characters) */
  q?: string;
  /** the column to sort by (default: creation order, `seq`) */
  sort?: TenantSort;
  /** `asc` (default) or `desc` */
  order?: 'asc' | 'desc';
}

export const TENANT_SORTS = ['slug', 'name', 'created_at', 'status', 'tier'] as const;
export type TenantSort = (typeof TENANT_SORTS)[number];

/** A keyset cursor for a sorted list: the sort it belongs to, and the last row's sort value and seq. */
interface SortCursor { s: TenantSort; o: 'asc' | 'desc'; v: string; n: string }

function badCursor(): never {
  throw new TenantryError('INVALID_INPUT', 'cursor is not one this API returned for this sort and order; pass nextCursor from the previous page with the same q, sort and order.', { field: 'cursor' });
}

function decodeSortCursor(cursor: string, sort: TenantSort, order: 'asc' | 'desc'): SortCursor {
  if (typeof cursor !== 'string' || cursor.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(cursor)) badCursor();
  let c: unknown;
  try { c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')); } catch { badCursor(); }
  const o = c as Partial<SortCursor> | null;
  if (!o || typeof o !== 'object' || o.s !== sort || o.o !== order || typeof o.v !== 'string' || typeof o.n !== 'string'
    || !/^[0-9]{1,19}$/.test(o.n) || BigInt(o.n) > 9223372036854775807n || o.v.length > 400 || textProblem(o.v)) badCursor();
  if (sort === 'created_at' && !/^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]{8,15}[+-][0-9:]{2,8}$/.test(o.v)) badCursor();
  return o as SortCursor;
}

export interface UpdateTenantInput {
  name?: string;
  tier?: Tier;
  metadata?: Record<string, unknown>;
}

export interface DeleteTenantOptions extends AuditActor {
  /** remove the role, schema or database and every pooled row; refused unless soft-deleted first or `force` */
  hard?: boolean;
  force?: boolean;
}

type Tx = TransactionSql | Sql;

/** Tenants and their lifecycle. Every change commits together with its audit entry. */
export class TenantService {
  private keys: ApiKeyService | undefined;

  constructor(private readonly core: Core) {}

  private afterHardDelete: ((tenantId: string) => Promise<unknown>) | undefined;

  /** Wired by Tenantry: runs a hard-deleted tenant's purges outside PostgreSQL (cache, objects). */
  attachHardDeleteHook(fn: (tenantId: string) => Promise<unknown>): void {
    this.afterHardDelete = fn;
  }

  /** Wired by Tenantry: provisioning issues each new tenant's first API key. */
  attachKeys(keys: ApiKeyService): void {
    this.keys = keys;
  }

  private mover: MoveService | undefined;
  private tierChanged: ((tx: TransactionSql, tenant: Tenant, tier: Tier) => Promise<void>) | undefined;

  /**
   * Wired by Tenantry: runs in the transaction of a tier change (a tier whose plan gives a database of
   * its own enqueues the tenant's move there, committed with the change or not at all).
   */
  attachTierChange(fn: (tx: TransactionSql, tenant: Tenant, tier: Tier) => Promise<void>): void {
    this.tierChanged = fn;
  }

  /** Wired by Tenantry: moves between isolation modes (src/move/move.ts). */
  attachMover(mover: MoveService): void {
    this.mover = mover;
  }

  /**
   * Moves a tenant to another isolation mode, online: writes go on during the bulk copy and are
   * refused (TENANT_MOVING) only for the final catch-up; a failure leaves it where it was.
   */
  async move(idOrSlug: string, opts: MoveOptions): Promise<MoveResult> {
    if (!this.mover) throw new TenantryError('INVALID_CONFIG', 'Moving tenants is wired by Tenantry.open(); this TenantService has no mover.');
    return this.mover.move(idOrSlug, opts);
  }

  /** Provisions a tenant; the result carries its first API key (`apiKey`), shown this once. */
  async create(input: CreateTenantInput, who?: AuditActor): Promise<Tenant & { apiKey?: CreatedApiKey }> {
    const t = await provisionTenant(this.core, input, who, this.keys);
    // the first key must verify at once, here, not only once the catalog's NOTIFY arrives
    if (t.apiKey) await this.keys?.refresh(t.id).catch(() => undefined);
    return t;
  }

  /** By id or slug; throws TENANT_NOT_FOUND. Finds soft-deleted tenants too (check `status`). */
  async get(idOrSlug: string): Promise<Tenant> {
    const t = await this.find(idOrSlug);
    if (!t) throw notFound(idOrSlug);
    return t;
  }

  async find(idOrSlug: string): Promise<Tenant | undefined> {
    if (typeof idOrSlug !== 'string' || idOrSlug.length === 0 || idOrSlug.length > 64) {
      throw new TenantryError('INVALID_INPUT', `A tenant is named by its id (uuid) or slug, got ${JSON.stringify(idOrSlug)}.`);
    }
    const key = idOrSlug.toLowerCase();
    const [row] = isUuid(key)
      ? await this.core.admin<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${key}`
      : await this.core.admin<TenantRow[]>`select * from tenantry_catalog.tenants where slug = ${key}`;
    return row ? toTenant(row) : undefined;
  }

  /**
   * The live tenant with this slug whose creation was audited under `requestId`, if any: a retry of a
   * create whose answer was lost (the process died after the commit) finds what that request committed
   * instead of being told the slug is taken.
   */
  async createdByRequest(slug: string, requestId: string): Promise<Tenant | undefined> {
    const [row] = await this.core.admin<TenantRow[]>`
      select t.* from tenantry_catalog.tenants t
      where t.slug = ${slug} and t.status <> 'provisioning'
        and exists (select 1 from tenantry_catalog.audit_log a
                    where a.tenant_id = t.id and a.action = 'tenant.created' and a.request_id = ${requestId})`;
    return row ? toTenant(row) : undefined;
  }

  /**
   * The tenant for tenant work (withTenant, query): cached, and refused unless active or trial.
   */
  async resolveForWork(idOrSlug: string): Promise<Tenant> {
    let t = this.core.cache.get(idOrSlug);
    if (!t) {
      t = await this.get(idOrSlug);
      this.core.cache.set(t);
    }
    switch (t.status) {
      case 'active':
      case 'trial':
        return t;
      case 'suspended':
        throw new TenantryError('TENANT_SUSPENDED', `Tenant "${t.slug}" is suspended (${t.suspendedReason ?? 'no reason given'}); activate it to resume work.`, { tenantId: t.id });
      case 'deleted':
        throw new TenantryError('TENANT_DELETED', `Tenant "${t.slug}" is deleted; restore it to resume work.`, { tenantId: t.id });
      default:
        throw new TenantryError('TENANT_NOT_READY', `Tenant "${t.slug}" is still being provisioned; retry shortly, or run repair() if it is stuck.`, { tenantId: t.id });
    }
  }

  async list(opts: ListTenantsOptions = {}): Promise<{ items: Tenant[]; nextCursor: string | null }> {
    const sql = this.core.admin;
    const limit = opts.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) {
      throw new TenantryError('INVALID_INPUT', `limit must be an integer from 1 to 500, got ${String(opts.limit)}.`);
    }
    const status = opts.status === undefined ? undefined : validateStatus(opts.status);
    const tier = opts.tier === undefined ? undefined : validateTier(opts.tier, this.core.plans.tierNames());
    const isolation = opts.isolation === undefined ? undefined : validateIsolation(opts.isolation);
    let q: string | undefined;
    if (opts.q !== undefined) {
      if (typeof opts.q !== 'string' || opts.q.trim().length === 0 || opts.q.length > 100 || /[\u0000-\u001f]/.test(opts.q) || textProblem(opts.q)) {
        throw new TenantryError('INVALID_INPUT', 'q must be 1-100 printable characters (a prefix of a slug or a name).', { field: 'q' });
      }
      q = opts.q.trim().toLowerCase();
    }
    if (opts.sort !== undefined && !(TENANT_SORTS as readonly string[]).includes(opts.sort)) {
      throw new TenantryError('INVALID_INPUT', `sort must be one of ${TENANT_SORTS.join(', ')}.`, { field: 'sort' });
    }
    if (opts.order !== undefined && opts.order !== 'asc' && opts.order !== 'desc') {
      throw new TenantryError('INVALID_INPUT', 'order must be asc or desc.', { field: 'order' });
    }
    const order = opts.order ?? 'asc';
    // without a sort, the list runs in creation order (seq) and its cursor is a bare seq, as before
    const sort = opts.sort ?? (order === 'desc' ? 'seq' : undefined);
    // LIKE's own wildcards in q match themselves: a search for "a_b" is not a pattern
    const prefix = q === undefined ? undefined : q.replace(/[\\%_]/g, (ch) => `\\${ch}`) + '%';
    const filters = sql`
        ${status ? sql`and status = ${status}` : opts.includeDeleted ? sql`` : sql`and status <> 'deleted'`}
        ${tier ? sql`and tier = ${tier}` : sql``}
        ${isolation ? sql`and isolation = ${isolation}` : sql``}
        ${prefix ? sql`and (lower(slug) like ${prefix} or lower(name) like ${prefix})` : sql``}`;
    if (sort === undefined || sort === 'seq') {
      let after: bigint | undefined;
      if (opts.cursor !== undefined) {
        const decoded = /^[0-9]{1,19}$/.test(String(opts.cursor)) ? BigInt(opts.cursor) : -1n;
        if (decoded < 0n || decoded > 9223372036854775807n) throw new TenantryError('INVALID_INPUT', 'cursor is not one this API returned; pass nextCursor from the previous page.', { field: 'cursor' });
        after = decoded;
      }
      const desc = order === 'desc';
      const rows = await sql<TenantRow[]>`
        select * from tenantry_catalog.tenants
        where true
          ${after === undefined ? sql`` : desc ? sql`and seq < ${after.toString()}` : sql`and seq > ${after.toString()}`}
          ${filters}
        order by seq ${desc ? sql`desc` : sql`asc`} limit ${limit + 1}`;
      const page = rows.slice(0, limit);
      return { items: page.map(toTenant), nextCursor: rows.length > limit ? String(page[page.length - 1]!.seq) : null };
    }
    const cursor = opts.cursor === undefined ? undefined : decodeSortCursor(opts.cursor, sort, order);
    // the column is one of five fixed names checked above, never the caller's text
    const col = sql.unsafe(ident(sort));
    const value = cursor === undefined ? undefined
      // bound as text, cast in SQL: a parameter typed timestamptz is sent through a JS Date, which
      // drops the microseconds and would hand back the last row of the previous page
      : sort === 'created_at' ? sql`${cursor.v}::text::timestamptz` : sql`${cursor.v}::text`;
    const rows = await sql<(TenantRow & { sort_key: string })[]>`
      select *, ${col}::text as sort_key from tenantry_catalog.tenants
      where true
        ${cursor === undefined ? sql``
          : order === 'desc' ? sql`and (${col}, seq) < (${value!}, ${cursor.n}::bigint)`
          : sql`and (${col}, seq) > (${value!}, ${cursor.n}::bigint)`}
        ${filters}
      order by ${col} ${order === 'desc' ? sql`desc` : sql`asc`}, seq ${order === 'desc' ? sql`desc` : sql`asc`}
      limit ${limit + 1}`;
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const next: SortCursor | undefined = rows.length > limit && last ? { s: sort, o: order, v: last.sort_key, n: String(last.seq) } : undefined;
    return {
      items: page.map(toTenant),
      nextCursor: next ? Buffer.from(JSON.stringify(next), 'utf8').toString('base64url') : null,
    };
  }

  async update(idOrSlug: string, input: UpdateTenantInput, who: AuditActor = {}): Promise<Tenant> {
    if (!input || typeof input !== 'object') throw new TenantryError('INVALID_INPUT', 'update() takes an object with name, tier or metadata.');
    const unknown = Object.keys(input).filter((k) => !['name', 'tier', 'metadata'].includes(k));
    if (unknown.length) throw new TenantryError('INVALID_INPUT', `update() accepts name, tier and metadata; not ${unknown.join(', ')}.`);
    const name = input.name === undefined ? undefined : validateName(input.name);
    const tier = input.tier === undefined ? undefined : validateTier(input.tier, this.core.plans.tierNames());
    const metadata = input.metadata === undefined ? undefined : validateMetadata(input.metadata);
    return this.transition(idOrSlug, who, 'tenant.updated', ['active', 'trial', 'suspended'], async (tx, before) => {
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set
          name = ${name ?? before.name}, tier = ${tier ?? before.tier},
          metadata = ${tx.json((metadata ?? before.metadata) as never)}, updated_at = now()
        where id = ${before.id} returning *`;
      const changes: Record<string, unknown> = {};
      if (name !== undefined && name !== before.name) changes.name = { from: before.name, to: name };
      if (tier !== undefined && tier !== before.tier) changes.tier = { from: before.tier, to: tier };
      if (metadata !== undefined) changes.metadata = { from: before.metadata, to: metadata };
      if (changes.tier) await this.tierChanged?.(tx as TransactionSql, before, tier!);
      if (changes.tier) {
        // a downgrade deletes nothing: usage now above the new tier's limits is named, and its debits refused
        const over = await overLimitTenants(tx, before.id);
        if (over.length > 0) {
          await appendAudit(tx, {
            tenantId: before.id, actor: who.actor ?? this.core.opts.actor, action: 'quota.exceeded_by_change', target: `tenant:${before.id}`,
            requestId: who.requestId, details: { tenants: over, reason: `tier ${before.tier} -> ${tier}` },
          });
        }
      }
      return { row: r!, details: { changes } };
    });
  }

  /** Refuses tenant work with TENANT_SUSPENDED; in schema and database modes also disables its login and ends its sessions. */
  async suspend(idOrSlug: string, reason: string, who: AuditActor = {}): Promise<Tenant> {
    const why = validateReason(reason);
    const t = await this.transition(idOrSlug, who, 'tenant.suspended', ['active', 'trial'], async (tx, before) => {
      await tx.unsafe(`alter role ${ident(before.placement.role)} nologin`);
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set status = 'suspended', suspended_reason = ${why}, updated_at = now()
        where id = ${before.id} returning *`;
      return { row: r!, details: { reason: why, previousStatus: before.status } };
    });
    await this.endSessions(t);
    return t;
  }

  /** From suspended (or trial): back to active, or to trial while its trial has not ended. */
  async activate(idOrSlug: string, who: AuditActor = {}): Promise<Tenant> {
    return this.transition(idOrSlug, who, 'tenant.activated', ['suspended', 'trial'], async (tx, before) => {
      await tx.unsafe(`alter role ${ident(before.placement.role)} login`);
      const toTrial = before.status === 'suspended' && before.trialEndsAt !== null && before.trialEndsAt.getTime() > Date.now();
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set
          status = ${toTrial ? 'trial' : 'active'}, suspended_reason = null,
          trial_ends_at = ${toTrial ? before.trialEndsAt : null}, updated_at = now()
        where id = ${before.id} returning *`;
      return { row: r!, details: { previousStatus: before.status } };
    });
  }

  /**
   * Soft delete (default): data kept, access refused, restorable. `{ hard: true }`: the role, schema
   * or database and every pooled row are removed; refused unless soft-deleted first or `force`.
   */
  async delete(idOrSlug: string, opts: DeleteTenantOptions = {}): Promise<Tenant> {
    if (opts.hard) return this.hardDelete(idOrSlug, opts);
    const t = await this.transition(idOrSlug, opts, 'tenant.deleted', ['active', 'trial', 'suspended'], async (tx, before) => {
      await tx.unsafe(`alter role ${ident(before.placement.role)} nologin`);
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set status = 'deleted', deleted_at = now(), updated_at = now()
        where id = ${before.id} returning *`;
      return { row: r!, details: { previousStatus: before.status, suspendedReason: before.suspendedReason } };
    });
    await this.endSessions(t);
    return t;
  }

  /** Undoes a soft delete: back to suspended if it was suspended, else trial or active. */
  async restore(idOrSlug: string, who: AuditActor = {}): Promise<Tenant> {
    return this.transition(idOrSlug, who, 'tenant.restored', ['deleted'], async (tx, before) => {
      const status: TenantStatus = before.suspendedReason !== null ? 'suspended'
        : before.trialEndsAt !== null && before.trialEndsAt.getTime() > Date.now() ? 'trial' : 'active';
      if (status !== 'suspended') await tx.unsafe(`alter role ${ident(before.placement.role)} login`);
      const [r] = await tx<TenantRow[]>`
        update tenantry_catalog.tenants set status = ${status}, deleted_at = null, updated_at = now()
        where id = ${before.id} returning *`;
      return { row: r!, details: { status } };
    });
  }

  private async hardDelete(idOrSlug: string, opts: DeleteTenantOptions): Promise<Tenant> {
    const before = await this.get(idOrSlug);
    if (before.status !== 'deleted' && !opts.force) {
      throw new TenantryError('INVALID_TRANSITION', `Tenant "${before.slug}" is ${before.status}; soft-delete it first, or pass { force: true } to hard-delete it now.`, { tenantId: before.id, status: before.status });
    }
    if (before.status === 'provisioning') {
      throw new TenantryError('INVALID_TRANSITION', `Tenant "${before.slug}" is still being provisioned; run repair() for a stuck one.`, { tenantId: before.id });
    }
    // Mark first, so no new work starts while its objects are removed; a crash after this point leaves
    // a deleted tenant whose hard delete can simply be run again.
    await this.core.admin.begin(async (tx) => {
      // re-checked under the row's lock: a restore that committed since the read above wins (the
      // scheduled purge must never remove a tenant that was just restored)
      const [locked] = await tx<{ status: string }[]>`select status from tenantry_catalog.tenants where id = ${before.id} for update`;
      if (!locked || (locked.status !== 'deleted' && !opts.force)) {
        throw new TenantryError('INVALID_TRANSITION', `Tenant "${before.slug}" is ${locked?.status ?? 'gone'}; soft-delete it first, or pass { force: true } to hard-delete it now.`, { tenantId: before.id, status: locked?.status ?? null });
      }
      // a re-run after a hard delete that stopped half-way finds the role already dropped
      const [role] = await tx`select 1 from pg_roles where rolname = ${before.placement.role}`;
      if (role) await tx.unsafe(`alter role ${ident(before.placement.role)} nologin`);
      await tx`update tenantry_catalog.tenants set status = 'deleted', deleted_at = coalesce(deleted_at, now()), updated_at = now() where id = ${before.id}`;
    });
    this.core.cache.invalidate(before.id);
    await teardownTenantObjects(this.core, { ...before.placement, id: before.id, isolation: before.isolation });
    await this.core.admin.begin(async (tx) => {
      // crypto-shredding in this same transaction: the row, its wrapped data keys and the record of
      // what is owed outside PostgreSQL (cache keys, objects) go together or not at all
      const shred = await shredAndRecordPurges(this.core, tx, before.id);
      await tx`delete from tenantry_catalog.tenants where id = ${before.id}`;
      await appendAudit(tx, {
        tenantId: before.id, actor: opts.actor ?? this.core.opts.actor, action: 'tenant.hard_deleted',
        target: `tenant:${before.id}`, requestId: opts.requestId,
        details: { slug: before.slug, isolation: before.isolation, previousStatus: before.status, forced: Boolean(opts.force), ...shred },
      });
    });
    this.core.cache.invalidate(before.id);
    // the purges outside PostgreSQL are tried at once; what fails stays recorded for the job runner
    await this.afterHardDelete?.(before.id).catch((err: unknown) => this.core.logger.warn({ err, tenantId: before.id }, 'purging a hard-deleted tenant\'s cache and objects failed; the job runner retries'));
    this.core.logger.info({ tenantId: before.id }, 'tenant hard-deleted');
    return { ...before, status: 'deleted', deletedAt: before.deletedAt ?? new Date() };
  }

  /**
   * One lifecycle change: locks the row, checks the current status is one that allows it, applies the
   * change and writes the audit entry, all in one transaction.
   */
  private async transition(
    idOrSlug: string, who: AuditActor, action: string, allowed: TenantStatus[],
    apply: (tx: Tx, before: Tenant) => Promise<{ row: TenantRow; details: Record<string, unknown> }>,
  ): Promise<Tenant> {
    const id = (await this.get(idOrSlug)).id;
    const result = await this.core.admin.begin(async (tx) => {
      const [row] = await tx<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${id} for update`;
      if (!row) throw notFound(idOrSlug);
      const before = toTenant(row);
      if (!allowed.includes(before.status)) {
        throw new TenantryError('INVALID_TRANSITION', `Tenant "${before.slug}" is ${before.status}; ${action} is allowed only from ${allowed.join(' or ')}.`, { tenantId: id, status: before.status, action });
      }
      const { row: after, details } = await apply(tx, before);
      await appendAudit(tx, { tenantId: id, actor: who.actor ?? this.core.opts.actor, action, target: `tenant:${id}`, requestId: who.requestId, details });
      return toTenant(after);
    });
    this.core.cache.invalidate(id);
    return result;
  }

  private async endSessions(t: Tenant): Promise<void> {
    await terminateRoleSessions(this.core.admin, t.placement.role).catch((err: unknown) =>
      this.core.logger.warn({ err, tenantId: t.id }, 'could not end the tenant role\'s open sessions'));
  }
}

function notFound(idOrSlug: string): TenantryError {
  return new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(idOrSlug)}.`, { tenant: idOrSlug });
}

