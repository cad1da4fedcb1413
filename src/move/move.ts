import { createHash, randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { TenantryError, isTenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import { ident, literal, isUuid } from '../identifiers.js';
import { STRATEGIES, type TenantPlacement } from '../isolation/modes.js';
import { CONTEXT_SCHEMA } from '../isolation/data-plane.js';
import { readCopyOut, insertStagedRows, deleteTableRows, continueSequences, type TenantTable } from '../isolation/tenant-rows.js';
import { toTenant, validateIsolation, type Isolation, type Tenant, type TenantRow } from '../tenants/model.js';
import type { BackupProgress } from '../backup/backup.js';
import { poolKey } from '../db/pool-key.js';
import { MOVE_SCHEMA, startTracking, freezeSource, stopTracking, keyColumns, changedKeys, onKeys, type KeyColumn } from './change-log.js';

/**
 * Online moves of a tenant between isolation modes (pooled, schema, database), written once over the
 * isolation seam:
 *
 *  1. prepare   the target placement (schema or database, migrated), the tenant's role let into it
 *  2. track     a change log on the source: a row trigger logs the key of every row the tenant writes
 *  3. copy      every row, from one snapshot taken after the trigger is in place, into the target;
 *               the target's rows read back and compared (checksum of the COPY text) with the source's
 *  4. freeze    the source refuses the tenant's writes (reads go on), after the writes under way commit
 *  5. catch-up  the rows whose keys the log holds copied again, their counts and checksums compared
 *  6. switch    the catalog placement changed in one transaction (its NOTIFY tells other processes)
 *  7. cleanup   the old placement and the change log removed
 *
 * The tenant is read-only only from 4 to 6. Every step is recorded in tenantry_catalog.moves, and a
 * failure (a crash included) before 6 leaves the tenant in its old placement and writable once the
 * move is undone (here, or by repair for a process that died); from 6 on, repair finishes it.
 */

export interface MoveOptions extends AuditActor {
  to: Isolation;
  /** steps: prepare, track, copy (per table), verify, freeze, catch-up, switch, switched, cleanup, done */
  onProgress?: (p: BackupProgress) => void;
  /** cancels a move that has not switched yet (it is undone); ignored once the catalog switched */
  signal?: AbortSignal;
}

export interface MoveResult {
  moveId: string;
  tenant: Tenant;
  from: Isolation;
  to: Isolation;
  /** rows copied (bulk and catch-up) */
  rows: number;
  /** how long the tenant refused writes */
  readOnlyMs: number;
  totalMs: number;
}

export type MovePhase = 'preparing' | 'copying' | 'frozen' | 'switched' | 'done' | 'failed';

export interface MoveInfo {
  id: string;
  tenantId: string;
  from: Isolation;
  to: Isolation;
  phase: MovePhase;
  rows: number | null;
  readOnlyMs: number | null;
  error: string | null;
  startedAt: Date;
  finishedAt: Date | null;
}

interface MoveRow {
  id: string; tenant_id: string; from_isolation: Isolation; to_isolation: Isolation; from_placement: TenantPlacement; to_placement: TenantPlacement;
  phase: MovePhase; rows: string | null; read_only_ms: number | null; error: string | null; actor: string; request_id: string | null;
  started_at: Date; finished_at: Date | null;
}

/** Session advisory lock a running move holds: repair leaves a move alone while its process lives. */
const MOVE_LOCK = 0x746d_7632; // 'tmv2'
/** after the switch, how long the old placement is kept (frozen) for processes yet to hear of it */
const SWITCH_GRACE_MS = 300;
const STEPS = ['prepare', 'track', 'copy', 'verify', 'freeze', 'catch-up', 'switch', 'switched', 'cleanup', 'done'];

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** COPY text ends every row with a newline (newlines inside values are escaped). */
function copyRows(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}
const mine = `tenant_id = (select ${CONTEXT_SCHEMA}.current_tenant())`;
const order = (t: TenantTable): string => t.columns.map((_, i) => i + 1).join(', ');
const cols = (t: TenantTable): string => t.columns.map((c) => ident(c.name)).join(', ');
const xcols = (t: TenantTable): string => t.columns.map((c) => `x.${ident(c.name)}`).join(', ');

export class MoveService {
  constructor(private readonly core: Core, private readonly tenants: { get(idOrSlug: string): Promise<Tenant> }) {}

  /** Moves a tenant to another isolation mode, online (see above). */
  async move(idOrSlug: string, opts: MoveOptions): Promise<MoveResult> {
    if (!opts || typeof opts !== 'object') throw new TenantryError('INVALID_INPUT', 'move() takes { to: "pooled" | "schema" | "database" }.');
    const to = validateIsolation(opts.to);
    if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw new TenantryError('INVALID_INPUT', 'onProgress must be a function.');
    let t = await this.tenants.get(idOrSlug);
    // a move of this tenant whose process died is ended first (undone or finished), rather than
    // refusing this one as MOVE_IN_PROGRESS until the healer comes by
    const ended = await repairMoves(this.core, opts.actor ?? this.core.opts.actor, t.id);
    if (ended.finished.length > 0 || ended.undone.length > 0) t = await this.tenants.get(t.id);
    assertMovable(t);
    if (t.isolation === to) throw new TenantryError('MOVE_NOT_NEEDED', `Tenant "${t.slug}" is already in ${to} mode; nothing to move.`, { tenantId: t.id, isolation: to });
    if (t.schemaVersion !== latestVersion(this.core)) {
      throw new TenantryError('INVALID_TRANSITION', `Tenant "${t.slug}" is at tenant migration ${t.schemaVersion}, the installation at ${latestVersion(this.core)}; run \`tenantry migrate\` first, then move it.`, { tenantId: t.id });
    }
    const started = Date.now();
    const actor = opts.actor ?? this.core.opts.actor;
    const from: TenantPlacement = { ...t.placement, id: t.id, isolation: t.isolation };
    const target = STRATEGIES[to].placementFor(this.core, t.id);
    const moveId = randomUUID();
    let step = 0;
    const progress = (name: string, table?: string): void => {
      step = Math.max(step, STEPS.indexOf(name));
      opts.onProgress?.({ step: name, ...(table ? { table } : {}), done: step, total: STEPS.length - 1 });
    };
    const checkCancel = (): void => {
      if (opts.signal?.aborted) throw new TenantryError('MOVE_CANCELLED', `The move of tenant "${t.slug}" to ${to} mode was cancelled and undone; it stays in ${t.isolation} mode.`, { tenantId: t.id, moveId });
    };

    // held for the whole move: repair (in any process) leaves a move alone while this session lives
    const lock = await this.core.admin.reserve();
    try {
      await lock`select pg_advisory_lock(${MOVE_LOCK}, hashtext(${moveId}))`;
      await this.core.admin.begin(async (tx) => {
        const [row] = await tx<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${t.id} for update`;
        if (!row) throw new TenantryError('TENANT_NOT_FOUND', `No tenant with id or slug ${JSON.stringify(idOrSlug)}.`);
        const now = toTenant(row);
        assertMovable(now);
        if (now.isolation !== t.isolation || now.placement.database !== t.placement.database || now.placement.schema !== t.placement.schema) {
          throw new TenantryError('MOVE_IN_PROGRESS', `Tenant "${t.slug}" was moved meanwhile; look at it again before moving it.`, { tenantId: t.id });
        }
        try {
          await tx.savepoint((sp) => sp`
            insert into tenantry_catalog.moves (id, tenant_id, from_isolation, to_isolation, from_placement, to_placement, actor, request_id)
            values (${moveId}, ${t.id}, ${t.isolation}, ${to}, ${sp.json(from as never)}, ${sp.json(target as never)}, ${actor}, ${opts.requestId ?? null})`);
        } catch (err) {
          if ((err as { code?: string }).code === '23505') throw new TenantryError('MOVE_IN_PROGRESS', `Tenant "${t.slug}" is already being moved; wait for that move to finish (or run repair if its process died).`, { tenantId: t.id });
          throw err;
        }
        await appendAudit(tx, { tenantId: t.id, actor, requestId: opts.requestId, action: 'move.started', target: `move:${moveId}`, details: { from: t.isolation, to } });
      });
    } catch (err) {
      await lock`select pg_advisory_unlock(${MOVE_LOCK}, hashtext(${moveId}))`.catch(() => undefined);
      lock.release();
      throw err;
    }

    let switched = false;
    let readOnlyMs = 0;
    let rows = 0;
    try {
      progress('prepare');
      checkCancel();
      // leftovers of an earlier attempt that nothing removed, then the fresh placement
      await removePlacement(this.core, target);
      await STRATEGIES[to].place(this.core, target);
      await STRATEGIES[to].migrate(this.core, target);
      await this.core.admin.unsafe(`grant ${ident(STRATEGIES[to].group(this.core))} to ${ident(t.placement.role)}`);

      progress('track');
      checkCancel();
      await startTracking(this.core, from, moveId);
      await this.setPhase(moveId, 'copying');

      rows += await this.bulkCopy(from, target, (table) => progress('copy', table), () => progress('verify'));

      progress('freeze');
      checkCancel();
      await this.setPhase(moveId, 'frozen');
      const frozenAt = Date.now();
      await freezeSource(this.core, from, moveId);

      progress('catch-up');
      rows += await this.catchUp(from, target, moveId);

      progress('switch');
      checkCancel();
      readOnlyMs = await this.core.admin.begin(async (tx) => {
        const [row] = await tx<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${t.id} for update`;
        if (!row || row.isolation !== t.isolation || row.database_name !== from.database || row.schema_name !== from.schema) {
          throw new Error('the tenant was removed or changed while it was being moved');
        }
        await tx`
          update tenantry_catalog.tenants set isolation = ${to}, server_name = ${target.server}, database_name = ${target.database},
            schema_name = ${target.schema}, updated_at = now()
          where id = ${t.id}`;
        const ms = Date.now() - frozenAt;
        await tx`update tenantry_catalog.moves set phase = 'switched', rows = ${rows}, read_only_ms = ${ms}, updated_at = now() where id = ${moveId}`;
        return ms;
      });
      switched = true;
      this.core.cache.invalidate(t.id);
      progress('switched');
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.core.logger.warn({ err, tenantId: t.id, moveId }, 'move failed; undoing it');
      try {
        // decided by the catalog, not by what this process believes: a COMMIT whose answer was lost did switch
        if (await this.isSwitched(t.id, target)) {
          switched = true;
        } else {
          await undoMove(this.core, { id: moveId, tenant_id: t.id, from_placement: from, to_placement: target }, actor, reason, opts.requestId);
        }
      } catch (undoErr) {
        this.core.logger.error({ err: undoErr, tenantId: t.id, moveId }, 'undoing the move did not finish; repair finishes it');
      }
      if (!switched) {
        await lock`select pg_advisory_unlock(${MOVE_LOCK}, hashtext(${moveId}))`.catch(() => undefined);
        lock.release();
        if (isTenantryError(err) && (err.code === 'MOVE_CANCELLED' || err.code === 'MOVE_IN_PROGRESS')) throw err;
        throw new TenantryError('MOVE_FAILED', `Moving tenant "${t.slug}" to ${to} mode failed and was undone; it stays in ${t.isolation} mode and writable: ${reason}`, { tenantId: t.id, moveId }, { cause: err });
      }
    }

    try {
      progress('cleanup');
      // the old placement stays (frozen) a moment for processes whose caches have not heard the NOTIFY yet
      await new Promise((r) => setTimeout(r, SWITCH_GRACE_MS));
      await finishMove(this.core, { id: moveId, tenant_id: t.id, from_placement: from, to_placement: target }, actor, opts.requestId, { rows, readOnlyMs, totalMs: Date.now() - started });
    } catch (err) {
      // the tenant lives in its new placement already; what is left of the old one repair removes
      this.core.logger.warn({ err, tenantId: t.id, moveId }, 'removing the old placement after a move did not finish; repair finishes it');
    } finally {
      await lock`select pg_advisory_unlock(${MOVE_LOCK}, hashtext(${moveId}))`.catch(() => undefined);
      lock.release();
    }
    progress('done');
    return { moveId, tenant: await this.tenants.get(t.id), from: t.isolation, to, rows, readOnlyMs, totalMs: Date.now() - started };
  }

  /** A tenant's moves, newest first. */
  async list(idOrSlug: string): Promise<MoveInfo[]> {
    const t = await this.tenants.get(idOrSlug);
    return (await this.core.admin<MoveRow[]>`select * from tenantry_catalog.moves where tenant_id = ${t.id} order by started_at desc, id`).map(toInfo);
  }

  async get(moveId: string): Promise<MoveInfo> {
    if (!isUuid(moveId)) throw new TenantryError('MOVE_NOT_FOUND', `No move ${JSON.stringify(moveId)}.`);
    const [r] = await this.core.admin<MoveRow[]>`select * from tenantry_catalog.moves where id = ${moveId}`;
    if (!r) throw new TenantryError('MOVE_NOT_FOUND', `No move ${moveId}.`);
    return toInfo(r);
  }

  private async setPhase(moveId: string, phase: MovePhase): Promise<void> {
    await this.core.admin`update tenantry_catalog.moves set phase = ${phase}, updated_at = now() where id = ${moveId}`;
  }

  private async isSwitched(tenantId: string, target: TenantPlacement): Promise<boolean> {
    const [r] = await this.core.admin<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${tenantId}`;
    return !!r && r.isolation === target.isolation && r.database_name === target.database && r.schema_name === target.schema;
  }

  /**
   * Every row of the source, from one snapshot, into the target in one transaction; the target's
   * rows are then read back and their COPY text compared with the source's (checksum per table).
   */
  private async bulkCopy(from: TenantPlacement, target: TenantPlacement, onTable: (name: string) => void, onVerify: () => void): Promise<number> {
    const src = STRATEGIES[from.isolation];
    const dst = STRATEGIES[target.isolation];
    const snapshot = await src.openTransaction(this.core, from, async (tx, walls) => {
      await tx.unsafe('set transaction isolation level repeatable read, read only');
      await walls();
      const out: { table: TenantTable; data: Buffer }[] = [];
      for (const table of await src.listTenantTables(tx, from)) {
        onTable(table.name);
        out.push({ table, data: await src.exportRows(tx, from, table) });
      }
      return out;
    });
    return dst.openTransaction(this.core, target, async (tx, walls) => {
      const tables = new Map((await dst.listTenantTables(tx, target)).map((x) => [x.name, x]));
      const staged: { table: TenantTable; stage: string; data: Buffer }[] = [];
      for (const s of snapshot) {
        const table = sameTable(tables, s.table);
        const stage = `tenantry_move_${staged.length}`;
        await dst.importRows(this.core, tx, target, table, table.columns, s.data, stage);
        staged.push({ table, stage, data: s.data });
      }
      await walls();
      const all = [...tables.values()];
      await deleteTableRows(tx, target.schema, all);
      let n = 0;
      const inserted = new Map<string, number>();
      for (const s of staged) {
        const k = await insertStagedRows(tx, target.schema, s.table, s.table.columns, s.stage);
        inserted.set(s.table.name, k);
        n += k;
      }
      await continueSequences(tx, target.schema, all);
      onVerify();
      // every table's count, then its rows byte for byte (the COPY text of both, in the same order)
      for (const s of staged) {
        if (inserted.get(s.table.name) !== copyRows(s.data)) throw new Error(`table ${s.table.name}: ${inserted.get(s.table.name)} rows copied of the source's ${copyRows(s.data)}`);
        const back = await dst.exportRows(tx, target, s.table);
        if (sha256(back) !== sha256(s.data)) throw new Error(`table ${s.table.name}: the copied rows do not match the source's (checksum)`);
      }
      return n;
    });
  }

  /**
   * With the source frozen: the rows whose keys the change log holds read again from the source and
   * written over the target's (deleted where the source no longer has them); a table without a
   * primary key that changed is copied whole again. Then the changed rows' counts and checksums are
   * compared on both sides, in the target's transaction: on a mismatch nothing of the catch-up stays.
   */
  private async catchUp(from: TenantPlacement, target: TenantPlacement, moveId: string): Promise<number> {
    const src = STRATEGIES[from.isolation];
    const dst = STRATEGIES[target.isolation];
    interface Changed { table: TenantTable; keys: KeyColumn[]; keyJson: string; data: Buffer }
    const source = await src.openTransaction(this.core, from, async (tx, walls) => {
      await tx.unsafe('set transaction isolation level repeatable read, read only');
      await walls();
      const tables = await src.listTenantTables(tx, from);
      const changed: Changed[] = [];
      for (const table of tables) {
        const logged = await tx<{ key: string }[]>`select distinct key::text as key from ${tx(MOVE_SCHEMA)}.changes where move_id = ${moveId} and tbl = ${table.name}`;
        if (logged.length === 0) continue;
        const keys = await keyColumns(tx, from.schema, table.name);
        const rows = keys.length === 0 ? `${ident(from.schema)}.${ident(table.name)} x where x.${mine}`
          : `${changedKeys(keys, `${MOVE_SCHEMA}.changes`, ` where c.move_id = ${literal(moveId)} and c.tbl = ${literal(table.name)}`)} join ${ident(from.schema)}.${ident(table.name)} x on x.${mine} and ${onKeys(keys)}`;
        const stream = await tx.unsafe(`copy (select ${xcols(table)} from ${rows} order by ${order(table)}) to stdout`).readable();
        changed.push({ table, keys, keyJson: `[${logged.map((l) => l.key).join(',')}]`, data: await readCopyOut(stream) });
      }
      return { changed, tables: tables.map((x) => x.name).sort() };
    });
    return dst.openTransaction(this.core, target, async (tx, walls) => {
      const tables = new Map((await dst.listTenantTables(tx, target)).map((x) => [x.name, x]));
      const work = source.changed.map((c, i) => ({ ...c, table: sameTable(tables, c.table), stage: `tenantry_move_rows_${i}`, keyStage: `tenantry_move_keys_${i}` }));
      for (const w of work) {
        await dst.importRows(this.core, tx, target, w.table, w.table.columns, w.data, w.stage);
        if (w.keys.length > 0) {
          await tx.unsafe(`create temporary table ${ident(w.keyStage)} on commit drop as select value as key from jsonb_array_elements($1::text::jsonb)`, [w.keyJson]);
          await tx.unsafe(`grant select on ${ident(w.keyStage)} to ${ident(this.core.roles.owner)}`);
        }
      }
      await walls();
      const shape = new Map<string, { all: string[]; always: Set<string> }>();
      for (const w of work) shape.set(w.table.name, await tableShape(tx, target.schema, w.table.name));
      // children before parents for the deletes, parents before children for the writes
      for (const w of [...work].reverse()) {
        const qualified = `${ident(target.schema)}.${ident(w.table.name)}`;
        if (w.keys.length === 0) {
          await tx.unsafe(`delete from ${qualified} where ${mine}`);
        } else {
          await tx.unsafe(`delete from ${qualified} x using ${changedKeys(w.keys, `pg_temp.${ident(w.keyStage)}`)}
            where x.${mine} and ${onKeys(w.keys)}
            and not exists (select 1 from pg_temp.${ident(w.stage)} s where ${w.keys.map((k) => `s.${ident(k.name)} = x.${ident(k.name)}`).join(' and ')})`);
        }
      }
      let n = 0;
      for (const w of work) {
        if (w.keys.length === 0) {
          n += await insertStagedRows(tx, target.schema, w.table, w.table.columns, w.stage);
          continue;
        }
        const s = shape.get(w.table.name)!;
        const pk = new Set([...s.all, 'tenant_id']);
        const updates = w.table.columns.filter((c) => !pk.has(c.name) && !s.always.has(c.name)).map((c) => `${ident(c.name)} = excluded.${ident(c.name)}`);
        const r = await tx.unsafe(`insert into ${ident(target.schema)}.${ident(w.table.name)} (${cols(w.table)}) overriding system value
          select ${cols(w.table)} from pg_temp.${ident(w.stage)}
          on conflict (${s.all.map(ident).join(', ')}) do ${updates.length ? `update set ${updates.join(', ')}` : 'nothing'}`);
        n += r.count;
      }
      await continueSequences(tx, target.schema, [...tables.values()]);
      // Verified before the switch. The bulk copy was checked whole (counts, checksums); since then only
      // the logged keys changed, on either side: their rows are compared here, count and bytes. (A full
      // count of a large tenant here would cost seconds of the read-only window and check nothing more.)
      if ([...tables.keys()].sort().join(',') !== source.tables.join(',')) throw new Error('the tenant tables differ between the old and the new placement');
      for (const w of work) {
        const rows = w.keys.length === 0 ? `${ident(target.schema)}.${ident(w.table.name)} x where x.${mine}`
          : `${changedKeys(w.keys, `pg_temp.${ident(w.keyStage)}`)} join ${ident(target.schema)}.${ident(w.table.name)} x on x.${mine} and ${onKeys(w.keys)}`;
        const stream = await tx.unsafe(`copy (select ${xcols(w.table)} from ${rows} order by ${order(w.table)}) to stdout`).readable();
        const back = await readCopyOut(stream);
        if (copyRows(back) !== copyRows(w.data)) throw new Error(`table ${w.table.name}: ${copyRows(back)} rows changed during the copy in the new placement, ${copyRows(w.data)} in the old`);
        if (sha256(back) !== sha256(w.data)) throw new Error(`table ${w.table.name}: the rows changed during the copy do not match the source's (checksum)`);
      }
      return n;
    });
  }
}

