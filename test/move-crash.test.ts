import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs } from './helpers/tenant-migrations.js';
import { isTenantryError, type Isolation, type Tenant } from '../src/index.js';

/**
 * Kill the process at each step of a move (SIGKILL from inside, at the step itself): after repair (or,
 * untouched, the background healer) the tenant is whole, in exactly one placement, and writable, and
 * the other tenants never noticed.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCHEMA = `
create table docs (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  title text not null,
  body jsonb,
  primary key (tenant_id, id)
);
create table plain (
  tenant_id uuid not null default tenantry.current_tenant(),
  v text
);
`;
/** every step a move reports, in order; the move switches between 'switch' and 'switched' */
const STEPS = ['prepare', 'track', 'copy', 'verify', 'freeze', 'catch-up', 'switch', 'switched', 'cleanup'];

let inst: TestInstallation;
let dir: string;
before(async () => {
  dir = migrationsDir({ '0001_docs.sql': SCHEMA });
  rmSync(path.join(dir, '0001_agent_platform.sql'));
  inst = await freshInstallation({ tenantMigrations: dir });
});
after(async () => {
  await inst?.cleanup();
  removeMigrationDirs();
});

function moveAndCrash(tenant: string, to: Isolation, at: string): Promise<{ out: string; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/move-child.ts', inst.adminUrl, inst.namespace, dir, tenant, to],
      { cwd: ROOT, env: { ...process.env, NODE_TEST_CONTEXT: undefined, LOG_LEVEL: 'silent', MOVE_CRASH_AT: at }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ out, signal }));
  });
}

/**
 * moveAndCrash, again when the child could not reach the step because the shared test server had no
 * connection slot left (53300: eight engineers' suites on one server); a child that failed that way
 * undid its own move, or left it to repair, which runs before the retry.
 */
async function crashAt(tenant: string, to: Isolation, at: string): Promise<{ out: string; signal: NodeJS.Signals | null }> {
  for (let attempt = 0; ; attempt++) {
    const r = await moveAndCrash(tenant, to, at);
    if (r.signal === 'SIGKILL' || attempt >= 5 || !/53300|remaining connection slots/.test(r.out)) return r;
    await untilMoveProcessGone(tenant);
    await inst.tenantry.repair({ olderThanSeconds: 0 });
    await new Promise((res) => setTimeout(res, 3000));
  }
}

function suOn(database: string): Sql {
  const u = new URL(SUPERUSER_URL);
  return postgres(inst.urlFor(database, u.username || 'postgres', decodeURIComponent(u.password)), { max: 1, onnotice: () => {} });
}

/** Which placements hold anything of the tenant: its schema, its database, its pooled rows. */
async function placementsOf(t: Tenant): Promise<Isolation[]> {
  const hex = t.id.replace(/-/g, '');
  const out: Isolation[] = [];
  const su = suOn(`${inst.namespace}_shared`);
  try {
    const [p] = await su<{ n: number }[]>`select (select count(*) from pooled.docs where tenant_id = ${t.id}) + (select count(*) from pooled.plain where tenant_id = ${t.id}) as n`;
    if (Number(p!.n) > 0) out.push('pooled');
    if ((await su`select 1 from pg_namespace where nspname = ${`t_${hex}`}`).length) out.push('schema');
    const triggers = await su`select 1 from pg_trigger where tgname = 'tenantry_move_track'`;
    assert.equal(triggers.length, 0, 'no tracking trigger left on the shared database');
  } finally {
    await su.end();
  }
  if ((await inst.su`select 1 from pg_database where datname = ${`${inst.namespace}_t_${hex}`}`).length) out.push('database');
  return out;
}

/**
 * Waits until the killed child's sessions are gone: PostgreSQL ends a backend whose client vanished
 * only when it next looks at its socket, so for a moment the move's session lock is still held (and
 * repair rightly leaves a move whose process looks alive alone).
 */
async function untilMoveProcessGone(tenantId: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const open = await inst.su<{ id: string }[]>`select id from tenantry_catalog.moves where tenant_id = ${tenantId} and phase not in ('done', 'failed')`;
    if (open.length === 0) return;
    const free = await inst.su.begin(async (tx) => (await tx<{ ok: boolean }[]>`select pg_try_advisory_xact_lock(${0x746d_7632}, hashtext(${open[0]!.id})) as ok`)[0]!.ok);
    if (free) return;
    if (Date.now() > deadline) throw new Error('the killed move\'s session lock is still held after 30 s');
    await new Promise((r) => setTimeout(r, 200));
  }
}

const rowsOf = (id: string): Promise<string[]> => inst.tenantry.withTenant(id, async (sql) => [
  ...(await sql<{ r: string }[]>`select (to_jsonb(d) - 'tenant_id')::text as r from docs d order by id`).map((x) => x.r),
  ...(await sql<{ r: string }[]>`select v as r from plain order by v`).map((x) => x.r),
]);

let seq = 0;
async function tenantWithRows(mode: Isolation): Promise<Tenant> {
  const t = await inst.tenantry.tenants.create({ slug: `mvc-${process.pid}-${++seq}`, isolation: mode });
  await inst.tenantry.withTenant(t.id, async (sql) => {
    await sql`insert into docs (title, body) select 'doc ' || g, jsonb_build_object('g', g, 'u', 'ü🐘') from generate_series(1, 300) g`;
    await sql`insert into plain (v) select 'v' || g from generate_series(1, 50) g`;
  });
  return t;
}

