/**
 * Environment variables are read in one place, src/config.ts: the CLI's LOG_LEVEL and TENANTRY_PLANS
 * go through it (checked like the server's, and read from the config file beneath the environment).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliOptions, configuredEnv, childProcessEnv } from '../src/config.js';
import { isTenantryError } from '../src/errors.js';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return /\.(ts|tsx)$/.test(name) && !name.endsWith('.d.ts') ? [p] : [];
  });
}

test('no module of src/ but src/config.ts reads process.env (comments aside)', () => {
  const readers: string[] = [];
  for (const file of sources(SRC)) {
    if (file === path.join(SRC, 'config.ts')) continue;
    readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
      if (/^\s*(\*|\/\/|\/\*)/.test(line)) return;
      if (/process\.env\b/.test(line)) readers.push(`${path.relative(SRC, file)}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(readers, [], 'every environment variable is read in src/config.ts (and listed in the README)');
});

test('the CLI\'s LOG_LEVEL is checked like the server\'s: a wrong one is INVALID_CONFIG, not a pino crash', () => {
  assert.throws(() => cliOptions({ LOG_LEVEL: 'verbose' }), (e: unknown) => isTenantryError(e, 'INVALID_CONFIG') && /LOG_LEVEL must be one of/.test(e.message));
  assert.throws(() => cliOptions({ LOG_LEVEL: 'info\u0000' }), (e: unknown) => isTenantryError(e, 'INVALID_CONFIG'));
  assert.deepEqual(cliOptions({}), { logLevel: 'warn', workerLogLevel: 'info', plansFile: 'tenantry.plans.json' });
  assert.equal(cliOptions({ LOG_LEVEL: 'debug' }).logLevel, 'debug');
  assert.equal(cliOptions({ LOG_LEVEL: 'debug' }).workerLogLevel, 'debug');
});

test('TENANTRY_PLANS and LOG_LEVEL come from the config file for the CLI too, the environment winning', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-cli-config-'));
  try {
    writeFileSync(path.join(dir, 'tenantry.config.json'), JSON.stringify({ TENANTRY_PLANS: 'plans/from-file.json', LOG_LEVEL: 'error' }));
    assert.deepEqual(cliOptions(configuredEnv({}, dir)), { logLevel: 'error', workerLogLevel: 'error', plansFile: 'plans/from-file.json' });
    assert.deepEqual(cliOptions(configuredEnv({ TENANTRY_PLANS: 'env.json', LOG_LEVEL: 'trace' }, dir)), { logLevel: 'trace', workerLogLevel: 'trace', plansFile: 'env.json' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('child processes (initdb, postgres) get this process\'s environment with English messages', () => {
  const env = childProcessEnv();
  assert.equal(env.LC_MESSAGES, 'C');
  assert.equal(env.PATH, process.env.PATH);
});
