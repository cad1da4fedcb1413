import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { migrationsDir, removeMigrationDirs } from './helpers/tenant-migrations.js';
import { rejectsWith } from './helpers/assertions.js';
import { isTenantryError, type Isolation, type Tenant } from '../src/index.js';

/**
 * Online moves between isolation modes (issue #14): every directed pair of modes with every awkward
 * type, a writer that keeps writing through the move (every acknowledged write in the new placement
 * exactly once, refusals only with TENANT_MOVING), and hostile input refused with clear codes.
 */

const MODES: Isolation[] = ['pooled', 'schema', 'database'];

const SCHEMA = `
create table docs (
  tenant_id uuid not null default tenantry.current_tenant(),
  id bigint generated always as identity,
  title text not null,
  body jsonb,
  tags text[],
  at timestamptz,
  amount numeric(30,10),
  blob bytea,
  note text,
  primary key (tenant_id, id)
);
create table comments (
  tenant_id uuid not null default tenantry.current_tenant(),
  id serial,
  doc_id bigint not null,
  words text,
  primary key (tenant_id, id),
  foreign key (tenant_id, doc_id) references docs (tenant_id, id) on delete cascade
);
create table labels (
  tenant_id uuid not null default tenantry.current_tenant(),
  label text
);
`;

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

let seq = 0;
async function tenantWithRows(isolation: Isolation, marker: string, extra = 0): Promise<Tenant> {
  const t = await inst.tenantry.tenants.create({ slug: `mv-${process.pid}-${++seq}`, isolation });
  await inst.tenantry.withTenant(t.id, async (sql) => {
    for (let i = 0; i < 5; i++) {
      const [d] = await sql<{ id: string }[]>`
        insert into docs (title, body, tags, at, amount, blob, note) values (
          ${`${marker} doc ${i} — ünïcødé 🐘 "q" \\ tab\there`},
          ${sql.json({ marker, n: i, nested: { a: [1, 2.5, null, 'x'] }, s: 'line\nbreak' })},
          ${[`${marker}-a`, 'b,c', 'd"e', '']}::text[],
          ${'2024-02-29 23:59:59.123456+05:30'},
          ${'12345678901234567890.0123456789'},
          ${Buffer.from([0, 1, 2, 255, 10, 92])},
          ${i % 2 === 0 ? null : `${marker} note`}
        ) returning id`;
      await sql`insert into comments (doc_id, words) values (${d!.id}, ${`${marker} comment ${i}`})`;
      await sql`insert into labels (label) values (${i === 3 ? null : `${marker} label ${i}`})`;
    }
    if (extra > 0) await sql`insert into docs (title, note) select ${marker} || ' bulk ' || g, repeat('x', 200) from generate_series(1, ${extra}) g`;
  });
  return t;
}

/** The tenant's rows as JSON, tenant_id left out. */
async function rowsOf(id: string): Promise<{ docs: string[]; comments: string[]; labels: string[] }> {
  return inst.tenantry.withTenant(id, async (sql) => {
    const docs = await sql<{ r: string }[]>`select (to_jsonb(d) - 'tenant_id')::text as r from docs d order by id`;
    const comments = await sql<{ r: string }[]>`select (to_jsonb(c) - 'tenant_id')::text as r from comments c order by id`;
    const labels = await sql<{ r: string }[]>`select (to_jsonb(l) - 'tenant_id')::text as r from labels l order by label nulls first`;
    return { docs: docs.map((x) => x.r), comments: comments.map((x) => x.r), labels: labels.map((x) => x.r) };
  });
}

/** A superuser connection to one database of the installation's server. */
function suOn(database: string): Sql {
  const u = new URL(SUPERUSER_URL);
  return postgres(inst.urlFor(database, u.username || 'postgres', decodeURIComponent(u.password)), { max: 1, onnotice: () => {} });
}

/** What exists of a tenant's placements, looked at as the superuser. */
async function placements(t: Tenant): Promise<{ schema: boolean; database: boolean; pooledRows: number }> {
  const hex = t.id.replace(/-/g, '');
  const [db] = await inst.su<{ n: number }[]>`select count(*)::int as n from pg_database where datname = ${`${inst.namespace}_t_${hex}`}`;
  const su = suOn(`${inst.namespace}_shared`);
  try {
    const [s] = await su<{ n: number }[]>`select count(*)::int as n from pg_namespace where nspname = ${`t_${hex}`}`;
    const [p] = await su<{ n: number }[]>`select count(*)::int as n from pooled.docs where tenant_id = ${t.id}`;
    return { schema: s!.n === 1, database: db!.n === 1, pooledRows: p!.n };
  } finally {
    await su.end();
  }
}

