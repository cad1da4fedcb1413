import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError, isTenantryError, isDatabaseUnavailable, translateDatabaseError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import { addJob } from '../jobs/runner.js';
import { repairMoves } from '../move/move.js';
import type { TenantService } from '../tenants/tenants.js';
import type { BackupService, BackupInfo, BackupProgress } from '../backup/backup.js';
import { validateIsolation, type Isolation, type Tier } from '../tenants/model.js';

/**
 * Long-running operations (backup, export, restore, clone, move) as catalog rows a caller polls. The
 * row is written, audited and its job (operations.run) enqueued in one transaction; the job runner
 * runs it, so a server restart loses nothing. A job whose process died is released by the runner and
 * retried: the retry first undoes or finishes what the dead attempt left (recorded in `state`), and
 * after MAX_ATTEMPTS starts the operation is failed with OPERATION_INTERRUPTED, its leftovers undone.
 */

export type OperationKind = 'backup' | 'export' | 'restore' | 'clone' | 'move';
export type OperationStatus = 'queued' | 'running' | 'succeeded' | 'failed';

export interface Operation {
  id: string;
  kind: OperationKind;
  tenantId: string;
  status: OperationStatus;
  progress: BackupProgress | null;
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

export interface CloneInput { slug: string; name?: string; isolation?: Isolation; tier?: string; backupId?: string }
export type OperationInput =
  | { kind: 'backup' }
  | { kind: 'export' }
  | { kind: 'restore'; backupId: string; confirm: true }
  | { kind: 'clone'; clone: CloneInput }
  | { kind: 'move'; to: Isolation };


/** Starts of one operation (its first run and retries after its process died) before it is given up. */
export const MAX_ATTEMPTS = 3;
const OPERATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** progress is written at most this often (a table-by-table copy of thousands of tables) */
const PROGRESS_EVERY_MS = 500;

interface OperationRow {
  id: string; kind: OperationKind; tenant_id: string; status: OperationStatus; input: Record<string, unknown>;
  progress: BackupProgress | null; result: Record<string, unknown> | null; error: { code: string; message: string } | null;
  state: Record<string, unknown>; attempts: number; actor: string; request_id: string | null;
  created_at: Date; started_at: Date | null; finished_at: Date | null; updated_at: Date;
}

export class OperationService {
  constructor(private readonly core: Core, private readonly tenants: TenantService, private readonly backups: BackupService) {}

  /**
   * Records an operation on a tenant and enqueues its job, in one transaction (with its audit entry,
   * so a retried request under the same Idempotency-Key finds it). The caller checked the input.
   */
  async start(tenantId: string, input: OperationInput, who: AuditActor = {}): Promise<Operation> {
    const id = await this.core.admin.begin((tx) => this.startIn(tx, tenantId, input, who));
    return this.get(id);
  }

  /**
   * start() inside the caller's transaction, so the operation exists exactly when the caller's change
   * commits (a tier change that moves its tenant to a database of its own). Returns the operation id.
   */
  async startIn(tx: TransactionSql, tenantId: string, input: OperationInput, who: AuditActor = {}): Promise<string> {
    const id = randomUUID();
    const { kind, ...rest } = input;
    // a backup's id is fixed now: a retry after a crash writes to the same place and finds a finished one
    const state = kind === 'backup' || kind === 'export' || (kind === 'clone' && !input.clone.backupId) ? { backupId: randomUUID() } : {};
    await tx`
      insert into tenantry_catalog.operations (id, kind, tenant_id, input, state, actor, request_id)
      values (${id}, ${kind}, ${tenantId}, ${tx.json(rest as never)}, ${tx.json(state as never)}, ${who.actor ?? this.core.opts.actor}, ${who.requestId ?? null})`;
    await addJob(tx as never, 'operations.run', { id }, { jobKey: `operation:${id}`, maxAttempts: 10 });
    await appendAudit(tx, { tenantId, actor: who.actor ?? this.core.opts.actor, requestId: who.requestId, action: `operation.${kind}_started`, target: `operation:${id}`, details: { kind, ...rest } });
    return id;
  }

