/**
 * `tenantry/pg`: a node-postgres (`pg`) shaped client bound to one tenant, for apps written against
 * `pg` rather than postgres.js. Its `query()` runs inside withTenant's transaction:
 *
 *   import { tenantPg } from 'tenantry/pg';
 *   const { rows } = await tenantPg(tenantry, 'acme', (client) => client.query('select * from agents where name = $1', ['calc']));
 *
 * It is what `drizzle-orm/node-postgres` (`drizzle(client)`) and Kysely's `PostgresDialect`
 * (`new PostgresDialect({ pool: client.pool })`) need. BEGIN / COMMIT / ROLLBACK sent through it
 * become a savepoint, its release and a rollback to it (withTenant alone ends its transaction; a
 * COMMIT with no savepoint open is refused). `pg` itself need not be installed.
 *
 * Differences from `pg`: values are parsed by postgres.js's parsers unless the query names its own
 * (`types.getTypeParser`, as Drizzle does): int8 and numeric as strings, json as objects, bytea as
 * Buffers, dates as Dates, as in pg. Fields carry name, dataTypeID, tableID and columnID (size and
 * modifier are -1: postgres.js does not keep them). Cursors (`pg-cursor`) and `query(..., callback)`
 * with a stream are not supported.
 */
import type { Tenantry } from '../tenantry.js';
import { TenantryError } from '../errors.js';

export interface TenantPgField {
  name: string; tableID: number; columnID: number; dataTypeID: number; dataTypeSize: number; dataTypeModifier: number; format: 'text';
}

export interface TenantPgResult<R = Record<string, unknown>> {
  command: string;
  rowCount: number | null;
  rows: R[];
  fields: TenantPgField[];
  oid: null;
}

export interface TenantPgQueryConfig {
  text: string;
  values?: unknown[];
  /** 'array': rows as arrays, as pg's rowMode */
  rowMode?: 'array';
  /** pg's custom type parsers: `getTypeParser(oid, 'text')` */
  types?: { getTypeParser: (oid: number, format?: 'text') => (text: string) => unknown };
  /** a prepared statement's name in pg; postgres.js prepares statements itself, so it is not used */
  name?: string;
}

type Callback = (err: Error | null, result?: TenantPgResult) => void;

/** A pg-shaped client bound to one tenant's transaction. */
export interface TenantPgClient {
  query<R = Record<string, unknown>>(text: string | TenantPgQueryConfig, values?: unknown[]): Promise<TenantPgResult<R>>;
  query(text: string | TenantPgQueryConfig, values: unknown[] | undefined, callback: Callback): void;
  query(text: string | TenantPgQueryConfig, callback: Callback): void;
  /** pg's PoolClient.release: nothing to give back (withTenant owns the connection) */
  release(): void;
  /** A pg Pool shape over this client, for Kysely's PostgresDialect: `connect()` gives this client. */
  readonly pool: { connect(): Promise<TenantPgClient>; end(): Promise<void>; query: TenantPgClient['query'] };
}

interface RawColumn { name: string; type: number; table: number; number: number; parser?: ((t: string) => unknown) & { array?: boolean } }
type RawResult = (Buffer | null)[][] & { count: number | null; command: string | null; columns: RawColumn[] | null };
interface Reserved { unsafe(text: string, params?: unknown[], opts?: unknown): Promise<unknown> & { raw?: () => Promise<unknown> } }
type Typed = (value: unknown, oid: number) => unknown;

/**
 * PostgreSQL's `unknown` type: a parameter declared with it has its type inferred from the statement,
 * as pg's untyped parameters do, and postgres.js sends the text as it is (it has no serializer for
 * it), so a JSON text bound to a jsonb column is not encoded a second time.
 */
const UNKNOWN_OID = 705;

const MAX_TEXT = 1024 * 1024;

/** Runs `fn` with a pg-shaped client bound to `tenant` (id or slug), in one transaction. */
export async function tenantPg<T>(tenantry: Pick<Tenantry, 'withTenant'>, tenant: string, fn: (client: TenantPgClient) => Promise<T>): Promise<T> {
  if (typeof fn !== 'function') throw new TenantryError('INVALID_INPUT', 'tenantPg(tenantry, tenant, fn) needs a function: (client) => Promise<result>.');
  return tenantry.withTenant(tenant, async (sql) => {
    // the reserved view of withTenant's transaction (src/isolation/orm-compat.ts): BEGIN/COMMIT/ROLLBACK become savepoints
    const conn = await (sql as unknown as { reserve(): Promise<Reserved> }).reserve();
    return fn(pgClient(conn, (sql as unknown as { typed: Typed }).typed));
  });
}

