import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import type { FastifyInstance } from 'fastify';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { buildCli } from '../src/cli/program.js';
import type { Command } from 'commander';

/**
 * End to end: the real HTTP server on a real socket, and the real CLI in child processes against the
 * same installation. Every CLI change is seen by the server at once (its tenant cache is told by
 * LISTEN/NOTIFY); exit codes say what kind of failure happened; --json output parses.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const TENANT_KEYS = ['createdAt', 'id', 'isolation', 'metadata', 'name', 'slug', 'status', 'suspendedReason', 'tier', 'trialEndsAt', 'updatedAt'];

// JSON printed by the CLI and the server, checked field by field
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let inst: TestInstallation;
let app: FastifyInstance;
let base: string;

before(async () => {
  inst = await freshInstallation({ adminKey: ADMIN });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  base = await app.listen({ port: 0, host: '127.0.0.1' });
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
});

interface Run { code: number | null; stdout: string; stderr: string }

function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, LOG_LEVEL: 'silent', ...extra };
  for (const k of ['NODE_TEST_CONTEXT', 'TENANTRY_ADMIN_KEY', 'TENANTRY_KEY_PEPPER', 'REDIS_URL', 'PORT', 'HOST']) if (!(k in extra)) delete env[k];
  return env;
}

function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: cliEnv(extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tenantry ${args.join(' ')} timed out\n${stdout}\n${stderr}`)); }, 60_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

function json(r: Run, what: string): Json {
  try {
    return JSON.parse(r.stdout);
  } catch {
    assert.fail(`${what}: --json output does not parse: ${r.stdout}\n${r.stderr}`);
  }
}

function ok(r: Run, what: string): Json {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  return json(r, what);
}

/** A failure: its exit code, and with --json the error's code on stdout. */
function failed(r: Run, exit: number, code: string | undefined, what: string): void {
  assert.equal(r.code, exit, `${what}: expected exit ${exit}, got ${r.code}\n${r.stdout}\n${r.stderr}`);
  if (code) {
    const body = json(r, what);
    assert.equal(body.error?.code, code, `${what}: ${r.stdout}`);
    assert.equal(typeof body.error.message, 'string');
  }
}

