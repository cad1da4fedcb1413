/**
 * The pieces of a chaos run shared by test/chaos.test.ts and the `chaos` benchmark: a Tenantry server
 * process (`tenantry serve`) on a PostgreSQL cluster of its own, both of which may be kill -9'd and
 * started again, and an HTTP client that records every answer (status, time, problem+json or not).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { freePort, type PgCluster } from './pg-cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Answer { status: number; ms: number; body: any; problem: boolean; retryAfter: number | undefined }

export interface ServerProcess {
  port: number;
  token: string;
  /** unexpected exits (the process ended without the harness killing it), with the log's tail */
  unexpectedExits: string[];
  start(): Promise<void>;
  /** kill -9 */
  kill(): Promise<void>;
  stop(): Promise<void>;
  alive(): boolean;
  log(): string;
  call(method: string, url: string, body?: unknown, headers?: Record<string, string>, timeoutMs?: number): Promise<Answer | 'no-answer' | 'connection-error'>;
  waitReady(timeoutMs: number): Promise<number>;
}

export async function startServerProcess(cluster: PgCluster, env: Record<string, string> = {}): Promise<ServerProcess> {
  const port = await freePort();
  const token = `chaos-operator-${randomBytes(12).toString('hex')}`;
  const logFile = path.join(os.tmpdir(), `tenantry-chaos-${port}-${randomBytes(4).toString('hex')}.log`);
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let killing = false;
  const unexpectedExits: string[] = [];
  const log = (): string => { try { return readFileSync(logFile, 'utf8'); } catch { return ''; } };

  const start = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    killing = false;
    const c = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'serve'], {
      cwd: ROOT,
      stdio: ['ignore', fd, fd],
      env: {
        ...process.env, DATABASE_URL: cluster.url, PORT: String(port), HOST: '127.0.0.1', TENANTRY_ADMIN_KEY: token,
        TENANTRY_NAMESPACE: 'chaos', TENANTRY_SCHEMA_POOL_SIZE: '1', TENANTRY_REPAIR_AFTER_SECONDS: '5',
        TENANTRY_REQUEST_TIMEOUT_MS: '5000', TENANTRY_MAX_CONNECTIONS: '20', LOG_LEVEL: 'warn', ...env,
      },
    });
    closeSync(fd);
    child = c;
    exited = new Promise((resolve) => c.once('exit', (code, signal) => {
      if (!killing) unexpectedExits.push(`exit ${code ?? signal}: ${log().slice(-3000)}`);
      resolve();
    }));
  };

  const call: ServerProcess['call'] = async (method, url, body, headers = {}, timeoutMs = 15_000) => {
    const started = Date.now();
    try {
      const res = await fetch(`http://127.0.0.1:${port}${url}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      let parsed: any = text;
      try { parsed = JSON.parse(text); } catch { /* not JSON */ }
      const ra = res.headers.get('retry-after');
      return {
        status: res.status, ms: Date.now() - started, body: parsed,
        problem: (res.headers.get('content-type') ?? '').startsWith('application/problem+json') && typeof parsed?.code === 'string',
        retryAfter: ra ? Number(ra) : undefined,
      };
    } catch (err) {
      const name = (err as Error).name;
      return name === 'TimeoutError' || name === 'AbortError' ? 'no-answer' : 'connection-error';
    }
  };

  const waitReady = async (timeoutMs: number): Promise<number> => {
    const started = Date.now();
    while (Date.now() - started < timeoutMs) {
      const r = await call('GET', '/readyz', undefined, {}, 2_000);
      if (typeof r === 'object' && r.status === 200) return Date.now() - started;
      await sleep(50);
    }
    throw new Error(`the server was not ready within ${timeoutMs} ms:\n${log().slice(-3000)}`);
  };

  await start();
  return {
    port, token, unexpectedExits, start, call, waitReady, log,
    alive: () => Boolean(child && child.exitCode === null && child.signalCode === null),
    kill: async () => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      killing = true;
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      killing = true;
      child.kill('SIGINT');
      const t = setTimeout(() => child?.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}
