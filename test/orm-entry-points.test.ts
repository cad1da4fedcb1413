/**
 * tenantry/drizzle, tenantry/kysely and tenantry/pg: tenant-bound instances on withTenant's
 * transaction, in every isolation mode. Real inserts, selects, joins and nested transactions
 * (savepoints); Drizzle's dates as plain Drizzle gives them; and the attacks a tenant's code could
 * send through each one's raw-SQL escape hatch, which must not reach another tenant's rows.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { drizzle as drizzleJs, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { pgTable, uuid, text, jsonb, timestamp, date } from 'drizzle-orm/pg-core';
import { eq, sql as dsql, count } from 'drizzle-orm';
import { Kysely, PostgresDialect, sql as ksql, type Generated } from 'kysely';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { isTenantryError, type Isolation, type Tenant } from '../src/index.js';
import { tenantDrizzle } from '../src/orm/drizzle.js';
import { tenantKysely } from '../src/orm/kysely.js';
import { tenantPg } from '../src/orm/pg.js';

const users = pgTable('users', {
  tenantId: uuid('tenant_id').notNull().default(dsql`tenantry.current_tenant()`),
  id: uuid('id').notNull().defaultRandom(),
  email: text('email').notNull(),
  displayName: text('display_name'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});
const agents = pgTable('agents', {
  tenantId: uuid('tenant_id').notNull().default(dsql`tenantry.current_tenant()`),
  id: uuid('id').notNull().defaultRandom(),
  name: text('name').notNull(),
  agentType: text('agent_type').notNull(),
  config: jsonb('config').$type<Record<string, unknown>>().notNull().default({}),
  createdBy: uuid('created_by'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});
interface DB {
  users: { tenant_id: Generated<string>; id: Generated<string>; email: string; display_name: string | null; created_at: Generated<Date> };
  agents: { tenant_id: Generated<string>; id: Generated<string>; name: string; agent_type: string; config: Generated<unknown>; created_by: string | null; created_at: Generated<Date> };
}

const MODES: Isolation[] = ['pooled', 'schema', 'database'];
let inst: TestInstallation;
const victims = {} as Record<Isolation, Tenant>;
const attackers = {} as Record<Isolation, Tenant>;

before(async () => {
  inst = await freshInstallation();
  for (const mode of MODES) {
    victims[mode] = await inst.tenantry.tenants.create({ slug: `oe-v-${mode}-${randomBytes(2).toString('hex')}`, isolation: mode });
    attackers[mode] = await inst.tenantry.tenants.create({ slug: `oe-a-${mode}-${randomBytes(2).toString('hex')}`, isolation: mode });
  }
});
after(async () => { await inst?.cleanup(); });

/** Rows an attempt got; a refusal (an error) counts as none. */
async function rowsOf(attempt: Promise<unknown>): Promise<number> {
  try {
    const out = await attempt as unknown[] | { rows?: unknown[] };
    return Array.isArray(out) ? out.length : out.rows?.length ?? 0;
  } catch {
    return 0;
  }
}

const agentCount = (t: Tenant, like: string): Promise<unknown> => inst.tenantry.query(t.id, 'select count(*)::int from agents where name like $1', [like], 'val');