/** Only a live tenant moves; the refusals name why. */
function assertMovable(t: Tenant): void {
  switch (t.status) {
    case 'active':
    case 'trial':
      return;
    case 'suspended':
      throw new TenantryError('TENANT_SUSPENDED', `Tenant "${t.slug}" is suspended; activate it before moving it.`, { tenantId: t.id });
    case 'deleted':
      throw new TenantryError('TENANT_DELETED', `Tenant "${t.slug}" is deleted; restore it before moving it.`, { tenantId: t.id });
    default:
      throw new TenantryError('TENANT_NOT_READY', `Tenant "${t.slug}" is still being provisioned; retry shortly, or run repair() if it is stuck.`, { tenantId: t.id });
  }
}

/** The target's table of the same name with the same columns (one set of migrations serves every mode). */
function sameTable(tables: Map<string, TenantTable>, source: TenantTable): TenantTable {
  const t = tables.get(source.name);
  const sig = (x: TenantTable): string => x.columns.map((c) => `${c.name}:${c.type}`).join(',');
  if (!t || sig(t) !== sig(source)) throw new Error(`table ${source.name} differs between the old and the new placement (are both at the same tenant migration?)`);
  return t;
}

/** The primary key's columns (tenant_id included) and the identity columns only DEFAULT may update. */
async function tableShape(tx: TransactionSql, schema: string, table: string): Promise<{ all: string[]; always: Set<string> }> {
  const rows = await tx<{ name: string; pk: boolean; always: boolean }[]>`
    select a.attname as name, coalesce(a.attnum = any(i.indkey::int2[]), false) as pk, a.attidentity = 'a' as always
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    left join pg_index i on i.indrelid = c.oid and i.indisprimary
    where n.nspname = ${schema} and c.relname = ${table}
    order by array_position(i.indkey::int2[], a.attnum)`;
  return { all: rows.filter((r) => r.pk).map((r) => r.name), always: new Set(rows.filter((r) => r.always).map((r) => r.name)) };
}

