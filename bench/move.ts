/**
 * BENCH_ONLY=move: an online move of one tenant of BENCH_MOVE_ROWS rows (default 1,000,000) from
 * pooled to database mode and back to schema mode, while a writer keeps writing to it: the read-only
 * window (freeze to switch) and the total time, beside a plain COPY of the same rows into a fresh
 * database (COPY TO out of the pooled table, COPY FROM into a table of the same shape), in this process.
 */
import postgres from 'postgres';
import { intFromEnv, ms, progress, ratio, timed, type BenchContext } from './lib.js';
import { SUPERUSER_URL } from '../test/helpers/installation.js';
import { isTenantryError, type Isolation } from '../src/index.js';

export async function benchMove({ inst, version }: BenchContext): Promise<string> {
  const rows = intFromEnv('BENCH_MOVE_ROWS', 1_000_000, 1);
  const t = await inst.tenantry.tenants.create({ slug: `bench-move-${process.pid}`, isolation: 'pooled' });
  progress(`move: inserting ${rows} rows`);
  for (let done = 0; done < rows; done += 200_000) {
    const n = Math.min(200_000, rows - done);
    await inst.tenantry.withTenant(t.id, (sql) => sql`
      insert into users (email, display_name) select 'user' || g || '@example.com', 'User ' || g from generate_series(${done + 1}::int, ${done + n}::int) g`);
  }

  // the baseline: the same rows, COPY out of the pooled table and COPY into a fresh database
  const u = new URL(SUPERUSER_URL);
  const suUrl = (db: string): string => inst.urlFor(db, u.username || 'postgres', decodeURIComponent(u.password));
  const scratch = `${inst.namespace}_bench_copy`;
  await inst.su.unsafe(`create database "${scratch}"`);
  const from = postgres(suUrl(`${inst.namespace}_shared`), { max: 1, onnotice: () => {} });
  const to = postgres(suUrl(scratch), { max: 1, onnotice: () => {} });
  let copyMs: number;
  try {
    await to.unsafe(`create table users (id uuid primary key, email text not null unique, display_name text, created_at timestamptz not null)`);
    progress('move: plain COPY baseline');
    copyMs = await timed(async () => {
      const out = await from.unsafe(`copy (select id, email, display_name, created_at from pooled.users where tenant_id = '${t.id}') to stdout`).readable();
      const chunks: Buffer[] = [];
      for await (const c of out) chunks.push(c as Buffer);
      (out as unknown as { _read(n: number): void })._read(0);
      const w = await to.unsafe('copy users (id, email, display_name, created_at) from stdin').writable();
      await new Promise<void>((resolve, reject) => { w.on('error', reject); w.on('finish', resolve); w.end(Buffer.concat(chunks)); });
    });
  } finally {
    await from.end();
    await to.end();
    await inst.su.unsafe(`drop database if exists "${scratch}" with (force)`);
  }

  const lines: string[] = [];
  for (const target of ['database', 'schema'] as Isolation[]) {
    // a writer keeps writing through the move: what it was told, and how often it was refused
    let stop = false;
    let written = 0;
    let refused = 0;
    let n = 0;
    const writer = (async () => {
      while (!stop) {
        try {
          await inst.tenantry.withTenant(t.id, (sql) => sql`insert into users (email) values (${`writer-${target}-${++n}@example.com`})`);
          written++;
        } catch (err) {
          if (!isTenantryError(err, 'TENANT_MOVING')) throw err;
          refused++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    })();
    progress(`move: ${(await inst.tenantry.tenants.get(t.id)).isolation} -> ${target}`);
    const r = await inst.tenantry.tenants.move(t.id, { to: target }).finally(async () => { stop = true; await writer; });
    lines.push(`| ${r.from} -> ${r.to} | ${rows.toLocaleString('en-US')} + writer | ${ms(r.readOnlyMs)} | ${ms(r.totalMs)} | ${ms(copyMs)} | ${ratio(r.totalMs, copyMs)} | ${written} acknowledged, ${refused} refused (TENANT_MOVING) |`);
  }

  return [
    `### Online move between isolation modes (PostgreSQL ${version})`,
    '',
    `One tenant of ${rows.toLocaleString('en-US')} rows (users: uuid, email, name, timestamptz) moved while one writer inserts continuously. Read-only window: from the freeze of the source to the catalog switch (catch-up of the rows written during the copy, counts and checksums). Baseline: a plain COPY of the same rows out of the pooled table into a fresh database, no verification, no writes.`,
    '',
    '| move | rows | read-only window | total move | plain COPY | total / COPY | writer during the move |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...lines,
  ].join('\n');
}