for (const mode of MODES) {
  test(`tenantDrizzle (${mode}): inserts, a join, nested db.transaction() as savepoints, committed with the tenant`, async () => {
    const t = victims[mode];
    const out = await tenantDrizzle(inst.tenantry, t.slug, async (db) => {
      const [u] = await db.insert(users).values({ email: `d@${mode}.example` }).returning();
      await db.insert(agents).values({ name: 'd-calc', agentType: 'calculator', config: { precision: 2 }, createdBy: u!.id });
      await db.transaction(async (tx) => {
        await tx.insert(agents).values({ name: 'd-kept', agentType: 'search', createdBy: u!.id });
        await assert.rejects(tx.transaction(async (inner) => {
          await inner.insert(agents).values({ name: 'd-dropped', agentType: 'search' });
          throw new Error('undo inner');
        }), /undo inner/);
      });
      const joined = await db.select({ agent: agents.name, owner: users.email, config: agents.config, at: agents.createdAt })
        .from(agents).innerJoin(users, eq(agents.createdBy, users.id)).where(eq(users.email, `d@${mode}.example`)).orderBy(agents.name);
      const [{ n }] = await db.select({ n: count() }).from(agents).where(dsql`${agents.name} like 'd-%'`) as [{ n: number }];
      return { joined, n };
    }, { schema: { users, agents } });
    assert.deepEqual(out.joined.map((r) => [r.agent, r.owner]), [['d-calc', `d@${mode}.example`], ['d-kept', `d@${mode}.example`]]);
    assert.deepEqual(out.joined[0]!.config, { precision: 2 });
    assert.ok(out.joined[0]!.at instanceof Date && !Number.isNaN(out.joined[0]!.at.getTime()), 'timestamptz is a valid Date');
    assert.equal(out.n, 2, 'the inner savepoint rolled back alone');
    assert.equal(await agentCount(t, 'd-%'), 2, 'committed when fn resolved');
    assert.equal(await agentCount(attackers[mode], 'd-%'), 0, 'in this tenant only');
    // fn throws: everything it did is rolled back
    await assert.rejects(tenantDrizzle(inst.tenantry, t.id, async (db) => {
      await db.insert(agents).values({ name: 'd-never', agentType: 'x' });
      throw new Error('boom');
    }), /boom/);
    assert.equal(await agentCount(t, 'd-never'), 0);
  });

  test(`tenantKysely (${mode}): inserts, a join, transaction() as a savepoint`, async () => {
    const t = victims[mode];
    const out = await tenantKysely<DB, { joined: { agent: string }[]; names: string[] }>(inst.tenantry, t.id, async (db) => {
      const u = await db.insertInto('users').values({ email: `k@${mode}.example`, display_name: 'K' }).returning('id').executeTakeFirstOrThrow();
      await db.insertInto('agents').values({ name: 'k-agent', agent_type: 'writer', created_by: u.id }).execute();
      await db.transaction().execute(async (trx) => { await trx.insertInto('agents').values({ name: 'k-kept', agent_type: 'writer', created_by: u.id }).execute(); });
      await assert.rejects(db.transaction().execute(async (trx) => {
        await trx.insertInto('agents').values({ name: 'k-dropped', agent_type: 'writer' }).execute();
        throw new Error('undo');
      }), /undo/);
      const joined = await db.selectFrom('agents').innerJoin('users', 'users.id', 'agents.created_by').select(['agents.name as agent'])
        .where('users.email', '=', `k@${mode}.example`).orderBy('agents.name').execute();
      const names = (await db.selectFrom('agents').select('name').where('name', 'like', 'k-%').orderBy('name').execute()).map((r) => r.name);
      return { joined, names };
    });
    assert.deepEqual(out.joined.map((r) => r.agent), ['k-agent', 'k-kept']);
    assert.deepEqual(out.names, ['k-agent', 'k-kept'], 'the failed transaction() rolled back to its savepoint only');
    assert.equal(await agentCount(t, 'k-%'), 2);
    assert.equal(await agentCount(attackers[mode], 'k-%'), 0);
  });

  test(`tenantPg (${mode}): pg-style query(), drizzle-orm/node-postgres with nested transactions, Kysely's PostgresDialect`, async () => {
    const t = victims[mode];
    const out = await tenantPg(inst.tenantry, t.id, async (client) => {
      const ins = await client.query<{ id: string }>('insert into users (email, display_name) values ($1, $2) returning id', [`p@${mode}.example`, null]);
      const uid = ins.rows[0]!.id;
      const plain = await client.query('select $1::int + 1 as n, $2::jsonb as j, $3::text[] as tags, $4::timestamptz as at, $5::bytea as bytes, $6::jsonb as jtext',
        [41, { a: [1, 'x'] }, ['a', 'b"c', 'back\\slash'], new Date('2026-01-02T03:04:05.678Z'), Buffer.from([0, 1, 255]), '{"from":"text"}']);
      const arrays = await client.query({ text: 'select 1 as a, 2 as b', rowMode: 'array' });
      // drizzle-orm/node-postgres on the pg-shaped client: its BEGIN/COMMIT become a savepoint
      const db = drizzlePg(client as never);
      await db.insert(agents).values({ name: 'p-drizzle', agentType: 'x', config: { nested: { n: 1 }, s: 'q"uote' }, createdBy: uid });
      await db.transaction(async (tx) => {
        await tx.insert(agents).values({ name: 'p-kept', agentType: 'x', createdBy: uid });
        await assert.rejects(tx.transaction(async (inner) => {
          await inner.insert(agents).values({ name: 'p-dropped', agentType: 'x' });
          throw new Error('undo');
        }), /undo/);
      });
      await assert.rejects(db.transaction(async (tx) => {
        await tx.insert(agents).values({ name: 'p-dropped-2', agentType: 'x' });
        throw new Error('undo outer');
      }), /undo outer/);
      const joined = await db.select({ agent: agents.name, at: agents.createdAt, config: agents.config }).from(agents).innerJoin(users, eq(agents.createdBy, users.id)).where(eq(users.id, uid)).orderBy(agents.name);
      // Kysely's own pg dialect over client.pool
      const k = new Kysely<DB>({ dialect: new PostgresDialect({ pool: client.pool as never }) });
      await k.transaction().execute(async (trx) => { await trx.insertInto('agents').values({ name: 'p-kysely', agent_type: 'x', created_by: uid }).execute(); });
      const viaKysely = (await k.selectFrom('agents').select('name').where('name', 'like', 'p-%').orderBy('name').execute()).map((r) => r.name);
      // node-style callback
      const viaCallback = await new Promise<number>((resolve, reject) => client.query('select 7 as seven', (err, r) => (err ? reject(err) : resolve(r!.rows[0]!.seven as number))));
      return { ins, plain, arrays, joined, viaKysely, viaCallback };
    });
    assert.equal(out.ins.command, 'INSERT');
    assert.equal(out.ins.rowCount, 1);
    assert.deepEqual(out.plain.rows[0], { n: 42, j: { a: [1, 'x'] }, tags: ['a', 'b"c', 'back\\slash'], at: new Date('2026-01-02T03:04:05.678Z'), bytes: Buffer.from([0, 1, 255]), jtext: { from: 'text' } },
      'parameters go as pg sends them (an object as JSON, a string bound to jsonb as JSON text, not encoded twice)');
    assert.deepEqual(out.plain.fields.map((f) => [f.name, f.dataTypeID]), [['n', 23], ['j', 3802], ['tags', 1009], ['at', 1184], ['bytes', 17], ['jtext', 3802]]);
    assert.deepEqual(out.joined[0]!.config, { nested: { n: 1 }, s: 'q"uote' }, 'jsonb through drizzle-orm/node-postgres goes in once-encoded and comes back as the object');
    assert.deepEqual(out.arrays.rows, [[1, 2]]);
    assert.deepEqual(out.joined.map((r) => r.agent), ['p-drizzle', 'p-kept']);
    assert.ok(out.joined[0]!.at instanceof Date && !Number.isNaN(out.joined[0]!.at.getTime()), 'drizzle-orm/node-postgres converts the text it asked for into a Date');
    assert.deepEqual(out.viaKysely, ['p-drizzle', 'p-kept', 'p-kysely']);
    assert.equal(out.viaCallback, 7);
    assert.equal(await agentCount(t, 'p-%'), 3, 'committed with withTenant; the rolled-back savepoints left nothing');
    assert.equal(await agentCount(attackers[mode], 'p-%'), 0);
  });

  test(`attacks through the escape hatches of tenantDrizzle, tenantKysely and tenantPg do not cross tenants (${mode})`, async () => {
    const victim = victims[mode];
    const attacker = attackers[mode];
    await inst.tenantry.withTenant(victim.id, (sql) => sql`insert into agents (name, agent_type) values (${`vault-${mode}`}, 'vault')`);
    const forged = `${victim.id}.${'0'.repeat(64)}`;
    const qualified = `select * from "${victim.placement.schema}".agents where name like 'vault-%'`;
    const stolen: Record<string, number> = {};
    await tenantDrizzle(inst.tenantry, attacker.id, async (db) => {
      stolen['drizzle: schema-qualified'] = await rowsOf(db.transaction((tx) => tx.execute(dsql.raw(qualified))));
      stolen['drizzle: forged context'] = await rowsOf(db.transaction(async (tx) => {
        await tx.execute(dsql`select set_config('tenantry.ctx', ${forged}, true)`);
        return tx.execute(dsql`select * from agents where name like 'vault-%'`);
      }));
      stolen['drizzle: reset role'] = await rowsOf(db.transaction(async (tx) => { await tx.execute(dsql.raw('reset role')); return tx.execute(dsql`select * from agents where name like 'vault-%'`); }));
      stolen['drizzle: unfiltered'] = (await db.select().from(agents)).filter((r) => r.name.startsWith('vault-')).length;
    });
    await tenantKysely<DB, void>(inst.tenantry, attacker.id, async (db) => {
      stolen['kysely: schema-qualified'] = await rowsOf(db.transaction().execute((trx) => ksql.raw(qualified).execute(trx)).then((r) => r.rows));
      stolen['kysely: forged context'] = await rowsOf(db.transaction().execute(async (trx) => {
        await ksql`select set_config('tenantry.ctx', ${forged}, true)`.execute(trx);
        return (await ksql`select * from agents where name like 'vault-%'`.execute(trx)).rows;
      }));
      stolen['kysely: unfiltered'] = (await db.selectFrom('agents').selectAll().execute()).filter((r) => r.name.startsWith('vault-')).length;
      await assert.rejects(ksql`commit`.execute(db), (err: unknown) => isTenantryError(err, 'INVALID_INPUT'), 'Kysely cannot end withTenant\'s transaction');
    });
    await tenantPg(inst.tenantry, attacker.id, async (client) => {
      stolen['pg: schema-qualified'] = await rowsOf(client.query('begin').then(() => client.query(qualified)).finally(() => client.query('rollback')));
      stolen['pg: forged context'] = await rowsOf((async () => {
        await client.query('begin');
        try {
          await client.query("select set_config('tenantry.ctx', $1, true)", [forged]);
          return await client.query("select * from agents where name like 'vault-%'");
        } finally { await client.query('rollback'); }
      })());
      stolen['pg: set role to the victim\'s role'] = await rowsOf((async () => {
        await client.query('begin');
        try {
          await client.query(`set role "${victim.placement.role}"`);
          return await client.query("select * from agents where name like 'vault-%'");
        } finally { await client.query('rollback'); }
      })());
      stolen['pg: unfiltered'] = (await client.query<{ name: string }>('select name from agents')).rows.filter((r) => r.name.startsWith('vault-')).length;
      // a COMMIT with no savepoint open cannot end withTenant's transaction (and with it the tenant context)
      await assert.rejects(client.query('commit'), (err: unknown) => isTenantryError(err, 'INVALID_INPUT'));
      await assert.rejects(client.query('begin isolation level serializable'), (err: unknown) => isTenantryError(err, 'INVALID_INPUT'));
      await assert.rejects(client.query({ text: 'select 1', submit() {} } as never), (err: unknown) => isTenantryError(err, 'INVALID_INPUT') && /Cursors/.test(err.message));
    });
    assert.deepEqual(stolen, Object.fromEntries(Object.keys(stolen).map((k) => [k, 0])), `no attack read the victim's row (${mode})`);
    assert.equal(await agentCount(victim, 'vault-%'), 1, 'the victim row is intact');
  });
}