function toInfo(r: MoveRow): MoveInfo {
  return {
    id: r.id, tenantId: r.tenant_id, from: r.from_isolation, to: r.to_isolation, phase: r.phase,
    rows: r.rows === null ? null : Number(r.rows), readOnlyMs: r.read_only_ms, error: r.error, startedAt: r.started_at, finishedAt: r.finished_at,
  };
}

type MoveRef = Pick<MoveRow, 'id' | 'tenant_id' | 'from_placement' | 'to_placement'>;

/**
 * Undoes a move that has not switched: the source stops logging and is writable again (first, so
 * the tenant's writes resume at once), then the half-filled target goes and the role leaves its
 * group. Idempotent.
 */
async function undoMove(core: Core, m: MoveRef, actor: string, reason: string, requestId?: string): Promise<void> {
  const from = m.from_placement;
  const target = m.to_placement;
  await stopTracking(core, from, m.id);
  await removePlacement(core, target);
  await leaveGroup(core, target, from);
  await core.admin.begin(async (tx) => {
    await tx`update tenantry_catalog.moves set phase = 'failed', error = ${reason.slice(0, 2000)}, updated_at = now(), finished_at = now() where id = ${m.id}`;
    await appendAudit(tx, { tenantId: m.tenant_id, actor, requestId, action: 'move.failed', target: `move:${m.id}`, details: { from: from.isolation, to: target.isolation, reason: reason.slice(0, 500), undone: true } });
  });
  core.cache.invalidate(m.tenant_id);
}

