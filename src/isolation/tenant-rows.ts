import type { Sql, TransactionSql } from 'postgres';
import { ident } from '../identifiers.js';
import { CONTEXT_SCHEMA } from './data-plane.js';

/**
 * A tenant's rows, the same way in every isolation mode: the tables of one schema that carry a
 * tenant_id column under row-level security, read and written by the owner role with the tenant's
 * signed context set, so the policies themselves confine every statement to that tenant (and every
 * statement also names `tenant_id = current_tenant()`, a second wall).
 */

export interface TenantColumn { name: string; type: string }
export interface TenantTable {
  name: string;
  /** every stored column but tenant_id (which the target's default fills) and generated ones */
  columns: TenantColumn[];
  /** columns fed by a sequence (serial or identity), to continue after restored rows */
  sequenced: string[];
}

/** The tenant tables of `schema`, parents before the children whose foreign keys point at them. */
export async function listTenantTables(sql: Sql | TransactionSql, schema: string): Promise<TenantTable[]> {
  const rows = await sql<{ table: string; column: string; type: string; seq: boolean }[]>`
    select c.relname as table, a.attname as column, format_type(a.atttypid, a.atttypmod) as type,
      pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) is not null as seq
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
    where n.nspname = ${schema} and c.relkind in ('r', 'p') and c.relrowsecurity and not c.relispartition
      and exists (select 1 from pg_attribute t where t.attrelid = c.oid and t.attname = 'tenant_id' and not t.attisdropped)
      and a.attname <> 'tenant_id'
    order by c.relname, a.attnum`;
  const tables = new Map<string, TenantTable>();
  for (const r of rows) {
    const t = tables.get(r.table) ?? { name: r.table, columns: [], sequenced: [] };
    t.columns.push({ name: r.column, type: r.type });
    if (r.seq) t.sequenced.push(r.column);
    tables.set(r.table, t);
  }
  const fks = await sql<{ child: string; parent: string }[]>`
    select ch.relname as child, pa.relname as parent
    from pg_constraint k join pg_class ch on ch.oid = k.conrelid join pg_class pa on pa.oid = k.confrelid
    join pg_namespace n on n.oid = ch.relnamespace
    where k.contype = 'f' and n.nspname = ${schema} and ch.oid <> pa.oid`;
  // depth-first: a table after every table it references (cycles broken by name order)
  const ordered: TenantTable[] = [];
  const seen = new Set<string>();
  const visit = (name: string, path: Set<string>): void => {
    if (seen.has(name) || path.has(name) || !tables.has(name)) return;
    path.add(name);
    for (const fk of fks) if (fk.child === name) visit(fk.parent, path);
    path.delete(name);
    seen.add(name);
    ordered.push(tables.get(name)!);
  };
  for (const name of [...tables.keys()].sort()) visit(name, new Set());
  return ordered;
}

/** Sets the owner role and the tenant's signed context for the rest of the transaction. */
export async function enterTenantWalls(tx: TransactionSql, owner: string, context: string, schema: string): Promise<void> {
  await tx.unsafe(`set local role ${ident(owner)}`);
  await tx`select set_config('tenantry.ctx', ${context}, true), set_config('search_path', ${`"${schema}"`}, true)`;
}

const columnList = (t: Pick<TenantTable, 'columns'>): string => t.columns.map((c) => ident(c.name)).join(', ');
const mine = `tenant_id = (select ${CONTEXT_SCHEMA}.current_tenant())`;

/** The tenant's rows of one table in COPY text format, in a stable order (for checksums). */
export async function exportTableRows(tx: TransactionSql, schema: string, table: TenantTable): Promise<Buffer> {
  const cols = columnList(table);
  const stream = await tx.unsafe(`copy (select ${cols} from ${ident(schema)}.${ident(table.name)} where ${mine} order by ${table.columns.map((_, i) => i + 1).join(', ')}) to stdout`).readable();
  return readCopyOut(stream);
}