async function http(method: string, path: string, token: string = ADMIN, body?: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** The server's view of a tenant's key, polled briefly: the change arrives by NOTIFY, well inside the 5 s cache TTL. */
async function keyAnswers(key: string, status: number): Promise<Json> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const r = await http('GET', '/v1/tenant', key);
    if (r.status === status || Date.now() > deadline) {
      assert.equal(r.status, status, `the server answered the key with ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
}

const HELP_COMMANDS = [
  ['serve'], ['tenants', 'create'], ['tenants', 'list'], ['tenants', 'show'], ['tenants', 'update'], ['tenants', 'suspend'],
  ['tenants', 'activate'], ['tenants', 'delete'], ['tenants', 'restore'], ['doctor'], ['repair'],
];

function assertExamples(help: string, command: string[], what: string): void {
  assert.match(help, /^Usage: tenantry /m, what);
  const m = /^Examples?:\n((?: {2}.*\n?)+)/m.exec(help);
  assert.ok(m, `${what} has an Examples section:\n${help}`);
  assert.ok(m[1]!.split('\n').some((l) => l.includes(`tenantry ${command.join(' ')}`)), `${what}: the examples use the command itself:\n${m[1]}`);
}

test('--help of every tenants, doctor, repair and serve command prints an Examples section', async () => {
  // the real binary, for one of them (each process costs seconds of start-up)
  const real = await cli(['tenants', 'create', '--help']);
  assert.equal(real.code, 0, `tenants create --help: exit ${real.code} ${real.stderr}`);
  assertExamples(real.stdout, ['tenants', 'create'], 'tenantry tenants create --help (process)');
  // and every one through the same program object the binary builds, capturing what --help writes
  for (const command of HELP_COMMANDS) {
    const program = buildCli();
    let cmd: Command = program;
    for (const name of command) {
      const next = cmd.commands.find((c) => c.name() === name);
      assert.ok(next, `command ${command.join(' ')} exists`);
      cmd = next;
    }
    let out = '';
    cmd.configureOutput({ writeOut: (str) => { out += str; } });
    cmd.outputHelp();
    assertExamples(out, command, `tenantry ${command.join(' ')} --help`);
  }
});

test('tenants: create, list, show, suspend, activate, delete, restore and hard delete, seen by the server over its socket', async () => {
  const slug = 'e2e-acme';
  const { apiKey: firstKey, ...created } = ok(await cli(['tenants', 'create', slug, '--isolation', 'schema', '--tier', 'enterprise', '--name', 'ACME Ltd', '--metadata', '{"plan":"gold"}', '--json']), 'create');
  assert.deepEqual(Object.keys(created).sort(), TENANT_KEYS);
  // the tenant's first API key is printed this once (it is never shown again), and it works
  assert.match(firstKey.key, /^tnt_live_/);
  const self = await http('GET', '/v1/tenant', firstKey.key);
  assert.equal(self.status, 200, 'the printed first key authenticates');
  assert.equal(self.body.slug, slug);
  // and in the table output too
  const asTable = await cli(['tenants', 'create', 'e2e-acme-table']);
  assert.equal(asTable.code, 0, asTable.stderr);
  const printed = /\b(tnt_live_\S+)/.exec(asTable.stdout)?.[1];
  assert.ok(printed, `the table output shows the first key:\n${asTable.stdout}`);
  assert.equal((await http('GET', '/v1/tenant', printed)).status, 200, 'the key from the table output authenticates');
  assert.equal(created.slug, slug);
  assert.equal(created.status, 'active');
  assert.equal(created.isolation, 'schema');
  assert.equal(created.tier, 'enterprise');
  assert.equal(created.name, 'ACME Ltd');
  assert.deepEqual(created.metadata, { plan: 'gold' });
  const seen = await http('GET', `/v1/tenants/${slug}`);
  assert.equal(seen.status, 200);
  assert.deepEqual(seen.body, created, 'the server answers with the tenant the CLI printed');
  const [audit] = await inst.su<{ actor: string }[]>`select actor from tenantry_catalog.audit_log where tenant_id = ${created.id} and action = 'tenant.created'`;
  assert.equal(audit?.actor, 'cli');

  // a key for it, made over HTTP, works until the CLI suspends the tenant
  const key = await http('POST', `/v1/tenants/${slug}/api-keys`, ADMIN, { name: 'e2e', scopes: ['read', 'sql'] });
  assert.equal(key.status, 201);
  assert.equal((await keyAnswers(key.body.key, 200)).id, created.id);

  const [listed, human] = await Promise.all([cli(['tenants', 'list', '--isolation', 'schema', '--json']), cli(['tenants', 'show', created.id])]);
  const page = ok(listed, 'list');
  assert.deepEqual(Object.keys(page).sort(), ['items', 'nextCursor']);
  assert.deepEqual(page.items.find((t: Json) => t.id === created.id), created);
  for (const t of page.items) assert.equal(t.isolation, 'schema');
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^ID\s+SLUG\s+NAME\s+STATUS/m);
  assert.ok(human.stdout.includes(created.id) && human.stdout.includes('ACME Ltd'));
  assert.throws(() => JSON.parse(human.stdout), 'without --json the output is a table');

  const suspended = ok(await cli(['tenants', 'suspend', slug, '--reason', 'payment overdue', '--json']), 'suspend');
  assert.equal(suspended.status, 'suspended');
  assert.equal(suspended.suspendedReason, 'payment overdue');
  assert.equal((await http('GET', `/v1/tenants/${slug}`)).body.status, 'suspended');
  assert.equal((await keyAnswers(key.body.key, 403)).code, 'TENANT_SUSPENDED');
  failed(await cli(['tenants', 'suspend', slug, '--reason', 'again', '--json']), 4, 'INVALID_TRANSITION', 'suspend twice');

  const active = ok(await cli(['tenants', 'activate', slug, '--json']), 'activate');
  assert.equal(active.status, 'active');
  assert.equal(active.suspendedReason, null);
  assert.equal((await http('GET', `/v1/tenants/${slug}`)).body.status, 'active');
  assert.equal((await keyAnswers(key.body.key, 200)).status, 'active');

  const deleted = ok(await cli(['tenants', 'delete', slug, '--json']), 'delete');
  assert.equal(deleted.status, 'deleted');
  assert.equal((await http('GET', `/v1/tenants/${slug}`)).body.status, 'deleted');
  assert.equal((await keyAnswers(key.body.key, 410)).code, 'TENANT_DELETED');

  const restored = ok(await cli(['tenants', 'restore', slug, '--json']), 'restore');
  assert.equal(restored.status, 'active');
  assert.equal((await http('GET', `/v1/tenants/${slug}`)).body.status, 'active');
  assert.equal((await keyAnswers(key.body.key, 200)).id, created.id);
  // its data outlived the round trip
  const sql = await http('POST', '/v1/tenant/sql', key.body.key, { sql: 'select count(*)::int as n from agents' });
  assert.equal(sql.status, 200);
  assert.deepEqual(sql.body.rows, [{ n: 0 }]);

  // hard delete (soft first, as the CLI requires): gone for the server and the CLI, its role too
  await inst.tenantry.tenants.delete(created.id);
  const hard = ok(await cli(['tenants', 'delete', slug, '--hard', '--json']), 'hard delete');
  assert.equal(hard.id, created.id);
  assert.equal((await http('GET', `/v1/tenants/${slug}`)).status, 404);
  assert.equal(await inst.tenantry.tenants.find(slug), undefined);
  const [left] = await inst.su<{ roles: number }[]>`select count(*)::int as roles from pg_roles where rolname = ${`${inst.namespace}_t_${created.id.replace(/-/g, '')}`}`;
  assert.equal(left?.roles, 0);
  assert.equal((await http('GET', '/v1/tenant', key.body.key)).status, 401, 'its keys went with it');
});

/** Runs at most `n` CLI processes at a time (each one is a node process opening the installation). */
async function inBatches<T>(tasks: (() => Promise<T>)[], n = 3): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < tasks.length; i += n) out.push(...await Promise.all(tasks.slice(i, i + n).map((t) => t())));
  return out;
}

test('exit codes: 2 for bad input, 3 for not found, 4 for conflicts, 6 for bad configuration; nothing written', async () => {
  const taken = await inst.tenantry.tenants.create({ slug: 'e2e-taken' });
  const count = async (): Promise<number> => ((await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants`)[0]!).n;
  const before = await count();
  const cases: [string[], number, string | undefined, string][] = [
    [['tenants', 'create', "x'; drop table tenantry_catalog.tenants; --", '--json'], 2, 'INVALID_SLUG', 'slug with SQL'],
    [['tenants', 'create', 'e2e-trial', '--trial-days', 'soon', '--json'], 2, 'INVALID_INPUT', 'trial days not a number'],
    [['tenants', 'show', 'e2e-nobody', '--json'], 3, 'TENANT_NOT_FOUND', 'show an unknown tenant'],
    [['tenants', 'create', 'e2e-taken', '--json'], 4, 'SLUG_TAKEN', 'create a taken slug'],
    [['tenants', 'create'], 2, undefined, 'create without a slug'],
    [['tenants', 'suspend', 'e2e-taken'], 2, undefined, 'suspend without --reason'],
    [['tenants', 'list', '--json'], 6, 'INVALID_CONFIG', 'bad namespace'],
    [['tenants', 'show', 'e2e-nobody'], 3, undefined, 'not found, without --json'],
  ];
  const runs = await inBatches(cases.map(([args, , , what]) => () => cli(args, what === 'bad namespace' ? { TENANTRY_NAMESPACE: 'Not A Namespace' } : {})));
  for (const [i, [, exit, code, what]] of cases.entries()) failed(runs[i]!, exit, code, what);
  // usage errors say what is wrong on stderr; a failure without --json is one line on stderr
  assert.match(runs[4]!.stderr, /missing required argument 'slug'/);
  assert.match(runs[5]!.stderr, /required option '--reason <reason>' not specified/);
  assert.equal(await count(), before, 'no bad command wrote a tenant');
  assert.equal((await http('GET', '/v1/tenants/e2e-taken')).body.id, taken.id);
  const plain = runs[cases.length - 1]!;
  assert.equal(plain.code, 3);
  assert.equal(plain.stdout, '');
  assert.match(plain.stderr, /^error \[TENANT_NOT_FOUND\]: /);
});

