import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { gzipSync, gunzipSync } from 'node:zlib';
import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { PACKAGE_VERSION } from '../config.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import { validateIsolation, type Isolation, type Tenant, type Tier } from '../tenants/model.js';
import { STRATEGIES, type TenantPlacement } from '../isolation/modes.js';
import { readCopyOut, insertStagedRows, deleteTableRows, continueSequences, countTableRows, type TenantColumn, type TenantTable } from '../isolation/tenant-rows.js';
import { checkKey, type BackupStore } from './store.js';
import { tarStream } from './archive.js';
import type { Readable } from 'node:stream';
import { ident } from '../identifiers.js';
import { CONTEXT_SCHEMA } from '../isolation/data-plane.js';

/**
 * Per-tenant backups, restores, clones and exports, written once over the isolation seam: the same
 * archive (each tenant table's rows in COPY text, gzip, plus a signed manifest) from and into every
 * mode. tenant_id is never in the archive: restored rows take the target tenant's id from its
 * signed context, so a backup can only ever fill the tenant it is restored into.
 */

export const BACKUP_FORMAT = 'tenantry-backup/1';

export interface BackupTableEntry {
  name: string;
  columns: TenantColumn[];
  rows: number;
  /** SHA-256 of the COPY text */
  sha256: string;
  /** the archive file and the SHA-256 of its (compressed) bytes */
  file: string;
  fileSha256: string;
  bytes: number;
}

export interface BackupManifest {
  format: typeof BACKUP_FORMAT;
  id: string;
  tenant: { id: string; slug: string; isolation: Isolation };
  migrationVersion: number;
  tenantryVersion: string;
  createdAt: string;
  compression: 'gzip';
  tables: BackupTableEntry[];
  /** HMAC-SHA-256 of everything above, with a key derived from the installation secret */
  signature: string;
}

export interface BackupInfo {
  id: string;
  tenantId: string;
  kind: 'backup' | 'export' | 'scheduled';
  store: string;
  isolation: Isolation;
  migrationVersion: number;
  rows: number;
  bytes: number;
  createdAt: Date;
  manifest: BackupManifest;
}

export interface BackupProgress { step: string; table?: string; done: number; total: number }
export type ProgressFn = (p: BackupProgress) => void;