  async get(id: string): Promise<Operation> {
    if (typeof id !== 'string' || !OPERATION_ID.test(id)) throw new TenantryError('OPERATION_NOT_FOUND', `No operation ${JSON.stringify(id)}; an operation id is the UUID a 202 answer returned.`);
    const [r] = await this.core.admin<OperationRow[]>`select * from tenantry_catalog.operations where id = ${id}`;
    if (!r) throw new TenantryError('OPERATION_NOT_FOUND', `No operation ${id}.`);
    return view(r);
  }

  /**
   * Runs an operation (the operations.run job). Returns once it is finished, failed or found done by
   * another run. Throws only when PostgreSQL is unreachable: the job is then retried.
   */
  async run(id: string): Promise<Operation> {
    const [op] = await this.core.admin<OperationRow[]>`
      update tenantry_catalog.operations
      set status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now()
      where id = ${id} and status in ('queued', 'running') returning *`;
    if (!op) return this.get(id);
    try {
      // a run before this one died part-way: undo or finish what it left first
      if (op.attempts > 1) {
        const done = await this.recover(op);
        if (done) return this.finish(op.id, 'succeeded', { result: done });
      }
      if (op.attempts > MAX_ATTEMPTS) {
        return this.finish(op.id, 'failed', { error: { code: 'OPERATION_INTERRUPTED', message: `The ${op.kind} was started ${MAX_ATTEMPTS} times and its process died each time; what it had done was undone. Look at the server logs, then start it again.` } });
      }
      const result = await this.execute(op);
      return this.finish(op.id, 'succeeded', { result });
    } catch (err) {
      // PostgreSQL away: nothing can be recorded; the job runner retries the job, and the retry recovers
      if (isDatabaseUnavailable(err)) throw err;
      const e = translateDatabaseError(err);
      const error = isTenantryError(e) ? { code: e.code, message: e.message } : { code: 'INTERNAL', message: 'The operation failed unexpectedly; the server log has the details under its operation id.' };
      if (!isTenantryError(e)) this.core.logger.error({ err, operationId: op.id }, 'operation failed');
      // a clone that failed after making its tenant removes it (BackupService.clone does); a failed backup its files
      return this.finish(op.id, 'failed', { error });
    }
  }

  private async finish(id: string, status: 'succeeded' | 'failed', out: { result?: unknown; error?: unknown }): Promise<Operation> {
    await this.core.admin`
      update tenantry_catalog.operations set status = ${status}, result = ${this.core.admin.json((out.result ?? null) as never)},
        error = ${this.core.admin.json((out.error ?? null) as never)}, finished_at = now(), updated_at = now()
      where id = ${id}`;
    return this.get(id);
  }

  private progress(id: string): (p: BackupProgress) => void {
    let last = 0;
    let writing: Promise<unknown> = Promise.resolve();
    return (p) => {
      const now = Date.now();
      if (now - last < PROGRESS_EVERY_MS) return;
      last = now;
      // progress is advisory: a failed write is not the operation's failure
      writing = writing.then(() => this.core.admin`update tenantry_catalog.operations set progress = ${this.core.admin.json(p as never)}, updated_at = now() where id = ${id} and status = 'running'`).catch(() => undefined);
    };
  }

  private async setState(id: string, patch: Record<string, unknown>): Promise<void> {
    await this.core.admin`update tenantry_catalog.operations set state = state || ${this.core.admin.json(patch as never)}, updated_at = now() where id = ${id}`;
  }

