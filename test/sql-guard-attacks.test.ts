import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, rolePassword, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { loadSqlGuard, checkTenantSql } from '../src/isolation/sql-guard.js';
import { isTenantryError, type Isolation, type Tenant } from '../src/index.js';

/**
 * Issue #8, the untrusted-SQL half: each finding as the attack that found it, through POST
 * /v1/tenant/sql with nothing but a tenant's own API key. On the old main each of these succeeded;
 * now the SQL guard (src/isolation/sql-guard.ts) refuses them on PostgreSQL's own parse tree, and the
 * defences behind it (pinned settings, password drift found and healed, foreign sessions ended) hold
 * where the guard is not in the way.
 */

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const MODES: readonly Isolation[] = ['pooled', 'schema', 'database'];
const TIMEOUT_MS = 4000;
const LOCK_TIMEOUT_MS = 500;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
interface Res { status: number; body: Json; text: string; ms: number }
interface Party { tenant: Tenant; key: string; roKey: string; marker: string }

let inst: TestInstallation;
let app: FastifyInstance;
const P = {} as Record<Isolation, { a: Party; b: Party }>;

before(async () => {
  inst = await freshInstallation({ adminKey: ADMIN, sqlTimeoutMs: TIMEOUT_MS, sqlLockTimeoutMs: LOCK_TIMEOUT_MS, sqlMaxRows: 1000 });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  for (const mode of MODES) {
    const sides = {} as { a: Party; b: Party };
    for (const side of ['a', 'b'] as const) {
      const created = await inst.tenantry.tenants.create({ slug: `guard-${mode}-${side}`, isolation: mode, tier: 'enterprise' });
      const marker = `SECRET_${mode}_${side}_${randomBytes(6).toString('hex')}`;
      await inst.tenantry.withTenant(created.id, async (sql) => {
        await sql`insert into users (email, display_name) values (${`${marker.toLowerCase()}@example.com`}, ${marker})`;
        await sql`insert into agents (name, agent_type) values (${`${marker}-agent`}, 'calculator')`;
      });
      const roKey = (await inst.tenantry.keys.create(created.id, { name: 'read only', scopes: ['read', 'sql'] })).key;
      sides[side] = { tenant: created, key: created.apiKey!.key, roKey, marker };
    }
    P[mode] = sides;
  }
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
});

async function sqlAs(key: string, sql: string, params: unknown[] = []): Promise<Res> {
  const started = performance.now();
  const r = await app.inject({ method: 'POST', url: '/v1/tenant/sql', headers: { authorization: `Bearer ${key}` }, payload: { sql, params } });
  return { status: r.statusCode, body: JSON.parse(r.body), text: r.body, ms: performance.now() - started };
}

function notAllowed(r: Res, what: string, names?: RegExp): void {
  assert.equal(r.status, 403, `${what}: expected 403 SQL_NOT_ALLOWED, got ${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(r.body.code, 'SQL_NOT_ALLOWED', what);
  assert.match(r.body.detail, /The SQL endpoint refuses \S/, `${what}: names what it refused`);
  if (names) assert.match(r.body.detail, names, `${what}: ${r.body.detail}`);
}

/** A superuser connection to one database of the installation (to plant what an attacker might have). */
const suTo = (database: string): postgres.Sql => postgres(inst.urlFor(database, decodeURIComponent(new URL(SUPERUSER_URL).username) || 'postgres', decodeURIComponent(new URL(SUPERUSER_URL).password)), { max: 1, onnotice: () => {} });
/** The SCRAM verifier Tenantry stores for one of its roles. */
async function verifierOf(role: string): Promise<string> {
  const { ContextSigner } = await import('../src/isolation/context.js');
  const [row] = await inst.su<{ secret: Buffer }[]>`select secret from tenantry_catalog.installation`;
  return new ContextSigner(row!.secret).roleVerifier(role);
}
let enforced: boolean | undefined;
/** Whether this server checks passwords from here at all (a pg_hba `trust` line lets any password in). */
async function passwordsEnforced(): Promise<boolean> {
  if (enforced === undefined) {
    const A = P.pooled.a;
    const probe = postgres(inst.urlFor(`${inst.namespace}_shared`, A.tenant.placement.role, 'certainly-wrong'), { max: 1, connect_timeout: 10, onnotice: () => {} });
    enforced = await probe`select 1`.then(() => false, () => true);
    await probe.end();
  }
  return enforced;
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- finding 1 ----

const LOCK_MODES = ['access share', 'row share', 'row exclusive', 'share update exclusive', 'share', 'share row exclusive', 'exclusive', 'access exclusive'];

test('finding 1: a pooled tenant locks the shared table in every lock mode, with a read-only key and with a full key: refused, naming LOCK', async () => {
  const A = P.pooled.a;
  for (const key of [A.roKey, A.key]) {
    for (const mode of LOCK_MODES) {
      for (const sql of [`lock table agents in ${mode} mode`, `lock table pooled.agents in ${mode} mode nowait`, `lock agents in ${mode} mode`]) {
        notAllowed(await sqlAs(key, sql), sql, /refuses LOCK/);
      }
    }
  }
  // nothing of A's is holding any lock on the shared table afterwards
  const held = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_locks l join pg_stat_activity a on a.pid = l.pid where a.usename = ${A.tenant.placement.role} and l.locktype = 'relation' and l.mode not in ('AccessShareLock')`;
  assert.equal(held[0]!.n, 0);
});

