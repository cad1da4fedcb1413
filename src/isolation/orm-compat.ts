import type { ReservedSql, TransactionSql } from 'postgres';
import { TenantryError } from '../errors.js';

/**
 * What withTenant hands over must work, unmodified, as the client of an ORM built on postgres.js:
 *
 * - Drizzle (`drizzle(sql)` from drizzle-orm/postgres-js) reads and *writes* `sql.options.parsers` and
 *   `.serializers` when it is constructed, and runs `transaction()` as `sql.begin(fn)` (nested ones as
 *   `sql.savepoint(fn)`).
 * - Kysely's postgres.js dialect (kysely-postgres-js) wants `sql.reserve()` and sends `begin`,
 *   `commit` and `rollback` as statements on the reserved connection.
 *
 * So the transaction gets `options` of its own (a copy: an ORM's changes to it must never reach the
 * runtime pool every tenant shares), `begin(fn)` as a savepoint (it is already a transaction), and
 * `reserve()` giving the same connection, on which an ORM's begin/commit/rollback become a savepoint,
 * its release and a rollback to it. A `commit` or `rollback` sent through that path with no savepoint
 * open is refused instead of ending withTenant's transaction early: the tenant context lives exactly
 * as long as that transaction, and withTenant alone ends it.
 *
 * The type parsers an ORM sets on that copy are honoured: Drizzle makes `date`, `timestamp`,
 * `timestamptz`, `time`, `interval` and `numeric[]` arrive as PostgreSQL's text and converts them
 * itself (a `timestamp without time zone` is UTC to Drizzle, local time to postgres.js's own parser,
 * and a `mode: 'string'` timestamp keeps its microseconds). The connection parses with the pool's
 * parsers, so a statement an ORM sends with `unsafe(text, params)` while the copy's parsers differ
 * is fetched unparsed (`raw()`) and parsed here with the copy's. Tagged-template queries and the
 * connection Kysely reserves keep postgres.js's parsers, as they would on a pool of their own.
 */
export function makeOrmReady(conn: ReservedSql, tx: TransactionSql & { savepoint: TransactionSql['savepoint'] }): void {
  const target = tx as unknown as Record<string, unknown>;
  const own = (conn as unknown as { options?: { parsers?: Parsers; serializers?: object } }).options;
  const ownParsers: Parsers = own?.parsers ?? {};
  const parsers: Parsers = { ...ownParsers };
  target.options = { ...(own ?? {}), parsers, serializers: { ...(own?.serializers ?? {}) } };
  // the connection's own unsafe: withTenant's statements, and Kysely's reserved view, go through it as ever
  const passThrough = conn.unsafe as unknown as (text: string, params?: unknown[], opts?: unknown) => PendingQuery;
  const changed = (): boolean => {
    for (const k of Object.keys(parsers)) if (parsers[k] !== ownParsers[k]) return true;
    for (const k of Object.keys(ownParsers)) if (!(k in parsers)) return true;
    return false;
  };
  target.unsafe = (text: string, params?: unknown[], opts?: unknown): unknown => (
    Array.isArray(params) && changed() ? parsedWith(passThrough(text, params, opts), parsers) : passThrough(text, params, opts));
  // an ORM's transaction() inside withTenant's transaction: a savepoint
  target.begin = (optionsOrFn: unknown, maybeFn?: unknown): Promise<unknown> => {
    const fn = (typeof optionsOrFn === 'function' ? optionsOrFn : maybeFn) as (sql: TransactionSql) => unknown;
    if (typeof optionsOrFn === 'string' && optionsOrFn.trim() !== '') {
      return Promise.reject(new TenantryError('INVALID_INPUT', `A transaction inside withTenant cannot set "${optionsOrFn}": it runs as a savepoint of withTenant's transaction.`));
    }
    return tx.savepoint(fn as never) as Promise<unknown>;
  };
  // the pool an ORM would close is not the ORM's: ending it is withTenant's business
  target.end = async (): Promise<void> => undefined;
  target.reserve = async (): Promise<unknown> => reservedView(conn, passThrough);
}

