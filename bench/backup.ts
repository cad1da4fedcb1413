/**
 * BENCH_ONLY=backup: backup and restore of one tenant of BENCH_BACKUP_ROWS rows (default 1,000,000) in
 * each isolation mode, beside pg_dump and pg_restore of the same table's data in the same process
 * (custom format, compressed like Tenantry's gzip; pg_restore into an empty table of the same shape and
 * indexes in a scratch database). When the client tools are absent, the baseline is COPY out and COPY
 * in of the same rows. Tenantry's restore runs over the tenant with its rows deleted and vacuumed
 * first (untimed), so both restores fill an empty table.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { intFromEnv, ms, progress, ratio, timed, type BenchContext } from './lib.js';
import { SUPERUSER_URL } from '../test/helpers/installation.js';
import type { Isolation } from '../src/index.js';

const run = promisify(execFile);

async function haveTool(name: string): Promise<boolean> {
  try {
    await run(name, ['--version']);
    return true;
  } catch {
    return false;
  }
}

export async function benchBackup({ version, fresh }: BenchContext): Promise<string> {
  const rows = intFromEnv('BENCH_BACKUP_ROWS', 1_000_000, 1);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-bench-backup-'));
  const inst = await fresh({ backupDir: path.join(dir, 'store'), schemaPoolSize: 0, maxConnections: 6 });
  const tools = (await haveTool('pg_dump')) && (await haveTool('pg_restore'));
  const u = new URL(SUPERUSER_URL);
  const suUrl = (db: string): string => inst.urlFor(db, decodeURIComponent(u.username) || 'postgres', decodeURIComponent(u.password));
  const lines: string[] = [];
  try {
    for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
      const t = await inst.tenantry.tenants.create({ slug: `bench-backup-${mode}-${process.pid}`, isolation: mode });
      progress(`backup: inserting ${rows} rows into a ${mode} tenant`);
      for (let done = 0; done < rows; done += 200_000) {
        const n = Math.min(200_000, rows - done);
        await inst.tenantry.withTenant(t.id, (sql) => sql`
          insert into users (email, display_name) select 'user' || g || '@example.com', 'User ' || g from generate_series(${done + 1}::int, ${done + n}::int) g`);
      }
      const { database, schema } = (await inst.tenantry.tenants.get(t.id)).placement;
      const table = `"${schema}".users`;

      progress(`backup: Tenantry backup (${mode})`);
      let backupId = '';
      let bytes = 0;
      const backupMs = await timed(async () => { const b = await inst.tenantry.backups.create(t.id); backupId = b.id; bytes = b.bytes; });
      await inst.tenantry.withTenant(t.id, (sql) => sql`delete from users`);
      // the deleted rows vacuumed away (untimed), so both restores fill a table without dead duplicates
      const vac = postgres(suUrl(database), { max: 1, onnotice: () => {} });
      try { await vac.unsafe(`vacuum ${table}`); } finally { await vac.end(); }
      progress(`backup: Tenantry restore (${mode})`);
      const restoreMs = await timed(() => inst.tenantry.backups.restore(backupId, { confirm: true }));

      // the baseline: the same table's rows, dumped and restored into an empty table of the same shape
      const scratch = `${inst.namespace}_bench_restore`;
      await inst.su.unsafe(`create database "${scratch}"`);
      const src = postgres(suUrl(database), { max: 1, onnotice: () => {} });
      const dst = postgres(suUrl(scratch), { max: 1, onnotice: () => {} });
      let dumpMs: number;
      let loadMs: number;
      let dumpBytes = 0;
      try {
        const [shape] = await src<{ cols: string }[]>`
          select string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' order by attnum) as cols
          from pg_attribute where attrelid = ${table}::regclass and attnum > 0 and not attisdropped`;
        const indexes = await src<{ def: string }[]>`select pg_get_indexdef(indexrelid) as def from pg_index where indrelid = ${table}::regclass`;
        await dst.unsafe(`create schema "${schema}"; create table ${table} (${shape!.cols}); ${indexes.map((i) => `${i.def};`).join(' ')}`);
        const file = path.join(dir, `${mode}.dump`);
        if (tools) {
          progress(`backup: pg_dump and pg_restore (${mode})`);
          dumpMs = await timed(() => run('pg_dump', ['-d', suUrl(database), '-Fc', '--data-only', '-t', table, '-f', file], { maxBuffer: 1 << 26 }));
          dumpBytes = statSync(file).size;
          loadMs = await timed(() => run('pg_restore', ['-d', suUrl(scratch), '--data-only', '--single-transaction', file], { maxBuffer: 1 << 26 }));
        } else {
          progress(`backup: COPY out and in (${mode}; no pg_dump here)`);
          let data = Buffer.alloc(0);
          dumpMs = await timed(async () => {
            const out = await src.unsafe(`copy ${table} to stdout`).readable();
            const chunks: Buffer[] = [];
            for await (const c of out) chunks.push(c as Buffer);
            (out as unknown as { _read(n: number): void })._read(0);
            data = Buffer.concat(chunks);
          });
          dumpBytes = data.length;
          loadMs = await timed(async () => {
            const w = await dst.unsafe(`copy ${table} from stdin`).writable();
            await new Promise<void>((resolve, reject) => { w.on('error', reject); w.on('finish', resolve); w.end(data); });
          });
        }
        const [loaded] = await dst<{ n: string }[]>`select count(*) as n from ${dst(schema)}.users`;
        if (Number(loaded!.n) < rows) throw new Error(`the baseline restored ${loaded!.n} rows, expected ${rows}`);
      } finally {
        await src.end();
        await dst.end();
        await inst.su.unsafe(`drop database if exists "${scratch}" with (force)`);
      }
      const perSec = (n: number, msTaken: number): string => `${Math.round(n / (msTaken / 1000)).toLocaleString('en-US')} rows/s`;
      lines.push(`| ${mode} | ${rows.toLocaleString('en-US')} | ${ms(backupMs)} (${perSec(rows, backupMs)}, ${(bytes / 1e6).toFixed(1)} MB) | ${ms(dumpMs)} (${(dumpBytes / 1e6).toFixed(1)} MB) | ${ratio(backupMs, dumpMs)} | ${ms(restoreMs)} (${perSec(rows, restoreMs)}) | ${ms(loadMs)} | ${ratio(restoreMs, loadMs)} |`);
      progress(`backup: ${lines[lines.length - 1]}`);
      await inst.tenantry.tenants.delete(t.id, { hard: true, force: true });
    }
  } finally {
    await inst.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = tools ? ['pg_dump -Fc --data-only', 'pg_restore --data-only'] : ['COPY out', 'COPY in'];
  return [
    `### Backup and restore of one tenant (PostgreSQL ${version}, ${rows.toLocaleString('en-US')} rows of the example \`users\` table)`,
    '',
    `| mode | rows | Tenantry backup | ${base[0]} | ratio | Tenantry restore | ${base[1]} | ratio |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...lines,
    '',
    'One run per mode, both sides in this process on the same data. Tenantry\'s backup is the tenant\'s rows read inside its walls (one snapshot), gzip, checksummed and signed; its restore checks every checksum, stages the rows and inserts them through the row-level policies in one transaction, then counts them.',
  ].join('\n');
}