test('finding 1: another pooled tenant\'s reads stay within 2x of their quiet latency while the attacker sends every lock mode and long statement it can', async () => {
  const A = P.pooled.a;
  const B = P.pooled.b;
  // the victim reads through the library, as an app does; each sample is one read
  const read = async (): Promise<number> => {
    const t = performance.now();
    await inst.tenantry.query(B.tenant.id, 'select count(*) from agents', [], 'val');
    return performance.now() - t;
  };
  for (let i = 0; i < 5; i++) await read(); // warm the pools

  // what the attacker can still send: row locks on its own rows, long statements holding the weak
  // table locks any statement holds, writes that sleep; and every LOCK (refused)
  const locks = LOCK_MODES.map((m) => `lock table agents in ${m} mode`);
  const attacks = [
    'select pg_sleep(1), name from agents',
    'select name, pg_sleep(1) from agents for update',
    'select name from agents for share',
    `update agents set status = status where pg_sleep(0.8) is not null`,
    `delete from agents where name = 'nobody' and pg_sleep(0.8) is not null`,
    `insert into agents (name, agent_type) select 'attacker-row', 'x' from pg_sleep(0.8)`,
    `merge into agents a using (select 1 as x) s on false when not matched and pg_sleep(0.5) is null then insert (name, agent_type) values ('never', 'x')`,
    'select count(*) from agents a, agents b where pg_sleep(0.2) is not null',
  ];
  const statuses = new Map<number, number>();
  // the attacker's requests are served by this same process (app.inject): a short pause between them
  // keeps the measurement about the database (locks), not about this process's event loop
  const attacker = async (list: string[], offset: number, running: () => boolean): Promise<void> => {
    for (let i = offset; running(); i++) {
      const r = await sqlAs(A.key, list[i % list.length]!);
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      assert.ok(r.status < 500, r.text);
      await sleep(20);
    }
  };
  // quiet and attacked phases alternate, so a change in the machine's load hits both alike
  const quiet: number[] = [];
  const loud: number[] = [];
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 15; i++) quiet.push(await read());
    let on = true;
    // the finding's recipe: a long statement holds a weak lock while a LOCK queues behind it, and every
    // other tenant's read queues behind the LOCK
    const attackers = [attacker(attacks, round, () => on), attacker(locks, round, () => on), attacker(attacks, round + 4, () => on)];
    await sleep(300);
    for (let i = 0; i < 15; i++) loud.push(await read());
    on = false;
    await Promise.all(attackers);
  }
  const q = median(quiet);
  const l = median(loud);
  // a 2-core machine shared with the attacker's own sessions: 1 ms of slack for timer granularity
  assert.ok(l <= 2 * q + 1, `victim median read ${l.toFixed(2)} ms under attack vs ${q.toFixed(2)} ms quiet (max ${Math.max(...loud).toFixed(1)} ms)`);
  assert.ok(Math.max(...loud) < 1000, `no victim read waited behind a lock for seconds (max ${Math.max(...loud).toFixed(1)} ms)`);
  assert.ok((statuses.get(403) ?? 0) > 0 && (statuses.get(200) ?? 0) > 0, `the attacker's LOCKs were refused and its long statements ran: ${JSON.stringify([...statuses])}`);
  await inst.tenantry.withTenant(A.tenant.id, (sql) => sql`delete from agents where name = 'attacker-row'`);
});

