/** Shared helpers of the benchmark sections. */
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { startEmbedded } from '../src/db/embedded.js';
import { silentLogger } from '../src/logger.js';
import type { TestInstallation } from '../test/helpers/installation.js';

export function intFromEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

export const t0 = performance.now();
export const progress = (msg: string): void => { process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${msg}\n`); };

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** nearest-rank percentile */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)]!;
}

export const ms = (x: number): string => `${x.toFixed(1)} ms`;


export const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;

/** Alternates two operations N times (after warm-up) so both share the machine's noise; returns their latencies. */
export async function interleave(n: number, warmup: number, a: (i: number) => Promise<unknown>, b: (i: number) => Promise<unknown>): Promise<{ a: number[]; b: number[] }> {
  const out = { a: [] as number[], b: [] as number[] };
  for (let i = 0; i < warmup + n; i++) {
    let ta: number;
    let tb: number;
    if (i % 2 === 0) { ta = await timed(() => a(i)); tb = await timed(() => b(i)); } else { tb = await timed(() => b(i)); ta = await timed(() => a(i)); }
    if (i >= warmup) { out.a.push(ta); out.b.push(tb); }
  }
  return out;
}

export interface BenchContext {
  inst: TestInstallation;
  version: string;
  /** a fresh throwaway installation, for sections that need their own (removed by the caller) */
  fresh: typeof import('../test/helpers/installation.js').freshInstallation;
}

/** DATABASE_URL (a superuser URL) when set; otherwise the embedded PostgreSQL. */
export async function ensureServer(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.DATABASE_URL) return undefined;
  const dataDir = path.resolve(process.env.TENANTRY_BENCH_DATA_DIR
    ?? path.join(os.tmpdir(), `tenantry-bench-${createHash('sha256').update(process.cwd()).digest('hex').slice(0, 12)}`));
  progress(`DATABASE_URL is not set: starting the embedded PostgreSQL in ${dataDir}`);
  const server = await startEmbedded(dataDir, 54349, silentLogger);
  process.env.DATABASE_URL = server.url;
  return server.stop;
}