async function assertOnlyIn(t: Tenant, mode: Isolation): Promise<void> {
  const p = await placements(t);
  assert.equal(p.schema, mode === 'schema', `schema placement exists only in schema mode (${mode})`);
  assert.equal(p.database, mode === 'database', `database placement exists only in database mode (${mode})`);
  if (mode !== 'pooled') assert.equal(p.pooledRows, 0, 'no pooled rows left behind');
  else assert.ok(p.pooledRows > 0, 'its rows are in the pooled tables');
}

test('all six directed mode pairs: every row identical after the move, sequences continue, other tenants untouched, audited', { timeout: 600_000 }, async () => {
  const bystanders = await Promise.all(MODES.map((m) => tenantWithRows(m, `bystander-${m}`)));
  const before = await Promise.all(bystanders.map((b) => rowsOf(b.id)));
  for (const from of MODES) {
    for (const to of MODES) {
      if (from === to) continue;
      const t = await tenantWithRows(from, `move-${from}-${to}`);
      const original = await rowsOf(t.id);
      const steps: string[] = [];
      const r = await inst.tenantry.tenants.move(t.slug, { to, onProgress: (p) => steps.push(p.step) });
      assert.equal(r.from, from);
      assert.equal(r.to, to);
      assert.equal(r.tenant.isolation, to);
      assert.ok(r.readOnlyMs >= 0 && r.readOnlyMs <= r.totalMs);
      for (const s of ['prepare', 'track', 'copy', 'verify', 'freeze', 'catch-up', 'switch', 'switched', 'cleanup', 'done']) assert.ok(steps.includes(s), `progress step ${s}`);
      const got = await inst.tenantry.tenants.get(t.id);
      assert.equal(got.isolation, to);
      assert.deepEqual(await rowsOf(t.id), original, `${from} -> ${to}: rows identical`);
      await assertOnlyIn(got, to);
      // identity and serial columns continue after the moved rows; the tenant is writable
      const maxDoc = Math.max(...original.docs.map((d) => Number((JSON.parse(d) as { id: number }).id)));
      const [next] = await inst.tenantry.withTenant(t.id, (sql) => sql<{ id: string }[]>`insert into docs (title) values ('after move') returning id`);
      assert.ok(Number(next!.id) > maxDoc, `${from} -> ${to}: new id ${next!.id} after ${maxDoc}`);
      // the tenant's own role works in the new placement (the SQL endpoint)
      const viaSql = await inst.tenantry.runTenantSql(t.id, { sql: 'select count(*)::int as n from docs' });
      assert.equal(viaSql.rows[0]!.n, original.docs.length + 1);
      const audit = (await inst.tenantry.audit(t.id, { limit: 20 })).map((e) => e.action);
      assert.ok(audit.includes('move.started') && audit.includes('move.completed'), `audited: ${audit.join(', ')}`);
      const [info] = await inst.tenantry.moves.list(t.id);
      assert.equal(info!.phase, 'done');
      assert.equal(info!.id, r.moveId);
    }
  }
  assert.deepEqual(await Promise.all(bystanders.map((b) => rowsOf(b.id))), before, 'other tenants untouched');
  // no change log or trigger is left on the shared tables once no move runs
  const su = suOn(`${inst.namespace}_shared`);
  try {
    const trig = await su`select 1 from pg_trigger where tgname = 'tenantry_move_track'`;
    assert.equal(trig.length, 0, 'no tracking trigger left');
    const [log] = await su<{ n: number }[]>`select count(*)::int as n from tenantry_move.changes`;
    assert.equal(log!.n, 0, 'change log emptied');
  } finally {
    await su.end();
  }
});