const BACKUP_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class BackupService {
  constructor(private readonly core: Core, private readonly tenants: TenantService, readonly store: BackupStore) {}

  private sign(m: Omit<BackupManifest, 'signature'>): string {
    return createHmac('sha256', this.core.signer.purposeKey('backup-manifest')).update(JSON.stringify(m), 'utf8').digest('hex');
  }

  /** Backs up one tenant's rows (any mode) to the store; `kind: 'export'` adds JSON Lines and CSV per table. */
  async create(idOrSlug: string, opts: AuditActor & { kind?: 'backup' | 'export' | 'scheduled'; onProgress?: ProgressFn; id?: string } = {}): Promise<BackupInfo> {
    const t = await this.tenants.get(idOrSlug);
    const kind = opts.kind ?? 'backup';
    // a given id: an operation retried after a crash writes to the same place (its partial files are replaced)
    if (opts.id !== undefined && (typeof opts.id !== 'string' || !BACKUP_ID.test(opts.id))) throw new TenantryError('INVALID_INPUT', `A backup id is a lowercase UUID; got ${JSON.stringify(opts.id)}.`);
    const id = opts.id ?? randomUUID();
    const p = placementOfTenant(t);
    const strategy = STRATEGIES[t.isolation];
    const prefix = `${t.id}/${id}`;
    const entries: BackupTableEntry[] = [];
    const renderings: { key: string; body: Buffer }[] = [];
    const version = t.schemaVersion;
    try {
      await strategy.openTransaction(this.core, p, async (tx, walls) => {
        // one snapshot for every table: the archive is consistent even while the tenant keeps writing
        await tx.unsafe('set transaction isolation level repeatable read, read only');
        await walls();
        const tables = await strategy.listTenantTables(tx, p);
        let done = 0;
        for (const table of tables) {
          opts.onProgress?.({ step: 'copy', table: table.name, done, total: tables.length });
          const data = await strategy.exportRows(tx, p, table);
          const gz = gzipSync(data);
          const file = `${String(done).padStart(3, '0')}-${table.name.replace(/[^A-Za-z0-9_-]/g, '_')}.copy.gz`;
          await this.store.put(checkKey(`${prefix}/${file}`), gz);
          entries.push({ name: table.name, columns: table.columns, rows: countCopyRows(data), sha256: sha256(data), file, fileSha256: sha256(gz), bytes: gz.length });
          if (kind === 'export') renderings.push(...await renderTable(tx, p.schema, table, file.replace(/\.copy\.gz$/, '')));
          done++;
        }
        opts.onProgress?.({ step: 'copy', done, total: tables.length });
      });
      for (const r of renderings) await this.store.put(checkKey(`${prefix}/export/${r.key}`), r.body);
      const unsigned: Omit<BackupManifest, 'signature'> = {
        format: BACKUP_FORMAT, id, tenant: { id: t.id, slug: t.slug, isolation: t.isolation }, migrationVersion: version,
        tenantryVersion: PACKAGE_VERSION, createdAt: new Date().toISOString(), compression: 'gzip', tables: entries,
      };
      const manifest: BackupManifest = { ...unsigned, signature: this.sign(unsigned) };
      // the manifest last: a backup without one is unfinished, never listed and never restored
      await this.store.put(`${prefix}/manifest.json`, Buffer.from(JSON.stringify(manifest, null, 2)));
      const rows = entries.reduce((n, e) => n + e.rows, 0);
      const bytes = entries.reduce((n, e) => n + e.bytes, 0);
      await this.core.admin.begin(async (tx) => {
        await tx`
          insert into tenantry_catalog.backups (id, tenant_id, store, location, isolation, migration_version, rows, bytes, manifest, kind)
          values (${id}, ${t.id}, ${this.store.kind}, ${prefix}, ${t.isolation}, ${version}, ${rows}, ${bytes}, ${tx.json(manifest as never)}, ${kind})`;
        await appendAudit(tx, { tenantId: t.id, actor: opts.actor ?? this.core.opts.actor, requestId: opts.requestId, action: kind === 'export' ? 'tenant.exported' : 'tenant.backed_up', target: `backup:${id}`, details: { rows, bytes, tables: entries.length, store: this.store.kind } });
      });
      return await this.get(id);
    } catch (err) {
      await this.store.remove(prefix).catch(() => undefined);
      throw err;
    }
  }

  async list(idOrSlug: string): Promise<BackupInfo[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<BackupRow[]>`select * from tenantry_catalog.backups where tenant_id = ${t.id} order by created_at desc, id`;
    return rows.map(toInfo);
  }

  async get(backupId: string): Promise<BackupInfo> {
    if (typeof backupId !== 'string' || !BACKUP_ID.test(backupId)) throw new TenantryError('BACKUP_NOT_FOUND', `No backup ${JSON.stringify(backupId)}.`);
    const [r] = await this.core.admin<BackupRow[]>`select * from tenantry_catalog.backups where id = ${backupId}`;
    if (!r) throw new TenantryError('BACKUP_NOT_FOUND', `No backup ${backupId}.`);
    return toInfo(r);
  }

  /** The backup's files as one tar stream (`<backup id>/...`), for download. */
  async archive(backupId: string): Promise<{ backup: BackupInfo; filename: string; stream: Readable }> {
    const b = await this.get(backupId);
    return { backup: b, filename: `tenantry-${b.kind}-${b.tenantId}-${b.id}.tar`, stream: tarStream(this.store, `${b.tenantId}/${b.id}`, b.id) };
  }

  /** Removes a backup from the store and the catalog. */
  async delete(backupId: string, who: AuditActor = {}): Promise<void> {
    const b = await this.get(backupId);
    await this.store.remove(`${b.tenantId}/${b.id}`);
    await this.core.admin.begin(async (tx) => {
      await tx`delete from tenantry_catalog.backups where id = ${b.id}`;
      await appendAudit(tx, { tenantId: b.tenantId, actor: who.actor ?? this.core.opts.actor, requestId: who.requestId, action: 'tenant.backup_deleted', target: `backup:${b.id}` });
    });
  }

  /**
   * A tier's backup policy: its tenants are backed up every `everySeconds` by the job runner's
   * backups.scheduled task, and only the newest `keep` scheduled backups of each are kept.
   * `null` removes the policy.
   */
  async setPolicy(tier: string, policy: { everySeconds: number; keep: number } | null, who: AuditActor = {}): Promise<void> {
    const known = this.core.plans.plans.tiers.map((x) => x.name);
    if (!known.includes(tier)) throw new TenantryError('INVALID_TIER', `Unknown tier ${JSON.stringify(tier)}; use one of ${known.join(', ')}.`, { tier });
    if (policy && (!Number.isInteger(policy.everySeconds) || policy.everySeconds < 60 || !Number.isInteger(policy.keep) || policy.keep < 1 || policy.keep > 1000)) {
      throw new TenantryError('INVALID_INPUT', 'A backup policy needs everySeconds (an integer, at least 60) and keep (1-1000).');
    }
    await this.core.admin.begin(async (tx) => {
      if (policy) {
        await tx`
          insert into tenantry_catalog.backup_policies (tier, every_seconds, keep) values (${tier}, ${policy.everySeconds}, ${policy.keep})
          on conflict (tier) do update set every_seconds = excluded.every_seconds, keep = excluded.keep, updated_at = now()`;
      } else {
        await tx`delete from tenantry_catalog.backup_policies where tier = ${tier}`;
      }
      await appendAudit(tx, { tenantId: null, actor: who.actor ?? this.core.opts.actor, requestId: who.requestId, action: 'backup.policy_set', target: `tier:${tier}`, details: { policy } });
    });
  }

  async policies(): Promise<{ tier: string; everySeconds: number; keep: number }[]> {
    const rows = await this.core.admin<{ tier: string; every_seconds: number; keep: number }[]>`select tier, every_seconds, keep from tenantry_catalog.backup_policies order by tier`;
    return rows.map((r) => ({ tier: r.tier, everySeconds: r.every_seconds, keep: r.keep }));
  }

  /** The scheduled task: backs up every live tenant its tier's policy says is due, then applies retention. */
  async runScheduled(now: Date = new Date()): Promise<{ backedUp: number; removed: number }> {
    const due = await this.core.admin<{ id: string }[]>`
      select t.id from tenantry_catalog.tenants t join tenantry_catalog.backup_policies p on p.tier = t.tier
      where t.status in ('active', 'trial', 'suspended')
        and coalesce((select max(b.created_at) from tenantry_catalog.backups b where b.tenant_id = t.id and b.kind = 'scheduled'), '-infinity')
          <= ${now}::timestamptz - make_interval(secs => p.every_seconds)
      order by t.seq`;
    let backedUp = 0;
    for (const { id } of due) {
      try {
        await this.create(id, { kind: 'scheduled', actor: 'schedule' });
        backedUp++;
      } catch (err) {
        // one tenant's failure (deleted meanwhile, its database unreachable) does not stop the others
        this.core.logger.warn({ err, tenantId: id }, 'scheduled backup failed');
      }
    }
    const old = await this.core.admin<{ id: string }[]>`
      select b.id from (
        select b.id, b.tenant_id, row_number() over (partition by b.tenant_id order by b.created_at desc, b.id) as n
        from tenantry_catalog.backups b where b.kind = 'scheduled') b
      join tenantry_catalog.tenants t on t.id = b.tenant_id
      join tenantry_catalog.backup_policies p on p.tier = t.tier
      where b.n > p.keep`;
    let removed = 0;
    for (const { id } of old) {
      await this.delete(id, { actor: 'schedule' });
      removed++;
    }
    return { backedUp, removed };
  }

  /**
   * Reads a backup back and checks every byte before anything is touched: the manifest's signature,
   * each file's checksum, its decompression, the COPY text's checksum and row count.
   */
  async verify(backupId: string): Promise<{ manifest: BackupManifest; data: Map<string, Buffer> }> {
    const b = await this.get(backupId);
    const prefix = `${b.tenantId}/${b.id}`;
    let manifest: BackupManifest;
    try {
      manifest = JSON.parse((await this.store.get(`${prefix}/manifest.json`)).toString('utf8')) as BackupManifest;
    } catch (err) {
      if (err instanceof TenantryError && err.code === 'BACKUP_NOT_FOUND') throw invalid(`its manifest is missing from the ${this.store.kind} store`);
      throw invalid('its manifest is not JSON');
    }
    const { signature, ...unsigned } = manifest ?? ({} as BackupManifest);
    const expected = Buffer.from(this.sign(unsigned), 'hex');
    const given = Buffer.from(typeof signature === 'string' ? signature : '', 'hex');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid('its manifest was changed (the signature does not match)');
    if (manifest.format !== BACKUP_FORMAT || manifest.id !== b.id || manifest.tenant.id !== b.tenantId) throw invalid('its manifest names another backup');
    const data = new Map<string, Buffer>();
    for (const e of manifest.tables) {
      let gz: Buffer;
      try {
        gz = await this.store.get(checkKey(`${prefix}/${e.file}`));
      } catch {
        throw invalid(`the file of table ${e.name} is missing`);
      }
      if (sha256(gz) !== e.fileSha256) throw invalid(`the file of table ${e.name} was changed or truncated`);
      let raw: Buffer;
      try {
        raw = gunzipSync(gz);
      } catch {
        throw invalid(`the file of table ${e.name} does not decompress`);
      }
      if (sha256(raw) !== e.sha256 || countCopyRows(raw) !== e.rows) throw invalid(`the rows of table ${e.name} do not match their checksum`);
      data.set(e.name, raw);
    }
    return { manifest, data };
  }

  /** Restores a backup over its own tenant, replacing the tenant's rows; needs `confirm: true`. */
  async restore(backupId: string, opts: AuditActor & { confirm?: boolean; onProgress?: ProgressFn } = {}): Promise<{ tenant: Tenant; rows: number }> {
    const b = await this.get(backupId);
    if (opts.confirm !== true) throw new TenantryError('RESTORE_CONFIRMATION_REQUIRED', `Restoring backup ${b.id} replaces every row of tenant ${b.tenantId}; pass confirm: true (--yes) to do it.`);
    const verified = await this.verify(backupId);
    const t = await this.tenants.get(b.tenantId);
    const rows = await this.apply(t, verified, true, opts.onProgress);
    await appendAudit(this.core.admin, { tenantId: t.id, actor: opts.actor ?? this.core.opts.actor, requestId: opts.requestId, action: 'tenant.restored_from_backup', target: `backup:${b.id}`, details: { rows, fromIsolation: verified.manifest.tenant.isolation, isolation: t.isolation, migrationVersion: verified.manifest.migrationVersion } });
    return { tenant: t, rows };
  }

  /**
   * A new tenant from a backup (clone), in any mode. The backup is checked before the tenant is
   * created; if filling it fails, the new tenant is removed again.
   */
  async clone(backupId: string, input: AuditActor & { slug: string; name?: string; isolation?: Isolation; tier?: Tier; onProgress?: ProgressFn; onCreated?: (tenantId: string) => Promise<void> }): Promise<{ tenant: Tenant; rows: number }> {
    const verified = await this.verify(backupId);
    // refused before a tenant is made for it
    this.assertNotTooNew(verified.manifest);
    const isolation = input.isolation === undefined ? verified.manifest.tenant.isolation : validateIsolation(input.isolation);
    const created = await this.tenants.create({ slug: input.slug, name: input.name, isolation, tier: input.tier }, { actor: input.actor, requestId: input.requestId });
    try {
      // the caller records the new tenant before it is filled: a crash from here on leaves it to be removed
      await input.onCreated?.(created.id);
      const t = await this.tenants.get(created.id);
      const rows = await this.apply(t, verified, false, input.onProgress);
      await appendAudit(this.core.admin, { tenantId: t.id, actor: input.actor ?? this.core.opts.actor, requestId: input.requestId, action: 'tenant.cloned', target: `backup:${backupId}`, details: { rows, from: verified.manifest.tenant.id, fromIsolation: verified.manifest.tenant.isolation } });
      return { tenant: t, rows };
    } catch (err) {
      await this.tenants.delete(created.id, { hard: true, force: true }).catch((e: unknown) => this.core.logger.warn({ err: e, tenantId: created.id }, 'removing a failed clone failed'));
      throw err;
    }
  }

  /** Backs a tenant up and clones it into a new tenant in one call. */
  async cloneTenant(idOrSlug: string, input: AuditActor & { slug: string; name?: string; isolation?: Isolation; tier?: Tier; onProgress?: ProgressFn }): Promise<{ tenant: Tenant; rows: number; backupId: string }> {
    const b = await this.create(idOrSlug, input);
    return { ...await this.clone(b.id, input), backupId: b.id };
  }

  /**
   * A backup from an older tenant migration version restores into today's tables (a column added
   * since takes its default; one dropped since is left out); one from a newer version than this
   * installation knows is refused: its rows may need columns that do not exist here.
   */
  private assertNotTooNew(manifest: BackupManifest): void {
    const latest = latestVersion(this.core);
    if (manifest.migrationVersion > latest) {
      throw new TenantryError('BACKUP_TOO_NEW', `Backup ${manifest.id} was taken at tenant migration ${manifest.migrationVersion}; this installation has migrations up to ${latest}. Upgrade first.`);
    }
  }

  /**
   * Writes a verified backup into a tenant, all in one transaction of its database: either every row
   * is there, counted, with its sequences continued, or nothing changed (a crash included).
   */
  private async apply(t: Tenant, verified: { manifest: BackupManifest; data: Map<string, Buffer> }, replace: boolean, onProgress?: ProgressFn): Promise<number> {
    const { manifest, data } = verified;
    this.assertNotTooNew(manifest);
    const p = placementOfTenant(t);
    const strategy = STRATEGIES[t.isolation];
    return strategy.openTransaction(this.core, p, async (tx, walls) => {
      const tables = new Map((await strategy.listTenantTables(tx, p)).map((x) => [x.name, x]));
      const staged: { table: TenantTable; columns: TenantColumn[]; stage: string; rows: number }[] = [];
      let i = 0;
      for (const e of manifest.tables) {
        // a table a later migration dropped has nowhere to go; columns likewise (below)
        const table = tables.get(e.name);
        if (!table) continue;
        onProgress?.({ step: 'stage', table: e.name, done: i, total: manifest.tables.length });
        const types = new Map(table.columns.map((c) => [c.name, c.type]));
        // staged with the target's own column types (a type of the source's schema may not exist here)
        const columns = e.columns.map((c) => ({ name: c.name, type: types.get(c.name) ?? 'text' }));
        const stage = `tenantry_restore_${i++}`;
        await strategy.importRows(this.core, tx, p, table, columns, data.get(e.name) ?? Buffer.alloc(0), stage);
        staged.push({ table, columns, stage, rows: e.rows });
      }
      await walls();
      const all = [...tables.values()];
      if (replace) await deleteTableRows(tx, p.schema, all);
      let total = 0;
      for (const s of staged) {
        onProgress?.({ step: 'insert', table: s.table.name, done: total, total: manifest.tables.length });
        total += await insertStagedRows(tx, p.schema, s.table, s.columns, s.stage);
      }
      await continueSequences(tx, p.schema, all);
      const counts = await countTableRows(tx, p.schema, staged.map((s) => s.table));
      for (const s of staged) {
        if (counts[s.table.name] !== s.rows) throw invalid(`table ${s.table.name} holds ${counts[s.table.name]} rows after the restore, the backup ${s.rows}`);
      }
      return total;
    });
  }
}

