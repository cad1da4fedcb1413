import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { ident, literal } from '../identifiers.js';
import type { TenantPlacement } from '../isolation/modes.js';

/**
 * The source side of an online move, in the data database holding the tenant's rows: a change log
 * filled by a row trigger on each of the tenant's tables while its rows are bulk-copied, and the
 * freeze that refuses the tenant's writes during the final catch-up. Both live in the database
 * itself, so every path that writes (the library, the SQL endpoint as the tenant's own role, a
 * process whose tenant cache is stale) is refused alike, not only the HTTP layer of this process.
 */

export const MOVE_SCHEMA = 'tenantry_move';
/** The SQLSTATE the trigger raises for a write to a frozen tenant (class TM: Tenantry move). */
export const MOVING_SQLSTATE = 'TM001';
const TRIGGER = 'tenantry_move_track';
/** how long installing the triggers or the freeze waits for writes under way before the move gives up */
export const MOVE_LOCK_TIMEOUT_MS = 10_000;
/** advisory lock (transaction-scoped, in the source database) around installing and dropping triggers */
const TRACK_LOCK = 0x746d_7631; // 'tmv1'

/** each attempt at a table or row lock waits at most this long: under deadlock_timeout (1 s by default) */
const LOCK_ATTEMPT_MS = 200;

/**
 * Runs `fn` in a transaction of `sql` whose lock waits are short, again and again (with a pause that
 * lets the tenant's writes through) until it gets its locks or MOVE_LOCK_TIMEOUT_MS has passed.
 * Installing triggers takes a lock per table while a writer (a cascading delete) may hold another
 * table and want ours: with a short wait this side gives up first, so the writer is never the one the
 * deadlock detector cancels, and no write queues behind the move for long.
 */
async function withShortLocks(sql: Sql, fn: (tx: TransactionSql) => Promise<void>): Promise<void> {
  const deadline = Date.now() + MOVE_LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      await sql.begin(async (tx) => {
        await tx.unsafe(`set local lock_timeout = '${LOCK_ATTEMPT_MS}ms'`);
        await fn(tx);
      });
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if ((code !== '55P03' && code !== '40P01') || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 100));
    }
  }
}

/** Whether `err` is the trigger's refusal of a write to a tenant being moved. */
export function isMovingRefusal(err: unknown): boolean {
  return !!err && typeof err === 'object' && (err as { code?: unknown }).code === MOVING_SQLSTATE;
}