test('finding 1 (defence in depth): a statement that meets a lock waits no longer than the endpoint\'s lock_timeout', async () => {
  const A = P.pooled.a;
  const shared = postgres(inst.urlFor(`${inst.namespace}_shared`, new URL(inst.adminUrl).username, decodeURIComponent(new URL(inst.adminUrl).password)), { max: 1, onnotice: () => {} });
  try {
    // a trusted migration holding ACCESS EXCLUSIVE, as a tenant migration run does
    await shared.begin(async (tx) => {
      await tx`lock table pooled.agents in access exclusive mode`;
      const r = await sqlAs(A.key, 'select count(*) from agents');
      assert.equal(r.status, 408, r.text);
      assert.equal(r.body.code, 'SQL_TIMEOUT');
      assert.match(r.body.detail, /55P03/);
      assert.ok(r.ms < TIMEOUT_MS, `gave up after ${r.ms.toFixed(0)} ms, at the lock timeout (${LOCK_TIMEOUT_MS} ms), not the statement timeout`);
    });
  } finally {
    await shared.end();
  }
});

// ---- finding 2 ----

test('finding 2: a tenant gives itself a direct PostgreSQL login with ALTER ROLE current_user PASSWORD: refused, and the password does not work', async () => {
  for (const mode of MODES) {
    const A = P[mode].a;
    const mine = `mine-${randomBytes(6).toString('hex')}`;
    for (const sql of [
      `alter role current_user password '${mine}'`,
      `alter user current_user password '${mine}'`,
      `alter role current_user with login password '${mine}' valid until 'infinity'`,
      `alter role ${JSON.stringify(A.tenant.placement.role)} password '${mine}'`,
      `alter role current_user set work_mem = '1GB'`,
      `alter role current_user set statement_timeout = 0`,
      `alter role current_user in database ${JSON.stringify(A.tenant.placement.database)} set lock_timeout = 0`,
      `alter role current_user reset all`,
      `select query_to_xml('alter role current_user password ''${mine}''', true, false, '')`,
    ]) {
      notAllowed(await sqlAs(A.key, sql), sql);
    }
    // the stored password is still the one Tenantry set (on the old main it was the tenant's)
    const [stored] = await inst.su<{ p: string }[]>`select rolpassword as p from pg_authid where rolname = ${A.tenant.placement.role}`;
    assert.equal(stored!.p, await verifierOf(A.tenant.placement.role), `${mode}: the password is Tenantry's`);
    if (await passwordsEnforced()) {
      const direct = postgres(inst.urlFor(A.tenant.placement.database, A.tenant.placement.role, mine), { max: 1, connect_timeout: 10, onnotice: () => {} });
      await assert.rejects(direct`select 1`, (err: { code?: string }) => err.code === '28P01', `${mode}: the tenant's own password must not log in`);
      await direct.end();
    }
    const defaults = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_db_role_setting s join pg_roles r on r.oid = s.setrole where r.rolname = ${A.tenant.placement.role}`;
    assert.equal(defaults[0]!.n, 0, `${mode}: no role default was planted`);
  }
});

test('finding 2 (defence in depth): settings planted on a tenant role do not raise the endpoint\'s lock_timeout, work_mem or statement_timeout, and it cannot raise temp_file_limit', async () => {
  const A = P.schema.a;
  const role = A.tenant.placement.role;
  try {
    // as if the tenant had reached ALTER ROLE some other way
    await inst.su.unsafe(`alter role "${role}" set work_mem = '1GB'; alter role "${role}" set lock_timeout = 0; alter role "${role}" set statement_timeout = 0; alter role "${role}" set hash_mem_multiplier = 1000`);
    await inst.su`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${role}`;
    await sleep(200);
    let settings: Record<string, string> | undefined;
    for (let i = 0; i < 3 && !settings; i++) {
      settings = await inst.tenantry.withTenantRole(A.tenant.id, async (tx) => (await tx`
        select current_setting('work_mem') as work_mem, current_setting('lock_timeout') as lock_timeout,
               current_setting('statement_timeout') as statement_timeout, current_setting('hash_mem_multiplier') as hm,
               current_setting('temp_file_limit') as temp_file_limit`)[0] as Record<string, string>, { statementTimeoutMs: TIMEOUT_MS }).catch(() => undefined);
    }
    assert.deepEqual({ ...settings!, temp_file_limit: undefined }, { work_mem: '4MB', lock_timeout: `${LOCK_TIMEOUT_MS}ms`, statement_timeout: `${TIMEOUT_MS / 1000}s`, hm: '2', temp_file_limit: undefined });
    // temp_file_limit is superuser-only: the tenant's session cannot raise (or lower) it
    await assert.rejects(inst.tenantry.withTenantRole(A.tenant.id, (tx) => tx`select set_config('temp_file_limit', '-1', true)`), (err: { code?: string }) => err.code === '42501');
    const slow = await sqlAs(A.key, 'select pg_sleep(30)');
    assert.equal(slow.status, 408, slow.text);
  } finally {
    await inst.su.unsafe(`alter role "${role}" reset all`);
  }
});

test('finding 2 (defence in depth): doctor reports defaults Tenantry did not set on a tenant role, and its own fix removes them', async () => {
  const A = P.database.a;
  await inst.su.unsafe(`alter role "${A.tenant.placement.role}" set work_mem = '1GB'; alter role "${A.tenant.placement.role}" in database "${A.tenant.placement.database}" set lock_timeout = 0`);
  const report = await inst.tenantry.doctor();
  const hits = report.checks.filter((c) => c.check === 'role-defaults' && !c.ok);
  assert.ok(hits.some((h) => h.message.includes(A.tenant.placement.role) && h.message.includes('work_mem=1GB')), JSON.stringify(hits));
  assert.ok(hits.some((h) => h.message.includes(`in database ${A.tenant.placement.database}`)), JSON.stringify(hits));
  for (const h of hits) await inst.su.unsafe(h.fix!);
  assert.deepEqual((await inst.tenantry.doctor()).checks.filter((c) => !c.ok), [], 'clean after doctor\'s own fix');
});

test('finding 2 (defence in depth): a password Tenantry did not set is found by doctor and healed by repair or by the next refused login, which end the foreign session', async (t) => {
  if (!(await passwordsEnforced())) {
    // a non-superuser cannot read stored passwords, and this server checks none (pg_hba trust): doctor
    // says so instead of passing silently (test/sql-guard-superuser.test.ts covers the superuser check)
    const hit = (await inst.tenantry.doctor()).checks.find((c) => c.check === 'tenant-password');
    assert.match(hit!.message, /Not verified/);
    t.skip('this server accepts any password (pg_hba trust): no login can tell a changed one');
    return;
  }
  const A = P.database.a;
  const B = P.pooled.b;
  const mine = `mine-${randomBytes(6).toString('hex')}`;
  // as if the tenant had changed its password some other way, then logged in with it
  await inst.su.unsafe(`alter role "${A.tenant.placement.role}" password '${mine}'`);
  const foreign = postgres(inst.urlFor(A.tenant.placement.database, A.tenant.placement.role, mine), { max: 1, connect_timeout: 10, onnotice: () => {} });
  await foreign`select 1`;
  let report = await inst.tenantry.doctor();
  const pw = report.checks.find((c) => c.check === 'tenant-password' && !c.ok);
  assert.ok(pw, `doctor reports the password: ${JSON.stringify(report.checks.filter((c) => !c.ok))}`);
  assert.match(pw.message, new RegExp(A.tenant.placement.role));
  assert.ok(!pw.message.includes(mine) && !pw.fix!.includes(mine), 'the report carries no password');
  const repaired = await inst.tenantry.repair();
  assert.deepEqual(repaired.restoredRoles, [A.tenant.placement.role]);
  await assert.rejects(foreign`select 1`, 'the foreign session was ended');
  await foreign.end({ timeout: 1 }).catch(() => undefined);
  report = await inst.tenantry.doctor();
  assert.deepEqual(report.checks.filter((c) => !c.ok), [], 'clean after repair');

  // the heal on a refused login ends foreign sessions as well
  await inst.su.unsafe(`alter role "${B.tenant.placement.role}" password '${mine}'`);
  const foreignB = postgres(inst.urlFor(`${inst.namespace}_shared`, B.tenant.placement.role, mine), { max: 1, connect_timeout: 10, onnotice: () => {} });
  await foreignB`select 1`;
  // Tenantry's own endpoint sessions end (idle timeout, restart): its next login meets the changed password
  await inst.su`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${B.tenant.placement.role} and application_name = 'tenantry-tenant'`;
  await sleep(200);
  let r: Res | undefined;
  for (let i = 0; i < 3; i++) {
    r = await sqlAs(B.key, 'select name from agents');
    if (r.status === 200) break; // a pooled connection that was cut answers once with an error
  }
  assert.equal(r!.status, 200, r!.text);
  await assert.rejects(foreignB`select 1`, 'the heal ended the session made with the tenant\'s own password');
  await foreignB.end({ timeout: 1 }).catch(() => undefined);
  const back = postgres(inst.urlFor(`${inst.namespace}_shared`, B.tenant.placement.role, await rolePassword(inst, B.tenant.placement.role)), { max: 1, connect_timeout: 10, onnotice: () => {} });
  await back`select 1`;
  await back.end();
});

// ---- finding 3 ----

test('finding 3: EXPLAIN row estimates on the shared pooled tables recover another pooled tenant\'s values: refused for pooled tenants, kept for schema and database tenants', async () => {
  const A = P.pooled.a;
  const B = P.pooled.b;
  await inst.tenantry.withTenant(B.tenant.id, (sql) => sql`insert into agents (name, agent_type) select 'z' || g, 'zeus' from generate_series(1, 500) g`);
  const shared = suTo(`${inst.namespace}_shared`);
  try {
    await shared`analyze pooled.agents`; // autovacuum does this on any real server
  } finally {
    await shared.end();
  }
  for (const key of [A.key, A.roKey]) {
    for (const sql of [
      `explain select * from agents where agent_type = 'zeus'`,
      `explain (format json) select * from agents where agent_type = $1`,
      `explain analyze select * from agents where agent_type = 'zeus'`,
      `explain (costs) select count(*) from users where email like 'ceo%'`,
      `explain update agents set status = 'x' where agent_type = 'zeus'`,
    ]) {
      const r = await sqlAs(key, sql, sql.includes('$1') ? ['zeus'] : []);
      notAllowed(r, sql, /EXPLAIN/);
      assert.ok(!/rows=\d/.test(r.text), 'no estimate');
    }
    // nor the statistics themselves
    notAllowed(await sqlAs(key, `select most_common_vals::text from pg_stats where tablename = 'agents'`), 'pg_stats');
    notAllowed(await sqlAs(key, `select n_distinct from pg_catalog.pg_stats`), 'pg_catalog.pg_stats');
  }
  for (const mode of ['schema', 'database'] as const) {
    const r = await sqlAs(P[mode].a.key, `explain select * from agents where agent_type = 'zeus'`);
    assert.equal(r.status, 200, `${mode}: its statistics are its own: ${r.text}`);
    // EXPLAIN's command tag carries no row count: its rows still come back
    assert.ok(r.body.rows.length >= 1 && r.body.rowCount === r.body.rows.length, r.text);
    assert.deepEqual(r.body.fields.map((f: Json) => f.name), ['QUERY PLAN']);
    assert.match(JSON.stringify(r.body.rows), /Scan/);
    notAllowed(await sqlAs(P[mode].a.key, 'explain (settings) select 1'), `${mode}: EXPLAIN (SETTINGS) shows the server's configuration`);
  }
  await inst.tenantry.withTenant(B.tenant.id, (sql) => sql`delete from agents where agent_type = 'zeus'`);
});

