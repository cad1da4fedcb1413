import { loadModule, parseSync } from 'libpg-query';
import { TenantryError } from '../errors.js';
import { CONTEXT_SCHEMA } from './data-plane.js';

/**
 * The SQL endpoint's guard: untrusted SQL runs only if PostgreSQL's own parser (libpg-query embeds
 * it) says it is one statement of a kind a tenant's data work needs, that reads and writes only the
 * tenant's own tables, and that calls only built-in functions that act on the values given to them.
 *
 * Why a parse tree and not the server's privileges alone: PostgreSQL lets every role LOCK a table it
 * may read (one pooled tenant queued an ACCESS EXCLUSIVE lock on the shared table and stalled every
 * other pooled tenant), ALTER its own role (a password of its choosing is a direct login with no
 * timeout), create large objects (outside read-only mode and the storage quota), EXPLAIN (the
 * planner's statistics of shared tables describe other tenants' values) and read the statistics
 * views. None of that can be revoked by a non-superuser installation, so it is refused here.
 *
 * Everything is decided by allow-lists: statement kinds, EXPLAIN options, functions, table-sample
 * methods, and relations (the tenant's own schema only). The only deny-lists are small and closed:
 * the reg* types (casts that turn an oid into a role, table or schema name) and, for `x.f` column
 * notation that PostgreSQL may read as `f(x)`, function-like names of the catalog; both say below why
 * they are complete.
 *
 * The parser must read the text as the server will: the endpoint's sessions pin
 * standard_conforming_strings = on (PINNED_SESSION) and the guard refuses SET and set_config, so a
 * backslash inside a string literal cannot mean one thing here and another on the server.
 */

export type GuardIsolation = 'pooled' | 'schema' | 'database';

export interface GuardOptions {
  /** the tenant's isolation mode: pooled tenants get no EXPLAIN (the shared tables' statistics are everyone's) */
  isolation: GuardIsolation;
  /** the tenant's own schema, the only one a statement may name */
  schema: string;
}

export interface GuardVerdict {
  /** the statement's kind, e.g. SELECT, INSERT, EXPLAIN */
  kind: string;
}

/** Longer text is refused before parsing: parsing is synchronous, and 64 KiB of the worst text costs about 0.1 s (a 200-line query is under 10 KiB). */
export const MAX_SQL_LENGTH = 64 * 1024;
/** Deeper parse trees are refused: no data query nests 1,000 levels, and walking them costs. */
const MAX_TREE_DEPTH = 1000;

const ALLOWED_STATEMENTS: Record<string, string> = {
  SelectStmt: 'SELECT', InsertStmt: 'INSERT', UpdateStmt: 'UPDATE', DeleteStmt: 'DELETE', MergeStmt: 'MERGE',
};

/** EXPLAIN options that describe the tenant's own statement (not SETTINGS: the server's configuration). */
const EXPLAIN_OPTIONS = new Set(['analyze', 'verbose', 'costs', 'buffers', 'timing', 'summary', 'format', 'wal', 'generic_plan', 'serialize', 'memory']);

/**
 * Built-in functions a tenant's data work needs: they compute from their arguments, the tenant's own
 * rows or the clock. Left out on purpose, among others: large objects (lo_*, loread, lowrite), advisory
 * locks, set_config/current_setting and every reader of server settings, files, sizes, statistics or
 * other sessions (pg_*), signalling backends, sequences by name (nextval takes a relation name and
 * answers whether it exists), anything that runs SQL given as text (query_to_xml and the other
 * *_to_xml, ts_stat, ts_rewrite with a query) and xid/snapshot readers (they show other sessions'
 * activity), and xpath/xpath_exists (libxml evaluates XPath without ever checking for a cancel: a
 * quadratic expression ran past the statement timeout, the request deadline and suspension). pg_sleep stays: the statement timeout bounds it, and it holds nothing another tenant waits on.
 */
