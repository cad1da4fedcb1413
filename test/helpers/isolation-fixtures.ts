/**
 * Fixtures shared by the isolation attack suites: six tenants (A and B in each isolation mode) seeded
 * with rows in every example table, snapshots of each tenant's rows taken through its own context, and
 * assertions on PostgreSQL errors by SQLSTATE.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import postgres, { type Sql, type TransactionSql } from 'postgres';
import type { Isolation, Tenant } from '../../src/index.js';
import { SUPERUSER_URL, type TestInstallation } from './installation.js';

export const MODES: readonly Isolation[] = ['pooled', 'schema', 'database'];
export const TABLES = ['users', 'agents', 'executions', 'memories', 'data_sources'] as const;
export type Table = (typeof TABLES)[number];
/** rows seedTenant() writes for every tenant */
export const SEEDED: Readonly<Record<Table, number>> = { users: 1, agents: 2, executions: 1, memories: 1, data_sources: 1 };

export type Side = 'a' | 'b';
export interface Fixture {
  tenant: Tenant;
  /** ids of the seeded rows, to aim attacks at them */
  userId: string;
  agentIds: string[];
  agentNames: string[];
  baseline: Snapshot;
}
export type Fixtures = Record<Isolation, Record<Side, Fixture>>;

/** Every row of every example table, as the tenant itself sees them (jsonb text, sorted). */
export type Snapshot = Record<Table, string[]>;

export function hexOf(id: string): string {
  return id.replace(/-/g, '');
}

/** A quoted SQL identifier for names Tenantry derived (test-side only). */
export function q(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The schema-qualified name of one of the tenant's tables, inside the tenant's own database. */
export function qualified(t: Tenant, table: Table): string {
  return `${q(t.placement.schema)}.${table}`;
}

/** Creates A and B in each isolation mode, seeds their rows and records each one's baseline snapshot. */
export async function createFixtures(inst: TestInstallation, prefix: string): Promise<Fixtures> {
  const out = {} as Fixtures;
  for (const mode of MODES) {
    out[mode] = {} as Record<Side, Fixture>;
    for (const side of ['a', 'b'] as const) {
      const tenant = await inst.tenantry.tenants.create({ slug: `${prefix}-${mode}-${side}`, isolation: mode });
      out[mode][side] = await seedTenant(inst, tenant);
    }
  }
  return out;
}

async function seedTenant(inst: TestInstallation, tenant: Tenant): Promise<Fixture> {
  const agentNames = [`${tenant.slug}-agent-1`, `${tenant.slug}-agent-2`];
  const seeded = await inst.tenantry.withTenant(tenant.id, async (sql) => {
    const [user] = await sql<{ id: string }[]>`insert into users (email) values (${`owner@${tenant.slug}.example`}) returning id`;
    const agents = await sql<{ id: string }[]>`
      insert into agents (name, agent_type, created_by)
      values (${agentNames[0]!}, 'calculator', ${user!.id}), (${agentNames[1]!}, 'search', null)
      returning id`;
    await sql`insert into executions (agent_id, status, input) values (${agents[0]!.id}, 'done', ${sql.json({ secret: tenant.slug })})`;
    await sql`insert into memories (agent_id, key, content) values (${agents[0]!.id}, 'secret', ${`the secret of ${tenant.slug}`})`;
    await sql`insert into data_sources (name, kind) values (${`${tenant.slug}-warehouse`}, 'postgres')`;
    return { userId: user!.id, agentIds: agents.map((a) => a.id) };
  });
  const baseline = await snapshot(inst, tenant);
  for (const table of TABLES) {
    assert.equal(baseline[table].length, SEEDED[table], `${tenant.slug}: seeded ${table}`);
    for (const row of baseline[table]) assert.equal((JSON.parse(row) as { tenant_id: string }).tenant_id, tenant.id);
  }
  return { tenant, ...seeded, agentNames, baseline };
}

export async function snapshot(inst: TestInstallation, t: Tenant): Promise<Snapshot> {
  const agg = (table: Table): string => `(select coalesce(array_agg(to_jsonb(x)::text order by to_jsonb(x)::text), '{}') from ${table} x) as ${table}`;
  return inst.tenantry.withTenant(t.id, async (sql) => {
    const [row] = await sql.unsafe<Snapshot[]>(`select ${TABLES.map(agg).join(', ')}`);
    return row!;
  });
}

/** Every tenant's rows are exactly as seeded: read back through each tenant's own context. */
export async function assertIntact(inst: TestInstallation, fixtures: Fixtures): Promise<void> {
  for (const mode of MODES) {
    for (const side of ['a', 'b'] as const) {
      const f = fixtures[mode][side];
      assert.deepEqual(await snapshot(inst, f.tenant), f.baseline, `the rows of ${f.tenant.slug} changed`);
    }
  }
}

export function allFixtures(fixtures: Fixtures): Fixture[] {
  return MODES.flatMap((m) => [fixtures[m].a, fixtures[m].b]);
}

/** Asserts that `p` fails with SQLSTATE `code` (and a message matching `message`). */
export async function rejectsPg(p: Promise<unknown>, code: string, message?: RegExp, what = ''): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = err as { code?: string; message?: string };
    assert.equal(e.code, code, `${what ? `${what}: ` : ''}expected SQLSTATE ${code}, got ${String(e.code)}: ${String(e.message ?? err)}`);
    if (message) assert.match(e.message ?? '', message, what);
    return true;
  });
}

/** Runs `fn` in a savepoint and asserts that it fails with `code` (the transaction carries on). */
export async function savepointRejects(sql: TransactionSql, fn: (sp: TransactionSql) => Promise<unknown>, code: string, message?: RegExp, what = ''): Promise<void> {
  await rejectsPg(sql.savepoint((sp) => fn(sp as TransactionSql)), code, message, what);
}

class Rollback extends Error {}

/** Runs `fn` inside tenant `t`'s transaction and rolls it back afterwards, whatever `fn` changed. */
export async function inRollback<T>(inst: TestInstallation, t: Tenant, fn: (sql: TransactionSql) => Promise<T>): Promise<T> {
  let result: T | undefined;
  try {
    await inst.tenantry.withTenant(t.id, async (sql) => {
      result = await fn(sql);
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  }
  return result as T;
}

/** Same with the tenant's own login role as the session user (withTenantRole). */
export async function inRollbackAsRole<T>(inst: TestInstallation, t: Tenant, fn: (sql: TransactionSql) => Promise<T>): Promise<T> {
  let result: T | undefined;
  try {
    await inst.tenantry.withTenantRole(t.id, async (sql) => {
      result = await fn(sql);
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  }
  return result as T;
}

/** A superuser connection to any database of the server. */
export function suTo(inst: TestInstallation, database: string): Sql {
  const su = new URL(SUPERUSER_URL);
  return postgres(inst.urlFor(database, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password)), { onnotice: () => {}, max: 1 });
}

/** A MAC-shaped string that is not the MAC of anything. */
export const GARBAGE_MAC = 'f'.repeat(64);

export function otherUuid(): string {
  return randomUUID();
}