// ---- finding 4 ----

test('finding 4: a read-only key stores large objects outside read-only mode and the storage quota: every large-object function is refused', async () => {
  for (const mode of MODES) {
    const A = P[mode].a;
    for (const key of [A.roKey, A.key]) {
      for (const sql of [
        `select lo_from_bytea(0, decode(repeat('ab', 1000), 'hex'))`,
        'select lo_create(0)',
        'select lo_creat(-1)',
        `select lo_put(lo_create(0), 0, '\\x01'::bytea)`,
        `select pg_catalog.lo_from_bytea(0, '\\x00'::bytea)`,
        'select lo_unlink(16384)',
        'select lo_get(16384)',
        'select loread(lo_open(16384, 262144), 10)',
        'select lowrite(lo_open(16384, 131072), $1::bytea)',
        `select lo_import('/etc/passwd')`,
        `select lo_export(16384, '/tmp/x')`,
        'select * from pg_largeobject_metadata',
        `select x.lo_unlink from (select 16384::oid) x`,
      ]) {
        notAllowed(await sqlAs(key, sql, sql.includes('$1') ? ['\\x01'] : []), `${mode}: ${sql}`);
      }
    }
    const db = suTo(A.tenant.placement.database);
    try {
      const [n] = await db<{ n: number }[]>`select count(*)::int as n from pg_largeobject_metadata m join pg_roles r on r.oid = m.lomowner where r.rolname = ${A.tenant.placement.role}`;
      assert.equal(n!.n, 0, `${mode}: the tenant owns no large object`);
    } finally {
      await db.end();
    }
  }
});