const ALLOWED_FUNCTIONS = new Set(`
abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi power pow
radians round scale sign sqrt trim_scale trunc width_bucket random random_normal erf erfc
acos acosd asin asind atan atan2 atan2d atand cos cosd cot cotd sin sind tan tand sinh cosh tanh asinh acosh atanh
ascii bit_length btrim char_length character_length chr concat concat_ws format initcap left length lower
lpad ltrim md5 normalize is_normalized octet_length overlay position quote_ident quote_literal quote_nullable
regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace regexp_split_to_array
regexp_split_to_table regexp_substr repeat replace reverse right rpad rtrim split_part starts_with
string_to_array string_to_table strpos substr substring to_ascii to_hex to_bin to_oct translate unistr upper
casefold encode decode sha224 sha256 sha384 sha512 get_byte set_byte get_bit set_bit bit_count
convert convert_from convert_to crc32 crc32c pg_collation_for
age clock_timestamp date_add date_bin date_part date_subtract date_trunc extract isfinite justify_days
justify_hours justify_interval make_date make_interval make_time make_timestamp make_timestamptz now
statement_timestamp timeofday transaction_timestamp to_timestamp to_char to_date to_number timezone overlaps
pg_sleep pg_sleep_for pg_sleep_until system_user
to_json to_jsonb array_to_json row_to_json json_build_array json_build_object jsonb_build_array
jsonb_build_object json_object jsonb_object json_agg jsonb_agg json_agg_strict jsonb_agg_strict json_object_agg
jsonb_object_agg json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique jsonb_object_agg_unique
json_object_agg_unique_strict jsonb_object_agg_unique_strict json_array_elements jsonb_array_elements
json_array_elements_text jsonb_array_elements_text json_array_length jsonb_array_length json_each jsonb_each
json_each_text jsonb_each_text json_extract_path jsonb_extract_path json_extract_path_text
jsonb_extract_path_text json_object_keys jsonb_object_keys json_populate_record jsonb_populate_record
jsonb_populate_record_valid json_populate_recordset jsonb_populate_recordset json_to_record jsonb_to_record
json_to_recordset jsonb_to_recordset json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert
jsonb_pretty json_typeof jsonb_typeof jsonb_path_exists jsonb_path_match jsonb_path_query
jsonb_path_query_array jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz
jsonb_path_query_array_tz jsonb_path_query_first_tz
array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
array_positions array_prepend array_remove array_replace array_reverse array_sample array_shuffle array_sort
array_to_string array_upper cardinality trim_array unnest generate_subscripts generate_series
array_agg avg bit_and bit_or bit_xor bool_and bool_or count every max min string_agg sum any_value corr
covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy
regr_syy stddev stddev_pop stddev_samp variance var_pop var_samp mode percentile_cont percentile_disc
range_agg range_intersect_agg xmlagg
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version
num_nulls num_nonnulls
lower_inc upper_inc lower_inf upper_inf isempty range_merge int4range int8range numrange tsrange tstzrange
daterange int4multirange int8multirange nummultirange tsmultirange tstzmultirange datemultirange multirange
abbrev broadcast family host hostmask inet_merge inet_same_family masklen netmask network set_masklen
to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd ts_headline
setweight strip tsvector_to_array array_to_tsvector numnode querytree ts_delete ts_filter
xmlcomment xmlconcat xmltext xml_is_well_formed xml_is_well_formed_document
xml_is_well_formed_content
int2 int4 int8 float4 float8 numeric text bool date time timetz timestamp timestamptz interval varchar bpchar
uuid jsonb json bytea inet cidr macaddr money
area center diameter height width radius npoints point box circle line lseg path polygon
`.trim().split(/\s+/));

/**
 * Type names a cast may not name. Complete because it is every object-identifier alias type PostgreSQL
 * has (reg* plus oid-to-name conversion goes only through these): casting a number to regrole,
 * regclass or regnamespace prints another tenant's role, table or schema name, and casting a name to
 * them answers whether it exists. aclitem is the one other type whose input looks up roles by name
 * ('x=r/some_role'::aclitem answered whether another tenant's role exists).
 */
