import type { ReservedSql, Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { connect, PINNED_SESSION, PINNED_LOCAL, pinnedBegin } from '../db/connections.js';
import { ident, literal } from '../identifiers.js';
import { resetRoleDefaults, applyTenantRoleDefaults, cachedTenantRoleDefaults } from '../installation.js';
import { terminateRoleSessions, type TenantPlacement } from './modes.js';
import { makeOrmReady } from './orm-compat.js';
import { DEFAULT_SERVER, poolKey, serverUrl } from '../db/pool-key.js';

/**
 * The tenant-scoped transaction: reserve a pooled connection, set the signed context, run the caller's
 * statements (pipelined when they are handed back unawaited), commit and reset the session so the
 * connection carries nothing to its next user. The facade resolves the tenant and calls in here.
 */

/** DISCARD ALL, which cannot run inside a transaction block, less what the runtime role cannot create (temporary objects). */
export const RESET_SESSION = 'reset all; deallocate all; close all; unlisten *; select pg_advisory_unlock_all()';

/** pg_type oid of text: parameters given a type need no Describe round trip (see runInTenant). */
const TEXT_OID = 25;

/** The part of a resolved tenant the transaction needs. */
export interface TransactionTenant {
  id: string;
  isolation: TenantPlacement['isolation'];
  /** `server`: the configured one when absent */
  placement: Pick<TenantPlacement, 'database' | 'schema' | 'role'> & { server?: string };
}

export interface TenantRoleOptions {
  readOnly?: boolean;
  statementTimeoutMs?: number;
  /** lock_timeout, ms (default: the sqlLockTimeoutMs option) */
  lockTimeoutMs?: number;
}

/**
 * A reserved connection inside an explicit transaction, shaped like postgres.js's TransactionSql:
 * savepoint(fn) runs fn in a savepoint, rolled back to if fn throws.
 */
function asTransaction(conn: ReservedSql): TransactionSql {
  let n = 0;
  const tx = conn as unknown as TransactionSql & { savepoint: unknown };
  tx.savepoint = async (nameOrFn: unknown, maybeFn?: unknown): Promise<unknown> => {
    const fn = (typeof nameOrFn === 'function' ? nameOrFn : maybeFn) as (sql: TransactionSql) => unknown;
    const name = `tenantry_sp_${++n}`;
    await conn.unsafe(`savepoint ${name}`);
    try {
      const result = await fn(tx);
      await conn.unsafe(`release savepoint ${name}`);
      return result;
    } catch (err) {
      await conn.unsafe(`rollback to savepoint ${name}`);
      throw err;
    }
  };
  // usable unmodified as the client of Drizzle and Kysely (orm-compat.ts)
  makeOrmReady(conn, tx as TransactionSql & { savepoint: TransactionSql['savepoint'] });
  return tx;
}

/**
 * Any role may change its own password, and SQL run as the runtime role or a tenant role could do so.
 * When Tenantry's own login is refused, it restores the derived password (and clears planted role
 * defaults) as the privileged user and tries once more, instead of locking every tenant out.
 */
export async function healOnAuthFailure<T>(core: Core, role: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!isLoginRefused(err)) throw err;
    core.logger.warn({ role }, 'login refused: restoring the role\'s password and clearing its defaults');
    await restoreRole(core, role);
    // a password Tenantry did not set was a login Tenantry did not hand out: end every session made
    // with it (issue #8, finding 2: the tenant stayed connected after the password was healed)
    await terminateRoleSessions(core.admin, role);
    return run();
  }
}

/** A refused password: 28P01 from PostgreSQL, 08P01 with the same words from PgBouncer. */
function isLoginRefused(err: unknown): boolean {
  const { code, message } = err as { code?: string; message?: string };
  return code === '28P01' || (code === '08P01' && /password authentication failed/.test(message ?? ''));
}

