/**
 * Prometheus default metrics under their stock names (no double prefix), the Grafana dashboard
 * reading only metrics the server exposes, and the config file read beneath the environment.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { configuredEnv, envOptions, serverOptions } from '../src/config.js';
import { isTenantryError } from '../src/errors.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let inst: TestInstallation;
let app: FastifyInstance;
let exposition = '';
const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-config-'));

before(async () => {
  inst = await freshInstallation();
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  await app.inject({ method: 'GET', url: '/healthz' });
  exposition = (await app.inject({ method: 'GET', url: '/metrics' })).body;
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

test('default metrics carry their stock names, as stock Node.js dashboards expect', () => {
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds']) {
    assert.match(exposition, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exposed`);
  }
  assert.doesNotMatch(exposition, /tenantry_process_/, 'no double prefix (tenantry_process_process_cpu_seconds_total)');
  assert.match(exposition, /^# TYPE tenantry_http_requests_total counter/m, "Tenantry's own metrics keep their prefix");
});

test('the Grafana dashboard reads only metrics the server exposes', () => {
  const dash = JSON.parse(readFileSync(path.join(ROOT, 'deploy', 'grafana', 'tenantry-dashboard.json'), 'utf8')) as {
    uid: string; title: string; panels: { title: string; targets: { expr: string }[] }[];
  };
  assert.ok(dash.uid && dash.title && dash.panels.length >= 10);
  const types = new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)/gm)].map((m) => [m[1]!, m[2]!]));
  let checked = 0;
  for (const panel of dash.panels) {
    assert.ok(panel.targets.length > 0, `${panel.title} has a query`);
    for (const { expr } of panel.targets) {
      for (const [name] of expr.matchAll(/\b(?:tenantry|process|nodejs)_[a-z0-9_]+/g)) {
        const base = name.replace(/_(bucket|count|sum)$/, '');
        const known = types.has(name) || (types.get(base) === 'histogram' && base !== name);
        assert.ok(known, `panel "${panel.title}" queries ${name}, which /metrics does not expose`);
        checked++;
      }
    }
  }
  assert.ok(checked >= dash.panels.length);
});

test('a config file is read beneath the environment, and the environment wins', () => {
  const file = path.join(dir, 'tenantry.config.json');
  writeFileSync(file, JSON.stringify({ TENANTRY_NAMESPACE: 'fromfile', PORT: 9123, TENANTRY_MAX_CONNECTIONS: 12, TENANTRY_METRICS_TENANT_LABELS: true, HOST: '0.0.0.0' }));
  // found in the working folder by its default name
  const env = configuredEnv({ PORT: '9999' }, dir);
  assert.equal(env.TENANTRY_NAMESPACE, 'fromfile');
  assert.equal(env.PORT, '9999', 'the environment wins over the file');
  const opts = envOptions(env);
  assert.equal(opts.namespace, 'fromfile');
  assert.equal(opts.maxConnections, 12);
  const server = serverOptions(env);
  assert.equal(server.port, 9999);
  assert.equal(server.host, '0.0.0.0');
  assert.equal(server.tenantLabels, true);
  // named by TENANTRY_CONFIG, from anywhere
  const other = path.join(dir, 'other.json');
  writeFileSync(other, JSON.stringify({ DATABASE_URL: 'postgres://file@db/x' }));
  assert.equal(configuredEnv({ TENANTRY_CONFIG: other }, os.tmpdir()).DATABASE_URL, 'postgres://file@db/x');
  assert.equal(configuredEnv({ TENANTRY_CONFIG: other, DATABASE_URL: 'postgres://env@db/y' }, os.tmpdir()).DATABASE_URL, 'postgres://env@db/y');
  // no file: the environment as it is
  const bare = { PORT: '1' };
  assert.equal(configuredEnv(bare, os.tmpdir()), bare);
});

test('a config file that cannot be used is refused with INVALID_CONFIG, naming the problem', () => {
  const cases: [string, string, RegExp][] = [
    ['not-json.json', '{"TENANTRY_NAMESPACE": ', /could not be read as JSON/],
    ['array.json', '["TENANTRY_NAMESPACE"]', /one JSON object/],
    ['typo.json', '{"DATABSE_URL": "postgres://x"}', /"DATABSE_URL", which is not a Tenantry setting/],
    ['nested.json', '{"TENANTRY_NAMESPACE": {"a": 1}}', /values are strings, numbers or booleans/],
    ['self.json', '{"TENANTRY_CONFIG": "elsewhere.json"}', /not a Tenantry setting/],
  ];
  for (const [name, text, message] of cases) {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    assert.throws(() => configuredEnv({ TENANTRY_CONFIG: file }), (err: unknown) => isTenantryError(err) && err.code === 'INVALID_CONFIG' && message.test(err.message), name);
  }
  assert.throws(() => configuredEnv({ TENANTRY_CONFIG: path.join(dir, 'missing.json') }), (err: unknown) => isTenantryError(err) && err.code === 'INVALID_CONFIG', 'a named file that is missing');
  // a bad value from the file is refused like the same value from the environment
  writeFileSync(path.join(dir, 'bad-port.json'), JSON.stringify({ PORT: 'eighty' }));
  assert.throws(() => serverOptions(configuredEnv({ TENANTRY_CONFIG: path.join(dir, 'bad-port.json') })), (err: unknown) => isTenantryError(err) && err.code === 'INVALID_CONFIG');
});
