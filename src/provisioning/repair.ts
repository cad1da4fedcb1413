import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { ident, tenantIdFromHex } from '../identifiers.js';
import { appendAudit } from '../audit/audit.js';
import { findDriftedTenantRoles, restoreTenantRole } from '../isolation/role-drift.js';
import { STRATEGIES, dropTenantRole, type TenantPlacement } from '../isolation/modes.js';
import type { Isolation, TenantRow } from '../tenants/model.js';
import { DEFAULT_SERVER, poolKey } from '../db/pool-key.js';
import { IdempotencyStore } from '../idempotency/idempotency.js';
import { repairMoves, type MoveRepairReport } from '../move/move.js';

export interface RepairReport {
  /** tenants found stuck in `provisioning`, now removed */
  stuckTenants: { id: string; slug: string; isolation: Isolation }[];
  orphanRoles: string[];
  orphanSchemas: string[];
  orphanDatabases: string[];
  /** Idempotency-Key claims left in progress by a holder that is gone (its lease ran out) */
  orphanedClaims: number;
  /** tenant roles whose password was not Tenantry's: restored, and their sessions ended */
  restoredRoles: string[];
  /** moves between isolation modes whose process died: undone before the switch, finished after it */
  moves: MoveRepairReport;
}

/** Removes whatever exists of a tenant's objects (data first, then its role). Idempotent. */
export async function teardownTenantObjects(core: Core, placement: TenantPlacement): Promise<void> {
  await core.pools.drop(poolKey(placement));
  await STRATEGIES[placement.isolation].remove(core, placement);
  await dropTenantRole(core, placement.role);
}

/**
 * Cleans up after crashed provisioning. The catalog row is always written before any object, so an
 * object whose tenant id has no row is an orphan; a row still `provisioning` after the grace period
 * belongs to a process that died. Both are removed (and audited).
 */
export async function repairInstallation(core: Core, opts: { olderThanSeconds?: number; actor?: string }): Promise<RepairReport> {
  const olderThan = opts.olderThanSeconds ?? core.opts.repairAfterSeconds;
  if (!Number.isInteger(olderThan) || olderThan < 0) throw new TenantryError('INVALID_INPUT', 'olderThanSeconds must be a non-negative integer.');
  // never at the same time as the background sweep of another process (or of this one)
  return (await underRepairLock(core, true, () => repairUnlocked(core, opts)))!;
}

/** Advisory lock key pair (transaction-scoped) shared by `repair()` and the background sweep. */
const REPAIR_LOCK = 0x7465_6e68; // 'tenh'

/**
 * Runs `fn` while holding the installation's repair lock in a catalog transaction (transaction-scoped,
 * so it also works behind a transaction pooler): waits for it, or with `wait` false returns undefined
 * when another process holds it.
 */
export async function underRepairLock<T>(core: Core, wait: boolean, fn: () => Promise<T>): Promise<T | undefined> {
  return core.admin.begin(async (tx) => {
    if (wait) {
      await tx`select pg_advisory_xact_lock(${REPAIR_LOCK}, hashtext(${core.namespace}))`;
    } else {
      const [lock] = await tx<{ ok: boolean }[]>`select pg_try_advisory_xact_lock(${REPAIR_LOCK}, hashtext(${core.namespace})) as ok`;
      if (!lock?.ok) return undefined;
    }
    return fn();
  }) as Promise<T | undefined>;
}