interface BackupRow {
  id: string; tenant_id: string; kind: BackupInfo['kind']; store: string; isolation: Isolation; migration_version: number;
  rows: string; bytes: string; created_at: Date; manifest: BackupManifest;
}

function toInfo(r: BackupRow): BackupInfo {
  return { id: r.id, tenantId: r.tenant_id, kind: r.kind, store: r.store, isolation: r.isolation, migrationVersion: r.migration_version, rows: Number(r.rows), bytes: Number(r.bytes), createdAt: r.created_at, manifest: r.manifest };
}

export function placementOfTenant(t: Tenant): TenantPlacement {
  return { ...t.placement, id: t.id, isolation: t.isolation };
}

function invalid(why: string): TenantryError {
  return new TenantryError('BACKUP_INVALID', `The backup cannot be restored: ${why}. Nothing was restored.`);
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** COPY text ends every row with a newline (newlines inside values are escaped as \n). */
function countCopyRows(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

/** A person's rendering of one table for an export: JSON Lines and CSV with a header. */
async function renderTable(tx: TransactionSql, schema: string, table: TenantTable, base: string): Promise<{ key: string; body: Buffer }[]> {
  const cols = table.columns.map((c) => ident(c.name)).join(', ');
  const order = table.columns.map((_, i) => i + 1).join(', ');
  const from = `(select ${cols} from ${ident(schema)}.${ident(table.name)} where tenant_id = (select ${CONTEXT_SCHEMA}.current_tenant()) order by ${order}) x`;
  const json = await tx.unsafe<{ j: string }[]>(`select to_jsonb(x)::text as j from ${from}`);
  const csvStream = await tx.unsafe(`copy (select * from ${from}) to stdout with (format csv, header true)`).readable();
  const csv = await readCopyOut(csvStream);
  return [
    { key: `${base}.jsonl`, body: Buffer.from(json.map((r) => `${r.j}\n`).join(''), 'utf8') },
    { key: `${base}.csv`, body: csv },
  ];
}