/**
 * Reads a postgres.js COPY TO stream to its end. postgres.js pauses the socket when a push fills the
 * stream's buffer and resumes it only from the stream's read(); when the end of the COPY arrived in the
 * same socket read, the stream ends with the socket still paused and the connection never reads the
 * next reply (the next statement hangs, the session idle in transaction). Resuming through read()
 * once the stream has ended is harmless when the socket was not paused.
 */
export async function readCopyOut(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  (stream as unknown as { _read(n: number): void })._read(0);
  return Buffer.concat(chunks);
}

/**
 * Writes rows (COPY text, `columns` in that order) into the tenant's table. COPY FROM is refused on
 * a table under row-level security, so the rows go through a temporary table of this transaction,
 * then one INSERT ... SELECT as the owner role, checked by the policies; tenant_id takes the target's
 * default (the current tenant), so rows of a backup can only ever land in the tenant being restored.
 * Runs as the configured user: the caller enters the walls after.
 */
export async function stageTableRows(tx: TransactionSql, columns: TenantColumn[], data: Buffer, stage: string, owner: string): Promise<void> {
  const cols = columns.map((c) => `${ident(c.name)} ${c.type}`).join(', ');
  await tx.unsafe(`create temporary table ${ident(stage)} (${cols}) on commit drop`);
  if (data.length > 0) {
    const w = await tx.unsafe(`copy ${ident(stage)} (${columns.map((c) => ident(c.name)).join(', ')}) from stdin`).writable();
    await new Promise<void>((resolve, reject) => {
      w.on('error', reject);
      w.on('finish', resolve);
      w.end(data);
    });
  }
  await tx.unsafe(`grant select on ${ident(stage)} to ${ident(owner)}`);
}

/** Inside the walls: moves a staged table's rows into the tenant table (columns both know). */
export async function insertStagedRows(tx: TransactionSql, schema: string, table: TenantTable, columns: TenantColumn[], stage: string): Promise<number> {
  const known = new Set(table.columns.map((c) => c.name));
  const names = columns.filter((c) => known.has(c.name)).map((c) => ident(c.name)).join(', ');
  if (!names) return 0;
  const r = await tx.unsafe(`insert into ${ident(schema)}.${ident(table.name)} (${names}) overriding system value select ${names} from pg_temp.${ident(stage)}`);
  return r.count;
}

/** Inside the walls: deletes the tenant's rows, children before parents. */
export async function deleteTableRows(tx: TransactionSql, schema: string, tables: TenantTable[]): Promise<void> {
  for (const t of [...tables].reverse()) await tx.unsafe(`delete from ${ident(schema)}.${ident(t.name)} where ${mine}`);
}

/** Inside the walls: every sequence feeding a tenant column continues after the highest value now stored. */
export async function continueSequences(tx: TransactionSql, schema: string, tables: TenantTable[]): Promise<void> {
  for (const t of tables) {
    for (const col of t.sequenced) {
      const qualified = `${ident(schema)}.${ident(t.name)}`;
      // never lowered: in pooled mode the sequence is shared with every other tenant
      await tx.unsafe(`
        select setval(pg_get_serial_sequence($1, $2), m.top)
        from (select max(${ident(col)})::bigint as top from ${qualified} where ${mine}) m
        where m.top is not null and m.top > coalesce((select last_value from pg_sequences
          where format('%I.%I', schemaname, sequencename)::regclass = pg_get_serial_sequence($1, $2)::regclass), 0)`, [qualified, col]);
    }
  }
}

/** Counts the tenant's rows per table (inside the walls). */
export async function countTableRows(tx: TransactionSql, schema: string, tables: TenantTable[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tables) {
    const [r] = await tx.unsafe<{ n: string }[]>(`select count(*) as n from ${ident(schema)}.${ident(t.name)} where ${mine}`);
    out[t.name] = Number(r!.n);
  }
  return out;
}
