/**
 * The package as a new user gets it: `npm pack` (which runs `prepare`, the build), installed into a
 * throwaway app in a temp folder, then the README's library example and `npx tenantry` run from there
 * against DATABASE_URL. Catches a tarball without dist, a `files` entry that does not exist, source
 * maps pointing at unshipped sources, a dependency that needs a newer Node than `engines` says, result
 * types that are not exported, and query() modes that do not type their results.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { superuser, SUPERUSER_URL } from './helpers/installation.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[]; engines: { node: string } };
const namespace = `tp${randomBytes(4).toString('hex')}`;
const catalogDb = `${namespace}_catalog`;
let work = '';
let app = '';
let tarball = '';
let packed: string[] = [];
let installLog = '';

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')} timed out\n${stdout}\n${stderr}`)); }, opts.timeoutMs ?? 120_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? 1, stdout, stderr }); });
  });
}

/** The README's library example: the first ```ts block under "## The library". */
function readmeLibraryExample(): string {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## The library'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(m, 'README has a ts example under "## The library"');
  return m[1]!;
}

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'tenantry-pack-'));
  // npm pack runs `prepare`, so this also proves the build a git install would run
  const pack = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: ROOT, timeoutMs: 300_000 });
  assert.equal(pack.code, 0, `npm pack failed:\n${pack.stderr}`);
  const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(work, info[0]!.filename);
  packed = info[0]!.files.map((f) => f.path);

  app = path.join(work, 'app');
  await run('mkdir', ['-p', app], { cwd: work });
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'throwaway-app', private: true, type: 'module' }));
  // dependencies come from npm's cache when they are there (the repo's own install filled it)
  const install = await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeoutMs: 600_000 });
  installLog = install.stdout + install.stderr;
  assert.equal(install.code, 0, `npm install of the tarball failed:\n${installLog}`);

  const su = superuser();
  await su.unsafe(`create database "${catalogDb}"`);
  await su.end();
});

after(async () => {
  const s = superuser();
  try {
    const dbs = await s<{ datname: string }[]>`select datname from pg_database where datname like ${namespace + '\\_%'}`;
    for (const { datname } of dbs) {
      await s.unsafe(`alter database "${datname}" allow_connections true`);
      await s.unsafe(`drop database if exists "${datname}" with (force)`);
    }
    const roles = await s<{ rolname: string }[]>`select rolname from pg_roles where rolname like ${namespace + '\\_%'} order by rolname like '%\\_t\\_%' desc`;
    for (const { rolname } of roles) {
      await s.unsafe(`drop owned by "${rolname}" cascade`).catch(() => undefined);
      await s.unsafe(`drop role if exists "${rolname}"`);
    }
  } finally {
    await s.end();
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the tarball holds the build, every "files" entry, a LICENSE, and no source maps without sources', () => {
  assert.ok(packed.includes('dist/index.js') && packed.includes('dist/index.d.ts'), 'dist is built and packed');
  assert.ok(packed.includes('dist/cli/main.js') && packed.includes('bin/tenantry.js'), 'the bin and what it imports');
  assert.ok(packed.includes('LICENSE'), 'LICENSE is packed');
  assert.match(readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /MIT License[\s\S]*Copyright \(c\) 2026 Tenantry contributors/);
  for (const entry of PKG.files) {
    assert.ok(existsSync(path.join(ROOT, entry)), `"files" lists ${entry}, which exists`);
    assert.ok(packed.some((p) => p === entry || p.startsWith(`${entry}/`)), `${entry} is in the tarball`);
  }
  const maps = packed.filter((p) => p.endsWith('.map'));
  const shipsSources = packed.some((p) => p.startsWith('src/'));
  assert.ok(maps.length === 0 || shipsSources, `source maps ship only with their sources (${maps.length} maps, sources ${shipsSources})`);
  assert.ok(!packed.some((p) => p.startsWith('test/') || p.startsWith('.ci/')), 'no tests or CI scripts');
});

test('installing the tarball on this Node warns about no engine: engines is true to the dependencies', () => {
  assert.doesNotMatch(installLog, /EBADENGINE/, `npm install warned:\n${installLog}`);
  const major = Number(process.versions.node.split('.')[0]);
  assert.ok(major >= Number(/\d+/.exec(PKG.engines.node)![0]), `this Node (${process.versions.node}) satisfies engines ${PKG.engines.node}`);
});

test("the README's library example runs unchanged from the installed package", async () => {
  const example = readmeLibraryExample();
  const u = new URL(SUPERUSER_URL);
  u.pathname = `/${catalogDb}`;
  writeFileSync(path.join(app, 'example.mjs'), `const databaseUrl = process.env.DATABASE_URL;\n${example}\nconsole.log(JSON.stringify({ rows }));\n`);
  const r = await run(process.execPath, ['example.mjs'], { cwd: app, env: { DATABASE_URL: u.toString(), TENANTRY_NAMESPACE: namespace }, timeoutMs: 180_000 });
  assert.equal(r.code, 0, `the example failed:\n${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rows: { name: string; agent_type: string; tenant_id: string }[] };
  assert.equal(out.rows.length, 1, 'the example reads back the one row it wrote');
  assert.equal(out.rows[0]!.name, 'a');
  assert.equal(out.rows[0]!.agent_type, 'calculator');
});

test('npx tenantry --help and --version work from the app', async () => {
  const help = await run('npx', ['--no-install', 'tenantry', '--help'], { cwd: app });
  assert.equal(help.code, 0, help.stderr);
  for (const cmd of ['serve', 'tenants', 'keys', 'migrate', 'doctor']) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`), `--help lists ${cmd}`);
  const version = await run('npx', ['--no-install', 'tenantry', '--version'], { cwd: app });
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout.trim(), PKG.version);
});