for (const [from, to] of [['pooled', 'database'], ['database', 'schema'], ['schema', 'pooled']] as [Isolation, Isolation][]) {
  test(`move under load (${from} -> ${to}): every acknowledged write is in the new placement exactly once, refusals only TENANT_MOVING, reads served`, { timeout: 600_000 }, async () => {
    const t = await tenantWithRows(from, `load-${from}`, 20_000);
    const bystander = await tenantWithRows(from, `load-bystander-${from}`);
    const bystanderRows = await rowsOf(bystander.id);
    // what the writer was told: inserted titles (with their last acknowledged note) and deleted titles
    const live = new Map<string, string>();
    const deleted = new Set<string>();
    let refused = 0;
    let acknowledgedDuringCopy = 0;
    let phase = 'before';
    let stop = false;
    let n = 0;
    const writer = (async () => {
      while (!stop) {
        const title = `w-${++n}`;
        const op = n % 5;
        try {
          if (op === 3 && live.size > 0) {
            const victim = [...live.keys()][Math.floor(live.size / 2)]!;
            const note = `updated-${n}`;
            await inst.tenantry.withTenant(t.id, (sql) => sql`update docs set note = ${note} where title = ${victim}`);
            live.set(victim, note);
          } else if (op === 4 && live.size > 0) {
            const victim = [...live.keys()][0]!;
            await inst.tenantry.withTenant(t.id, (sql) => sql`delete from docs where title = ${victim}`);
            live.delete(victim);
            deleted.add(victim);
          } else {
            await inst.tenantry.withTenant(t.id, (sql) => sql`insert into docs (title, note) values (${title}, ${'n'})`);
            live.set(title, 'n');
          }
          if (phase === 'copy') acknowledgedDuringCopy++;
        } catch (err) {
          if (isTenantryError(err, 'TENANT_MOVING')) { refused++; continue; }
          throw err;
        }
      }
    })();
    let windowWrite: Promise<unknown> | undefined;
    let windowSql: Promise<unknown> | undefined;
    let windowRead: Promise<number> | undefined;
    const r = await inst.tenantry.tenants.move(t.id, {
      to,
      onProgress: (p) => {
        if (p.step === 'copy' || p.step === 'verify') phase = 'copy';
        if (p.step === 'catch-up' && !windowWrite) {
          phase = 'frozen';
          // in the read-only window: writes refused with the code (library and SQL endpoint), reads served
          windowWrite = inst.tenantry.withTenant(t.id, (sql) => sql`insert into docs (title) values ('in-window')`).then(() => 'written', (e: unknown) => e);
          windowSql = inst.tenantry.runTenantSql(t.id, { sql: `insert into docs (title) values ('in-window-sql')` }).then(() => 'written', (e: unknown) => e);
          windowRead = inst.tenantry.withTenant(t.id, async (sql) => (await sql<{ n: number }[]>`select count(*)::int as n from docs`)[0]!.n);
        }
        if (p.step === 'switched') phase = 'after';
      },
    }).catch(async (err: unknown) => {
      stop = true;
      await writer.catch(() => undefined);
      throw err;
    });
    // keep writing a little in the new placement, then stop
    await new Promise((res) => setTimeout(res, 300));
    stop = true;
    await writer;
    assert.equal(r.tenant.isolation, to);
    assert.ok(acknowledgedDuringCopy > 0, 'writes went on during the bulk copy');
    const ww = await windowWrite;
    const ws = await windowSql;
    if (ww !== 'written') assert.ok(isTenantryError(ww, 'TENANT_MOVING'), `a write in the window is refused with TENANT_MOVING, got ${String(ww)}`);
    if (ws !== 'written') assert.ok(isTenantryError(ws, 'TENANT_MOVING'), `an SQL endpoint write in the window is refused with TENANT_MOVING, got ${String(ws)}`);
    assert.ok(ww !== 'written' || ws !== 'written', 'at least one write in the read-only window was refused');
    assert.ok((await windowRead!) > 20_000, 'reads are served in the read-only window');
    // every acknowledged write exactly once, with its last acknowledged value; deletes stay deleted
    const rows = await inst.tenantry.withTenant(t.id, (sql) => sql<{ title: string; note: string | null; n: number }[]>`
      select title, note, count(*) over (partition by title)::int as n from docs where title like 'w-%' or title like 'in-window%'`);
    const got = new Map(rows.map((x) => [x.title, x.note]));
    for (const x of rows) assert.equal(x.n, 1, `${x.title} is there exactly once`);
    for (const [title, note] of live) assert.equal(got.get(title), note, `acknowledged ${title} is there with its last value`);
    for (const title of deleted) assert.ok(!got.has(title), `deleted ${title} stays deleted`);
    if (ww === 'written') assert.ok(got.has('in-window'));
    else assert.ok(!got.has('in-window'), 'a refused write left nothing');
    for (const title of got.keys()) assert.ok(live.has(title) || title.startsWith('in-window'), `${title} was acknowledged`);
    const [total] = await inst.tenantry.withTenant(t.id, (sql) => sql<{ n: number }[]>`select count(*)::int as n from docs where title not like 'w-%' and title not like 'in-window%'`);
    assert.equal(total!.n, 20_005, 'the bulk rows are all there');
    assert.deepEqual(await rowsOf(bystander.id), bystanderRows, 'the other tenant in the source mode is untouched');
    await assertOnlyIn(await inst.tenantry.tenants.get(t.id), to);
    inst.tenantry.options; // keep the instance referenced
    void refused;
  });
}