function pgClient(conn: Reserved, typed: Typed): TenantPgClient {
  const run = async (config: TenantPgQueryConfig): Promise<TenantPgResult | TenantPgResult[]> => {
    const params = config.values === undefined ? undefined : config.values.map((v) => { const text = pgValue(v); return text === null ? null : typed(text, UNKNOWN_OID); });
    const q = conn.unsafe(config.text, params);
    const res = (typeof q.raw === 'function' ? await q.raw() : await q) as RawResult | RawResult[];
    return toResults(res, config);
  };
  function query(textOrConfig: unknown, valuesOrCallback?: unknown, maybeCallback?: unknown): unknown {
    const callback = (typeof valuesOrCallback === 'function' ? valuesOrCallback : maybeCallback) as Callback | undefined;
    const values = typeof valuesOrCallback === 'function' ? undefined : valuesOrCallback;
    let promise: Promise<TenantPgResult | TenantPgResult[]>;
    try {
      promise = run(queryConfig(textOrConfig, values));
    } catch (err) {
      promise = Promise.reject(err);
    }
    if (typeof callback !== 'function') return promise;
    promise.then((r) => callback(null, r as TenantPgResult), (err: Error) => callback(err));
    return undefined;
  }
  const client = { query, release: (): void => undefined } as unknown as TenantPgClient;
  Object.defineProperty(client, 'pool', { enumerable: false, value: { connect: async () => client, end: async () => undefined, query } });
  return client;
}

function queryConfig(textOrConfig: unknown, values: unknown): TenantPgQueryConfig {
  const config = (typeof textOrConfig === 'string' ? { text: textOrConfig } : textOrConfig) as TenantPgQueryConfig | null;
  // pg-cursor and pg-query-stream pass objects with submit(): they need pg's own connection
  if (config && typeof (config as { submit?: unknown }).submit === 'function') {
    throw new TenantryError('INVALID_INPUT', 'Cursors and query streams (pg-cursor, pg-query-stream) are not supported by tenantry/pg; page with LIMIT/OFFSET or keyset queries.');
  }
  if (!config || typeof config !== 'object' || typeof config.text !== 'string') {
    throw new TenantryError('INVALID_INPUT', 'query() takes SQL text or { text, values?, rowMode?, types? }.');
  }
  if (config.text.length > MAX_TEXT) throw new TenantryError('INVALID_INPUT', `The SQL text is ${config.text.length} characters; at most ${MAX_TEXT}.`);
  const vals = values !== undefined ? values : config.values;
  if (vals !== undefined && !Array.isArray(vals)) throw new TenantryError('INVALID_INPUT', 'query()\'s values are an array (one per $n placeholder).');
  return { ...config, ...(vals !== undefined ? { values: vals as unknown[] } : {}) };
}

/** A parameter as pg sends it: text, the server infers its type from the statement. */
function pgValue(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return `\\x${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'invalid' : v.toISOString();
  if (Array.isArray(v)) return arrayLiteral(v);
  if (typeof v === 'object') {
    const custom = (v as { toPostgres?: () => unknown }).toPostgres;
    return typeof custom === 'function' ? pgValue(custom.call(v)) : JSON.stringify(v);
  }
  return String(v);
}

function arrayLiteral(xs: unknown[]): string {
  return `{${xs.map((x) => {
    if (x === null || x === undefined) return 'NULL';
    if (Array.isArray(x)) return arrayLiteral(x);
    const text = String(pgValue(x));
    return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  }).join(',')}}`;
}

function toResults(res: RawResult | RawResult[], config: TenantPgQueryConfig): TenantPgResult | TenantPgResult[] {
  // a refused or non-raw answer (a savepoint statement) has no columns: an empty result
  if (Array.isArray(res) && !('columns' in res) && res.length > 0 && res.every((r) => Array.isArray(r) && 'columns' in r)) {
    return (res as RawResult[]).map((r) => toResult(r, config));
  }
  return toResult(res as RawResult, config);
}

function toResult(res: RawResult, config: TenantPgQueryConfig): TenantPgResult {
  const columns = Array.isArray(res) ? res.columns ?? [] : [];
  const parsers = columns.map((c) => {
    const custom = config.types?.getTypeParser(c.type, 'text');
    if (custom) return (text: string) => custom(text);
    const p = c.parser;
    if (!p) return (text: string) => text;
    return p.array === true ? (text: string) => p(text.slice(1)) : p;
  });
  const rows = (Array.isArray(res) ? res : []).map((row) => {
    if (!Array.isArray(row)) return row;
    const cells = row.map((cell, i) => (cell === null ? null : parsers[i]!(Buffer.isBuffer(cell) ? cell.toString('utf8') : String(cell))));
    if (config.rowMode === 'array') return cells;
    const out: Record<string, unknown> = {};
    columns.forEach((c, i) => { out[c.name] = cells[i]; });
    return out;
  });
  const command = (res as Partial<RawResult>)?.command ?? '';
  return {
    command: command.toUpperCase(),
    rowCount: (res as Partial<RawResult>)?.count ?? null,
    rows: rows as Record<string, unknown>[],
    fields: columns.map((c) => ({ name: c.name, tableID: c.table, columnID: c.number, dataTypeID: c.type, dataTypeSize: -1, dataTypeModifier: -1, format: 'text' as const })),
    oid: null,
  };
}