test('finding 4 (defence in depth): doctor reports a large object a tenant role owns, and its own fix removes it', async () => {
  const A = P.schema.a;
  const shared = suTo(`${inst.namespace}_shared`);
  try {
    // one that came in through a path since closed
    const [lo] = await shared<{ oid: number }[]>`select lo_from_bytea(0, '\\x0102'::bytea)::int as oid`;
    await shared.unsafe(`alter large object ${lo!.oid} owner to "${A.tenant.placement.role}"`);
    const report = await inst.tenantry.doctor();
    const hit = report.checks.find((c) => c.check === 'large-objects' && !c.ok);
    assert.ok(hit, JSON.stringify(report.checks.filter((c) => !c.ok)));
    assert.match(hit.message, new RegExp(`${A.tenant.placement.role} owns 1 large object`));
    await shared.unsafe(hit.fix!.slice(hit.fix!.indexOf('SELECT')));
    const again = await inst.tenantry.doctor();
    assert.deepEqual(again.checks.filter((c) => !c.ok), []);
  } finally {
    await shared.end();
  }
});

// ---- finding 9 ----

test('finding 9: the SQL endpoint shows other tenants\' metadata (row counts, sizes, tenant ids, sessions): every catalog view and size function is refused', async () => {
  for (const mode of MODES) {
    const A = P[mode].a;
    const others = MODES.flatMap((m) => [P[m].b, ...(m === mode ? [] : [P[m].a])]);
    for (const sql of [
      'select relname, n_live_tup from pg_stat_user_tables',
      'select schemaname, relname, n_tup_ins from pg_catalog.pg_stat_all_tables',
      'select * from pg_statio_user_tables',
      `select pg_total_relation_size('pooled.agents')`,
      `select pg_relation_size(c.oid) from pg_class c`,
      `select pg_database_size(current_database())`,
      'select rolname from pg_roles',
      'select usename from pg_user',
      'select datname from pg_database',
      'select usename, datname, application_name from pg_stat_activity',
      'select nspname from pg_namespace',
      'select relname from pg_class',
      'select table_schema, table_name from information_schema.tables',
      'select grantee from information_schema.role_table_grants',
      'select * from pg_locks',
      'select 10::regrole::text',
      `select '${others[0]!.tenant.placement.role}'::regrole`,
      'select has_database_privilege(current_user, \'postgres\', \'connect\')',
      'select current_setting(\'data_directory\')',
      'select version()',
      'select txid_current()',
      'select pg_backend_pid()',
    ]) {
      const r = await sqlAs(A.key, sql);
      notAllowed(r, `${mode}: ${sql}`);
      for (const o of others) {
        assert.ok(!r.text.includes(o.marker), 'no marker');
        if (!sql.includes(o.tenant.placement.role)) assert.ok(!r.text.includes(o.tenant.placement.role) && !r.text.includes(o.tenant.id.replace(/-/g, '')), `${mode}: ${sql}: another tenant's id in the answer`);
      }
    }
    // what is left: its own rows, its own name
    const own = await sqlAs(A.key, 'select current_user::text as me, (select count(*)::int from agents) as n');
    assert.equal(own.status, 200, own.text);
    assert.deepEqual(own.body.rows, [{ me: A.tenant.placement.role, n: 1 }]);
  }
});