const REFUSED_TYPES = new Set(['aclitem', 'regclass', 'regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper', 'regoperator', 'regproc', 'regprocedure', 'regrole', 'regtype']);

/** Table-sample methods of core PostgreSQL (both read only the sampled table). */
const SAMPLE_METHODS = new Set(['bernoulli', 'system']);

/**
 * System columns. In the pooled tables they number every tenant's rows: ctid showed where other
 * tenants' rows sit (and how many there are), xmin/xmax the server-wide transaction counter, tableoid
 * the shared table's oid. No user column can carry these names (PostgreSQL refuses them), so refusing
 * the names refuses nothing a tenant's own columns need.
 */
const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

/**
 * Text search functions whose first argument may be a configuration (regconfig). An untyped literal
 * or parameter there is looked up by name, schema included, so 't_<id>.english' answered whether
 * another tenant's schema exists. Their first argument, when it is a configuration, must be a plain
 * built-in name written as a literal.
 */
const TS_CONFIG_ARITY: Record<string, number[]> = {
  to_tsvector: [2], to_tsquery: [2], plainto_tsquery: [2], phraseto_tsquery: [2], websearch_to_tsquery: [2],
  ts_headline: [3, 4], json_to_tsvector: [3], jsonb_to_tsvector: [3],
};

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

let loaded: Promise<void> | undefined;

/** Loads the parser (WebAssembly) once; later calls return at once. */
export function loadSqlGuard(): Promise<void> {
  loaded ??= loadModule();
  return loaded;
}

function refuse(what: string, detail?: string): never {
  throw new TenantryError('SQL_NOT_ALLOWED',
    `The SQL endpoint refuses ${what}${detail ? ` (${detail})` : ''}. It runs one SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES or EXPLAIN (not for pooled tenants) on the tenant's own tables, calling built-in data functions only.`,
    { refused: what });
}

/** "AlterRoleStmt" -> "ALTER ROLE"; the commands a person would type for the nodes that need it. */
function statementName(type: string, node: Record<string, unknown>): string {
  switch (type) {
    case 'VariableSetStmt': return node['kind'] === 'VAR_RESET' || node['kind'] === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'VariableShowStmt': return 'SHOW';
    case 'TransactionStmt': return 'transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT)';
    case 'GrantStmt': return node['is_grant'] ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt': return node['is_grant'] ? 'GRANT (role)' : 'REVOKE (role)';
    case 'VacuumStmt': return node['is_vacuumcmd'] ? 'VACUUM' : 'ANALYZE';
    case 'CreateStmt': return 'CREATE TABLE';
    case 'CreateTableAsStmt': return 'CREATE TABLE AS';
    case 'DoStmt': return 'DO';
    case 'ExplainStmt': return 'EXPLAIN';
    case 'CopyStmt': return 'COPY';
    case 'DropStmt': return 'DROP';
    case 'DeclareCursorStmt': return 'DECLARE CURSOR';
    case 'ClosePortalStmt': return 'CLOSE';
    case 'FetchStmt': return 'FETCH';
    default:
      return type.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
  }
}

const stringsOf = (list: unknown): string[] => (Array.isArray(list) ? list.map((n) => (n as { String?: { sval?: string } }).String?.sval ?? '') : []);

/**
 * Checks untrusted SQL and returns its kind, or throws SQL_NOT_ALLOWED (403) naming what was refused,
 * SQL_ERROR (400) for text that is not one well-formed statement, or INVALID_INPUT (400) for text
 * that is not SQL at all (empty, comments only, too long, not valid Unicode, NUL).
 */