/**
 * Finishes a switched move: the old placement's rows, schema or database removed (the pooled rows
 * by the one writer the freeze lets through), the change log and its triggers, the old group.
 * Idempotent.
 */
async function finishMove(core: Core, m: MoveRef, actor: string, requestId: string | undefined, details: Record<string, unknown>): Promise<void> {
  const from = m.from_placement;
  const target = m.to_placement;
  if (from.isolation === 'pooled') {
    const src = STRATEGIES.pooled;
    await src.openTransaction(core, from, async (tx, walls) => {
      await walls();
      await tx`select set_config('tenantry.move_cleanup', ${m.id}, true)`;
      await deleteTableRows(tx, from.schema, await src.listTenantTables(tx, from));
    });
  } else {
    await removePlacement(core, from);
  }
  await stopTracking(core, from, m.id);
  await leaveGroup(core, from, target);
  await core.admin.begin(async (tx) => {
    await tx`update tenantry_catalog.moves set phase = 'done', updated_at = now(), finished_at = now() where id = ${m.id}`;
    await appendAudit(tx, { tenantId: m.tenant_id, actor, requestId, action: 'move.completed', target: `move:${m.id}`, details: { from: from.isolation, to: target.isolation, ...details } });
  });
}

/**
 * Removes a placement's rows, schema or database. A schema's migration records (kept per schema name
 * in the shared database) go with it: the tenant may come back to schema mode, under the same name.
 */