type Parser = ((text: string) => unknown) & { array?: boolean };
type Parsers = Record<string, Parser | undefined>;
interface Column { name: string; type: number; parser?: Parser }
type RawResult = (Buffer | null)[][] & { count: number | null; command: string | null; columns: Column[] | null };
interface PendingQuery extends Promise<unknown> { raw(): Promise<unknown>; cancel(): unknown }

/**
 * A statement fetched unparsed and parsed with `parsers` (an ORM's), as postgres.js would have with
 * them: rows as objects, or as arrays after `.values()`; `count`, `command` and `columns` kept.
 */
function parsedWith(query: PendingQuery, parsers: Parsers): unknown {
  let arrays = false;
  let run: Promise<unknown> | undefined;
  const result = (): Promise<unknown> => (run ??= query.raw().then((r) => reparse(r as RawResult | RawResult[], parsers, arrays)));
  const view = {
    values: () => { arrays = true; return view; },
    execute: () => { void result().catch(() => undefined); return view; },
    cancel: () => query.cancel(),
    then: <A, B>(ok?: (v: unknown) => A, fail?: (e: unknown) => B) => result().then(ok, fail),
    catch: <B>(fail: (e: unknown) => B) => result().catch(fail),
    finally: (f: () => void) => result().finally(f),
  };
  return view;
}

function reparse(res: RawResult | RawResult[], parsers: Parsers, arrays: boolean): unknown {
  // several statements (simple protocol): one result each
  if (!Array.isArray(res) || !('columns' in res)) return (res as RawResult[]).map((r) => reparse(r, parsers, arrays));
  const columns = res.columns ?? [];
  const value = (cell: Buffer | null, col: Column): unknown => {
    if (cell === null) return null;
    // the ORM's parser for the type when it set one, else the connection's own (postgres.js's)
    const parser = col.type in parsers ? parsers[col.type] : col.parser;
    if (parser === undefined) return cell.toString('utf8');
    // postgres.js hands an array parser the text after its opening brace
    return parser.array === true ? parser(cell.toString('utf8', 1)) : parser(cell.toString('utf8'));
  };
  const rows = res.map((row) => {
    if (arrays) return row.map((cell, i) => value(cell, columns[i]!));
    const out: Record<string, unknown> = {};
    row.forEach((cell, i) => { out[columns[i]!.name] = value(cell, columns[i]!); });
    return out;
  });
  return Object.assign(rows, { count: res.count, command: res.command, columns: res.columns });
}

const BEGIN = /^\s*(begin|start\s+transaction)(\s+(work|transaction))?\s*;?\s*$/i;
const COMMIT = /^\s*(commit|end)(\s+(work|transaction))?\s*;?\s*$/i;
const ROLLBACK = /^\s*(rollback|abort)(\s+(work|transaction))?\s*;?\s*$/i;
const BEGIN_WITH_SETTINGS = /^\s*(begin|start\s+transaction)\b/i;

let views = 0;

/** The same connection for an ORM that reserves one: its transaction statements become savepoints. */
function reservedView(conn: ReservedSql, passThrough: (text: string, params?: unknown[], opts?: unknown) => PendingQuery): unknown {
  const open: string[] = [];
  const prefix = `tenantry_orm_${++views}`;
  let n = 0;
  const unsafe = (text: string, params?: unknown[], opts?: unknown): unknown => {
    if (typeof text === 'string') {
      if (BEGIN.test(text)) {
        const name = `${prefix}_${++n}`;
        open.push(name);
        return passThrough(`savepoint ${name}`);
      }
      if (BEGIN_WITH_SETTINGS.test(text)) {
        return Promise.reject(new TenantryError('INVALID_INPUT', 'A transaction inside withTenant cannot set an isolation level or access mode: it runs as a savepoint of withTenant\'s transaction.'));
      }
      if (COMMIT.test(text) || ROLLBACK.test(text)) {
        const name = open.pop();
        // withTenant's own transaction holds the signed tenant context: SQL never ends it early
        if (!name) return Promise.reject(new TenantryError('INVALID_INPUT', 'withTenant ends its own transaction; COMMIT or ROLLBACK from inside it is refused.'));
        return passThrough(COMMIT.test(text) ? `release savepoint ${name}` : `rollback to savepoint ${name}; release savepoint ${name}`);
      }
    }
    return passThrough(text, params, opts);
  };
  return Object.assign(Object.create(null), { unsafe, release: (): void => undefined });
}
