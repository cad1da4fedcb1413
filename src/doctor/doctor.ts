import type { Sql } from 'postgres';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { ident } from '../identifiers.js';
import { POOLED_SCHEMA } from '../isolation/data-plane.js';
import type { TenantRow } from '../tenants/model.js';
import { findOrphans } from '../provisioning/repair.js';
import { pendingHeals } from '../provisioning/healer.js';
import { cachedTenantRoleDefaults } from '../installation.js';
import { findDriftedTenantRoles } from '../isolation/role-drift.js';
import { STRATEGIES, placementOf } from '../isolation/modes.js';
import { stalledMoves } from '../move/move.js';

export interface DoctorCheck {
  /** stable name of the invariant checked */
  check: string;
  ok: boolean;
  /** what is wrong (or what was verified) */
  message: string;
  /** what to run to fix it */
  fix?: string;
}

export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
}

/**
 * Checks a live installation against the isolation invariants. Every failure names the object and
 * says what to run to fix it.
 */
export async function runDoctor(core: Core, opts: { onProgress?: (p: { done: number; total: number; tenant: { id: string; slug: string } }) => void } = {}): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const fail = (check: string, message: string, fix: string): void => { checks.push({ check, ok: false, message, fix }); };
  const pass = (check: string, message: string): void => { checks.push({ check, ok: true, message }); };
  const { admin, roles } = core;

  // 1. the runtime role: no superuser, no BYPASSRLS, member of nothing, owns nothing
  const [rt] = await admin<{ rolsuper: boolean; rolbypassrls: boolean; rolcreaterole: boolean; rolcreatedb: boolean; memberships: number }[]>`
    select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,
           (select count(*)::int from pg_auth_members m where m.member = r.oid) as memberships
    from pg_roles r where rolname = ${roles.runtime}`;
  if (!rt) {
    fail('runtime-role', `The runtime role ${roles.runtime} is missing.`, 'Restart Tenantry (Tenantry.open recreates it).');
  } else {
    const bad = [rt.rolsuper && 'SUPERUSER', rt.rolbypassrls && 'BYPASSRLS', rt.rolcreaterole && 'CREATEROLE', rt.rolcreatedb && 'CREATEDB'].filter(Boolean);
    if (bad.length) fail('runtime-role', `The runtime role ${roles.runtime} has ${bad.join(', ')}.`, `ALTER ROLE ${ident(roles.runtime)} NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;`);
    else if (rt.memberships > 0) fail('runtime-role', `The runtime role ${roles.runtime} is a member of ${rt.memberships} role(s); it must belong to none.`, `Revoke them: SELECT 'REVOKE ' || b.rolname || ' FROM ${roles.runtime};' FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = '${roles.runtime}';`);
    else pass('runtime-role', `${roles.runtime} is NOSUPERUSER NOBYPASSRLS and a member of no role.`);
  }

  // 1a. hard deletes whose purge outside PostgreSQL (Redis keys and ACL user, objects) has not finished
  const owed = await admin<{ tenant_id: string; target: string; attempts: number; last_error: string | null }[]>`
    select tenant_id, target, attempts, last_error from tenantry_catalog.tenant_purges
    where created_at < now() - interval '5 minutes' order by created_at limit 20`;
  if (owed.length) {
    for (const o of owed) fail('external-purges', `Hard-deleted tenant ${o.tenant_id} still has its ${o.target === 'objects' ? 'objects' : o.target === 'cache' ? 'Redis keys' : 'Redis ACL user'} (${o.attempts} attempts; last error: ${o.last_error ?? 'none'}).`, 'Make Redis / the object store reachable, then run `tenantry keys purges --run` (the job runner retries every minute).');
  } else {
    pass('external-purges', 'No hard delete owes a purge of Redis keys, Redis users or objects for longer than 5 minutes.');
  }

  // 1b. no role defaults on Tenantry's login roles: SQL run as them may plant some (ALTER ROLE CURRENT_USER SET)
  const planted = await admin<{ rolname: string; datname: string | null; setconfig: string[] }[]>`
    select r.rolname, d.datname, s.setconfig from pg_db_role_setting s
    join pg_roles r on r.oid = s.setrole left join pg_database d on d.oid = s.setdatabase
    where r.rolname = ${roles.runtime} or left(r.rolname, ${core.namespace.length + 3}) = ${core.namespace + '_t_'}`;
  // Tenantry's own defaults on tenant roles (temp_file_limit, where it may set it) are expected, exactly
  const expected = await cachedTenantRoleDefaults(admin, core.opts.sqlTempFileLimitKb);
  const expectedConfig = Object.entries(expected).map(([k, v]) => `${k}=${v}`).sort();
  const isTenantRole = (name: string): boolean => name.startsWith(core.namespace + '_t_');
  const foreign = planted.filter((p) => !(isTenantRole(p.rolname) && !p.datname && [...p.setconfig].sort().join('\n') === expectedConfig.join('\n')));
  const missing = expectedConfig.length === 0 ? [] : (await admin<{ rolname: string }[]>`
    select r.rolname from tenantry_catalog.tenants t join pg_roles r on r.rolname = t.role_name
    where t.status <> 'provisioning' and not exists (select 1 from pg_db_role_setting s where s.setrole = r.oid and s.setdatabase = 0)`).map((r) => r.rolname);
  if (foreign.length || missing.length) {
    for (const p of foreign) {
      const restore = isTenantRole(p.rolname) && !p.datname ? ` ${Object.entries(expected).map(([k, v]) => `ALTER ROLE ${ident(p.rolname)} SET ${k} = '${v}';`).join(' ')}` : '';
      fail('role-defaults', `Role ${p.rolname} has defaults${p.datname ? ` in database ${p.datname}` : ''} that Tenantry did not set: ${p.setconfig.join(', ')}${expectedConfig.length && isTenantRole(p.rolname) ? ` (Tenantry sets only ${expectedConfig.join(', ')})` : ''}.`, `ALTER ROLE ${ident(p.rolname)}${p.datname ? ` IN DATABASE ${ident(p.datname)}` : ''} RESET ALL;${restore}`.trim());
    }
    for (const rolname of missing) fail('role-defaults', `Tenant role ${rolname} lacks the defaults Tenantry sets: ${expectedConfig.join(', ')}.`, Object.entries(expected).map(([k, v]) => `ALTER ROLE ${ident(rolname)} SET ${k} = '${v}';`).join(' '));
  } else {
    pass('role-defaults', expectedConfig.length
      ? `Tenant roles carry exactly Tenantry's defaults (${expectedConfig.join(', ')}); the runtime role has none.`
      : 'No ALTER ROLE ... SET defaults on the runtime role or any tenant role.');
  }

  // 1c. tenant role passwords are the ones Tenantry derives: any role may change its own password, and
  // one of the tenant's choosing is a direct login with none of the SQL endpoint's limits (issue #8, finding 2)
  await checkTenantPasswords(core, fail, pass);

  // 1c. half-made tenants: rows stuck in provisioning, objects no row owns, claims whose holder died
  const stuck = await admin<{ id: string; slug: string; isolation: string; database_name: string; age: number }[]>`
    select id, slug, isolation, database_name, extract(epoch from now() - updated_at)::int as age
    from tenantry_catalog.tenants where status = 'provisioning'
      and (updated_at < now() - make_interval(secs => ${core.opts.repairAfterSeconds}) or id = any(${pendingHeals(core)}::uuid[]))`;
  for (const t of stuck) {
    fail('stuck-provisioning', `Tenant ${t.slug} (${t.id}, ${t.isolation}) has been provisioning for ${t.age} s: its process died or its rollback has not finished (the background healer retries it).`, 'tenantry repair (removes it and whatever it created; the client retries the create).');
  }
  if (stuck.length === 0) pass('stuck-provisioning', 'No tenant is stuck in provisioning.');
  const orphans = await findOrphans(core);
  // a stuck tenant placed in a database of its own left that database half-made
  const halfMade = [...orphans.databases, ...stuck.filter((t) => t.database_name !== core.sharedDatabase).map((t) => t.database_name)];
  for (const [kind, names] of [['database', orphans.databases], ['schema', orphans.schemas], ['role', orphans.roles]] as const) {
    for (const name of names) fail('half-made-objects', `The ${kind} ${name} is named like a tenant's but no tenant owns it (left by a provisioning that did not finish).`, 'tenantry repair (drops it).');
  }
  if (orphans.databases.length + orphans.schemas.length + orphans.roles.length === 0) pass('half-made-objects', 'Every tenant database, schema and role belongs to a tenant.');
  const [claims] = await admin<{ n: number }[]>`
    select count(*)::int as n from tenantry_catalog.http_idempotency
    where status is null and (locked_until is null or locked_until < now() - make_interval(secs => ${core.opts.repairAfterSeconds}))`;
  if ((claims?.n ?? 0) > 0) fail('idempotency-claims', `${claims!.n} Idempotency-Key claim(s) were left in progress by requests that never finished (retries take them over; nothing else is blocked).`, 'tenantry repair (clears them).');
  else pass('idempotency-claims', 'No Idempotency-Key claim is left in progress by a request that never finished.');

  // 2. CONNECT and TEMPORARY not granted to PUBLIC on any data database (half-made ones are named above)
  const openDbs = await admin<{ datname: string }[]>`
    select datname from pg_database d
    where (left(datname, ${core.namespace.length + 3}) = ${core.namespace + '_t_'} or datname in (${core.sharedDatabase}, ${core.templateDatabase}))
      and datname <> all(${halfMade}::text[])
      and (d.datacl is null or exists (select 1 from aclexplode(d.datacl) a where a.grantee = 0 and a.privilege_type in ('CONNECT', 'TEMPORARY')))`;
  if (openDbs.length) {
    for (const { datname } of openDbs) fail('database-connect', `PUBLIC may CONNECT to (or create TEMP objects in) database ${datname}.`, `REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(datname)} FROM PUBLIC;`);
  } else {
    pass('database-connect', 'No data database grants CONNECT or TEMPORARY to PUBLIC.');
  }
  const [cat] = await admin<{ datname: string; open: boolean }[]>`
    select datname, (d.datacl is null or exists (select 1 from aclexplode(d.datacl) a where a.grantee = 0 and a.privilege_type = 'CONNECT')) as open
    from pg_database d where datname = current_database()`;
  if (cat?.open) fail('catalog-connect', `PUBLIC may CONNECT to the catalog database ${cat.datname} (tenant roles then can too, though they can read none of its tables).`, `Use a dedicated catalog database you own, or run REVOKE CONNECT ON DATABASE ${ident(cat.datname)} FROM PUBLIC; (and grant CONNECT to the roles that need it).`);
  else pass('catalog-connect', 'PUBLIC may not CONNECT to the catalog database.');
  const [tmpl] = await admin<{ datallowconn: boolean }[]>`select datallowconn from pg_database where datname = ${core.templateDatabase}`;
  if (!tmpl || tmpl.datallowconn) fail('template', `The template database ${core.templateDatabase} ${tmpl ? 'allows connections' : 'is missing'}.`, tmpl ? `ALTER DATABASE ${ident(core.templateDatabase)} ALLOW_CONNECTIONS false;` : 'Restart Tenantry (Tenantry.open recreates it).');
  else pass('template', `${core.templateDatabase} has datallowconn = false.`);

  // 3. every tenant's objects are present, its role matches its status
  const tenants = await admin<(TenantRow & { role_ok: boolean | null; can_login: boolean | null; db_ok: boolean })[]>`
    select t.*, r.rolname is not null as role_ok, r.rolcanlogin as can_login,
           exists (select 1 from pg_database d where d.datname = t.database_name) as db_ok
    from tenantry_catalog.tenants t left join pg_roles r on r.rolname = t.role_name
    where t.status <> 'provisioning'`;
  let tenantProblems = 0;
  for (const t of tenants) {
    const label = `tenant ${t.slug} (${t.id}, ${t.isolation})`;
    if (!t.role_ok) { tenantProblems++; fail('tenant-objects', `${label}: role ${t.role_name} is missing.`, `Hard-delete and recreate the tenant, or restore the role from a backup; run tenantry repair for leftovers.`); continue; }
    if (!t.db_ok) { tenantProblems++; fail('tenant-objects', `${label}: database ${t.database_name} is missing.`, 'Restore the database from a backup, or hard-delete the tenant.'); continue; }
    // what else its mode places (a schema of its own, the shared schema), asked of the mode itself
    const missing = await STRATEGIES[t.isolation].check(core, placementOf(t));
    if (missing.length) { tenantProblems++; fail('tenant-objects', `${label}: ${missing.join('; ')}.`, 'Restore it from a backup, or hard-delete the tenant.'); continue; }
    const shouldLogin = t.status === 'active' || t.status === 'trial';
    if (Boolean(t.can_login) !== shouldLogin) { tenantProblems++; fail('tenant-login', `${label}: role ${t.role_name} ${t.can_login ? 'can' : 'cannot'} log in while the tenant is ${t.status}.`, `ALTER ROLE ${ident(t.role_name)} ${shouldLogin ? 'LOGIN' : 'NOLOGIN'};`); }
    if (t.schema_version < latestVersion(core)) { tenantProblems++; fail('tenant-version', `${label}: at tenant migration ${t.schema_version}, latest is ${latestVersion(core)}.`, 'Run the tenant migrations (tenantry migrate).'); }
  }
  if (tenantProblems === 0) pass('tenant-objects', `All ${tenants.length} tenants have their role, schema or database, and a login that matches their status.`);

  // 4. row-level security on every tenant table, no CREATE on public, in every data database
  // the schemas holding tenant tables in each data database, read from the placements (any mode)
  const sharedSchemas = [POOLED_SCHEMA, ...tenants.filter((t) => t.database_name === core.sharedDatabase && t.schema_name !== POOLED_SCHEMA).map((t) => t.schema_name)];
  await checkDataDatabase(core.sharedAdmin, core.sharedDatabase, sharedSchemas, roles.runtime, checks);
  await checkLargeObjects(core.sharedAdmin, core.sharedDatabase, core.namespace + '_t_', checks);
  const databaseTenants = tenants.filter((x) => x.database_name !== core.sharedDatabase && x.db_ok);
  for (const [i, t] of databaseTenants.entries()) {
    const db = core.adminTo(t.database_name, 1);
    try {
      await checkDataDatabase(db, t.database_name, [t.schema_name], roles.runtime, checks);
      await checkLargeObjects(db, t.database_name, core.namespace + '_t_', checks);
    } finally {
      await db.end({ timeout: 5 });
    }
    opts.onProgress?.({ done: i + 1, total: databaseTenants.length, tenant: { id: t.id, slug: t.slug } });
  }

  // a move between isolation modes whose process died leaves its tenant frozen (or its old placement)
  for (const m of await stalledMoves(core)) {
    fail('moves', `The move ${m.id} of tenant ${m.tenantId} (${m.from} -> ${m.to}) stopped at phase ${m.phase}: its process is gone${m.phase === 'frozen' ? ', and the tenant\'s writes are refused until it is ended' : ''}.`,
      'tenantry repair (undoes it before the switch, finishes it after; the background healer does the same within a minute).');
  }
  return { ok: checks.every((c) => c.ok), checks };
}

