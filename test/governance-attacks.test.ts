import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { freshInstallation, superuser, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import { rejectsWith } from './helpers/assertions.js';
import { assembleKey, keyIdOf, randomBase62 } from './helpers/keys.js';
import { buildServer } from '../src/server/app.js';
import { resolveOptions, PACKAGE_ROOT } from '../src/config.js';
import { Tenantry } from '../src/index.js';

/**
 * Issue 8, the governance findings, each as the attack that was reproduced against the old code:
 * 5. one tenant's admin reading and rewriting what another tenant stored about a person;
 * 6. a member's power outliving the member, and a member raising roles above its own;
 * 7. guessing credentials at full speed, and a short operator token;
 * 8. probing which key ids exist (by answer, work or timing) and forged key ids each costing a catalog query.
 */

const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const PER_ADDRESS = 5;
const PER_KEY = 4;

// JSON bodies of responses
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
interface Res { status: number; headers: Record<string, string | string[] | number | undefined>; body: Json; text: string }

let inst: TestInstallation;
let app: FastifyInstance;
let addressSeq = 0;
/** a client address of its own for each attack, so one attack's throttle does not meet another's */
const nextAddress = (): string => `10.8.0.${++addressSeq}`;
let seq = 0;
const slug = (p: string): string => `${p}-${process.pid % 10000}-${++seq}`;

before(async () => {
  inst = await freshInstallation({ adminKey: ADMIN, authFailuresPerAddress: PER_ADDRESS, authFailuresPerKey: PER_KEY });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
});
after(async () => {
  await app?.close();
  await inst?.cleanup();
});

async function call(method: string, url: string, o: { token?: string; body?: unknown; from?: string } = {}): Promise<Res> {
  const headers: Record<string, string> = {};
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  const r = await app.inject({
    method: method as 'GET', url, headers, remoteAddress: o.from ?? '127.0.0.1',
    ...(o.body !== undefined ? { payload: JSON.stringify(o.body) } : {}),
  });
  let body: Json;
  try { body = r.body === '' ? undefined : JSON.parse(r.body); } catch { body = undefined; }
  return { status: r.statusCode, headers: r.headers, body, text: r.body };
}

function expectCode(r: Res, status: number, code: string, what: string): void {
  assert.equal(r.status, status, `${what}: expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body?.code, code, `${what}: ${r.text}`);
}

async function tenant(): Promise<{ id: string; key: string }> {
  const r = await call('POST', '/v1/tenants', { token: ADMIN, body: { slug: slug('gov'), tier: 'enterprise' } });
  assert.equal(r.status, 201, r.text);
  return { id: r.body.id, key: r.body.apiKey };
}

/** A tenant with an owner and an admin member, and a key bound to the admin with every scope. */
async function tenantWithAdminMember() {
  const t = await tenant();
  const owner = await inst.tenantry.members.add(t.id, { email: `owner.${++seq}@example.com`, role: 'owner' });
  const admin = await inst.tenantry.members.add(t.id, { email: `admin.${++seq}@example.com`, role: 'admin' });
  const adminKey = await inst.tenantry.keys.create(t.id, { name: 'admin member', scopes: ['read', 'write', 'admin', 'sql'], memberUserId: admin.userId });
  return { t, owner, admin, adminKey: adminKey.key };
}

const roles = async (tenantId: string): Promise<Record<string, string>> => Object.fromEntries(
  (await inst.su<{ user_id: string; role: string }[]>`select user_id, role from tenantry_catalog.memberships where tenant_id = ${tenantId}`).map((r) => [r.user_id, r.role]),
);

// ---- finding 5 ----

test('attack (finding 5): a tenant admin adds another tenant\'s member to learn and to rewrite what that tenant stored about the person', async () => {
  const a = await tenant();
  const b = await tenant();
  const stored = `CEO.${++seq}@B-Corp.example`;
  const inB = await call('POST', `/v1/tenants/${b.id}/members`, { token: b.key, body: { email: stored, name: 'Beatrice Chief', role: 'member' } });
  assert.equal(inB.status, 201, inB.text);

  // A adds the same person by a lower-cased address: the answer carries only what A itself sent
  const probe = await call('POST', `/v1/tenants/${a.id}/members`, { token: a.key, body: { email: stored.toLowerCase(), role: 'member' } });
  assert.equal(probe.status, 201, probe.text);
  assert.equal(probe.body.name, null, 'B\'s stored name leaked to A');
  assert.equal(probe.body.email, stored.toLowerCase(), 'B\'s stored casing leaked to A');
  assert.ok(!probe.text.includes('Beatrice') && !probe.text.includes(stored), `nothing of B's data in ${probe.text}`);
  // and it looks exactly like adding somebody nobody knows
  const fresh = await call('POST', `/v1/tenants/${a.id}/members`, { token: a.key, body: { email: `nobody.${++seq}@example.com`, role: 'member' } });
  assert.deepEqual(Object.keys(probe.body).sort(), Object.keys(fresh.body).sort());
  assert.equal(fresh.body.name, null);

  // A names the person (through a new membership after removal, and through an invitation): B's view does not change
  assert.equal((await call('DELETE', `/v1/tenants/${a.id}/members/${probe.body.userId}`, { token: a.key })).status, 204);
  const renamed = await call('POST', `/v1/tenants/${a.id}/members`, { token: a.key, body: { email: stored.toUpperCase(), name: 'Renamed By A', role: 'viewer' } });
  assert.equal(renamed.status, 201, renamed.text);
  assert.equal(renamed.body.name, 'Renamed By A');
  const c = await tenant();
  const inv = await inst.tenantry.members.invite(c.id, { email: stored.toLowerCase(), role: 'viewer' });
  await inst.tenantry.members.accept(inv.token, { name: 'Renamed Through C' });

  const bList = await call('GET', `/v1/tenants/${b.id}/members`, { token: b.key });
  const seenByB = bList.body.find((m: Json) => m.userId === inB.body.userId);
  assert.deepEqual([seenByB.email, seenByB.name], [stored, 'Beatrice Chief'], 'B\'s member list was rewritten by another tenant');
  const seenByA = (await call('GET', `/v1/tenants/${a.id}/members`, { token: a.key })).body.find((m: Json) => m.userId === inB.body.userId);
  assert.deepEqual([seenByA.email, seenByA.name], [stored.toUpperCase(), 'Renamed By A']);
  const seenByC = (await inst.tenantry.members.list(c.id))[0]!;
  assert.deepEqual([seenByC.email, seenByC.name], [stored.toLowerCase(), 'Renamed Through C']);
  // one person all the same: one user row, and it stores no profile
  const users = await inst.su<Json[]>`select * from tenantry_catalog.users where lower(email) = lower(${stored})`;
  assert.equal(users.length, 1);
  assert.ok(!('name' in users[0]!), 'the shared user row keeps no name');
});

// ---- finding 6 ----

test('attack (finding 6): a member-bound admin key mints an unbound all-scope key that outlives the member', async () => {
  const { t, admin, adminKey } = await tenantWithAdminMember();
  const minted = await call('POST', `/v1/tenants/${t.id}/api-keys`, { token: adminKey, body: { name: 'escape hatch', scopes: ['read', 'write', 'admin', 'sql'] } });
  assert.equal(minted.status, 201, minted.text);
  assert.equal(minted.body.memberUserId, admin.userId, 'a key made with a member-bound key is bound to the same member');
  // and not to anyone else
  const other = await inst.tenantry.members.add(t.id, { email: `other.${++seq}@example.com`, role: 'admin' });
  expectCode(await call('POST', `/v1/tenants/${t.id}/api-keys`, { token: adminKey, body: { name: 'x', scopes: ['read'], memberUserId: other.userId } }), 403, 'FORBIDDEN', 'binding to another member');

  // demoting the member lowers the minted key at once (no cache delay)
  assert.equal((await call('GET', `/v1/tenants/${t.id}/members`, { token: minted.body.key })).status, 200);
  await inst.tenantry.members.updateRole(t.id, admin.userId, 'viewer');
  expectCode(await call('GET', `/v1/tenants/${t.id}/api-keys`, { token: minted.body.key }), 403, 'FORBIDDEN', 'admin route after demotion');
  expectCode(await call('POST', '/v1/tenant/sql', { token: minted.body.key, body: { sql: 'select 1' } }), 403, 'FORBIDDEN', 'sql after demotion');
  assert.equal((await call('GET', `/v1/tenants/${t.id}/members`, { token: minted.body.key })).status, 200, 'a viewer still reads');

  // an invitation the member made with its keys dies with it too (a second address of its own, invited as admin)
  await inst.tenantry.members.updateRole(t.id, admin.userId, 'admin');
  const backdoor = await call('POST', `/v1/tenants/${t.id}/invitations`, { token: minted.body.key, body: { email: `alt.${++seq}@example.com`, role: 'admin' } });
  assert.equal(backdoor.status, 201, backdoor.text);
  const viewerInvite = await call('POST', `/v1/tenants/${t.id}/invitations`, { token: minted.body.key, body: { email: `v.${++seq}@example.com`, role: 'viewer' } });
  await inst.tenantry.members.updateRole(t.id, admin.userId, 'member');
  const open = async (): Promise<string[]> => (await inst.tenantry.members.listInvitations(t.id)).filter((i) => !i.revokedAt).map((i) => i.id);
  assert.deepEqual(await open(), [viewerInvite.body.invitation.id], 'a demotion closes the invitations above the new role');
  await rejectsWith(inst.tenantry.members.accept(backdoor.body.token), 'INVITATION_CLOSED');

  // removing the member ends every key it made or held, and its invitations, at once
  await inst.tenantry.members.remove(t.id, admin.userId);
  assert.deepEqual(await open(), []);
  for (const key of [adminKey, minted.body.key]) {
    expectCode(await call('GET', `/v1/tenants/${t.id}/members`, { token: key }), 401, 'API_KEY_REVOKED', 'listing members after removal');
    expectCode(await call('POST', '/v1/tenant/sql', { token: key, body: { sql: 'select 1' } }), 401, 'API_KEY_REVOKED', 'sql after removal');
  }
});

test('attack (finding 6): a key creates or rotates a key with more scopes than its own', async () => {
  const t = await tenant();
  const weak = await inst.tenantry.keys.create(t.id, { name: 'weak admin', scopes: ['read', 'admin'] });
  const keysBefore = (await inst.tenantry.keys.list(t.id)).length;
  expectCode(await call('POST', `/v1/tenants/${t.id}/api-keys`, { token: weak.key, body: { name: 'stronger', scopes: ['read', 'sql'] } }), 403, 'FORBIDDEN', 'a scope the creator lacks');
  // rotating the tenant's all-scope default key would hand the weak key its powers
  const all = (await inst.tenantry.keys.list(t.id)).find((k) => k.name === 'default')!;
  expectCode(await call('POST', `/v1/tenants/${t.id}/api-keys/${all.id}/rotate`, { token: weak.key, body: {} }), 403, 'FORBIDDEN', 'rotating a stronger key');
  assert.equal((await inst.tenantry.keys.list(t.id)).length, keysBefore, 'nothing was created');
  const same = await call('POST', `/v1/tenants/${t.id}/api-keys`, { token: weak.key, body: { name: 'as weak', scopes: ['read'] } });
  assert.equal(same.status, 201, same.text);
  assert.equal(same.body.memberUserId, null);
});

test('attack (finding 6): a member-bound admin key promotes its own member to owner and demotes the real owner', async () => {
  const { t, owner, admin, adminKey } = await tenantWithAdminMember();
  const plain = await inst.tenantry.members.add(t.id, { email: `plain.${++seq}@example.com`, role: 'member' });
  const before = await roles(t.id);
  const attempts: [string, string, unknown][] = [
    ['PATCH', `/v1/tenants/${t.id}/members/${admin.userId}`, { role: 'owner' }],
    ['PATCH', `/v1/tenants/${t.id}/members/${owner.userId}`, { role: 'viewer' }],
    ['DELETE', `/v1/tenants/${t.id}/members/${owner.userId}`, undefined],
    ['POST', `/v1/tenants/${t.id}/members`, { email: `second.${++seq}@example.com`, role: 'owner' }],
    ['POST', `/v1/tenants/${t.id}/invitations`, { email: `invited.${++seq}@example.com`, role: 'owner' }],
  ];
  for (const [method, url, body] of attempts) {
    for (const token of [adminKey, t.key]) {
      const r = await call(method, url, { token, ...(body !== undefined ? { body } : {}) });
      expectCode(r, 403, 'FORBIDDEN', `${method} ${url} ${JSON.stringify(body)} with ${token === t.key ? 'the tenant-wide key' : 'the admin member key'}`);
    }
  }
  assert.deepEqual(await roles(t.id), before, 'no role changed');
  assert.equal((await inst.tenantry.members.listInvitations(t.id)).length, 0);

  // nor does it switch off the owner's keys
  const ownersKey = await inst.tenantry.keys.create(t.id, { name: 'owner', scopes: ['read', 'admin'], memberUserId: owner.userId });
  expectCode(await call('DELETE', `/v1/tenants/${t.id}/api-keys/${ownersKey.id}`, { token: adminKey }), 403, 'FORBIDDEN', 'revoking the owner\'s key');
  assert.equal((await call('GET', '/v1/tenant', { token: ownersKey.key })).status, 200, 'the owner\'s key still works');

  // within its own rank an admin still manages members
  const lowered = await call('PATCH', `/v1/tenants/${t.id}/members/${plain.userId}`, { token: adminKey, body: { role: 'viewer' } });
  assert.equal(lowered.status, 200, lowered.text);
  // an owner makes an owner; so does the operator
  assert.equal((await call('PATCH', `/v1/tenants/${t.id}/members/${admin.userId}`, { token: ownersKey.key, body: { role: 'owner' } })).status, 200);
  assert.equal((await call('PATCH', `/v1/tenants/${t.id}/members/${plain.userId}`, { token: ADMIN, body: { role: 'owner' } })).status, 200);
});

test('keys and members across processes: a demotion, a removal and a new key reach another process\'s in-memory keys through the NOTIFY', async () => {
  const { t, admin, adminKey } = await tenantWithAdminMember();
  // a second process on the same catalog: within the 3 s waited below (its keys are trusted from
  // memory for 5 s after a read), only the NOTIFY can tell it
  const other = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, tenantCacheTtlMs: 600_000 });
  try {
    assert.deepEqual([...(await other.keys.verify(adminKey)).permissions].sort(), ['admin', 'read', 'sql', 'write']);
    const waitFor = async (check: () => Promise<boolean>, what: string): Promise<void> => {
      const until = Date.now() + 3000;
      while (!(await check())) {
        if (Date.now() > until) assert.fail(`${what}: not seen by the other process within 3 s`);
        await sleep(25);
      }
    };
    await inst.tenantry.members.updateRole(t.id, admin.userId, 'member');
    await waitFor(async () => !(await other.keys.verify(adminKey)).permissions.includes('admin'), 'demotion');
    assert.deepEqual([...(await other.keys.verify(adminKey)).permissions].sort(), ['read', 'write']);
    // a key made here is known there (the insert is announced too)
    const fresh = await inst.tenantry.keys.create(t.id, { name: 'new here', scopes: ['read'] });
    await waitFor(async () => other.keys.verify(fresh.key).then(() => true, () => false), 'a new key');
    await inst.tenantry.members.remove(t.id, admin.userId);
    await waitFor(() => other.keys.verify(adminKey).then(() => false, (err: { code?: string }) => err.code === 'API_KEY_REVOKED'), 'removal');
  } finally {
    await other.close();
  }
});

