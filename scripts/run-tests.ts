/**
 * Runs the whole test suite with node's built-in runner. Uses DATABASE_URL when set; otherwise starts
 * the embedded PostgreSQL (data under the temp folder, reused between runs) and points the tests at it.
 * Each test file then makes its own throwaway databases and roles on that server and removes them.
 */
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { startEmbedded } from '../src/db/embedded.js';
import { silentLogger } from '../src/logger.js';

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) return entry === 'helpers' ? [] : testFiles(full);
    return entry.endsWith('.test.ts') ? [full] : [];
  });
}

const requested = process.argv.slice(2);
const files = requested.length ? requested : testFiles('test').sort();
const env = { ...process.env };
let stop: (() => Promise<void>) | undefined;
if (!env.DATABASE_URL) {
    // Under the system temp folder rather than the checkout: when the suite runs as root the server runs
  // as the postgres user, which may not be able to enter the checkout's parent folders.
  const dataDir = path.resolve(env.TENANTRY_TEST_DATA_DIR
    ?? path.join(os.tmpdir(), `tenantry-test-${createHash('sha256').update(process.cwd()).digest('hex').slice(0, 12)}`));
  process.stdout.write(`DATABASE_URL is not set: starting the embedded PostgreSQL in ${dataDir}\n`);
  const server = await startEmbedded(dataDir, 54339, silentLogger);
  env.DATABASE_URL = server.url;
  stop = server.stop;
}
const concurrency = env.TEST_CONCURRENCY ?? '2';
// a test that hangs fails after 10 minutes instead of holding the run forever (a test may set its own)
const child = spawn(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files], { stdio: 'inherit', env });
const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)));
await stop?.();
process.exit(code);
