import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { ident, tenantIdFromHex } from '../identifiers.js';
import { appendAudit } from '../audit/audit.js';
import { dropTenantRole } from '../isolation/modes.js';
import { teardownTenantObjects } from './provision.js';
import type { Isolation, TenantRow } from '../tenants/model.js';

export interface RepairReport {
  /** tenants found stuck in `provisioning`, now removed */
  stuckTenants: { id: string; slug: string; isolation: Isolation }[];
  orphanRoles: string[];
  orphanSchemas: string[];
  orphanDatabases: string[];
}

/**
 * Cleans up after crashed provisioning. The catalog row is always written before any object, so an
 * object whose tenant id has no row is an orphan; a row still `provisioning` after the grace period
 * belongs to a process that died. Both are removed (and audited).
 */
export async function repairInstallation(core: Core, opts: { olderThanSeconds?: number; actor?: string }): Promise<RepairReport> {
  const olderThan = opts.olderThanSeconds ?? core.opts.repairAfterSeconds;
  if (!Number.isInteger(olderThan) || olderThan < 0) throw new TenantryError('INVALID_INPUT', 'olderThanSeconds must be a non-negative integer.');
  const actor = opts.actor ?? core.opts.actor;
  const report: RepairReport = { stuckTenants: [], orphanRoles: [], orphanSchemas: [], orphanDatabases: [] };

  const stuck = await core.admin<TenantRow[]>`
    select * from tenantry_catalog.tenants
    where status = 'provisioning' and updated_at < now() - make_interval(secs => ${olderThan})`;
  for (const row of stuck) {
    await teardownTenantObjects(core, { id: row.id, isolation: row.isolation, database: row.database_name, schema: row.schema_name, role: row.role_name });
    await core.admin.begin(async (tx) => {
      await tx`delete from tenantry_catalog.tenants where id = ${row.id} and status = 'provisioning'`;
      await appendAudit(tx, {
        tenantId: row.id, actor, action: 'tenant.provisioning_repaired', target: `tenant:${row.id}`,
        details: { slug: row.slug, isolation: row.isolation, removed: true },
      });
    });
    report.stuckTenants.push({ id: row.id, slug: row.slug, isolation: row.isolation });
  }

  const prefix = `${core.namespace}_t_`;
  const known = new Set((await core.admin<{ id: string }[]>`select id from tenantry_catalog.tenants`).map((r) => r.id));
  const comment = `tenantry installation ${core.installationId}`;
  const hexOf = (name: string, p: string): string | undefined => {
    const hex = name.slice(p.length);
    return name.startsWith(p) && /^[0-9a-f]{32}$/.test(hex) ? tenantIdFromHex(hex) : undefined;
  };

  const dbs = await core.admin<{ datname: string }[]>`select datname from pg_database where left(datname, ${prefix.length}) = ${prefix}`;
  for (const { datname } of dbs) {
    const id = hexOf(datname, prefix);
    if (!id || known.has(id)) continue;
    await core.pools.drop(datname);
    await core.admin.unsafe(`drop database if exists ${ident(datname)} with (force)`);
    report.orphanDatabases.push(datname);
  }

  const schemas = await core.sharedAdmin<{ nspname: string }[]>`select nspname from pg_namespace where nspname ~ '^t_[0-9a-f]{32}$'`;
  for (const { nspname } of schemas) {
    const id = hexOf(nspname, 't_');
    if (!id || known.has(id)) continue;
    await core.sharedAdmin.unsafe(`drop schema if exists ${ident(nspname)} cascade`);
    report.orphanSchemas.push(nspname);
  }

  // only roles carrying this installation's comment: never touch another installation's roles
  const roles = await core.admin<{ rolname: string }[]>`
    select rolname from pg_roles
    where left(rolname, ${prefix.length}) = ${prefix} and shobj_description(oid, 'pg_authid') = ${comment}`;
  for (const { rolname } of roles) {
    const id = hexOf(rolname, prefix);
    if (!id || known.has(id)) continue;
    await dropTenantRole(core, rolname);
    report.orphanRoles.push(rolname);
  }

  const removed = report.orphanDatabases.length + report.orphanSchemas.length + report.orphanRoles.length;
  if (removed > 0) {
    await appendAudit(core.admin, {
      tenantId: null, actor, action: 'installation.orphans_removed', target: `installation:${core.installationId}`,
      details: { databases: report.orphanDatabases, schemas: report.orphanSchemas, roles: report.orphanRoles },
    });
  }
  core.logger.info({ ...report }, 'repair finished');
  return report;
}
