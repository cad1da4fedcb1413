import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { freePort } from './pg-cluster.js';
import os from 'node:os';
import path from 'node:path';

const SUPERUSER_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * A PgBouncer of a test's own (Debian's package, 1.18 here), in transaction mode on a free loopback
 * port in front of the server of DATABASE_URL. Clients authenticate with SCRAM against the server's
 * own verifiers (auth_query as the superuser), so Tenantry's derived passwords are checked as they
 * would be in production.
 */
export interface PgBouncer {
  port: number;
  /** the same URL with PgBouncer's host and port */
  via(url: string): string;
  /** PgBouncer's log so far (for a failing test's message) */
  log(): string;
  stop(): Promise<void>;
}

export const PGBOUNCER_BIN = process.env.PGBOUNCER_BIN ?? '/usr/sbin/pgbouncer';


async function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * poolSize: server connections per database and user; `databases` gives some databases a pool of their
 * own size (the catalog: Tenantry's provisioning holds one catalog transaction while it writes the
 * audit entry on another).
 */
export async function startPgBouncer(opts: { poolSize?: number; maxClientConn?: number; databases?: Record<string, number> } = {}): Promise<PgBouncer> {
  const server = new URL(SUPERUSER_URL);
  const superuser = decodeURIComponent(server.username || 'postgres');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-pgbouncer-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const ini = path.join(dir, 'pgbouncer.ini');
  writeFileSync(path.join(dir, 'userlist.txt'), `"${superuser}" "${decodeURIComponent(server.password)}"\n`);
  const host = `host=${server.hostname} port=${server.port || 5432}`;
  writeFileSync(ini, `[databases]
${Object.entries(opts.databases ?? {}).map(([db, size]) => `${db} = ${host} pool_size=${size}\n`).join('')}* = ${host}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = ${opts.poolSize ?? 4}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = ${opts.maxClientConn ?? 2000}
max_db_connections = 0
auth_type = scram-sha-256
auth_file = ${dir}/userlist.txt
auth_user = ${superuser}
auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename = $1
server_reset_query =
server_check_delay = 10
;; idle server connections go soon: a suite opens many tenant databases on a server shared with other suites
server_idle_timeout = 3
query_wait_timeout = 60
;; as tenantry pgbouncer-config writes it: a failed server login (53300 on a busy shared server, a
;; healed password) would otherwise hold that pool's clients for 15 s (the default)
server_login_retry = ${Number(process.env.PGBOUNCER_LOGIN_RETRY ?? 1)}
ignore_startup_parameters = extra_float_digits
logfile = ${dir}/pgbouncer.log
pidfile = ${dir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
admin_users = ${superuser}
stats_users = ${superuser}
`);
  return launch(dir, ini, port);
}

/**
 * Starts PgBouncer from a given ini and userlist (Tenantry's own `pgbouncer-config` output): the
 * userlist path is made absolute, and the log, pid file and socket directory go to a temp folder.
 */
export async function startPgBouncerFrom(iniText: string, userlist: string): Promise<PgBouncer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-pgbouncer-'));
  chmodSync(dir, 0o777);
  const port = Number(/^listen_port = (\d+)$/m.exec(iniText)?.[1]);
  const ini = path.join(dir, 'pgbouncer.ini');
  writeFileSync(path.join(dir, 'userlist.txt'), userlist);
  writeFileSync(ini, iniText.replace(/^auth_file = .*$/m, `auth_file = ${dir}/userlist.txt`)
    + `unix_socket_dir =\nlogfile = ${dir}/pgbouncer.log\npidfile = ${dir}/pgbouncer.pid\n`);
  return launch(dir, ini, port);
}

async function launch(dir: string, ini: string, port: number): Promise<PgBouncer> {
  for (const f of ['pgbouncer.ini', 'userlist.txt']) chmodSync(path.join(dir, f), 0o644);
  // PgBouncer refuses to run as root: drop to the postgres user then
  const args = process.getuid?.() === 0 ? ['-u', 'postgres', ini] : [ini];
  const child: ChildProcess = spawn(PGBOUNCER_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const log = (): string => {
    try { return readFileSync(path.join(dir, 'pgbouncer.log'), 'utf8') + stderr; } catch { return stderr; }
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}): ${log()}`);
    if (await accepting(port)) break;
    if (i > 100) { child.kill('SIGKILL'); throw new Error(`pgbouncer did not listen on ${port}: ${log()}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    via(url: string): string {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGINT');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