async function removePlacement(core: Core, p: TenantPlacement): Promise<void> {
  await core.pools.drop(poolKey(p));
  await STRATEGIES[p.isolation].remove(core, p);
  if (p.isolation === 'schema') {
    await core.sharedAdmin.begin(async (tx) => {
      await tx.unsafe(`set local role ${ident(core.roles.owner)}`);
      await tx`delete from ${tx(CONTEXT_SCHEMA)}.migrations where schema_name = ${p.schema}`;
    });
  }
}

/** The role leaves `left`'s mode group unless `kept` (where the tenant lives) uses the same one. */
async function leaveGroup(core: Core, left: TenantPlacement, kept: TenantPlacement): Promise<void> {
  const gone = STRATEGIES[left.isolation].group(core);
  if (gone === STRATEGIES[kept.isolation].group(core)) return;
  if ((await core.admin`select 1 from pg_roles where rolname = ${left.role}`).length === 0) return;
  await core.admin.unsafe(`revoke ${ident(gone)} from ${ident(left.role)}`);
}

/** Moves not ended whose process is gone (their session lock is free): what doctor names. */
export async function stalledMoves(core: Core): Promise<MoveInfo[]> {
  const open = await core.admin<MoveRow[]>`select * from tenantry_catalog.moves where phase not in ('done', 'failed') order by started_at`;
  const out: MoveInfo[] = [];
  for (const m of open) {
    const free = await core.admin.begin(async (tx) => (await tx<{ ok: boolean }[]>`select pg_try_advisory_xact_lock(${MOVE_LOCK}, hashtext(${m.id})) as ok`)[0]?.ok);
    if (free) out.push(toInfo(m));
  }
  return out;
}