test('the installed types: result types exported, tier and isolation as unions, query() typed by mode', async () => {
  // compiled against the installed dist/*.d.ts only; a wrong type here fails the compile
  writeFileSync(path.join(app, 'types.ts'), `
import { Tenantry, type UsageSummary, type CreatedApiKey, type Member, type ApiKey, type Invitation, type TierInfo,
  type IncrementResult, type FeatureState, type AuditVerification, type RateDecision, type TenantSqlResult, type Tier, type Isolation } from 'tenantry';
declare const t: Tenantry;
export async function check(): Promise<void> {
  const rows: { n: number }[] = await t.query<{ n: number }>('acme', 'select 1 as n', [], 'all');
  const byDefault: Record<string, unknown>[] = await t.query('acme', 'select 1');
  const one: { n: number } | null = await t.query<{ n: number }>('acme', 'select 1 as n', [], 'one');
  const count: number = await t.query('acme', 'delete from agents', [], 'execute');
  const tier: Tier = 'enterprise';
  const isolation: Isolation = 'schema';
  // @ts-expect-error an unknown tier is a type error
  await t.tenants.create({ slug: 'x-co', tier: 'gold' });
  // @ts-expect-error an unknown isolation mode is a type error
  await t.tenants.create({ slug: 'x-co', isolation: 'cluster' });
  const s: UsageSummary = await t.quotas.summary('acme');
  const k: CreatedApiKey = await t.keys.create('acme', { name: 'ci' });
  const list: ApiKey[] = await t.keys.list('acme');
  const members: Member[] = await t.members.list('acme');
  const inv: Invitation[] = await t.members.listInvitations('acme');
  const tiers: TierInfo[] = await t.quotas.listTiers();
  const inc: IncrementResult = await t.quotas.increment('acme', 'api_calls', 1);
  const flags: FeatureState[] = await t.features.list('acme');
  const v: AuditVerification = await t.verifyAudit('acme');
  const d: RateDecision = await t.rateLimit('acme');
  const sqlResult: TenantSqlResult = await t.runTenantSql('acme', { sql: 'select 1' });
  void [rows, byDefault, one, count, tier, isolation, s, k, list, members, inv, tiers, inc, flags, v, d, sqlResult];
}
`);
  const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
  const r = await run(tsc, ['--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', '', 'types.ts'], { cwd: app });
  assert.equal(r.code, 0, `the consumer's types did not compile:\n${r.stdout}\n${r.stderr}`);
});