/** Runs `fn` with a short-lived admin connection to the database holding `p`'s rows. */
export async function onDatabaseOf<T>(core: Core, p: Pick<TenantPlacement, 'isolation' | 'database'>, fn: (sql: Sql) => Promise<T>): Promise<T> {
  if (p.isolation !== 'database') return fn(core.sharedAdmin);
  const sql = core.adminTo(p.database, 1);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * The log and the trigger function, created once per data database (owned by the owner role, with
 * nothing granted to anyone else: a tenant's role cannot read which keys another tenant changed).
 * The function is SECURITY DEFINER so that a write by the runtime role or a tenant's role can log.
 *
 * Every write of the moving tenant takes a FOR SHARE lock on its `moving` row until it commits: the
 * freeze (an UPDATE of that row) therefore waits for every write already under way, and every later
 * write sees the freeze. Without it, a write that checked "not frozen" just before the freeze could
 * commit after the catch-up read the log, and be lost in the old placement.
 */
function setupSql(owner: string): string {
  const o = ident(owner);
  return `
create schema if not exists ${MOVE_SCHEMA} authorization ${o};
revoke all on schema ${MOVE_SCHEMA} from public;
set local role ${o};
create table if not exists ${MOVE_SCHEMA}.moving (
  tenant_id uuid not null,
  schema_name text not null,
  move_id uuid not null,
  frozen boolean not null default false,
  primary key (tenant_id, schema_name)
);
create table if not exists ${MOVE_SCHEMA}.changes (move_id uuid not null, tbl text not null, key jsonb not null);
create index if not exists changes_move_idx on ${MOVE_SCHEMA}.changes (move_id, tbl);
revoke all on all tables in schema ${MOVE_SCHEMA} from public;
create or replace function ${MOVE_SCHEMA}.track() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
declare
  tid uuid;
  m record;
  k jsonb;
  ok jsonb;
begin
  if tg_op = 'DELETE' then tid := old.tenant_id; else tid := new.tenant_id; end if;
  -- the mover removing the old placement after the switch: let through, unlogged, without row locks
  if coalesce(current_setting('tenantry.move_cleanup', true), '') <> '' then
    select mv.move_id into m from ${MOVE_SCHEMA}.moving mv where mv.tenant_id = tid and mv.schema_name = tg_table_schema;
    if found and m.move_id::text = current_setting('tenantry.move_cleanup', true) then
      if tg_op = 'DELETE' then return old; end if;
      return new;
    end if;
  end if;
  select mv.move_id, mv.frozen into m from ${MOVE_SCHEMA}.moving mv
    where mv.tenant_id = tid and mv.schema_name = tg_table_schema for share;
  if not found then
    if tg_op = 'DELETE' then return old; end if;
    return new;
  end if;
  if m.frozen then
    raise exception 'This tenant is being moved to another isolation mode: writes are refused for a moment; retry shortly.'
      using errcode = '${MOVING_SQLSTATE}';
  end if;
  if tg_op = 'DELETE' then
    select coalesce(jsonb_object_agg(a, to_jsonb(old) -> a), '{}') into k from unnest(tg_argv) a;
  else
    select coalesce(jsonb_object_agg(a, to_jsonb(new) -> a), '{}') into k from unnest(tg_argv) a;
  end if;
  insert into ${MOVE_SCHEMA}.changes (move_id, tbl, key) values (m.move_id, tg_table_name, k);
  if tg_op = 'UPDATE' then
    select coalesce(jsonb_object_agg(a, to_jsonb(old) -> a), '{}') into ok from unnest(tg_argv) a;
    if ok <> k then insert into ${MOVE_SCHEMA}.changes (move_id, tbl, key) values (m.move_id, tg_table_name, ok); end if;
  end if;
  if tg_op = 'DELETE' then return old; end if;
  return new;
end $fn$;
revoke all on function ${MOVE_SCHEMA}.track() from public;
reset role;`;
}

export interface KeyColumn { name: string; type: string }

/** The primary key columns of a tenant table, tenant_id left out (empty: the table has no primary key). */
export async function keyColumns(sql: Sql | TransactionSql, schema: string, table: string): Promise<KeyColumn[]> {
  return sql<KeyColumn[]>`
    select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
    from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)
    where i.indisprimary and n.nspname = ${schema} and c.relname = ${table} and a.attname <> 'tenant_id'
    order by array_position(i.indkey::int2[], a.attnum)`;
}

/** The tenant tables of a schema (those RLS guards that carry tenant_id), for the triggers. */
async function trackedTables(sql: Sql | TransactionSql, schema: string): Promise<string[]> {
  const rows = await sql<{ relname: string }[]>`
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relkind in ('r', 'p') and c.relrowsecurity and not c.relispartition
      and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
    order by c.relname`;
  return rows.map((r) => r.relname);
}

/**
 * Starts logging the tenant's changes on the source placement: its `moving` row, then a trigger on
 * every tenant table of the schema (shared by concurrent moves out of the same pooled schema).
 * CREATE TRIGGER waits for writes under way, so every write not in a snapshot taken after this
 * returns has gone through the trigger.
 */
export async function startTracking(core: Core, source: TenantPlacement, moveId: string): Promise<void> {
  await onDatabaseOf(core, source, (sql) => withShortLocks(sql, async (tx) => {
    await tx`select pg_advisory_xact_lock(${TRACK_LOCK}, hashtext(${source.schema}))`;
    await tx.unsafe(setupSql(core.roles.owner));
    await tx`
      insert into ${tx(MOVE_SCHEMA)}.moving (tenant_id, schema_name, move_id) values (${source.id}, ${source.schema}, ${moveId})
      on conflict (tenant_id, schema_name) do update set move_id = excluded.move_id, frozen = false`;
    await tx.unsafe(`set local role ${ident(core.roles.owner)}`);
    for (const table of await trackedTables(tx, source.schema)) {
      const args = (await keyColumns(tx, source.schema, table)).map((k) => literal(k.name)).join(', ');
      await tx.unsafe(`create or replace trigger ${TRIGGER} before insert or update or delete on ${ident(source.schema)}.${ident(table)}
        for each row execute function ${MOVE_SCHEMA}.track(${args})`);
    }
  }));
}

/**
 * Refuses the tenant's writes on the source from now on. Waits (up to the lock timeout) for the
 * writes already under way to commit, so the change log is complete once this returns.
 */
export async function freezeSource(core: Core, source: TenantPlacement, moveId: string): Promise<void> {
  await onDatabaseOf(core, source, (sql) => withShortLocks(sql, async (tx) => {
    const r = await tx`update ${tx(MOVE_SCHEMA)}.moving set frozen = true where tenant_id = ${source.id} and schema_name = ${source.schema} and move_id = ${moveId}`;
    if (r.count !== 1) throw new Error('the move\'s change log on the source is gone (was repair run at the same time?)');
  }));
}

/**
 * Ends the logging and the freeze: the tenant's `moving` row and its log go, and the triggers too
 * when no other move out of the same schema still needs them. Idempotent; a source database or
 * schema that is already gone is fine.
 */
export async function stopTracking(core: Core, source: TenantPlacement, moveId: string): Promise<void> {
  try {
    await onDatabaseOf(core, source, (sql) => withShortLocks(sql, async (tx) => {
      await tx`select pg_advisory_xact_lock(${TRACK_LOCK}, hashtext(${source.schema}))`;
      if ((await tx`select 1 from pg_namespace where nspname = ${MOVE_SCHEMA}`).length === 0) return;
      await tx`delete from ${tx(MOVE_SCHEMA)}.moving where tenant_id = ${source.id} and schema_name = ${source.schema} and move_id = ${moveId}`;
      await tx`delete from ${tx(MOVE_SCHEMA)}.changes where move_id = ${moveId}`;
      const others = await tx`select 1 from ${tx(MOVE_SCHEMA)}.moving where schema_name = ${source.schema} limit 1`;
      if (others.length > 0) return;
      await tx.unsafe(`set local role ${ident(core.roles.owner)}`);
      const withTrigger = await tx<{ relname: string }[]>`
        select c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = ${source.schema} and g.tgname = ${TRIGGER}`;
      for (const { relname } of withTrigger) await tx.unsafe(`drop trigger if exists ${TRIGGER} on ${ident(source.schema)}.${ident(relname)}`);
    }));
  } catch (err) {
    // 3D000: the source database was already removed (a move out of database mode, finished)
    if ((err as { code?: string }).code === '3D000') return;
    throw err;
  }
}

/**
 * The distinct logged keys as a derived table `k` with one typed column per key column, to join the
 * tenant table (alias `x`) on: driving the read from the few changed keys through the primary key,
 * rather than probing the log for every row of the table.
 */
export function changedKeys(keys: KeyColumn[], from: string, where = ''): string {
  return `(select distinct ${keys.map((k) => `(c.key ->> ${literal(k.name)})::${k.type} as ${ident(k.name)}`).join(', ')} from ${from} c${where}) k`;
}

/** The join condition of the tenant table `x` with `changedKeys`' `k`. */
export function onKeys(keys: KeyColumn[]): string {
  return keys.map((k) => `x.${ident(k.name)} = k.${ident(k.name)}`).join(' and ');
}