  /**
   * After a run that died: returns the result when that run had in fact finished its work, else
   * removes what it left half-made (a backup's partial files, a clone's unfilled tenant).
   */
  private async recover(op: OperationRow): Promise<Record<string, unknown> | undefined> {
    const backupId = typeof op.state.backupId === 'string' ? op.state.backupId : undefined;
    if ((op.kind === 'backup' || op.kind === 'export') && backupId) {
      const done = await this.backups.get(backupId).catch((err: unknown) => { if (isTenantryError(err, 'BACKUP_NOT_FOUND')) return undefined; throw err; });
      if (done) return backupResult(done);
      await this.backups.store.remove(`${op.tenant_id}/${backupId}`);
    }
    if (op.kind === 'clone') {
      const made = typeof op.state.tenantId === 'string' ? op.state.tenantId : undefined;
      if (made) {
        // its fill (one transaction) may or may not have committed: the half-made clone goes, the retry makes it again
        const exists = await this.tenants.find(made);
        if (exists) await this.tenants.delete(made, { hard: true, force: true, actor: 'operation', requestId: op.request_id ?? undefined });
        await this.setState(op.id, { tenantId: null });
      }
      if (backupId && !(op.input.clone as CloneInput | undefined)?.backupId) {
        const done = await this.backups.get(backupId).catch(() => undefined);
        if (!done) await this.backups.store.remove(`${op.tenant_id}/${backupId}`);
      }
    }
    if (op.kind === 'move') {
      // the dead run's move is undone (before its switch) or finished (after it), as repair would
      await repairMoves(this.core, 'operation');
      const t = await this.tenants.get(op.tenant_id);
      if (t.isolation === op.input.to) return { tenantId: t.id, isolation: t.isolation };
    }
    return undefined;
  }

  private async execute(op: OperationRow): Promise<Record<string, unknown>> {
    const who: AuditActor = { actor: op.actor, requestId: op.request_id ?? undefined };
    const onProgress = this.progress(op.id);
    const backupId = typeof op.state.backupId === 'string' ? op.state.backupId : undefined;
    switch (op.kind) {
      case 'backup':
      case 'export': {
        const b = await this.backups.create(op.tenant_id, { ...who, kind: op.kind, onProgress, ...(backupId ? { id: backupId } : {}) });
        return backupResult(b);
      }
      case 'restore': {
        const r = await this.backups.restore(String(op.input.backupId), { ...who, confirm: true, onProgress });
        return { tenantId: r.tenant.id, backupId: op.input.backupId, rows: r.rows };
      }
      case 'clone': {
        const c = op.input.clone as CloneInput;
        let from = c.backupId;
        if (!from) {
          // a backup whose retry after a crash finds it finished rather than taking it twice
          const existing = backupId ? await this.backups.get(backupId).catch(() => undefined) : undefined;
          from = (existing ?? await this.backups.create(op.tenant_id, { ...who, onProgress, ...(backupId ? { id: backupId } : {}) })).id;
        }
        const r = await this.backups.clone(from, {
          ...who, slug: c.slug, ...(c.name !== undefined ? { name: c.name } : {}), ...(c.isolation !== undefined ? { isolation: validateIsolation(c.isolation) } : {}),
          ...(c.tier !== undefined ? { tier: c.tier as Tier } : {}), onProgress, onCreated: (tenantId) => this.setState(op.id, { tenantId }),
        });
        return { tenantId: r.tenant.id, slug: r.tenant.slug, isolation: r.tenant.isolation, backupId: from, rows: r.rows, from: op.tenant_id };
      }
      case 'move': {
        const r = await this.tenants.move(op.tenant_id, { ...who, to: validateIsolation(op.input.to), onProgress });
        return { tenantId: r.tenant.id, isolation: r.tenant.isolation, from: r.from, moveId: r.moveId, rows: r.rows, readOnlyMs: r.readOnlyMs };
      }
    }
  }
}

function backupResult(b: BackupInfo): Record<string, unknown> {
  return { backupId: b.id, tenantId: b.tenantId, kind: b.kind, rows: b.rows, bytes: b.bytes, migrationVersion: b.migrationVersion };
}

function view(r: OperationRow): Operation {
  return {
    id: r.id, kind: r.kind, tenantId: r.tenant_id, status: r.status, progress: r.progress, result: r.result, error: r.error,
    attempts: r.attempts, createdAt: r.created_at, startedAt: r.started_at, finishedAt: r.finished_at, updatedAt: r.updated_at,
  };
}