for (const [from, to] of [['pooled', 'schema'], ['schema', 'database'], ['database', 'pooled']] as [Isolation, Isolation][]) {
  test(`a move ${from} -> ${to} killed at each step: after repair the tenant is whole, in one placement, writable; others untouched`, { timeout: 900_000 }, async () => {
    const bystander = await tenantWithRows(from);
    const bystanderRows = await rowsOf(bystander.id);
    for (const step of STEPS) {
      const t = await tenantWithRows(from);
      const original = await rowsOf(t.id);
      const r = await crashAt(t.id, to, step);
      assert.equal(r.signal, 'SIGKILL', `the child died at ${step}: ${r.out}`);
      assert.ok(r.out.split('\n').includes(step), `the child reached ${step}: ${r.out}`);
      await untilMoveProcessGone(t.id);
      const report = await inst.tenantry.repair({ olderThanSeconds: 0 });
      const switched = STEPS.indexOf(step) >= STEPS.indexOf('switched');
      const expected = switched ? to : from;
      // repair (or the healer before it) ended the move: undone before the switch, finished after it
      const [m] = await inst.tenantry.moves.list(t.id);
      assert.equal(m!.phase, switched ? 'done' : 'failed', `killed at ${step}: move ${m!.phase}`);
      assert.ok(report.moves.undone.length + report.moves.finished.length <= 1);
      const now = await inst.tenantry.tenants.get(t.id);
      assert.equal(now.isolation, expected, `killed at ${step}: the tenant is in ${expected} mode`);
      assert.equal(now.status, 'active');
      assert.deepEqual(await placementsOf(now), [expected], `killed at ${step}: exactly one placement`);
      assert.deepEqual(await rowsOf(t.id), original, `killed at ${step}: every row there`);
      // writable again, through the library and the tenant's own role
      await inst.tenantry.withTenant(t.id, (sql) => sql`insert into docs (title) values (${`after-${step}`})`);
      await inst.tenantry.runTenantSql(t.id, { sql: `insert into plain (v) values ('sql-after')` });
      const audit = (await inst.tenantry.audit(t.id, { limit: 10 })).map((e) => e.action);
      assert.ok(audit.includes(switched ? 'move.completed' : 'move.failed'), `audited (${step}): ${audit.join(', ')}`);
      // and it can be moved again
      if (step === 'catch-up') {
        const again = await inst.tenantry.tenants.move(t.id, { to });
        assert.equal(again.tenant.isolation, to);
        assert.equal((await rowsOf(t.id)).length, original.length + 2);
      }
    }
    assert.deepEqual(await rowsOf(bystander.id), bystanderRows, 'the other tenant is untouched');
    await inst.tenantry.withTenant(bystander.id, (sql) => sql`insert into docs (title) values ('bystander writes')`);
  });
}

test('a move killed while frozen: writes are refused with TENANT_MOVING until the background healer undoes it, with no repair call', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('schema');
  const original = await rowsOf(t.id);
  const r = await moveAndCrash(t.id, 'pooled', 'catch-up');
  assert.equal(r.signal, 'SIGKILL');
  // doctor names the stalled move (unless the healer ended it while doctor ran)
  const doctor = await inst.tenantry.doctor();
  const [stalled] = await inst.tenantry.moves.list(t.id);
  if (stalled!.phase !== 'failed') {
    const named = doctor.checks.find((c) => c.check === 'moves' && !c.ok && c.message.includes(stalled!.id));
    assert.ok(named, `doctor names the stalled move: ${JSON.stringify(doctor.checks.filter((c) => !c.ok))}`);
    assert.match(named.fix ?? '', /tenantry repair/);
  }
  const deadline = Date.now() + 120_000;
  let refusedOnce = false;
  for (;;) {
    try {
      await inst.tenantry.withTenant(t.id, (sql) => sql`insert into plain (v) values ('healed')`);
      break;
    } catch (err) {
      assert.ok(isTenantryError(err, 'TENANT_MOVING'), `only TENANT_MOVING while frozen, got ${String(err)}`);
      refusedOnce = true;
      // reads are served meanwhile
      assert.equal((await rowsOf(t.id)).length, original.length);
      if (Date.now() > deadline) throw new Error('the healer did not undo the move within 2 minutes');
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  void refusedOnce;
  const now = await inst.tenantry.tenants.get(t.id);
  assert.equal(now.isolation, 'schema');
  assert.deepEqual(await placementsOf(now), ['schema']);
  assert.equal((await rowsOf(t.id)).length, original.length + 1);
  const [m] = await inst.tenantry.moves.list(t.id);
  assert.equal(m!.phase, 'failed');
});

test('a move started after one whose process died ends that one first instead of refusing with MOVE_IN_PROGRESS', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('pooled');
  const original = await rowsOf(t.id);
  const r = await moveAndCrash(t.id, 'schema', 'copy');
  assert.equal(r.signal, 'SIGKILL');
  await untilMoveProcessGone(t.id);
  const moved = await inst.tenantry.tenants.move(t.id, { to: 'database' });
  assert.equal(moved.tenant.isolation, 'database');
  assert.deepEqual(await placementsOf(moved.tenant), ['database']);
  assert.deepEqual(await rowsOf(t.id), original);
  const phases = (await inst.tenantry.moves.list(t.id)).map((m) => m.phase);
  assert.deepEqual(phases, ['done', 'failed']);
});
