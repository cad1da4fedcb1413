/**
 * One authorization surface for the CLI too: the CLI acts as the operator of the installation whose
 * credentials it holds, explicitly, through src/keys/authorize.ts (localOperator, requireOperator,
 * authorizeTenant with the scope the matching HTTP route needs, auditActor), not through rules of its own.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { CLI_PRINCIPAL } from '../src/cli/program.js';
import { auditActor, authorizeTenant, localOperator, requireOperator, type Principal } from '../src/keys/authorize.js';
import { isTenantryError, type Tenant } from '../src/index.js';

const PROGRAM = fileURLToPath(new URL('../src/cli/program.ts', import.meta.url));
let inst: TestInstallation;
let acme: Tenant;
let other: Tenant;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

before(async () => {
  inst = await freshInstallation();
  acme = await inst.tenantry.tenants.create({ slug: `cli-a-${randomBytes(3).toString('hex')}` });
  other = await inst.tenantry.tenants.create({ slug: `cli-b-${randomBytes(3).toString('hex')}` });
});
after(async () => {
  await inst?.cleanup();
});

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs `tenantry --json <args>` in a child process, as a user would. */
function cli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, LOG_LEVEL: 'silent' };
  for (const k of ['NODE_TEST_CONTEXT', 'TENANTRY_ADMIN_KEY', 'TENANTRY_KEY_PEPPER', 'TENANTRY_CONFIG', 'REDIS_URL', 'PORT', 'HOST']) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--json', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tenantry ${args.join(' ')} timed out\n${stdout}\n${stderr}`)); }, 120_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

test('the CLI\'s principal is the operator, made by the shared module, and passes its operator check', () => {
  assert.deepEqual(CLI_PRINCIPAL, localOperator('cli'));
  assert.doesNotThrow(() => requireOperator(CLI_PRINCIPAL));
  assert.deepEqual(auditActor(CLI_PRINCIPAL), { actor: 'cli' }, 'its changes are audited as cli');
  assert.deepEqual(auditActor({ kind: 'operator' }), { actor: 'operator' }, 'the operator token\'s as operator, as before');
});

test('the same rules refuse a tenant key what the CLI may do: operator-only commands and other tenants', async () => {
  const key = await inst.tenantry.keys.create(acme.id, { name: 'k', scopes: ['read'] });
  const p: Principal = { kind: 'tenant', tenant: acme, keyId: key.id, permissions: ['read'], authority: { keyId: key.id, memberUserId: null, role: 'admin', permissions: ['read'] } };
  assert.throws(() => requireOperator(p), (e: unknown) => isTenantryError(e, 'FORBIDDEN'));
  await assert.rejects(authorizeTenant(inst.tenantry, p, other.slug, 'read'), (e: unknown) => isTenantryError(e, 'TENANT_NOT_FOUND'), 'another tenant does not exist for the key');
  await assert.rejects(authorizeTenant(inst.tenantry, p, acme.slug, 'admin'), (e: unknown) => isTenantryError(e, 'FORBIDDEN'), 'a scope the key lacks');
  await assert.rejects(authorizeTenant(inst.tenantry, p, acme.slug, 'operator'), (e: unknown) => isTenantryError(e, 'FORBIDDEN'));
  assert.deepEqual(auditActor(p), { actor: `key:${key.id}`, authority: p.authority });
  // the CLI, holding the installation's credentials, may act on both
  assert.equal((await authorizeTenant(inst.tenantry, CLI_PRINCIPAL, other.slug, 'operator')).id, other.id);
});

test('CLI commands on a tenant go through authorizeTenant and record the CLI as the actor', { timeout: 180_000 }, async () => {
  const made = await cli(['keys', 'create', acme.slug, '--name', 'from-cli', '--scopes', 'read']);
  assert.equal(made.code, 0, made.stdout + made.stderr);
  assert.match((JSON.parse(made.stdout) as { key: string }).key, /^tnt_live_/);
  for (const args of [['tenants', 'suspend', acme.slug, '--reason', 'unpaid'], ['tenants', 'activate', acme.id]]) {
    const r = await cli(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
  }
  const audit = await inst.tenantry.audit(acme.id, { limit: 20 });
  for (const action of ['api_key.created', 'tenant.suspended', 'tenant.activated']) {
    const entry = audit.find((e) => e.action === action);
    assert.ok(entry, `${action} is audited (${audit.map((e) => e.action).join(', ')})`);
    assert.equal(entry.actor, 'cli', `${action} by the CLI`);
  }
  // a tenant that does not exist is refused by the shared resolution, before the command runs
  for (const args of [['keys', 'list', 'no-such-tenant'], ['members', 'add', 'no-such-tenant', 'a@example.com']]) {
    const r = await cli(args);
    assert.equal(r.code, 3, `${args.join(' ')} exits 3 (not found): ${r.stderr}`);
    assert.match(r.stdout + r.stderr, /TENANT_NOT_FOUND/);
  }
});

test('the CLI has no authorization rules of its own: every command naming a tenant resolves it through tenantFor, no literal actor', () => {
  const source = readFileSync(PROGRAM, 'utf8');
  assert.match(source, /from '\.\.\/keys\/authorize\.js'/);
  const direct = source.split('\n').filter((l) => /withTenantry\(\(tn\) => tn\.(tenants\.(get|update|suspend|activate|delete|restore)|keys\.\w+|members\.\w+|quotas\.(summary|effectiveQuotas|setOverrides)|domains\.\w+|backups\.(create|list)|billing\.records|audit|verifyAudit)\((tenant|id)\b/.test(l));
  assert.deepEqual(direct, [], 'tenant commands call tenantFor (authorizeTenant) first');
  assert.doesNotMatch(source, /actor: 'cli'/, 'the audit actor comes from auditActor(CLI_PRINCIPAL)');
  assert.doesNotMatch(source, /kind === 'operator'|permissions\.includes/, 'no principal checks of its own');
});
