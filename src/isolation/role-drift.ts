import type { Core } from '../core.js';
import { connect } from '../db/connections.js';
import { restoreRole } from './tenant-transaction.js';
import { terminateRoleSessions } from './modes.js';

/**
 * Tenant roles whose password is not the one Tenantry derives. Any role may change its own password
 * (ALTER ROLE CURRENT_USER PASSWORD), and a password of the tenant's choosing is a direct login with
 * none of the SQL endpoint's limits (issue #8, finding 2). A superuser compares the stored SCRAM
 * verifiers (deterministic here) without a login; anyone else logs in as each live role with the
 * derived password, four at a time.
 */
export async function findDriftedTenantRoles(core: Core): Promise<{ checked: number; unverifiable?: string; drifted: { role: string; slug: string; why: string; sessions: number }[] }> {
  const roles = await core.admin<{ role_name: string; database_name: string; slug: string }[]>`
    select t.role_name, t.database_name, t.slug from tenantry_catalog.tenants t join pg_roles r on r.rolname = t.role_name
    where t.status in ('active', 'trial') and r.rolcanlogin`;
  const [me] = await core.admin<{ rolsuper: boolean }[]>`select rolsuper from pg_roles where rolname = current_user`;
  const found: { role: string; slug: string; why: string }[] = [];
  if (me?.rolsuper) {
    const stored = new Map((await core.admin<{ rolname: string; rolpassword: string | null }[]>`
      select rolname, rolpassword from pg_authid where rolname = any(${roles.map((r) => r.role_name)})`).map((r) => [r.rolname, r.rolpassword]));
    for (const r of roles) {
      if (stored.get(r.role_name) !== core.signer.roleVerifier(r.role_name)) found.push({ role: r.role_name, slug: r.slug, why: 'its stored password is not the one Tenantry set' });
    }
  } else if (roles.length > 0) {
    // A server that lets a wrong password in (pg_hba trust from this host) checks none: no login can
    // tell a changed password there, and none is needed to log in as the tenant either.
    const probe = connect(core.url, { database: roles[0]!.database_name, username: roles[0]!.role_name, password: `wrong-${core.signer.rolePassword(roles[0]!.role_name)}`, max: 1, connect_timeout: 10 });
    const trusted = await probe`select 1`.then(() => true, () => false);
    await probe.end({ timeout: 5 }).catch(() => undefined);
    if (trusted) return { checked: roles.length, drifted: [], unverifiable: 'the server accepts any password for tenant roles from Tenantry\'s host (pg_hba trust?), so a changed password cannot be seen without superuser; run doctor as a superuser, or use scram-sha-256 in pg_hba.conf' };
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(4, roles.length) }, async () => {
      while (next < roles.length) {
        const r = roles[next++]!;
        const sql = connect(core.url, { database: r.database_name, username: r.role_name, password: core.signer.rolePassword(r.role_name), max: 1, connect_timeout: 10 });
        try {
          await sql`select 1`;
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code === '28P01') found.push({ role: r.role_name, slug: r.slug, why: 'Tenantry\'s derived password is refused' });
          // the role's connection limit is full: Tenantry's own pools never fill it
          else if (code === '53300') found.push({ role: r.role_name, slug: r.slug, why: 'its connection limit is full (sessions Tenantry did not open?)' });
        } finally {
          await sql.end({ timeout: 5 }).catch(() => undefined);
        }
      }
    }));
  }
  const drifted = [];
  for (const d of found) {
    const [n] = await core.admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where usename = ${d.role}`;
    drifted.push({ ...d, sessions: n?.n ?? 0 });
  }
  return { checked: roles.length, drifted };
}

/**
 * Gives a tenant role back the password and defaults Tenantry set, then ends every session of it: a
 * session opened with another password is a login Tenantry did not hand out. Tenantry's own pooled
 * connections reconnect on their next use.
 */
export async function restoreTenantRole(core: Core, role: string): Promise<void> {
  await restoreRole(core, role);
  await terminateRoleSessions(core.admin, role);
}
