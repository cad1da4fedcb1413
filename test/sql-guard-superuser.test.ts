import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { superuser, SUPERUSER_URL } from './helpers/installation.js';
import { Tenantry, type Isolation, type Tenant } from '../src/index.js';

/**
 * Issue #8's defences that only a superuser installation can put up: temp_file_limit pinned on every
 * tenant role, large-object functions, statistics views and size functions revoked from PUBLIC in the
 * data databases, and stored passwords compared without a login. (The other test files install as a
 * user with only CREATEDB and CREATEROLE, as on managed services.)
 */

const MODES: readonly Isolation[] = ['pooled', 'schema', 'database'];
const TEMP_FILE_LIMIT_KB = 1024;
const namespace = `ts${randomBytes(4).toString('hex')}`;
const catalogDb = `${namespace}_catalog`;
const suUser = decodeURIComponent(new URL(SUPERUSER_URL).username) || 'postgres';
const suPassword = decodeURIComponent(new URL(SUPERUSER_URL).password);
const urlFor = (database: string, user = suUser, password = suPassword): string => {
  const u = new URL(SUPERUSER_URL);
  u.username = encodeURIComponent(user);
  u.password = password ? encodeURIComponent(password) : '';
  u.pathname = `/${database}`;
  return u.toString();
};

let tenantry: Tenantry;
let su: Sql;
const T = {} as Record<Isolation, Tenant>;

before(async () => {
  su = superuser();
  await su.unsafe(`create database "${catalogDb}"`);
  tenantry = await Tenantry.open({ databaseUrl: urlFor(catalogDb), namespace, maxConnections: 16, sqlTempFileLimitKb: TEMP_FILE_LIMIT_KB, sqlTimeoutMs: 10_000 });
  for (const mode of MODES) {
    T[mode] = await tenantry.tenants.create({ slug: `su-${mode}`, isolation: mode, tier: 'enterprise' });
    await tenantry.withTenant(T[mode].id, (sql) => sql`insert into agents (name, agent_type) values ('a', 'calculator')`);
  }
});
after(async () => {
  await tenantry?.uninstall({ confirm: namespace }).catch(async () => { await tenantry.close(); });
  await su.unsafe(`drop database if exists "${catalogDb}" with (force)`);
  const dbs = await su<{ datname: string }[]>`select datname from pg_database where datname like ${namespace + '\\_%'}`;
  for (const { datname } of dbs) {
    await su.unsafe(`alter database "${datname}" allow_connections true`);
    await su.unsafe(`drop database if exists "${datname}" with (force)`);
  }
  for (const { rolname } of await su<{ rolname: string }[]>`select rolname from pg_roles where rolname like ${namespace + '\\_%'} order by rolname like '%\\_t\\_%' desc`) {
    await su.unsafe(`drop owned by "${rolname}" cascade`).catch(() => undefined);
    await su.unsafe(`drop role if exists "${rolname}"`);
  }
  await su.end();
});

test('temp_file_limit is pinned on every tenant role, holds in its sessions, and cannot be lifted by them', async () => {
  for (const mode of MODES) {
    const t = T[mode];
    const [s] = await su<{ setconfig: string[] }[]>`
      select s.setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole where r.rolname = ${t.placement.role} and s.setdatabase = 0`;
    assert.deepEqual(s?.setconfig, [`temp_file_limit=${TEMP_FILE_LIMIT_KB}kB`], mode);
    const [row] = await tenantry.withTenantRole(t.id, (tx) => tx`select current_setting('temp_file_limit') as v`);
    assert.equal(row!.v, '1MB', mode);
    await assert.rejects(tenantry.withTenantRole(t.id, (tx) => tx`select set_config('temp_file_limit', '-1', true)`), (err: { code?: string }) => err.code === '42501');
    // a sort that spills past 1 MB of temporary files fails instead of filling the disk
    await assert.rejects(tenantry.runTenantSql(t.id, { sql: 'select count(*) from (select g from generate_series(1, 2000000) g order by g desc) s' }),
      (err: { code?: string; message?: string }) => err.code === 'SQL_ERROR' && /temp_file_limit/.test(err.message ?? ''));
  }
  const report = await tenantry.doctor();
  assert.deepEqual(report.checks.filter((c) => !c.ok), []);
  assert.ok(report.checks.some((c) => c.check === 'role-defaults' && c.ok && c.message.includes(`temp_file_limit=${TEMP_FILE_LIMIT_KB}kB`)));
});

test('large-object functions, statistics views and size functions are revoked from PUBLIC in every data database', async () => {
  for (const mode of MODES) {
    const t = T[mode];
    // as the tenant's own role, past the SQL guard: the server itself refuses now
    for (const sql of [
      `select lo_from_bytea(0, '\\x00'::bytea)`,
      'select lo_create(0)',
      'select lo_unlink(1)',
      'select * from pg_stats',
      'select * from pg_stat_user_tables',
      'select * from pg_stat_activity',
      `select pg_total_relation_size('${t.placement.schema}.agents')`,
      'select pg_database_size(current_database())',
    ]) {
      await assert.rejects(tenantry.withTenantRole(t.id, (tx) => tx.unsafe(sql)), (err: { code?: string }) => err.code === '42501', `${mode}: ${sql}`);
    }
  }
  // Tenantry's own measurement still works (it runs as the installing user)
  assert.ok((await tenantry.quotas.refreshStorage(T.schema.id)) > 0);
});

test('a tenant role\'s password Tenantry did not set: doctor compares the stored verifier, repair restores it and ends the foreign session', async () => {
  const t = T.schema;
  const mine = `mine-${randomBytes(6).toString('hex')}`;
  await su.unsafe(`alter role "${t.placement.role}" password '${mine}'`);
  const foreign = postgres(urlFor(`${namespace}_shared`, t.placement.role, mine), { max: 1, connect_timeout: 10, onnotice: () => {} });
  const foreignPid = (await foreign<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
  const report = await tenantry.doctor();
  const hit = report.checks.find((c) => c.check === 'tenant-password' && !c.ok);
  assert.ok(hit, JSON.stringify(report.checks.filter((c) => !c.ok)));
  assert.match(hit.message, new RegExp(`${t.placement.role}: its stored password is not the one Tenantry set`));
  assert.match(hit.message, /[1-9] session\(s\) now/);
  const repaired = await tenantry.repair();
  assert.deepEqual(repaired.restoredRoles, [t.placement.role]);
  // the foreign session is gone (asked of the server: under trust authentication, as on the CI service,
  // the driver could silently log in again, so a failing next query would prove nothing)
  let alive = 1;
  for (let i = 0; i < 50 && alive > 0; i++) {
    alive = (await su<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where pid = ${foreignPid}`)[0]!.n;
    if (alive > 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(alive, 0, 'the foreign session was ended');
  await foreign.end({ timeout: 1 }).catch(() => undefined);
  assert.deepEqual((await tenantry.doctor()).checks.filter((c) => !c.ok), []);
  const ok = await tenantry.runTenantSql(t.id, { sql: 'select name from agents' });
  assert.deepEqual(ok.rows, [{ name: 'a' }]);
});