export function checkTenantSql(text: string, opts: GuardOptions): GuardVerdict {
  if (typeof text !== 'string') throw new TenantryError('INVALID_INPUT', 'sql must be a string.');
  if (text.length > MAX_SQL_LENGTH) throw new TenantryError('INVALID_INPUT', `sql is ${text.length} characters; the SQL endpoint takes at most ${MAX_SQL_LENGTH}.`);
  // a lone surrogate has no UTF-8 form: the parser and the server would each replace it their own way
  if (LONE_SURROGATE.test(text)) throw new TenantryError('INVALID_INPUT', 'sql is not valid Unicode (it holds a lone surrogate).');
  if (text.includes('\0')) throw new TenantryError('INVALID_INPUT', 'sql holds a NUL character, which PostgreSQL does not accept in statement text.');
  if (text.trim() === '') throw new TenantryError('INVALID_INPUT', 'sql must be a non-empty string.');
  if (!loaded) throw new Error('checkTenantSql before loadSqlGuard()');
  let tree: { stmts?: { stmt?: Record<string, unknown> }[] };
  try {
    tree = parseSync(text) as typeof tree;
  } catch (err) {
    const e = err as { message?: string; sqlDetails?: { cursorPosition?: number } };
    const message = String(e.message ?? err);
    // PostgreSQL's own parser gives up at about 10,000 levels ("memory exhausted"); the WebAssembly
    // build may run out of JavaScript stack first. Either way the text is the tenant's to fix.
    if (/stack depth|call stack|memory exhausted/i.test(message)) throw new TenantryError('SQL_NOT_ALLOWED', 'The statement nests too deeply for the SQL endpoint.', { refused: 'deep nesting' });
    const at = typeof e.sqlDetails?.cursorPosition === 'number' ? ` at character ${e.sqlDetails.cursorPosition + 1}` : '';
    throw new TenantryError('SQL_ERROR', `The statement failed: ${message}${at} (SQLSTATE 42601).`, { sqlstate: '42601' }, { cause: err });
  }
  const stmts = tree.stmts ?? [];
  if (stmts.length === 0) throw new TenantryError('INVALID_INPUT', 'sql holds no statement (only comments or semicolons).');
  if (stmts.length > 1) throw new TenantryError('SQL_ERROR', `The statement failed: the SQL endpoint runs exactly one statement, this text holds ${stmts.length} (SQLSTATE 42601).`, { sqlstate: '42601' });
  const stmt = stmts[0]!.stmt ?? {};
  const [type] = Object.keys(stmt);
  if (!type) throw new TenantryError('INVALID_INPUT', 'sql holds no statement.');
  const node = stmt[type] as Record<string, unknown>;
  let kind = ALLOWED_STATEMENTS[type];
  if (type === 'ExplainStmt') {
    // Pooled tenants share their tables' planner statistics: EXPLAIN's row estimates for a value
    // count every tenant's rows, an oracle that recovered other tenants' emails in a few hundred calls.
    if (opts.isolation === 'pooled') refuse('EXPLAIN', 'a pooled tenant\'s tables are shared, and their planner statistics describe other tenants\' rows');
    for (const o of (node['options'] as { DefElem?: { defname?: string } }[] | undefined) ?? []) {
      const name = o.DefElem?.defname ?? '';
      if (!EXPLAIN_OPTIONS.has(name)) refuse(`EXPLAIN (${name.toUpperCase()})`);
    }
    const inner = node['query'] as Record<string, unknown>;
    const [innerType] = Object.keys(inner ?? {});
    if (!innerType || !ALLOWED_STATEMENTS[innerType]) refuse(`EXPLAIN of ${innerType ? statementName(innerType, inner[innerType] as Record<string, unknown>) : 'nothing'}`);
    kind = 'EXPLAIN';
  } else if (!kind) {
    refuse(statementName(type, node));
  }
  walk(type === 'ExplainStmt' ? (stmt[type] as Record<string, unknown>)['query'] : stmt, opts);
  return { kind: kind! };
}