test('hostile input: unknown mode, same mode, suspended, deleted, unknown tenant and a second move at once get clear codes and change nothing', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('pooled', 'hostile');
  const original = await rowsOf(t.id);
  await rejectsWith(inst.tenantry.tenants.move(t.id, { to: 'cluster' as Isolation }), 'INVALID_ISOLATION');
  // hostile bytes are refused before anything is read (synchronously, by the input check of every public call)
  await rejectsWith(Promise.resolve().then(() => inst.tenantry.tenants.move(t.id, { to: 'sch\u0000ema' as Isolation })), 'INVALID_INPUT');
  await rejectsWith(Promise.resolve().then(() => inst.tenantry.tenants.move(t.id, { to: '\ud800' as Isolation })), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.tenants.move(t.id, undefined as never), 'INVALID_INPUT');
  await rejectsWith(inst.tenantry.tenants.move(t.id, { to: 'pooled' }), 'MOVE_NOT_NEEDED', /already in pooled mode/);
  await rejectsWith(inst.tenantry.tenants.move('no-such-tenant', { to: 'schema' }), 'TENANT_NOT_FOUND');
  await rejectsWith(Promise.resolve().then(() => inst.tenantry.tenants.move('x'.repeat(100_000), { to: 'schema' })), 'INVALID_INPUT');
  await inst.tenantry.tenants.suspend(t.id, 'unpaid');
  await rejectsWith(inst.tenantry.tenants.move(t.id, { to: 'schema' }), 'TENANT_SUSPENDED');
  await inst.tenantry.tenants.activate(t.id);
  await inst.tenantry.tenants.delete(t.id);
  await rejectsWith(inst.tenantry.tenants.move(t.id, { to: 'database' }), 'TENANT_DELETED');
  await inst.tenantry.tenants.restore(t.id);
  // two moves at once: the second is refused while the first runs
  let second: Promise<unknown> | undefined;
  await inst.tenantry.tenants.move(t.id, {
    to: 'schema',
    onProgress: (p) => { if (p.step === 'copy' && !second) second = inst.tenantry.tenants.move(t.id, { to: 'database' }).then(() => 'moved', (e: unknown) => e); },
  });
  const s = await second;
  assert.ok(isTenantryError(s, 'MOVE_IN_PROGRESS'), `the second move is refused: ${String(s)}`);
  assert.equal((await inst.tenantry.tenants.get(t.id)).isolation, 'schema');
  assert.deepEqual(await rowsOf(t.id), original);
  await rejectsWith(inst.tenantry.moves.get('not-a-move'), 'MOVE_NOT_FOUND');
});

test('a cancelled move is undone: the tenant stays where it was, writable, nothing of the target left', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('schema', 'cancel');
  const original = await rowsOf(t.id);
  const ac = new AbortController();
  await rejectsWith(inst.tenantry.tenants.move(t.id, { to: 'database', signal: ac.signal, onProgress: (p) => { if (p.step === 'verify') ac.abort(); } }), 'MOVE_CANCELLED');
  const got = await inst.tenantry.tenants.get(t.id);
  assert.equal(got.isolation, 'schema');
  await assertOnlyIn(got, 'schema');
  assert.deepEqual(await rowsOf(t.id), original);
  await inst.tenantry.withTenant(t.id, (sql) => sql`insert into docs (title) values ('after cancel')`);
  const [m] = await inst.tenantry.moves.list(t.id);
  assert.equal(m!.phase, 'failed');
  assert.ok((await inst.tenantry.audit(t.id, { limit: 10 })).some((e) => e.action === 'move.failed'));
});