// ---- finding 7 ----

test('attack (finding 7): 300 wrong operator tokens in a row from one address are throttled, audited once, counted in metrics', async () => {
  const from = nextAddress();
  const statuses: number[] = [];
  let first429: Res | undefined;
  for (let i = 0; i < 300; i++) {
    const r = await call('GET', '/v1/tenants', { token: `wrong-operator-token-${i}-${'x'.repeat(20)}`, from });
    statuses.push(r.status);
    if (r.status === 429) first429 ??= r;
  }
  assert.deepEqual(statuses.slice(0, PER_ADDRESS), Array(PER_ADDRESS).fill(401));
  assert.deepEqual(statuses.slice(PER_ADDRESS), Array(300 - PER_ADDRESS).fill(429), 'every guess past the limit is refused');
  expectCode(first429!, 429, 'RATE_LIMITED', 'throttled');
  const retryAfter = Number(first429!.headers['retry-after']);
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${String(first429!.headers['retry-after'])}`);
  // while throttled, the right token still passes: tenants behind one proxy share an address, and one
  // tenant's junk must not lock the others (or the operator) out; the next wrong one is still refused
  assert.equal((await call('GET', '/v1/tenants', { token: ADMIN, from })).status, 200, 'the right token from a throttled address');
  expectCode(await call('GET', '/v1/tenants', { token: 'wrong-operator-token-again-xxxxxxxxxxxxxxxx', from }), 429, 'RATE_LIMITED', 'a wrong token from a throttled address');
  // other addresses are not affected
  assert.equal((await call('GET', '/v1/tenants', { token: ADMIN, from: nextAddress() })).status, 200);

  const audits = await inst.su<{ target: string; details: Json }[]>`
    select target, details from tenantry_catalog.audit_log where action = 'auth.throttled' and details->>'address' = ${from}`;
  assert.equal(audits.length, 1, 'audited once per burst, not once per request');
  assert.equal(audits[0]!.details.scope, 'address');
  const metrics = (await call('GET', '/metrics')).text;
  const value = (line: RegExp): number => Number(line.exec(metrics)?.[1] ?? NaN);
  assert.ok(value(/^tenantry_auth_failures_total\{reason="UNAUTHORIZED"\} (\d+)/m) >= PER_ADDRESS, metrics.split('\n').filter((l) => l.includes('auth_')).join('\n'));
  assert.ok(value(/^tenantry_auth_throttled_total\{scope="address"\} (\d+)/m) >= 1);
  assert.ok(value(/^tenantry_auth_refused_total\{scope="address"\} (\d+)/m) >= 300 - PER_ADDRESS);
});

test('attack (finding 7): one key id guessed from many addresses is throttled, and its holder is not locked out', async () => {
  const t = await tenant();
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    // a fresh address each time: below the per-address limit, so only the per-key-id count can stop it
    const r = await call('GET', '/v1/tenant', { token: assembleKey(keyIdOf(t.key), randomSecret()), from: nextAddress() });
    statuses.push(r.status);
    if (r.status === 429) assert.equal(r.body.code, 'RATE_LIMITED');
  }
  assert.deepEqual(statuses, [...Array(PER_KEY).fill(401), ...Array(12 - PER_KEY).fill(429)]);
  const r = await call('GET', '/v1/tenant', { token: t.key, from: nextAddress() });
  assert.equal(r.status, 200, `the key's holder still gets in: ${r.text}`);
  // audited once, in the chain of the tenant whose key id is guessed
  const audits = await inst.su<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.audit_log where tenant_id = ${t.id} and action = 'auth.throttled'`;
  assert.equal(audits[0]!.n, 1);
});

test('attack (finding 7): a short operator token is refused at start-up with a clear error', async () => {
  for (const adminKey of ['', 'x', 'hunter2', 'a'.repeat(31)]) {
    if (adminKey === '') continue; // an empty TENANTRY_ADMIN_KEY means unset: a token is generated
    await rejectsWith(Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, adminKey }), 'INVALID_CONFIG', /at least 32 characters/);
    assert.throws(() => resolveOptions({ adminKey }), /at least 32 characters/);
  }
  assert.equal(resolveOptions({ adminKey: 'a'.repeat(32) }).adminKey, 'a'.repeat(32));
  // and through the CLI, as `tenantry serve` would start: exit code 6 (configuration) and the reason
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: inst.adminUrl, TENANTRY_NAMESPACE: inst.namespace, TENANTRY_ADMIN_KEY: 'short-token', PORT: '0', LOG_LEVEL: 'silent' };
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], { cwd: PACKAGE_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 6, out);
  assert.match(out, /TENANTRY_ADMIN_KEY.*at least 32 characters/);
});

// ---- finding 8 ----

test('attack (finding 8): probing key ids: an unknown id and a wrong secret get the same answer from the same work', async () => {
  const t = await tenant();
  const keys = inst.tenantry.keys;
  const id = keyIdOf(t.key);
  const wrongSecret = assembleKey(id, randomSecret());
  const unknownId = assembleKey(randomId(), randomSecret());
  await keys.verify(t.key); // the keys are loaded

  // the same answer, over HTTP too (each probe from its own address, below every limit)
  const a = await call('GET', '/v1/tenant', { token: wrongSecret, from: nextAddress() });
  const b = await call('GET', '/v1/tenant', { token: unknownId, from: nextAddress() });
  assert.deepEqual([a.status, a.body.code, a.body.title, a.body.detail], [b.status, b.body.code, b.body.title, b.body.detail]);
  assert.equal(a.body.code, 'INVALID_API_KEY');

  // the same work: one hash and one constant-time compare each, and no catalog lookup on either path
  for (const [what, token] of [['wrong secret', wrongSecret], ['unknown id', unknownId]] as const) {
    const before = { ...keys.work };
    await rejectsWith(keys.verify(token), 'INVALID_API_KEY', /^The API key is not valid\.$/);
    assert.deepEqual({ hashes: keys.work.hashes - before.hashes, compares: keys.work.compares - before.compares, lookups: keys.work.lookups - before.lookups }, { hashes: 1, compares: 1, lookups: 0 }, what);
  }
});

test('attack (finding 8): a flood of forged key ids costs the catalog nothing (answered while the keys table is locked)', async () => {
  const t = await tenant();
  await inst.tenantry.keys.verify(t.key); // the keys are loaded
  const id = keyIdOf(t.key);
  // while this transaction holds the lock, any query of the keys table waits: a path that looks a
  // forged key id up in the catalog hangs here
  await inst.su.begin(async (tx) => {
    await tx`lock table tenantry_catalog.api_keys in access exclusive mode`;
    const forged = Array.from({ length: 200 }, (_, i) => assembleKey(i === 0 ? id : randomId(), randomSecret()));
    const answered = await Promise.race([
      Promise.all(forged.map((k) => inst.tenantry.keys.verify(k).then(() => 'accepted', (err: { code?: string }) => err.code))),
      sleep(3000).then(() => 'timed out'),
    ]);
    assert.notEqual(answered, 'timed out', 'forged keys waited for the catalog: each one queried it');
    assert.deepEqual(new Set(answered as string[]), new Set(['INVALID_API_KEY']));
  });
});

const randomId = (): string => randomBase62(12);
const randomSecret = (): string => randomBase62(32);

// ---- catalog migration 0007: existing data kept ----

test('catalog migration 0007 keeps what each tenant saw, binds keys made by member-bound keys, and revokes those whose member is gone', async () => {
  const { readdirSync, readFileSync } = await import('node:fs');
  const { CATALOG_MIGRATIONS_DIR } = await import('../src/config.js');
  const dbName = `${inst.namespace}_m0007`;
  const boot = superuser();
  await boot.unsafe(`create database "${dbName}"`);
  const db = postgres(inst.urlFor(dbName, new URL(SUPERUSER_URL).username || 'postgres', decodeURIComponent(new URL(SUPERUSER_URL).password) || undefined), { onnotice: () => {}, max: 1 });
  try {
    const files = readdirSync(CATALOG_MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
    const run = async (f: string): Promise<void> => { await db.begin((tx) => tx.unsafe(readFileSync(`${CATALOG_MIGRATIONS_DIR}/${f}`, 'utf8'))); };
    await db.unsafe('create schema tenantry_catalog');
    for (const f of files.filter((x) => x < '0007')) await run(f);

    // the catalog as the old code left it
    const [a, b, u1, u2] = ['aaaaaaaa-0000-4000-8000-000000000001', 'aaaaaaaa-0000-4000-8000-000000000002', 'bbbbbbbb-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002'];
    for (const [id, s] of [[a, 'mig-a'], [b, 'mig-b']] as const) {
      await db`insert into tenantry_catalog.tenants (id, slug, name, status, tier, isolation, database_name, schema_name, role_name)
        values (${id}, ${s}, ${s}, 'active', 'starter', 'pooled', 'd', 'pooled', ${`r_${s}`})`;
    }
    await db`insert into tenantry_catalog.users (id, email, name) values (${u1}, 'Ceo@X.example', 'Ceo Name'), (${u2}, 'gone@x.example', null)`;
    await db`insert into tenantry_catalog.memberships (tenant_id, user_id, role) values (${a}, ${u1}, 'admin'), (${b}, ${u1}, 'member')`;
    await db`insert into tenantry_catalog.audit_log (tenant_id, actor, action, target, details)
      values (${b}, 'operator', 'member.added', ${`user:${u1}`}, ${db.json({ email: 'ceo@x.example', role: 'member' })})`;
    const key = (id: string, member: string | null, createdBy: string, rotatedFrom: string | null = null) => db`
      insert into tenantry_catalog.api_keys (id, tenant_id, name, scopes, secret_hash, member_user_id, created_by, rotated_from)
      values (${id}, ${a}, ${id}, ${['read', 'write', 'admin', 'sql']}, ${Buffer.alloc(32)}, ${member}, ${createdBy}, ${rotatedFrom})`;
    await key('k1memberkey', u1, 'operator');
    await key('k2mintedbyk1', null, 'key:k1memberkey');
    await key('k3rotatedk2', null, 'operator', 'k2mintedbyk1');
    await key('k4operators', null, 'operator');
    await key('k5goneuser', u2, 'operator');
    await key('k6mintedbyk5', null, 'key:k5goneuser');

    await run(files.find((f) => f.startsWith('0007'))!);

    const members = await db<{ tenant_id: string; email: string; name: string | null }[]>`select tenant_id, email, name from tenantry_catalog.memberships order by tenant_id`;
    assert.deepEqual(members.map((m) => [m.tenant_id, m.email, m.name]), [[a, 'Ceo@X.example', 'Ceo Name'], [b, 'ceo@x.example', 'Ceo Name']],
      'each tenant keeps the name it was shown and the email as it typed it (from its audit entry)');
    const userColumns = await db<{ column_name: string }[]>`select column_name from information_schema.columns where table_schema = 'tenantry_catalog' and table_name = 'users'`;
    assert.ok(!userColumns.some((c) => c.column_name === 'name'));
    const keys = Object.fromEntries((await db<{ id: string; member_user_id: string | null; revoked: boolean }[]>`
      select id, member_user_id, revoked_at is not null as revoked from tenantry_catalog.api_keys`).map((k) => [k.id, [k.member_user_id, k.revoked]]));
    assert.deepEqual(keys, {
      k1memberkey: [u1, false], k2mintedbyk1: [u1, false], k3rotatedk2: [u1, false], k4operators: [null, false],
      k5goneuser: [u2, true], k6mintedbyk5: [u2, true],
    });
  } finally {
    await db.end();
    await boot.unsafe(`drop database if exists "${dbName}" with (force)`);
    await boot.end();
  }
});