/** Visits every node of the tree without recursion (a deep tree must not overflow the JS stack). */
function walk(root: unknown, opts: GuardOptions): void {
  const stack: { value: unknown; key: string; depth: number }[] = [{ value: root, key: '', depth: 0 }];
  while (stack.length) {
    const { value, key, depth } = stack.pop()!;
    if (depth > MAX_TREE_DEPTH) throw new TenantryError('SQL_NOT_ALLOWED', 'The statement nests too deeply for the SQL endpoint.', { refused: 'deep nesting' });
    if (Array.isArray(value)) {
      for (const v of value) stack.push({ value: v, key, depth: depth + 1 });
      continue;
    }
    if (!value || typeof value !== 'object') continue;
    const obj = value as Record<string, unknown>;
    if (key === 'typeName' || key === 'TypeName' || key === 'ofType') checkType(obj, opts);
    for (const [k, v] of Object.entries(obj)) {
      if (v && typeof v === 'object' && !Array.isArray(v)) checkNode(k, v as Record<string, unknown>, opts);
      stack.push({ value: v, key: k, depth: depth + 1 });
    }
  }
}

function checkNode(type: string, node: Record<string, unknown>, opts: GuardOptions): void {
  // statements nested in CTEs and subqueries: the same allow-list as at the top
  // (node types are capitalised; fields such as InsertStmt.selectStmt are not)
  if (/^[A-Z]/.test(type) && type.endsWith('Stmt') && !ALLOWED_STATEMENTS[type]) refuse(statementName(type, node));
  switch (type) {
    case 'intoClause':
    case 'IntoClause':
      refuse('SELECT INTO', 'it creates a table');
      break;
    case 'FuncCall': {
      const names = stringsOf(node['funcname']).map((s) => s.toLowerCase());
      const name = names[names.length - 1] ?? '';
      const schema = names.length > 1 ? names[names.length - 2] : undefined;
      // tenantry.current_tenant(): the tenant's own id (the default of every tenant_id column)
      if (names.length === 2 && schema === CONTEXT_SCHEMA && name === 'current_tenant') break;
      // pg_catalog is searched before the tenant's schema, so an unqualified name on the list is the built-in one
      if (names.length > 2 || (schema !== undefined && schema !== 'pg_catalog') || !ALLOWED_FUNCTIONS.has(name)) {
        refuse(`the function ${names.join('.')}()`, 'only built-in data functions are allowed: not large objects, advisory locks, settings, server files, statistics, other sessions, or SQL given as text');
      }
      const arity = TS_CONFIG_ARITY[name];
      const args = Array.isArray(node['args']) ? node['args'] as Record<string, unknown>[] : [];
      if (arity && arity.includes(args.length)) {
        const first = args[0] ?? {};
        const literal = (first['A_Const'] as { sval?: { sval?: string } } | undefined)?.sval?.sval;
        if (first['ParamRef'] || (typeof literal === 'string' && !/^[a-z_]+$/i.test(literal))) {
          refuse(`a text search configuration given as ${first['ParamRef'] ? 'a parameter' : JSON.stringify(literal)} in ${name}()`, 'write a built-in configuration name such as \'english\' as a literal');
        }
      }
      break;
    }
    case 'RangeVar': {
      const rel = String(node['relname'] ?? '');
      const schema = node['schemaname'] as string | undefined;
      const full = [node['catalogname'], schema, rel].filter(Boolean).join('.');
      // the tenant's own schema only: pg_catalog (statistics views, pg_roles, pg_database,
      // pg_stat_activity: other tenants' metadata), information_schema, tenantry, other tenants' schemas.
      // Unqualified pg_* names resolve to pg_catalog first; every relation there is named pg_*.
      if (node['catalogname'] || (schema !== undefined && schema !== opts.schema) || rel.startsWith('pg_')) {
        refuse(`the relation ${full}`, 'a statement may name only the tenant\'s own tables');
      }
      break;
    }
    case 'RangeTableSample': {
      const method = stringsOf(node['method']).join('.').toLowerCase();
      if (!SAMPLE_METHODS.has(method)) refuse(`TABLESAMPLE ${method}`);
      break;
    }
    case 'ColumnRef':
    case 'A_Indirection': {
      // `x.f` and `(x).f` may be read as the call f(x), past the FuncCall check above. PostgreSQL does
      // so only when x is a row (composite or record), so only functions taking one row, record or
      // "any" argument are reachable this way; of those, the built-ins that look outside the value
      // they are given are all named pg_* (pg_column_size and the like), and the names below cover
      // the rest of what the allow-list leaves out should one ever take a row. A data column of such a
      // name is refused as the price of closing that door.
      const fields = stringsOf(type === 'ColumnRef' ? node['fields'] : node['indirection']);
      const last = (fields[fields.length - 1] ?? '').toLowerCase();
      // any segment, and as a field of a whole-row value too: `(a).ctid` is the system column of a's row
      // (the red team numbered other tenants' rows with it while plain `ctid` was refused)
      const system = fields.find((f) => SYSTEM_COLUMNS.has(f.toLowerCase()));
      if (system) refuse(`the system column ${system.toLowerCase()}`, 'in shared tables it describes other tenants\' rows and transactions');
      if ((type === 'A_Indirection' || fields.length > 1) && (last.startsWith('pg_') || /^lo_|^lo(read|write)$/.test(last) || /_to_xml|^ts_(stat|rewrite)$|setting|^to_reg|^txid|^has_.*privilege$/.test(last))) {
        refuse(`the column or function ${fields.join('.')}`, 'x.f may call f(x)');
      }
      break;
    }
    default:
  }
}