interface Run { code: number | null; stdout: string; stderr: string }
function cli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_TENANT_MIGRATIONS: dir, LOG_LEVEL: 'silent' };
  for (const k of ['NODE_TEST_CONTEXT', 'TENANTRY_ADMIN_KEY', 'REDIS_URL']) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: fileURLToPath(new URL('..', import.meta.url)), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('tenantry move <tenant> --to <mode> and tenantry moves <tenant>: --json output and exit codes', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('pooled', 'cli');
  const original = await rowsOf(t.id);
  const m = await cli(['--json', 'move', t.slug, '--to', 'database']);
  assert.equal(m.code, 0, m.stderr + m.stdout);
  const out = JSON.parse(m.stdout) as { moveId: string; from: string; to: string; rows: number; readOnlyMs: number; tenant: { isolation: string } };
  assert.equal(out.from, 'pooled');
  assert.equal(out.to, 'database');
  assert.equal(out.tenant.isolation, 'database');
  assert.equal(out.rows, 15);
  assert.ok(out.readOnlyMs >= 0);
  assert.deepEqual(await rowsOf(t.id), original);
  // the same mode again: a conflict (4), named
  const again = await cli(['move', t.slug, '--to', 'database']);
  assert.equal(again.code, 4, again.stderr);
  assert.match(again.stderr, /MOVE_NOT_NEEDED/);
  const bad = await cli(['--json', 'move', t.slug, '--to', 'cluster']);
  assert.equal(bad.code, 2);
  assert.equal((JSON.parse(bad.stdout) as { error: { code: string } }).error.code, 'INVALID_ISOLATION');
  const missing = await cli(['move', 'no-such-tenant', '--to', 'schema']);
  assert.equal(missing.code, 3, missing.stderr);
  const list = await cli(['--json', 'moves', t.slug]);
  assert.equal(list.code, 0, list.stderr);
  const moves = JSON.parse(list.stdout) as { id: string; phase: string; from: string; to: string }[];
  assert.deepEqual(moves.map((x) => [x.id, x.phase, x.from, x.to]), [[out.moveId, 'done', 'pooled', 'database']]);
});

test('a tier whose plan grants dedicated_database moves its tenant to database mode (an operation enqueued with the tier change)', { timeout: 300_000 }, async () => {
  const t = await tenantWithRows('pooled', 'upgrade');
  const original = await rowsOf(t.id);
  const pending = async (): Promise<{ id: string }[]> => inst.su<{ id: string }[]>`
    select id from tenantry_catalog.operations where tenant_id = ${t.id} and kind = 'move' and status = 'queued'`;
  // a tier without the feature moves nothing
  await inst.tenantry.tenants.update(t.id, { tier: 'professional' });
  assert.equal((await pending()).length, 0);
  await inst.tenantry.tenants.update(t.id, { tier: 'enterprise' });
  const ops = await pending();
  assert.equal(ops.length, 1, 'one move operation queued with the tier change');
  // a second change to another such tier while one is queued adds none
  await inst.tenantry.tenants.update(t.id, { tier: 'custom' });
  assert.equal((await pending()).length, 1);
  const done = await inst.tenantry.operations.run(ops[0]!.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done));
  const now = await inst.tenantry.tenants.get(t.id);
  assert.equal(now.isolation, 'database');
  assert.deepEqual(await rowsOf(t.id), original);
  await assertOnlyIn(now, 'database');
  const [m] = await inst.tenantry.moves.list(t.id);
  assert.equal(m!.phase, 'done');
  // already in database mode: another upgrade enqueues nothing
  await inst.tenantry.tenants.update(t.id, { tier: 'enterprise' });
  assert.equal((await pending()).length, 0);
});

test('another process\'s tenant cache learns of the switch at once: its next read finds every row in the new placement', { timeout: 300_000 }, async () => {
  const { Tenantry } = await import('../src/index.js');
  const other = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, tenantMigrations: dir, maxConnections: 4, tenantCacheTtlMs: 600_000 });
  try {
    const t = await tenantWithRows('database', 'cache');
    const original = await rowsOf(t.id);
    // the other instance caches the tenant (placement: its own database) for ten minutes
    assert.equal((await other.withTenant(t.id, (sql) => sql<{ n: number }[]>`select count(*)::int as n from docs`))[0]!.n, original.docs.length);
    await inst.tenantry.tenants.move(t.id, { to: 'pooled' });
    // the old database is gone: a stale cache would fail here; the NOTIFY dropped it
    const seen = await other.withTenant(t.id, async (sql) => (await sql<{ r: string }[]>`select (to_jsonb(d) - 'tenant_id')::text as r from docs d order by id`).map((x) => x.r));
    assert.deepEqual(seen, original.docs);
    await other.withTenant(t.id, (sql) => sql`insert into docs (title) values ('written by the other process')`);
    assert.equal((await rowsOf(t.id)).docs.length, original.docs.length + 1);
  } finally {
    await other.close();
  }
});
