/**
 * ORM-ready tenant transactions: what withTenant hands over is used, unmodified, as the client of
 * Drizzle (drizzle-orm/postgres-js) and of Kysely (kysely-postgres-js), in every isolation mode: real
 * inserts, selects, joins and nested transactions (savepoints), and the attacks a tenant's code could
 * send through each ORM's raw-SQL escape hatch, which must not reach another tenant's rows.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { drizzle as drizzleOf } from 'drizzle-orm/postgres-js';
import { pgTable, uuid, text, jsonb, timestamp } from 'drizzle-orm/pg-core';
import { eq, sql as dsql, count } from 'drizzle-orm';
import { Kysely, sql as ksql, type Generated } from 'kysely';
import { PostgresJSDialect } from 'kysely-postgres-js';
import type { Sql, TransactionSql } from 'postgres';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { isTenantryError, type Isolation, type Tenant } from '../src/index.js';

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

interface KyselyDb {
  users: { tenant_id: Generated<string>; id: Generated<string>; email: string; display_name: string | null; created_at: Generated<Date> };
  agents: { tenant_id: Generated<string>; id: Generated<string>; name: string; agent_type: string; config: Generated<unknown>; created_by: string | null; created_at: Generated<Date> };
}
// the transaction object itself, unmodified at run time; TypeScript only needs telling it is a Sql
const drizzle = (sql: TransactionSql) => drizzleOf(sql as unknown as Sql);
const kysely = (sql: TransactionSql): Kysely<KyselyDb> => new Kysely<KyselyDb>({ dialect: new PostgresJSDialect({ postgres: sql as never }) });

const MODES: Isolation[] = ['pooled', 'schema', 'database'];
let inst: TestInstallation;
const victims = {} as Record<Isolation, Tenant>;
const attackers = {} as Record<Isolation, Tenant>;

before(async () => {
  inst = await freshInstallation();
  for (const mode of MODES) {
    victims[mode] = await inst.tenantry.tenants.create({ slug: `orm-v-${mode}-${randomBytes(2).toString('hex')}`, isolation: mode });
    attackers[mode] = await inst.tenantry.tenants.create({ slug: `orm-a-${mode}-${randomBytes(2).toString('hex')}`, isolation: mode });
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

for (const mode of MODES) {
  test(`drizzle(sql) on withTenant's transaction (${mode}): inserts, a join, nested transactions as savepoints`, async () => {
    const t = victims[mode];
    const out = await inst.tenantry.withTenant(t.id, async (sql) => {
      const db = drizzle(sql);
      const [u] = await db.insert(users).values({ email: `owner@${mode}.example`, displayName: 'Owner' }).returning();
      await db.insert(agents).values({ name: 'calc', agentType: 'calculator', config: { precision: 2, tags: ['a'] }, createdBy: u!.id });
      // db.transaction(): a savepoint of withTenant's transaction; the inner one rolls back alone
      await db.transaction(async (tx) => {
        await tx.insert(agents).values({ name: 'kept', agentType: 'search', createdBy: u!.id });
        await tx.transaction(async (inner) => {
          await inner.insert(agents).values({ name: 'dropped', agentType: 'search' });
          inner.rollback();
        }).catch((err: unknown) => { if (!(err instanceof Error) || !/rollback/i.test(err.message)) throw err; });
      });
      const joined = await db.select({ agent: agents.name, owner: users.email, config: agents.config, at: agents.createdAt })
        .from(agents).innerJoin(users, eq(agents.createdBy, users.id)).orderBy(agents.name);
      const [{ n }] = await db.select({ n: count() }).from(agents) as [{ n: number }];
      return { joined, n };
    });
    assert.deepEqual(out.joined.map((r) => [r.agent, r.owner]), [['calc', `owner@${mode}.example`], ['kept', `owner@${mode}.example`]]);
    assert.deepEqual(out.joined[0]!.config, { precision: 2, tags: ['a'] }, 'jsonb goes in and comes back as the object, not a string');
    assert.ok(out.joined[0]!.at instanceof Date && !Number.isNaN(out.joined[0]!.at.getTime()), 'timestamptz comes back as a valid Date');
    assert.equal(out.n, 2, 'the rolled-back savepoint left nothing; the rest committed');
    // committed, and the tenant's own rows only
    assert.equal(await inst.tenantry.query(t.id, 'select count(*)::int from agents', [], 'val'), 2);
    assert.equal(await inst.tenantry.query(attackers[mode].id, 'select count(*)::int from agents', [], 'val'), 0);
    // Drizzle rewrote the parsers of the transaction's options: a copy, so the shared pool still parses dates
    const [row] = await inst.tenantry.query<{ created_at: unknown }>(t.id, 'select created_at from agents limit 1', [], 'all');
    assert.ok(row!.created_at instanceof Date, 'the runtime pool every tenant shares was not changed by Drizzle');
  });

  test(`Kysely with kysely-postgres-js on withTenant's transaction (${mode}): inserts, a join, transaction() as a savepoint`, async () => {
    const t = victims[mode];
    const out = await inst.tenantry.withTenant(t.id, async (sql) => {
      const db = kysely(sql);
      const u = await db.insertInto('users').values({ email: `k@${mode}.example`, display_name: 'K' }).returning('id').executeTakeFirstOrThrow();
      await db.insertInto('agents').values({ name: 'k-agent', agent_type: 'writer', created_by: u.id }).execute();
      await db.transaction().execute(async (trx) => {
        await trx.insertInto('agents').values({ name: 'k-kept', agent_type: 'writer', created_by: u.id }).execute();
      });
      await assert.rejects(db.transaction().execute(async (trx) => {
        await trx.insertInto('agents').values({ name: 'k-dropped', agent_type: 'writer' }).execute();
        throw new Error('undo');
      }), /undo/);
      const joined = await db.selectFrom('agents').innerJoin('users', 'users.id', 'agents.created_by')
        .select(['agents.name as agent', 'users.email as owner']).where('users.email', '=', `k@${mode}.example`).orderBy('agents.name').execute();
      const names = (await db.selectFrom('agents').select('name').where('name', 'like', 'k-%').orderBy('name').execute()).map((r) => r.name);
      return { joined, names };
    });
    assert.deepEqual(out.joined.map((r) => r.agent), ['k-agent', 'k-kept']);
    assert.deepEqual(out.names, ['k-agent', 'k-kept'], 'the failed transaction() rolled back to its savepoint only');
    assert.equal(await inst.tenantry.query(t.id, "select count(*)::int from agents where name like 'k-%'", [], 'val'), 2, 'committed with withTenant');
  });

  test(`attacks through the ORMs' raw-SQL escape hatches do not cross tenants (${mode})`, async () => {
    const victim = victims[mode];
    const attacker = attackers[mode];
    await inst.tenantry.withTenant(victim.id, (sql) => sql`insert into agents (name, agent_type) values (${`secret-${mode}`}, 'vault')`);
    const stolen: Record<string, number> = {};
    await inst.tenantry.withTenant(attacker.id, async (sql) => {
      const db = drizzle(sql);
      const k = kysely(sql);
      // schema-qualified names of the victim's tables
      stolen['drizzle: schema-qualified'] = await rowsOf(sql.savepoint((s) => drizzle(s).execute(dsql.raw(`select * from "${victim.placement.schema}".agents where name like 'secret-%'`))));
      stolen['kysely: schema-qualified'] = await rowsOf(sql.savepoint((s) => ksql.raw(`select * from "${victim.placement.schema}".agents where name like 'secret-%'`).execute(kysely(s))));
      // a forged context naming the victim
      stolen['drizzle: forged context'] = await rowsOf(sql.savepoint(async (s) => {
        const d = drizzle(s);
        await d.execute(dsql`select set_config('tenantry.ctx', ${`${victim.id}.${'0'.repeat(64)}`}, true)`);
        return d.execute(dsql`select * from agents where name like 'secret-%'`);
      }));
      stolen['kysely: forged context'] = await rowsOf(sql.savepoint(async (s) => {
        const kk = kysely(s);
        await ksql`select set_config('tenantry.ctx', ${`${victim.id}.${'0'.repeat(64)}`}, true)`.execute(kk);
        return ksql`select * from agents where name like 'secret-%'`.execute(kk);
      }));
      // SET ROLE / RESET ROLE
      stolen['drizzle: reset role'] = await rowsOf(sql.savepoint(async (s) => {
        const d = drizzle(s);
        await d.execute(dsql.raw('reset role'));
        return d.execute(dsql`select * from agents where name like 'secret-%'`);
      }));
      // no filter at all: the policies return the attacker's own rows only
      stolen['drizzle: unfiltered select'] = (await db.select().from(agents)).filter((r) => r.name.startsWith('secret-')).length;
      stolen['kysely: unfiltered select'] = (await k.selectFrom('agents').selectAll().execute()).filter((r) => r.name.startsWith('secret-')).length;
      // Kysely's path cannot end withTenant's transaction (and with it the tenant context) early
      await assert.rejects(ksql`commit`.execute(k), (err: unknown) => isTenantryError(err) && err.code === 'INVALID_INPUT');
      await assert.rejects(k.transaction().setIsolationLevel('serializable').execute(async () => undefined), (err: unknown) => isTenantryError(err) && err.code === 'INVALID_INPUT');
    });
    assert.deepEqual(stolen, Object.fromEntries(Object.keys(stolen).map((k) => [k, 0])), `no attack read the victim's row (${mode})`);
    // and a COMMIT through Drizzle's escape hatch ends the transaction with the context: nothing readable after it
    const after = await inst.tenantry.withTenant(attacker.id, async (sql) => {
      const d = drizzle(sql);
      await d.execute(dsql.raw('commit'));
      return rowsOf(d.execute(dsql`select * from agents`));
    }).catch(() => 0);
    assert.equal(after, 0, 'after an early COMMIT there is no tenant context: zero rows');
    assert.equal(await inst.tenantry.query(victim.id, "select count(*)::int from agents where name like 'secret-%'", [], 'val'), 1, 'the victim row is intact');
  });
}