async function checkDataDatabase(sql: Sql, database: string, schemas: string[], runtime: string, checks: DoctorCheck[]): Promise<void> {
  const tables = await sql<{ schema: string; table: string; has_tenant: boolean; rls: boolean; forced: boolean; policies: string[]}[]>`
    select n.nspname as schema, c.relname as table,
           exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped) as has_tenant,
           c.relrowsecurity as rls, c.relforcerowsecurity as forced,
           coalesce((select array_agg(p.polname::text || ':' || case when p.polpermissive then 'permissive' else 'restrictive' end)
                     from pg_policy p where p.polrelid = c.oid), '{}') as policies
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(${schemas}) and c.relkind in ('r', 'p')
    order by 1, 2`;
  let problems = 0;
  for (const t of tables) {
    const name = `${database}: ${t.schema}.${t.table}`;
    const q = `${ident(t.schema)}.${ident(t.table)}`;
    if (!t.has_tenant) {
      problems++;
      checks.push({ check: 'tenant-id-column', ok: false, message: `${name} has no tenant_id column, so row-level security cannot guard it (Tenantry grants no access to it).`, fix: `Add the column in a tenant migration: ALTER TABLE ${q} ADD COLUMN tenant_id uuid NOT NULL DEFAULT tenantry.current_tenant(); then run tenantry migrate (it applies row-level security to the table).` });
      continue;
    }
    if (!t.rls || !t.forced) {
      problems++;
      checks.push({ check: 'row-level-security', ok: false, message: `${name}: row-level security is ${t.rls ? 'enabled but not forced' : 'disabled'}.`, fix: `ALTER TABLE ${q} ENABLE ROW LEVEL SECURITY; ALTER TABLE ${q} FORCE ROW LEVEL SECURITY;` });
    }
    if (!t.policies.includes('tenantry_isolation:restrictive') || !t.policies.includes('tenantry_access:permissive')) {
      problems++;
      checks.push({ check: 'tenant-policy', ok: false, message: `${name} lacks Tenantry's policies (has: ${t.policies.join(', ') || 'none'}).`, fix: 'tenantry migrate --reapply-security (re-applies row-level security, policies and grants to every tenant table).' });
    } else if (t.policies.some((p) => !p.startsWith('tenantry_') && p.endsWith(':permissive'))) {
      // an extra permissive policy cannot widen past the restrictive one, but it signals a hand edit
      checks.push({ check: 'tenant-policy', ok: true, message: `${name} has extra permissive policies (still bounded by tenantry_isolation).` });
    }
  }
  const [pub] = await sql<{ open: boolean }[]>`
    select exists (select 1 from pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   where n.nspname = 'public' and a.grantee = 0 and a.privilege_type = 'CREATE') as open`;
  if (pub?.open) {
    problems++;
    checks.push({ check: 'public-schema', ok: false, message: `${database}: PUBLIC may CREATE in schema public.`, fix: `In database ${database}: REVOKE CREATE ON SCHEMA public FROM PUBLIC;` });
  }
  const [owned] = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_class c join pg_roles r on r.oid = c.relowner
    where r.rolname = ${runtime} and c.relnamespace in (select oid from pg_namespace where nspname = any(${schemas}))`;
  if ((owned?.n ?? 0) > 0) {
    problems++;
    checks.push({ check: 'runtime-owns-nothing', ok: false, message: `${database}: the runtime role owns ${owned!.n} tenant table(s), so it could disable their security.`, fix: 'ALTER TABLE ... OWNER TO the owner role for each.' });
  }
  if (problems === 0) checks.push({ check: 'row-level-security', ok: true, message: `${database}: ${tables.length} tenant tables have RLS enabled and forced with Tenantry's policies; no CREATE on public.` });
}