test('tenantDrizzle gives dates as plain Drizzle does, also in a process whose time zone is not UTC', async () => {
  const before = process.env.TZ;
  process.env.TZ = 'America/New_York';
  try {
    const probe = pgTable('probe', { a: timestamp('a', { withTimezone: true }), b: timestamp('b'), c: date('c', { mode: 'date' }), d: date('d'), e: timestamp('e', { mode: 'string' }) });
    const select = (db: PostgresJsDatabase) => db.select({
      a: dsql`'2026-01-02 03:04:05.678+00'::timestamptz`.mapWith(probe.a), b: dsql`'2026-01-02 03:04:05.678'::timestamp`.mapWith(probe.b),
      c: dsql`'2026-01-02'::date`.mapWith(probe.c), d: dsql`'2026-01-02'::date`.mapWith(probe.d), e: dsql`'2026-01-02 03:04:05.123456'::timestamp`.mapWith(probe.e),
    }).from(dsql`(select 1) as one`);
    const viaTenant = await tenantDrizzle(inst.tenantry, victims.pooled.id, (db) => select(db));
    const direct = postgres(inst.adminUrl, { max: 1, onnotice: () => undefined });
    try {
      const viaPlainDrizzle = await select(drizzleJs(direct));
      assert.deepEqual(viaTenant, viaPlainDrizzle, 'the same values as Drizzle on a postgres.js client of its own');
    } finally {
      await direct.end();
    }
    assert.deepEqual(viaTenant[0], {
      a: new Date('2026-01-02T03:04:05.678Z'),
      b: new Date('2026-01-02T03:04:05.678Z'), // a timestamp without time zone is UTC to Drizzle, not this process's local time
      c: new Date('2026-01-02T00:00:00.000Z'),
      d: '2026-01-02',
      e: '2026-01-02 03:04:05.123456', // mode 'string' keeps the microseconds
    });
    // and the shared runtime pool still parses dates its own way for everyone else
    const [row] = await inst.tenantry.query<{ at: unknown }>(victims.pooled.id, "select '2026-01-02'::date as at", [], 'all');
    assert.ok(row!.at instanceof Date);
  } finally {
    if (before === undefined) delete process.env.TZ; else process.env.TZ = before;
  }
});

