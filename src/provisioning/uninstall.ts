import type { Core } from '../core.js';
import { ident } from '../identifiers.js';

/** Drops every database and role of the installation, then the catalog schema. */
export async function uninstall(core: Core): Promise<void> {
  const prefix = `${core.namespace}_t_`;
  await core.sharedAdmin.end({ timeout: 5 });
  const dbs = await core.admin<{ datname: string }[]>`
    select datname from pg_database
    where left(datname, ${prefix.length}) = ${prefix} or datname in (${core.sharedDatabase}, ${core.templateDatabase})`;
  for (const { datname } of dbs) {
    if (datname === core.templateDatabase) await core.admin.unsafe(`alter database ${ident(datname)} is_template false allow_connections true`).catch(() => undefined);
    await core.admin.unsafe(`drop database if exists ${ident(datname)} with (force)`);
  }
  const comment = `tenantry installation ${core.installationId}`;
  const roles = await core.admin<{ rolname: string }[]>`
    select rolname from pg_roles where shobj_description(oid, 'pg_authid') = ${comment}`;
  // tenant roles first: they are members of the group roles
  roles.sort((a, b) => Number(b.rolname.startsWith(prefix)) - Number(a.rolname.startsWith(prefix)));
  for (const { rolname } of roles) {
    await core.admin.unsafe(`drop owned by ${ident(rolname)}`).catch(() => undefined);
    await core.admin.unsafe(`drop role if exists ${ident(rolname)}`);
  }
  await core.admin.unsafe('drop schema if exists tenantry_catalog cascade');
  // the job queue (graphile-worker) lives beside the catalog
  await core.admin.unsafe('drop schema if exists tenantry_jobs cascade');
}