test('red team: XPath that never checks for a cancel, system columns that number other pooled tenants\' rows, and name lookups through aclitem, foreign types and text search configurations: refused', async () => {
  for (const mode of MODES) {
    const A = P[mode].a;
    const other = P[mode === 'pooled' ? 'schema' : 'pooled'].b;
    const hex = other.tenant.id.replace(/-/g, '');
    for (const sql of [
      // libxml's XPath ran past the 5 s statement timeout, the request deadline and suspension
      `select xpath('count(//a[count(preceding::a) >= 0])', ('<r>' || repeat('<a/>', 30000) || '</r>')::xml)`,
      `select xpath_exists('//a', '<r/>'::xml)`,
      // ctid showed where (and how many) other tenants' rows sit in the shared table; xmin the server's transaction counter
      'select ctid, name from agents',
      'select a.xmin, a.tableoid from agents a',
      `insert into agents (name, agent_type) values ('probe', 'x') returning ctid`,
      // existence of another tenant's role or schema
      `select '${other.tenant.placement.role}=r/${other.tenant.placement.role}'::aclitem`,
      `select null::t_${hex}.agents`,
      `select to_tsvector('t_${hex}.english', 'x')`,
    ]) {
      const r = await sqlAs(A.key, sql);
      notAllowed(r, `${mode}: ${sql}`);
    }
    const param = await sqlAs(A.key, 'select to_tsvector($1, \'x\')', [`t_${hex}.english`]);
    notAllowed(param, `${mode}: a configuration as a parameter`);
    // what stays allowed: a built-in configuration by name, types of pg_catalog
    const ok = await sqlAs(A.key, `select to_tsvector('english', 'cats')::text as v, '1'::pg_catalog.int4 as n`);
    assert.equal(ok.status, 200, ok.text);
  }
});