test('every entry point in "exports" is in the tarball; tenantry/pg loads without any optional peer installed', async () => {
  const exportsMap = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, string | { types: string; import: string }> }).exports;
  for (const [name, target] of Object.entries(exportsMap)) {
    const files = typeof target === 'string' ? [target] : [target.types, target.import];
    for (const f of files) assert.ok(packed.includes(f.replace(/^\.\//, '')), `${name}: ${f} is packed`);
  }
  // drizzle-orm, kysely, express and hono are optional peers: nothing but their own entry points needs them
  const r = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('tenantry/pg'); const root = await import('tenantry'); console.log(typeof m.tenantPg, typeof root.Tenantry)"], { cwd: app });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'function function');
});

test('the entry points\' types resolve for a user who installs the optional peers (fastify, express, hono, drizzle, kysely, pg, client)', async () => {
  const peers = await run('npm', ['install', 'express@^5', '@types/express@^5', 'hono@^4', 'drizzle-orm@^0.45', 'kysely@^0.28', 'kysely-postgres-js@^3', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeoutMs: 600_000 });
  assert.equal(peers.code, 0, `installing the optional peers failed:\n${peers.stdout}\n${peers.stderr}`);
  assert.doesNotMatch(peers.stdout + peers.stderr, /ERESOLVE|EBADENGINE/, 'the peer ranges accept current versions on this Node');
  writeFileSync(path.join(app, 'entry-points.ts'), `
import Fastify from 'fastify';
import express from 'express';
import { Hono } from 'hono';
import { Tenantry, type Tenant } from 'tenantry';
import { tenantryPlugin } from 'tenantry/fastify';
import { tenantry as tenantryExpress, tenantryErrors, type TenantRequest } from 'tenantry/express';
import { tenantry as tenantryHono, tenantryOnError, type TenantryVariables } from 'tenantry/hono';
import { tenantDrizzle } from 'tenantry/drizzle';
import { tenantKysely } from 'tenantry/kysely';
import { tenantPg, type TenantPgResult } from 'tenantry/pg';
import { createTenantryClient } from 'tenantry/client';
import { pgTable, text } from 'drizzle-orm/pg-core';
declare const t: Tenantry;
const agents = pgTable('agents', { name: text('name').notNull() });
interface DB { agents: { name: string } }
export async function check(): Promise<void> {
  const f = Fastify();
  await f.register(tenantryPlugin, { tenantry: t });
  f.get('/a', async (req) => { const tenant: Tenant | null = req.tenant; return req.withTenant((sql) => sql\`select \${tenant?.id ?? ''}::text\`); });
  const e = express();
  e.get('/a', tenantryExpress({ tenantry: t }), (req, res) => { const tenant: Tenant = (req as TenantRequest).tenant; res.json(tenant.slug); });
  e.use(tenantryErrors());
  const h = new Hono<{ Variables: TenantryVariables }>();
  h.use('/api/*', tenantryHono({ tenantry: t }));
  h.get('/api/a', (c) => c.json(c.get('tenant').slug));
  h.onError(tenantryOnError);
  const names: string[] = await tenantDrizzle(t, 'acme', async (db) => (await db.select().from(agents)).map((r) => r.name));
  const viaKysely: { name: string }[] = await tenantKysely<DB, { name: string }[]>(t, 'acme', (db) => db.selectFrom('agents').select('name').execute());
  const viaPg: TenantPgResult<{ name: string }> = await tenantPg(t, 'acme', (client) => client.query<{ name: string }>('select name from agents'));
  // @ts-expect-error tenantPg's callback gets a client, not a string
  await tenantPg(t, 'acme', async (client: string) => client);
  const api = createTenantryClient({ baseUrl: 'http://localhost:8080', token: 'x' });
  // @ts-expect-error the Express middleware is express's RequestHandler (an error only when express's types resolve)
  const notAHandler: number = tenantryExpress({ tenantry: t });
  // @ts-expect-error the Hono middleware is hono's MiddlewareHandler (likewise for hono's types)
  const notAMiddleware: number = tenantryHono({ tenantry: t });
  // @ts-expect-error the Fastify plugin is a fastify plugin (likewise for fastify's types)
  const notAPlugin: number = tenantryPlugin;
  // @ts-expect-error Drizzle's database is typed (drizzle-orm's types resolve)
  await tenantDrizzle(t, 'acme', async (db) => { const n: number = db.select; return n; });
  // @ts-expect-error Kysely's instance is typed (kysely's types resolve)
  await tenantKysely<DB, void>(t, 'acme', async (db) => { db.selectFrom('no_such_table'); });
  void [names, viaKysely, viaPg, api, notAHandler, notAMiddleware, notAPlugin];
}
`);
  const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
  // skipLibCheck (as a user's build has) turns a module a .d.ts cannot resolve into any: the
  // expect-error lines above fail the compile ("unused") if express's, hono's or fastify's types did not resolve
  const r = await run(tsc, ['--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', '', 'entry-points.ts'], { cwd: app, timeoutMs: 300_000 });
  assert.equal(r.code, 0, `the entry points' declarations did not compile for a user:\n${r.stdout}\n${r.stderr}`);
});