/** Sets a Tenantry login role's derived password again and removes every default set on it. */
export async function restoreRole(core: Core, role: string): Promise<void> {
  await core.admin.unsafe(`alter role ${ident(role)} password ${literal(core.signer.roleVerifier(role))}`);
  await resetRoleDefaults(core.admin, role);
  // and Tenantry's own defaults back on a tenant role (not on the runtime role, which has none)
  if (role !== core.roles.runtime) await applyTenantRoleDefaults(core.admin, role, await cachedTenantRoleDefaults(core.admin, core.opts.sqlTempFileLimitKb));
}

/** A postgres.js query not yet awaited (or a list of them): it has execute() and is thenable. */
function isQueryBatch(out: unknown): out is { execute(): unknown } | { execute(): unknown }[] {
  const isQuery = (q: unknown): boolean => !!q && typeof q === 'object' && typeof (q as { execute?: unknown }).execute === 'function' && typeof (q as { then?: unknown }).then === 'function';
  return Array.isArray(out) ? out.length > 0 && out.every(isQuery) : isQuery(out);
}

/** The runtime role's pool on one data database (created inside the connection budget by core.runtimeOn). */
export function runtimePool(core: Pick<Core, 'opts' | 'pooled'>, url: string, database: string, username: string, password: string): Sql {
  return connect(url, {
    database, username, password,
    max: core.opts.poolSize, idle_timeout: core.opts.idleTimeoutSeconds,
    // no named prepared statements on connections that every tenant shares: SQL run for one tenant
    // could DEALLOCATE one and PREPARE its own under the same name, and the next tenant's query on
    // that connection would run it with that tenant's context
    prepare: false,
    // session parameters that role defaults planted by injected SQL cannot override (a planted
    // statement_timeout would also fail the driver's type lookup at connect time); behind a pooler,
    // which refuses them, they are pinned in every transaction instead
    connection: { ...(core.pooled ? {} : PINNED_SESSION), application_name: 'tenantry-runtime' },
  });
}

/**
 * Runs `fn` in a transaction bound to one tenant on the runtime role's pool of the tenant's database.
 * The context is signed and transaction-local, and the session is reset before the connection goes back.
 */
export async function runInTenant<T>(core: Core, tenant: TransactionTenant, fn: (sql: TransactionSql) => Promise<T>): Promise<T> {
  const context = core.signer.sign(tenant.id, tenant.isolation);
  const searchPath = `"${tenant.placement.schema}"`;
  return core.runtimeOn(tenant.placement.database, async (pool) => {
    const conn = await pool.reserve();
    try {
      // BEGIN and the signed context go out without waiting for their replies: fn's first statement
      // follows them on the same connection (postgres.js pipelines), and fails with them if they fail.
      // The context stays a bound parameter, never SQL text: every session of the runtime role sees the
      // text of the others' statements in pg_stat_activity, so a context written into the text could be
      // read from another tenant's transaction and replayed. Its parameters are typed (text), so the
      // patched postgres.js (patches/) sends Parse, Bind and Execute at once instead of waiting a round
      // trip for the server to describe them; unpatched, it still works, one round trip slower.
      const params = [conn.typed(context, TEXT_OID), conn.typed(searchPath, TEXT_OID)];
      const setup = [
        conn.unsafe(core.pooled ? pinnedBegin() : 'begin').execute(),
        conn.unsafe(`select set_config('tenantry.ctx', $1, true), set_config('search_path', $2, true)${core.pooled ? `, ${PINNED_LOCAL}` : ''}`, params as never[]).execute(),
      ];
      for (const q of setup) q.catch(() => undefined);
      let result: T;
      try {
        const out = fn(asTransaction(conn)) as unknown;
        if (isQueryBatch(out)) {
          // fn handed back its statements without awaiting them (sql => sql`...`, or an array of
          // those): send COMMIT and the session reset behind them at once, so the whole transaction
          // is one round trip (test/tenant-transaction-round-trips.test.ts; a statement with an untyped
          // parameter holds postgres.js's pipeline for a Describe, two more). A failed statement aborts
          // the transaction, and COMMIT then rolls back.
          const queries = Array.isArray(out) ? out : [out];
          for (const q of queries) q.execute();
          const end = conn.unsafe(`commit; ${RESET_SESSION}`).execute();
          end.catch(() => undefined);
          const results = await Promise.all(queries);
          await Promise.all(setup);
          await end;
          result = (Array.isArray(out) ? results : results[0]) as T;
        } else {
          result = await (out as Promise<T>);
          await Promise.all(setup);
          // Commit, then clear any session-level state the SQL in fn may have left (set_config(..., false),
          // SET, PREPARE, cursors WITH HOLD, LISTEN, advisory locks): one round trip.
          await conn.unsafe(`commit; ${RESET_SESSION}`);
        }
      } catch (err) {
        // fn may have ended the transaction early (COMMIT inside its SQL text) and set session state
        // after it: end whatever transaction is open, then clear the session outside of any.
        await conn.unsafe(`rollback; ${RESET_SESSION}`).catch(() => undefined);
        // when BEGIN or the context failed, fn's statements only say "transaction is aborted": name the cause
        const setupError = await Promise.all(setup).then(() => undefined, (e: unknown) => e);
        throw setupError ?? err;
      }
      return result;
    } finally {
      conn.release();
    }
  }, tenant.placement.server);
}