function checkType(node: Record<string, unknown>, opts: GuardOptions): void {
  const names = stringsOf(node['names']).map((s) => s.toLowerCase());
  const name = names[names.length - 1] ?? '';
  if (REFUSED_TYPES.has(name)) refuse(`the type ${names.join('.')}`, 'it turns object ids into names of roles, tables and schemas');
  // a type named in another schema ('null::t_<id>.agents') answered whether that tenant's schema exists
  const schema = names.length > 1 ? names[names.length - 2] : undefined;
  if (names.length > 2 || (schema !== undefined && schema !== 'pg_catalog' && schema !== opts.schema.toLowerCase())) {
    refuse(`the type ${names.join('.')}`, 'a statement may name only built-in types and the tenant\'s own');
  }
}

/**
 * Each tenant's share of this process's thread for judging SQL. The parse is synchronous and runs
 * before any refusal, so a tenant sending many large statements (refused or not) could hold the thread
 * every other tenant's requests need; PostgreSQL's per-tenant limits never see refused statements. A
 * token bucket of milliseconds per tenant: bursts up to `burstMs`, then `msPerSecond` of parsing a
 * second; past it the call is refused with RATE_LIMITED and a Retry-After, before parsing.
 */
export class SqlParseBudget {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly msPerSecond = 200, private readonly burstMs = 1000, private readonly maxTenants = 10_000) {}

  private bucket(tenantId: string, now: number): { tokens: number; at: number } {
    let b = this.buckets.get(tenantId);
    if (!b) {
      if (this.buckets.size >= this.maxTenants) {
        // forget full buckets first (they are equivalent to no entry); bounded memory
        for (const [k, v] of this.buckets) if (v.tokens + ((now - v.at) / 1000) * this.msPerSecond >= this.burstMs) this.buckets.delete(k);
        if (this.buckets.size >= this.maxTenants) this.buckets.delete(this.buckets.keys().next().value!);
      }
      b = { tokens: this.burstMs, at: now };
      this.buckets.set(tenantId, b);
    }
    b.tokens = Math.min(this.burstMs, b.tokens + ((now - b.at) / 1000) * this.msPerSecond);
    b.at = now;
    return b;
  }

  /** Refuses (RATE_LIMITED) while the tenant's share is used up. */
  take(tenantId: string): void {
    const b = this.bucket(tenantId, performance.now());
    if (b.tokens <= 0) {
      const retryAfterSeconds = Math.max(1, Math.ceil(-b.tokens / this.msPerSecond + 0.001));
      throw new TenantryError('RATE_LIMITED', `This tenant's SQL statements took more than its share of the server's time to check (${this.msPerSecond} ms a second); retry after ${retryAfterSeconds} s, or send shorter statements.`, { retryAfterSeconds });
    }
  }

  /** Charges the time one check took. */
  spend(tenantId: string, ms: number): void {
    const b = this.bucket(tenantId, performance.now());
    b.tokens -= ms;
  }
}