export interface MoveRepairReport {
  /** moves whose process died before the switch: undone, the tenant writable in its old placement */
  undone: string[];
  /** moves whose process died after the switch: the old placement removed */
  finished: string[];
}

/**
 * Ends every move whose process is gone (its session lock is free): undone before the switch,
 * finished after it, decided by where the catalog says the tenant lives.
 */
export async function repairMoves(core: Core, actor: string, tenantId?: string): Promise<MoveRepairReport> {
  const report: MoveRepairReport = { undone: [], finished: [] };
  const open = await core.admin<MoveRow[]>`
    select * from tenantry_catalog.moves where phase not in ('done', 'failed') ${tenantId ? core.admin`and tenant_id = ${tenantId}` : core.admin``}
    order by started_at`;
  for (const m of open) {
    // the move's own session lock, held while it is ended here: free means its process is gone, and no
    // second repairer (another process's healer) ends the same move at the same time
    const lock = await core.admin.reserve();
    try {
      const [got] = await lock<{ ok: boolean }[]>`select pg_try_advisory_lock(${MOVE_LOCK}, hashtext(${m.id})) as ok`;
      if (!got?.ok) continue;
      try {
        const [again] = await core.admin<{ phase: MovePhase }[]>`select phase from tenantry_catalog.moves where id = ${m.id}`;
        if (!again || again.phase === 'done' || again.phase === 'failed') continue;
        const [row] = await core.admin<TenantRow[]>`select * from tenantry_catalog.tenants where id = ${m.tenant_id}`;
        const target = m.to_placement;
        const switched = !!row && row.isolation === target.isolation && row.database_name === target.database && row.schema_name === target.schema;
        if (switched) {
          await finishMove(core, m, actor, undefined, { repaired: true });
          report.finished.push(m.id);
        } else {
          await undoMove(core, m, actor, 'the process running the move stopped; undone by repair');
          report.undone.push(m.id);
        }
        core.cache.invalidate(m.tenant_id);
      } finally {
        await lock`select pg_advisory_unlock(${MOVE_LOCK}, hashtext(${m.id}))`.catch(() => undefined);
      }
    } finally {
      lock.release();
    }
  }
  return report;
}