test('doctor --json: 0 when healthy, 5 with a named failure when an invariant breaks', async () => {
  const healthy = ok(await cli(['doctor', '--json']), 'doctor');
  assert.equal(healthy.ok, true, JSON.stringify(healthy.checks.filter((c: Json) => !c.ok)));
  assert.ok(healthy.checks.length >= 5);
  for (const c of healthy.checks) assert.deepEqual(Object.keys(c).filter((k) => k !== 'fix').sort(), ['check', 'message', 'ok']);

  const victim = await inst.tenantry.tenants.create({ slug: 'e2e-doctor', isolation: 'schema' });
  await inst.su.unsafe(`alter role "${victim.placement.role}" nologin`);
  try {
    const sick = await cli(['doctor', '--json']);
    assert.equal(sick.code, 5, `${sick.stdout}\n${sick.stderr}`);
    const report = json(sick, 'doctor failing');
    assert.equal(report.ok, false);
    const failing = report.checks.filter((c: Json) => !c.ok);
    assert.equal(failing.length, 1, JSON.stringify(failing));
    assert.equal(failing[0].check, 'tenant-login');
    assert.ok(failing[0].message.includes('e2e-doctor'));
    assert.match(failing[0].fix, /ALTER ROLE .* LOGIN;/);
  } finally {
    await inst.su.unsafe(`alter role "${victim.placement.role}" login`);
  }
  assert.equal((await inst.tenantry.doctor()).ok, true, 'healthy again once fixed');
});