test('the entry points refuse what is not a function or a config object, with INVALID_INPUT', async () => {
  await assert.rejects(tenantDrizzle(inst.tenantry, victims.pooled.id, 'select 1' as never), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantDrizzle(inst.tenantry, victims.pooled.id, async () => 1, [] as never), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantKysely(inst.tenantry, victims.pooled.id, null as never), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantKysely(inst.tenantry, victims.pooled.id, async () => 1, { dialect: {} } as never), (e: unknown) => isTenantryError(e, 'INVALID_INPUT') && /dialect/.test(e.message));
  await assert.rejects(tenantPg(inst.tenantry, victims.pooled.id, undefined as never), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantPg(inst.tenantry, victims.pooled.id, (c) => c.query(42 as never)), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantPg(inst.tenantry, victims.pooled.id, (c) => c.query('select $1', 'x' as never)), (e: unknown) => isTenantryError(e, 'INVALID_INPUT'));
  await assert.rejects(tenantPg(inst.tenantry, victims.pooled.id, (c) => c.query('select 1\u0000')), (e: unknown) => isTenantryError(e) || e instanceof Error);
  await assert.rejects(tenantDrizzle(inst.tenantry, 'no-such-tenant', async () => 1), (e: unknown) => isTenantryError(e, 'TENANT_NOT_FOUND'));
});