/**
 * Runs `fn` on a connection whose *session* user is the tenant's own login role (untrusted SQL).
 * Optionally read-only and with a statement timeout.
 */
export async function runAsTenantRole<T>(core: Core, tenant: TransactionTenant, fn: (sql: TransactionSql) => Promise<T>, opts: TenantRoleOptions = {}): Promise<T> {
  const timeout = opts.statementTimeoutMs ?? 0;
  const { database, role, schema } = tenant.placement;
  const server = tenant.placement.server ?? DEFAULT_SERVER;
  const password = core.signer.rolePassword(role);
  const size = Math.min(2, core.opts.poolSize);
  return core.pools.use(poolKey({ server, database, role }), size, () => connect(serverUrl(core.url, server), {
    database, username: role, password, max: size, idle_timeout: core.opts.idleTimeoutSeconds,
    // unnamed statements only: the SQL sent on these connections may DEALLOCATE, and the reset below does
    prepare: false,
    // a tenant's statement cannot return more than this many bytes of rows: checked by our postgres.js
    // patch from each row's header, before the row is buffered (one 300 MB value took 3 GB of the
    // server's memory and stalled every tenant before this; red team, 2026-11-29)
    max_result_bytes: core.opts.sqlMaxResultBytes,
    connection: { ...(core.pooled ? {} : PINNED_SESSION), application_name: 'tenantry-tenant' },
    // the isolation level on BEGIN too: behind a pooler no startup parameter overrides a planted default
  }), (sql) => healOnAuthFailure(core, role, () => sql.begin(pinnedBegin(opts.readOnly).slice('begin '.length), async (tx) => {
    // behind a pooler the pinned settings come first, so the statement timeout below is the one that holds
    // lock_timeout, work_mem and hash_mem_multiplier are Tenantry's, set after any planted role default
    // and unchangeable by the statement (the SQL guard refuses SET and set_config): a tenant can neither
    // queue behind a lock for long nor raise its memory (issue #8, finding 1 and 2)
    await tx.unsafe(`select ${core.pooled ? `${PINNED_LOCAL}, ` : ''}set_config('search_path', $1, true), set_config('statement_timeout', $2, true), set_config('lock_timeout', $3, true), set_config('work_mem', $4, true), set_config('hash_mem_multiplier', '2', true)`,
      [`"${schema}"`, String(timeout), `${opts.lockTimeoutMs ?? core.opts.sqlLockTimeoutMs}ms`, `${core.opts.sqlWorkMemKb}kB`]);
    const result = await fn(tx);
    // Session-level state the SQL in fn left (SET ROLE to a group, SET row_security, set_config(..., false),
    // PREPARE, cursors WITH HOLD, LISTEN, advisory locks) must not carry to the tenant's next request on
    // this pooled connection. (A statement that fails rolls its own SETs back with the transaction.)
    await tx.unsafe(`reset role; ${RESET_SESSION}`);
    return result;
  }) as Promise<T>));
}