// ---- what a tenant keeps ----

test('data work the SQL endpoint still runs: SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE, built-in functions, EXPLAIN for schema and database tenants', async () => {
  for (const mode of MODES) {
    const A = P[mode].a;
    const run = async (sql: string, params: unknown[] = []): Promise<Json> => {
      const r = await sqlAs(A.key, sql, params);
      assert.equal(r.status, 200, `${mode}: ${sql}: ${r.text.slice(0, 300)}`);
      return r.body;
    };
    await run(`insert into agents (name, agent_type, config) values ($1, 'x', jsonb_build_object('k', 1))`, ['kept-1']);
    await run(`update agents set status = upper(status), updated_at = now() where name = $1`, ['kept-1']);
    await run(`with x as (select name, length(name) as l, row_number() over (order by name) as rn from agents) select * from x where l > 0`);
    await run(`select coalesce(null, 'a'), greatest(1, 2), date_trunc('day', now()), extract(year from now()), trim(both ' ' from ' x '), to_char(now(), 'YYYY'), gen_random_uuid(), tenantry.current_tenant()`);
    await run(`select a.name, count(*) filter (where a.status is not null) from agents a left join users u on true group by a.name order by 1 limit 5`);
    await run(`values (1, 'a'), (2, 'b')`);
    await run('table agents');
    await run(`select * from jsonb_to_record('{"a": 1}') as t(a int)`);
    await run(`merge into agents a using (values ('kept-1')) s(n) on a.name = s.n when matched then update set status = 'merged'`);
    await run(`delete from agents where name = $1 returning id`, ['kept-1']);
    await run(`select name from ${JSON.stringify(A.tenant.placement.schema)}.agents`);
    if (mode !== 'pooled') await run('explain analyze select * from agents');
  }
});

// ---- bad input to the guard ----