async function checkTenantPasswords(core: Core, fail: (c: string, m: string, f: string) => void, pass: (c: string, m: string) => void): Promise<void> {
  const { checked, drifted, unverifiable } = await findDriftedTenantRoles(core);
  if (unverifiable) {
    pass('tenant-password', `Not verified for ${checked} tenant roles: ${unverifiable}.`);
    return;
  }
  if (drifted.length === 0) {
    pass('tenant-password', `All ${checked} tenant roles that may log in have the password Tenantry set.`);
    return;
  }
  for (const d of drifted) {
    fail('tenant-password', `Tenant ${d.slug}: role ${d.role}: ${d.why}; someone may log in as the tenant directly, outside the SQL endpoint's limits (${d.sessions} session(s) now).`,
      'tenantry repair (library: repair()) restores the password Tenantry set, its role defaults, and ends every session of the role.');
  }
}

/**
 * Large objects owned by a tenant role: data outside the tenant's rows, its read-only mode and (in the
 * shared database) its storage quota. The SQL endpoint refuses every large-object function, so none
 * should exist; one that does came in through a path that has since been closed (issue #8, finding 4).
 */
async function checkLargeObjects(sql: Sql, database: string, rolePrefix: string, checks: DoctorCheck[]): Promise<void> {
  const owned = await sql<{ rolname: string; n: number }[]>`
    select r.rolname, count(*)::int as n from pg_largeobject_metadata m join pg_roles r on r.oid = m.lomowner
    where left(r.rolname, ${rolePrefix.length}) = ${rolePrefix} group by r.rolname order by r.rolname`;
  for (const o of owned) {
    checks.push({ check: 'large-objects', ok: false, message: `${database}: tenant role ${o.rolname} owns ${o.n} large object(s), outside its rows and its storage quota.`, fix: `In database ${database}: SELECT lo_unlink(m.oid) FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner WHERE r.rolname = '${o.rolname}';` });
  }
}