test('repair --json: reports and removes an orphan schema; a second run finds nothing', async () => {
  // an orphan as a crash would leave it: made by the installation's own user, with no catalog row
  const url = new URL(inst.adminUrl);
  url.pathname = `/${inst.namespace}_shared`;
  const shared = postgres(url.toString(), { onnotice: () => {}, max: 1 });
  const orphan = `t_${randomBytes(16).toString('hex')}`;
  try {
    await shared.unsafe(`create schema "${orphan}"`);
    const first = ok(await cli(['repair', '--older-than', '0', '--json']), 'repair');
    assert.deepEqual(Object.keys(first).sort(), ['moves', 'orphanDatabases', 'orphanRoles', 'orphanSchemas', 'orphanedClaims', 'restoredRoles', 'stuckTenants']);
    assert.deepEqual(first.orphanSchemas, [orphan]);
    assert.deepEqual(first.stuckTenants, []);
    assert.equal((await shared`select 1 from pg_namespace where nspname = ${orphan}`).length, 0, 'the orphan schema is gone');
    assert.deepEqual(await inst.tenantry.repair({ olderThanSeconds: 0 }), { stuckTenants: [], orphanRoles: [], orphanSchemas: [], orphanDatabases: [], orphanedClaims: 0, restoredRoles: [], moves: { undone: [], finished: [] } });
    // live tenants were left alone
    assert.equal((await http('GET', '/v1/tenants/e2e-taken')).status, 200);
    assert.equal((await inst.tenantry.doctor()).ok, true);
  } finally {
    await shared.unsafe(`drop schema if exists "${orphan}"`);
    await shared.end();
  }
});

