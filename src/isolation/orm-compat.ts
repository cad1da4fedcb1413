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
 * Known gap: Drizzle's changed parsers stay in the copy, so `date` and `timestamp without time zone`
 * columns reach Drizzle as postgres.js Dates, not strings (timestamptz and jsonb behave as Drizzle expects).
 */
export function makeOrmReady(conn: ReservedSql, tx: TransactionSql & { savepoint: TransactionSql['savepoint'] }): void {
  const target = tx as unknown as Record<string, unknown>;
  const own = (conn as unknown as { options?: { parsers?: object; serializers?: object } }).options;
  target.options = { ...(own ?? {}), parsers: { ...(own?.parsers ?? {}) }, serializers: { ...(own?.serializers ?? {}) } };
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
  target.reserve = async (): Promise<unknown> => reservedView(conn);
}

const BEGIN = /^\s*(begin|start\s+transaction)(\s+(work|transaction))?\s*;?\s*$/i;
const COMMIT = /^\s*(commit|end)(\s+(work|transaction))?\s*;?\s*$/i;
const ROLLBACK = /^\s*(rollback|abort)(\s+(work|transaction))?\s*;?\s*$/i;
const BEGIN_WITH_SETTINGS = /^\s*(begin|start\s+transaction)\b/i;

let views = 0;

/** The same connection for an ORM that reserves one: its transaction statements become savepoints. */
function reservedView(conn: ReservedSql): unknown {
  const open: string[] = [];
  const prefix = `tenantry_orm_${++views}`;
  let n = 0;
  const unsafe = (text: string, params?: unknown[], opts?: unknown): unknown => {
    if (typeof text === 'string') {
      if (BEGIN.test(text)) {
        const name = `${prefix}_${++n}`;
        open.push(name);
        return conn.unsafe(`savepoint ${name}`);
      }
      if (BEGIN_WITH_SETTINGS.test(text)) {
        return Promise.reject(new TenantryError('INVALID_INPUT', 'A transaction inside withTenant cannot set an isolation level or access mode: it runs as a savepoint of withTenant\'s transaction.'));
      }
      if (COMMIT.test(text) || ROLLBACK.test(text)) {
        const name = open.pop();
        // withTenant's own transaction holds the signed tenant context: SQL never ends it early
        if (!name) return Promise.reject(new TenantryError('INVALID_INPUT', 'withTenant ends its own transaction; COMMIT or ROLLBACK from inside it is refused.'));
        return conn.unsafe(COMMIT.test(text) ? `release savepoint ${name}` : `rollback to savepoint ${name}; release savepoint ${name}`);
      }
    }
    return (conn.unsafe as (t: string, p?: unknown[], o?: unknown) => unknown)(text, params, opts);
  };
  return Object.assign(Object.create(null), { unsafe, release: (): void => undefined });
}