test('bad input to the guard: empty, comments only, 1 MB, invalid UTF-8, lone surrogates, NUL, nested statements in strings, dollar quotes, deep nesting: a clear 4xx, never a 5xx', async () => {
  const A = P.schema.a;
  const send = async (payload: string | Buffer): Promise<Res> => {
    const r = await app.inject({ method: 'POST', url: '/v1/tenant/sql', headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json' }, payload });
    return { status: r.statusCode, body: JSON.parse(r.body), text: r.body, ms: 0 };
  };
  const clear4xx = (r: Res, what: string): void => {
    assert.ok(r.status >= 400 && r.status < 500, `${what}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.equal(typeof r.body.code, 'string', `${what}: a stable code`);
    assert.ok(String(r.body.detail ?? r.body.title).length > 10, `${what}: a message`);
  };
  for (const [what, sql] of [
    ['empty', ''], ['blank', '   \n\t'], ['a line comment', '-- nothing here'], ['a block comment', '/* nothing */'], ['nested comments', '/* a /* b */ c */'],
    ['semicolons', ';;;'], ['64 KiB + 1', `select '${'x'.repeat(64 * 1024)}'`], ['100,001 chars', 'x'.repeat(100_001)],
    ['a lone high surrogate', 'select \'\ud800\''], ['a lone low surrogate', 'select \'\udc00\''], ['NUL', 'select \'a\u0000b\''],
    ['unterminated quote', `select 'abc`], ['unterminated dollar quote', 'select $$abc'], ['a syntax error', 'select from where'],
    ['two statements', 'select 1; select 2'], ['a statement smuggled after a backslash', `select 'a\\'; lock table agents in access exclusive mode; --'`],
    ['deep nesting', `select ${'('.repeat(20_000)}1${')'.repeat(20_000)}`], ['long operator chain', `select 1${'+1'.repeat(20_000)}`],
    ['DO with a dollar-quoted body', 'do $body$ begin lock table agents; end $body$'],
  ] as const) {
    const r = await send(JSON.stringify({ sql }));
    clear4xx(r, what);
  }
  // 1 MB of SQL: refused at the door
  clear4xx(await send(JSON.stringify({ sql: `select '${'x'.repeat(1024 * 1024)}'` })), '1 MB');
  // invalid UTF-8 in the body: never a 5xx, whatever the bytes become
  for (const bytes of [[0xc3, 0x28], [0xff, 0xfe], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
    const body = Buffer.concat([Buffer.from('{"sql": "select \''), Buffer.from(bytes), Buffer.from('\' as v"}')]);
    const r = await send(body);
    assert.ok(r.status < 500, `invalid UTF-8 ${bytes}: ${r.status} ${r.text}`);
    const whole = await send(Buffer.concat([Buffer.from('{"sql": "'), Buffer.from(bytes), Buffer.from('"}')]));
    clear4xx(whole, `invalid UTF-8 as the whole text ${bytes}`);
  }
  // statements inside strings are data, not statements
  for (const sql of [
    `select 'x; lock table agents in access exclusive mode' as v`,
    `select $$; alter role current_user password 'x'; $$ as v`,
    `select $tag$ $$ lock table agents $$ $tag$ as v`,
    `select E'\\'; lock table agents; --' as v`,
    `select 'it''s; drop table agents' as v`,
    `select name from agents where name = 'select lo_from_bytea(0, ''x'')'`,
  ]) {
    const r = await sqlAs(A.key, sql);
    assert.equal(r.status, 200, `${sql}: ${r.text}`);
  }
  const rows = await inst.tenantry.query(A.tenant.id, 'select count(*)::int as n from agents', [], 'val');
  assert.ok(Number(rows) >= 1, 'the table is still there');
});

test('the guard, fuzzed: any text gets a verdict or a 4xx TenantryError, never a crash or a 5xx', async () => {
  await loadSqlGuard();
  const fragments = ['select', 'from', 'agents', 'lock', 'table', ';', '(', ')', "'", '"', '$$', '$a$', '--', '/*', '*/', '\\', 'E\'', ',', '::regrole', 'lo_create(0)', 'pg_', 'explain', 'with x as', 'insert into', 'values', '1', '\u0000', '\ud800', 'é', ' '];
  const text = fc.oneof(fc.string({ maxLength: 200 }), fc.array(fc.constantFrom(...fragments), { maxLength: 40 }).map((xs) => xs.join(' ')), fc.string({ unit: 'binary', maxLength: 100 }));
  fc.assert(fc.property(text, fc.constantFrom(...MODES), (sql, isolation) => {
    try {
      const v = checkTenantSql(sql, { isolation, schema: 't_x' });
      assert.ok(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'EXPLAIN'].includes(v.kind));
    } catch (err) {
      assert.ok(isTenantryError(err), `not a TenantryError: ${String(err)}`);
      assert.ok(err.status >= 400 && err.status < 500, `${err.code} ${err.status}`);
    }
  }), { numRuns: 2000 });
});