test('serve: listens on the port it is given, answers with the operator token, and exits 0 on SIGTERM', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], {
    cwd: ROOT, env: cliEnv({ PORT: '0', HOST: '127.0.0.1', TENANTRY_ADMIN_KEY: ADMIN }), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  try {
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve did not start: ${stdout}\n${stderr}`)), 60_000);
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const m = /Tenantry is listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout);
        if (m) { clearTimeout(timer); resolve(m[1]!); }
      });
      child.on('close', () => reject(new Error(`serve exited early: ${stdout}\n${stderr}`)));
    });
    assert.ok(!stdout.includes('Operator token (shown once'), 'with TENANTRY_ADMIN_KEY set no token is generated');
    assert.equal((await fetch(`${address}/healthz`)).status, 200);
    assert.equal((await fetch(`${address}/readyz`)).status, 200);
    assert.equal((await fetch(`${address}/v1/tenants`)).status, 401);
    const list = await fetch(`${address}/v1/tenants?limit=500`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(list.status, 200);
    const body = await list.json() as Json;
    assert.ok(body.items.some((t: Json) => t.slug === 'e2e-taken'), 'the served installation is this one');
    // and a change made through it is seen by the in-process server at once
    const created = await fetch(`${address}/v1/tenants`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ slug: 'e2e-served' }) });
    assert.equal(created.status, 201);
    assert.equal((await http('GET', '/v1/tenants/e2e-served')).status, 200);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, `serve exit code\n${stderr}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

test('hostile text through the CLI and over a real socket: exit 2 / 400 INVALID_INPUT naming the field, nothing written', async () => {
  // argv cannot carry a NUL, but JSON options can (\u0000 escapes, lone surrogates)
  for (const metadata of ['{"note":"a\\u0000b"}', '{"k\\u0000":1}', '{"note":"\\ud800"}']) {
    const r = await cli(['--json', 'tenants', 'create', 'hostile-cli', '--metadata', metadata]);
    failed(r, 2, 'INVALID_INPUT', `tenants create --metadata ${metadata}`);
    assert.match(json(r, 'hostile metadata').error.message, /--metadata/);
  }
  failed(await cli(['--json', 'tenants', 'show', 'hostile-cli']), 3, 'TENANT_NOT_FOUND', 'nothing was created');

  const target = ok(await cli(['--json', 'tenants', 'create', 'hostile-socket']), 'create the target');
  const nulId = await fetch(`${base}/v1/tenants/ab%00cd`, { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(nulId.status, 400);
  assert.match(nulId.headers.get('content-type') ?? '', /application\/problem\+json/);
  const nulBody = await nulId.json() as Json;
  assert.equal(nulBody.code, 'INVALID_INPUT');
  assert.match(nulBody.detail, /path\.id/);
  for (const [path, body, field] of [
    [`/v1/tenants/${target.id}/suspend`, { reason: 'late\u0000' }, 'body.reason'],
    [`/v1/tenants/${target.id}/members`, { email: 'a\u0000@example.com', role: 'member' }, 'body.email'],
    [`/v1/tenants/${target.id}`, { metadata: { ['k\ud800']: 1 } }, 'a key of body.metadata'],
  ] as const) {
    const r = await http(path.endsWith(target.id) ? 'PATCH' : 'POST', path, ADMIN, body);
    assert.equal(r.status, 400, `${path}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'INVALID_INPUT');
    assert.ok(r.body.detail.includes(field), `${r.body.detail} names ${field}`);
  }
  const after = await http('GET', `/v1/tenants/${target.id}`);
  assert.equal(after.body.status, 'active');
  assert.deepEqual(after.body.metadata, {});
  assert.equal((await http('GET', `/v1/tenants/${target.id}/members`)).body.length, 0);
});