/** repairInstallation without the lock (the background sweep holds it already). */
export async function repairUnlocked(core: Core, opts: { olderThanSeconds?: number; actor?: string; purgeClaims?: boolean; orphanFilter?: (name: string) => boolean }): Promise<RepairReport> {
  const olderThan = opts.olderThanSeconds ?? core.opts.repairAfterSeconds;
  if (!Number.isInteger(olderThan) || olderThan < 0) throw new TenantryError('INVALID_INPUT', 'olderThanSeconds must be a non-negative integer.');
  const actor = opts.actor ?? core.opts.actor;
  const report: RepairReport = { stuckTenants: [], orphanRoles: [], orphanSchemas: [], orphanDatabases: [], orphanedClaims: 0, restoredRoles: [], moves: { undone: [], finished: [] } };

  // before the orphan sweep: a move's target placement belongs to a tenant with a row, never an orphan,
  // so only this undoes one whose process died (and unfreezes the tenant's writes on the source)
  report.moves = await repairMoves(core, actor);

  const stuck = await core.admin<TenantRow[]>`
    select * from tenantry_catalog.tenants
    where status = 'provisioning' and updated_at < now() - make_interval(secs => ${olderThan})`;
  for (const row of stuck) {
    await teardownTenantObjects(core, { id: row.id, isolation: row.isolation, server: row.server_name ?? 'default', database: row.database_name, schema: row.schema_name, role: row.role_name });
    await core.admin.begin(async (tx) => {
      await tx`delete from tenantry_catalog.tenants where id = ${row.id} and status = 'provisioning'`;
      await appendAudit(tx, {
        tenantId: row.id, actor, action: 'tenant.provisioning_repaired', target: `tenant:${row.id}`,
        details: { slug: row.slug, isolation: row.isolation, removed: true },
      });
    });
    report.stuckTenants.push({ id: row.id, slug: row.slug, isolation: row.isolation });
  }

  const found = await findOrphans(core);
  const keep = opts.orphanFilter ?? (() => true);
  const orphans = { databases: found.databases.filter(keep), schemas: found.schemas.filter(keep), roles: found.roles.filter(keep) };
  for (const datname of orphans.databases) {
    await core.pools.drop(poolKey({ server: DEFAULT_SERVER, database: datname, role: core.roles.runtime }));
    await core.admin.unsafe(`drop database if exists ${ident(datname)} with (force)`);
    report.orphanDatabases.push(datname);
  }
  for (const nspname of orphans.schemas) {
    await core.sharedAdmin.unsafe(`drop schema if exists ${ident(nspname)} cascade`);
    report.orphanSchemas.push(nspname);
  }
  for (const rolname of orphans.roles) {
    await dropTenantRole(core, rolname);
    report.orphanRoles.push(rolname);
  }

  // a tenant role's password of the tenant's own choosing is a login Tenantry did not hand out (issue #8)
  for (const d of (await findDriftedTenantRoles(core)).drifted) {
    await restoreTenantRole(core, d.role);
    report.restoredRoles.push(d.role);
  }

  const removed = report.orphanDatabases.length + report.orphanSchemas.length + report.orphanRoles.length;
  if (removed > 0) {
    await appendAudit(core.admin, {
      tenantId: null, actor, action: 'installation.orphans_removed', target: `installation:${core.installationId}`,
      details: { databases: report.orphanDatabases, schemas: report.orphanSchemas, roles: report.orphanRoles },
    });
  }
  if (opts.purgeClaims !== false) report.orphanedClaims = await new IdempotencyStore(core.admin).purgeOrphaned(olderThan);
  core.logger.info({ ...report }, 'repair finished');
  return report;
}

/**
 * Databases, schemas and roles named like a tenant's whose tenant id has no catalog row: what a crash
 * between creating an object and finishing (or undoing) its tenant leaves. The catalog row is always
 * written before any object, so an object without one belongs to no live or in-flight provisioning.
 */
export async function findOrphans(core: Core): Promise<{ databases: string[]; schemas: string[]; roles: string[] }> {
  const prefix = `${core.namespace}_t_`;
  // pre-made roles of the role pool belong to no tenant yet, and are no orphans either
  const known = new Set((await core.admin<{ id: string }[]>`select id from tenantry_catalog.tenants union all select tenant_id from tenantry_catalog.role_pool`).map((r) => r.id));
  const comment = `tenantry installation ${core.installationId}`;
  const orphan = (name: string, p: string): boolean => {
    const hex = name.slice(p.length);
    return name.startsWith(p) && /^[0-9a-f]{32}$/.test(hex) && !known.has(tenantIdFromHex(hex));
  };
  const dbs = await core.admin<{ datname: string }[]>`select datname from pg_database where left(datname, ${prefix.length}) = ${prefix}`;
  const schemas = await core.sharedAdmin<{ nspname: string }[]>`select nspname from pg_namespace where nspname ~ '^t_[0-9a-f]{32}$'`;
  // only roles carrying this installation's comment: never touch another installation's roles
  const roles = await core.admin<{ rolname: string }[]>`
    select rolname from pg_roles
    where left(rolname, ${prefix.length}) = ${prefix} and shobj_description(oid, 'pg_authid') = ${comment}`;
  return {
    databases: dbs.map((r) => r.datname).filter((n) => orphan(n, prefix)),
    schemas: schemas.map((r) => r.nspname).filter((n) => orphan(n, 't_')),
    roles: roles.map((r) => r.rolname).filter((n) => orphan(n, prefix)),
  };
}
