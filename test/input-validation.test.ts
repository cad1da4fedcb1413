import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { freshInstallation, SUPERUSER_URL, type TestInstallation } from './helpers/installation.js';
import {
  ERROR_CODES, isTenantryError, TenantryError,
  type CreateTenantInput, type ErrorCode, type Isolation, type ListTenantsOptions, type Tenant,
} from '../src/index.js';

/**
 * Invariant 10: bad input never corrupts state. Each bad call gets a TenantryError with a stable code
 * and a message a person can act on, and nothing at all is written: no catalog row, no audit entry,
 * no role, schema or database.
 */

let inst: TestInstallation;
let sharedSu: Sql;
before(async () => {
  inst = await freshInstallation();
  const su = new URL(SUPERUSER_URL);
  sharedSu = postgres(inst.urlFor(`${inst.namespace}_shared`, decodeURIComponent(su.username) || 'postgres', decodeURIComponent(su.password) || undefined), { onnotice: () => {}, max: 1 });
});
after(async () => {
  await sharedSu?.end();
  await inst?.cleanup();
});

const MODES: readonly Isolation[] = ['pooled', 'schema', 'database'];

/**
 * Everything a bad call could have touched: the whole tenants table, the audit log, this installation's
 * roles, databases and schemas. (Not the role pool's pre-made roles, which its background refill makes
 * at any time: a role and its pool row commit together, so one statement sees both or neither.)
 */
async function snapshot(): Promise<Record<string, unknown>> {
  const ns = `${inst.namespace}\\_%`;
  const notPooled = inst.su`not exists (select 1 from tenantry_catalog.role_pool p where rolname = ${inst.namespace + '_t_'} || replace(p.tenant_id::text, '-', ''))`;
  const [c] = await inst.su<Record<string, unknown>[]>`
    select (select count(*)::int from tenantry_catalog.tenants) as tenants,
           (select md5(coalesce(string_agg(t::text, '|' order by t.seq), '')) from tenantry_catalog.tenants t) as tenants_digest,
           (select count(*)::int from tenantry_catalog.audit_log) as audit,
           (select count(*)::int from pg_roles where rolname like ${ns} and ${notPooled}) as roles,
           (select md5(coalesce(string_agg(rolname || ':' || rolcanlogin, ',' order by rolname), '')) from pg_roles where rolname like ${ns} and ${notPooled}) as roles_digest,
           (select count(*)::int from pg_database where datname like ${ns}) as databases`;
  const [s] = await sharedSu<{ schemas: number }[]>`select count(*)::int as schemas from pg_namespace where nspname like 't\\_%'`;
  return { ...c, ...s };
}

type Mention = string | RegExp;

/** The call is refused with `code`, its message is actionable (mentions each of `mentions`), and nothing was written. */
async function refused(call: () => Promise<unknown>, code: ErrorCode, mentions: Mention[]): Promise<TenantryError> {
  const before = await snapshot();
  let caught: TenantryError | undefined;
  await assert.rejects(Promise.resolve().then(call), (err: unknown) => {
    assert.ok(isTenantryError(err), `expected a TenantryError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.status, ERROR_CODES[code].status, 'the HTTP status that goes with the code');
    assert.ok(err.message.trim().length >= 15, `message too terse to act on: ${JSON.stringify(err.message)}`);
    for (const m of mentions) {
      if (typeof m === 'string') assert.ok(err.message.includes(m), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(m)}`);
      else assert.match(err.message, m);
    }
    caught = err;
    return true;
  });
  assert.deepEqual(await snapshot(), before, 'a refused call writes nothing');
  return caught!;
}

const create = (input: unknown): Promise<Tenant> => inst.tenantry.tenants.create(input as CreateTenantInput);

// ---------------------------------------------------------------------------------------------------
// Slugs
// ---------------------------------------------------------------------------------------------------

const badSlugs: [label: string, slug: unknown][] = [
  ['uppercase', 'Acme'],
  ['doubled hyphen', 'a--b'],
  ['leading hyphen', '-abc'],
  ['trailing hyphen', 'abc-'],
  ['2 characters', 'ab'],
  ['64 characters', 'a'.repeat(64)],
  ['unicode', 'café'],
  ['SQL metacharacters', "x'; drop table y; --"],
  ['a double quote', 'a"b'],
  ['an underscore', 'ab_c'],
  ['a space', 'ab c'],
  ['a trailing newline', 'abc\n'],
  ['empty', ''],
  ['a number', 123],
  ['null', null],
  ['missing', undefined],
];

for (const [label, slug] of badSlugs) {
  test(`create() refuses a slug with ${label}: INVALID_SLUG, nothing written`, async () => {
    await refused(() => create({ slug, isolation: 'database' }), 'INVALID_SLUG', [
      slug === undefined ? 'undefined' : JSON.stringify(slug), // the offending value
      '3-63', // and the rule
    ]);
  });
}

test('slugs of exactly 3 and 63 characters are accepted; object names never contain the slug', async () => {
  for (const slug of ['abc', 'a'.repeat(63), '0-z', `${'a1-'.repeat(20)}xyz`]) {
    const t = await create({ slug, isolation: 'schema' });
    assert.equal(t.slug, slug);
    assert.equal(t.status, 'active');
    const hex = t.id.replace(/-/g, '');
    assert.deepEqual(t.placement, { server: 'default', database: `${inst.namespace}_shared`, schema: `t_${hex}`, role: `${inst.namespace}_t_${hex}` }, 'names derive from the id only');
    await inst.tenantry.withTenant(slug, (sql) => sql`insert into agents (name, agent_type) values ('ok', 'x')`);
    assert.equal(await inst.tenantry.query(slug, 'select count(*)::int from agents', [], 'val'), 1);
  }
});

test('a slug full of SQL metacharacters is only ever a bound value: looking it up finds nothing, breaks nothing', async () => {
  await refused(() => inst.tenantry.tenants.get("x'; drop table y; --"), 'TENANT_NOT_FOUND', ["x'; drop table y; --"]);
  await refused(() => inst.tenantry.tenants.get('a"b'), 'TENANT_NOT_FOUND', ['a\\"b']);
});

// ---------------------------------------------------------------------------------------------------
// Other create() input
// ---------------------------------------------------------------------------------------------------

test('create() refuses an unknown tier with INVALID_TIER, naming the valid ones', async () => {
  for (const tier of ['platinum', '', 42, 'free ']) {
    await refused(() => create({ slug: 'tier-test', tier }), 'INVALID_TIER', [JSON.stringify(tier), 'free', 'enterprise']);
  }
});

test('create() refuses an unknown isolation mode with INVALID_ISOLATION, naming the valid ones', async () => {
  for (const isolation of ['hybrid', 'shared', '', 'POOLED ', 3]) {
    await refused(() => create({ slug: 'iso-test', isolation }), 'INVALID_ISOLATION', [JSON.stringify(isolation), 'pooled', 'schema', 'database']);
  }
});

test('create() refuses metadata that is not a JSON object with INVALID_INPUT', async () => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  for (const metadata of [[], ['a'], 'string', 42, null, true, circular]) {
    await refused(() => create({ slug: 'meta-test', isolation: 'schema', metadata }), 'INVALID_INPUT', ['metadata']);
  }
  await refused(() => create({ slug: 'meta-test', metadata: { big: 'x'.repeat(70_000) } }), 'INVALID_INPUT', ['metadata', '64 KiB']);
});

test('create() refuses a bad trialDays with INVALID_INPUT, giving the range', async () => {
  for (const trialDays of [0, -1, 1.5, '7', 3651, Number.NaN, Number.POSITIVE_INFINITY, {}]) {
    await refused(() => create({ slug: 'trial-test', isolation: 'database', trialDays }), 'INVALID_INPUT', ['trialDays', '1 to 3650']);
  }
});

test('create() refuses a bad name and a non-object input with INVALID_INPUT', async () => {
  for (const name of ['', '   ', 'line\nbreak', 'x'.repeat(201), 42]) {
    await refused(() => create({ slug: 'name-test', name }), 'INVALID_INPUT', ['name', '1-200']);
  }
  // a NUL is caught by the one check every call runs first, which says what is wrong with the text
  await refused(() => create({ slug: 'name-test', name: 'a\u0000b' }), 'INVALID_INPUT', ['name', 'NUL']);
  for (const input of [null, undefined, 'acme', 42]) {
    await refused(() => create(input), 'INVALID_INPUT', ['slug']);
  }
});

// ---------------------------------------------------------------------------------------------------
// Unknown tenants, lifecycle input
// ---------------------------------------------------------------------------------------------------

test('calls naming an unknown tenant get TENANT_NOT_FOUND, naming what was asked for', async () => {
  const { tenantry } = inst;
  for (const who of ['no-such-tenant', randomUUID()]) {
    await refused(() => tenantry.tenants.get(who), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.tenants.update(who, { name: 'X' }), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.tenants.suspend(who, 'unpaid'), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.tenants.activate(who), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.tenants.delete(who), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.tenants.delete(who, { hard: true, force: true }), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.withTenant(who, async () => 1), 'TENANT_NOT_FOUND', [who]);
    await refused(() => tenantry.query(who, 'select 1'), 'TENANT_NOT_FOUND', [who]);
  }
  // not a tenant name at all
  for (const who of ['', 'x'.repeat(65)]) {
    await refused(() => tenantry.tenants.get(who), 'INVALID_INPUT', ['id (uuid) or slug']);
  }
});

test('suspend() without a usable reason, and update() with bad fields, are refused and change nothing', async () => {
  const { tenantry } = inst;
  const t = await create({ slug: 'lifecycle-input', isolation: 'database', tier: 'starter', metadata: { a: 1 } });
  for (const reason of [undefined, '', '   ', 'x'.repeat(501), 7]) {
    await refused(() => tenantry.tenants.suspend(t.id, reason as string), 'INVALID_INPUT', ['reason']);
  }
  for (const [input, mention] of [
    [{ status: 'deleted' }, 'status'],
    [{ name: 'ok', slug: 'renamed' }, 'slug'],
    [{ isolation: 'pooled' }, 'isolation'],
  ] as const) {
    await refused(() => tenantry.tenants.update(t.id, input as never), 'INVALID_INPUT', [mention, 'name, tier and metadata']);
  }
  await refused(() => tenantry.tenants.update(t.id, null as never), 'INVALID_INPUT', ['name, tier or metadata']);
  await refused(() => tenantry.tenants.update(t.id, { tier: 'gold' as never }), 'INVALID_TIER', ['"gold"']);
  await refused(() => tenantry.tenants.update(t.id, { metadata: [] as never }), 'INVALID_INPUT', ['metadata']);
  await refused(() => tenantry.tenants.update(t.id, { name: '' }), 'INVALID_INPUT', ['name']);
  const after = await tenantry.tenants.get(t.id);
  assert.equal(after.status, 'active');
  assert.equal(after.tier, 'starter');
  assert.deepEqual(after.metadata, { a: 1 });
  assert.equal(await tenantry.query(t.id, 'select 1 as one', [], 'val'), 1, 'still usable');
});

test('list(), query() and repair() refuse bad options with INVALID_INPUT (or the field\'s own code)', async () => {
  const { tenantry } = inst;
  const t = await create({ slug: 'options-input', isolation: 'pooled' });
  const badLists: [ListTenantsOptions, ErrorCode, Mention[]][] = [
    [{ limit: 0 }, 'INVALID_INPUT', ['limit', '1 to 500', 'got 0']],
    [{ limit: 501 }, 'INVALID_INPUT', ['limit', 'got 501']],
    [{ limit: 1.5 }, 'INVALID_INPUT', ['limit', 'got 1.5']],
    [{ limit: '10' as never }, 'INVALID_INPUT', ['limit']],
    [{ cursor: 'abc' }, 'INVALID_INPUT', ['cursor', 'nextCursor']],
    [{ cursor: '-1' }, 'INVALID_INPUT', ['cursor']],
    [{ cursor: '1.5' }, 'INVALID_INPUT', ['cursor']],
    [{ cursor: '' }, 'INVALID_INPUT', ['cursor']],
    [{ cursor: '1'.repeat(20) }, 'INVALID_INPUT', ['cursor']],
    [{ status: 'gone' }, 'INVALID_INPUT', ['"gone"', 'active']],
    [{ tier: 'gold' as never }, 'INVALID_TIER', ['"gold"']],
    [{ isolation: 'hybrid' as never }, 'INVALID_ISOLATION', ['"hybrid"']],
  ];
  for (const [opts, code, mentions] of badLists) await refused(() => tenantry.tenants.list(opts), code, mentions);

  await refused(() => tenantry.query(t.id, 'select 1', [], 'many' as never), 'INVALID_INPUT', ['"many"', 'all, one, val, execute']);
  await refused(() => tenantry.query(t.id, '   '), 'INVALID_INPUT', ['SQL text']);
  await refused(() => tenantry.query(t.id, 'select $1', 'x' as never), 'INVALID_INPUT', ['params', 'array']);
  await refused(() => tenantry.withTenant(t.id, 'not a function' as never), 'INVALID_INPUT', ['function']);
  for (const olderThanSeconds of [-1, 1.5]) {
    await refused(() => tenantry.repair({ olderThanSeconds }), 'INVALID_INPUT', ['olderThanSeconds']);
  }
});

// ---------------------------------------------------------------------------------------------------
// query() modes
// ---------------------------------------------------------------------------------------------------

for (const isolation of MODES) {
  test(`${isolation}: query() returns all rows, one row, one value or the affected count`, async () => {
    const { tenantry } = inst;
    const t = await create({ slug: `query-${isolation}`, isolation });
    const q = tenantry.query.bind(tenantry);
    assert.deepEqual(await q(t.id, 'select name from agents'), [], 'all, no rows: empty array');
    assert.equal(await q(t.id, 'select name from agents', [], 'one'), null, 'one, no rows: null');
    assert.equal(await q(t.id, 'select name from agents', [], 'val'), null, 'val, no rows: null');
    assert.equal(await q(t.id, `insert into agents (name, agent_type) values ($1, 'q'), ($2, 'q'), ($3, 'q')`, ['c', 'a', 'b'], 'execute'), 3);
    assert.deepEqual(await q(t.slug, 'select name, agent_type from agents order by name'), [
      { name: 'a', agent_type: 'q' }, { name: 'b', agent_type: 'q' }, { name: 'c', agent_type: 'q' },
    ], 'all is the default');
    assert.deepEqual(await q(t.slug, 'select name from agents where name = $1', ['b'], 'one'), { name: 'b' });
    assert.deepEqual(await q(t.slug, 'select name from agents order by name desc', [], 'one'), { name: 'c' }, 'one: the first row');
    assert.equal(await q(t.slug, 'select count(*)::int as n, 99 as other from agents', [], 'val'), 3, 'val: first column of the first row');
    assert.equal(await q(t.slug, 'select null::int as n', [], 'val'), null);
    assert.equal(await q(t.slug, `update agents set status = 'paused' where name <> $1`, ['a'], 'execute'), 2);
    assert.equal(await q(t.slug, `delete from agents where status = 'paused'`, [], 'execute'), 2);
    assert.equal(await q(t.slug, 'select count(*)::int from agents', [], 'val'), 1);
    // an SQL error inside the tenant's transaction is the database's, not a TenantryError, and changes nothing
    await assert.rejects(q(t.slug, `insert into agents (name, agent_type) values ('a', 'dup')`, [], 'execute'), (err: unknown) => {
      assert.equal((err as { code?: string }).code, '23505');
      return true;
    });
    assert.equal(await q(t.slug, 'select count(*)::int from agents', [], 'val'), 1);
  });
}

// ---------------------------------------------------------------------------------------------------
// list(): filters and cursor pagination
// ---------------------------------------------------------------------------------------------------

/** Walks every page of list(opts), checking the page contract, and returns the ids in order. */
async function walk(opts: ListTenantsOptions, pageSize: number): Promise<Tenant[]> {
  const all: Tenant[] = [];
  let cursor: string | undefined;
  for (let pages = 0; ; pages++) {
    assert.ok(pages < 1000, 'pagination terminates');
    const page = await inst.tenantry.tenants.list({ ...opts, limit: pageSize, ...(cursor ? { cursor } : {}) });
    assert.ok(page.items.length <= pageSize, 'a page holds at most limit items');
    if (page.nextCursor !== null) assert.equal(page.items.length, pageSize, 'only the last page is short');
    if (pages > 0) assert.ok(page.items.length > 0, 'no empty trailing page');
    all.push(...page.items);
    if (page.nextCursor === null) return all;
    cursor = page.nextCursor;
  }
}

test('list() filters by status, tier and isolation, and its cursor walks every tenant exactly once', async () => {
  const { tenantry } = inst;
  // a population covering every status, several tiers and every mode
  const mk = (slug: string, isolation: Isolation, tier: string, trialDays?: number): Promise<Tenant> =>
    create({ slug, isolation, tier, ...(trialDays ? { trialDays } : {}) });
  const active = await mk('list-active', 'pooled', 'free');
  const trial = await mk('list-trial', 'schema', 'starter', 7);
  const suspended = await mk('list-suspended', 'database', 'professional');
  await tenantry.tenants.suspend(suspended.id, 'testing list');
  const deleted = await mk('list-deleted', 'pooled', 'enterprise');
  await tenantry.tenants.delete(deleted.id);
  for (let i = 0; i < 7; i++) await mk(`list-filler-${i}`, MODES[i % 3]!, i % 2 ? 'custom' : 'free');

  // the oracle: the catalog itself, read as a superuser
  const oracle = async (where: (t: { status: string; tier: string; isolation: string }) => boolean): Promise<string[]> =>
    (await inst.su<{ id: string; status: string; tier: string; isolation: string }[]>`
      select id, status, tier, isolation from tenantry_catalog.tenants order by seq`).filter(where).map((r) => r.id);

  const everyone = await walk({}, 3);
  const ids = everyone.map((t) => t.id);
  assert.equal(new Set(ids).size, ids.length, 'no tenant twice');
  assert.deepEqual(ids, await oracle((t) => t.status !== 'deleted'), 'every non-deleted tenant, in creation order');
  assert.ok(!ids.includes(deleted.id), 'deleted tenants are excluded by default');
  assert.ok(ids.length >= 10);

  const withDeleted = await walk({ includeDeleted: true }, 1);
  assert.deepEqual(withDeleted.map((t) => t.id), await oracle(() => true), 'includeDeleted walks all of them');

  const cases: [ListTenantsOptions, (t: { status: string; tier: string; isolation: string }) => boolean, Tenant[]][] = [
    [{ status: 'active' }, (t) => t.status === 'active', [active]],
    [{ status: 'trial' }, (t) => t.status === 'trial', [trial]],
    [{ status: 'suspended' }, (t) => t.status === 'suspended', [suspended]],
    [{ status: 'deleted' }, (t) => t.status === 'deleted', [deleted]],
    [{ tier: 'custom' }, (t) => t.tier === 'custom' && t.status !== 'deleted', []],
    [{ tier: 'ENTERPRISE' as never }, (t) => t.tier === 'enterprise' && t.status !== 'deleted', []],
    [{ tier: 'enterprise', includeDeleted: true }, (t) => t.tier === 'enterprise', [deleted]],
    [{ isolation: 'database' }, (t) => t.isolation === 'database' && t.status !== 'deleted', [suspended]],
    [{ isolation: 'pooled', status: 'active' }, (t) => t.isolation === 'pooled' && t.status === 'active', [active]],
    [{ isolation: 'schema', tier: 'starter' }, (t) => t.isolation === 'schema' && t.tier === 'starter' && t.status !== 'deleted', [trial]],
  ];
  for (const [opts, where, mustInclude] of cases) {
    const got = await walk(opts, 2);
    const label = JSON.stringify(opts);
    assert.deepEqual(got.map((t) => t.id), await oracle(where), `list(${label})`);
    for (const t of got) {
      if (opts.status) assert.equal(t.status, opts.status, label);
      if (opts.tier) assert.equal(t.tier, String(opts.tier).toLowerCase(), label);
      if (opts.isolation) assert.equal(t.isolation, opts.isolation, label);
    }
    for (const t of mustInclude) assert.ok(got.some((g) => g.id === t.id), `${label} includes ${t.slug}`);
  }
  assert.ok((await walk({ tier: 'custom' }, 2)).length >= 3, 'the custom fillers are found');
  assert.deepEqual((await tenantry.tenants.list({ status: 'provisioning' })).items, []);
});

// ---------------------------------------------------------------------------------------------------
// Hostile text in every public call: NUL bytes (PostgreSQL's 22021) and lone surrogates (no UTF-8 at
// all) are refused before PostgreSQL sees them, naming the field, with nothing written
// ---------------------------------------------------------------------------------------------------

const POISONS: [label: string, text: string][] = [['a NUL byte', 'ab\u0000cd'], ['a lone high surrogate', 'ab\ud800'], ['a lone low surrogate', '\udc00cd']];

for (const [label, bad] of POISONS) {
  test(`every public call refuses ${label} in any text argument with INVALID_INPUT naming it, writing nothing`, async () => {
    const t = await create({ slug: `hostile-${POISONS.findIndex(([l]) => l === label)}`, isolation: 'pooled', tier: 'enterprise' });
    const { tenantry } = inst;
    const member = await tenantry.members.add(t.id, { email: `m-${randomUUID().slice(0, 8)}@example.com`, role: 'member' });
    const key = await tenantry.keys.create(t.id, { name: 'k' });
    const calls: [field: string, call: () => Promise<unknown>][] = [
      ['slug', () => create({ slug: bad })],
      ['name', () => create({ slug: 'hostile-name', name: bad })],
      ['metadata.note', () => create({ slug: 'hostile-meta', metadata: { note: bad } })],
      ['metadata.deep[1].x', () => create({ slug: 'hostile-deep', metadata: { deep: ['ok', { x: bad }] } })],
      ['a key of metadata', () => create({ slug: 'hostile-key', metadata: { [bad]: 1 } })],
      ['idOrSlug', () => tenantry.tenants.get(bad)],
      ['reason', () => tenantry.tenants.suspend(t.id, bad)],
      ['name', () => tenantry.tenants.update(t.id, { name: bad })],
      ['metadata.plan', () => tenantry.tenants.update(t.id, { metadata: { plan: bad } })],
      ['idempotencyKey', () => tenantry.quotas.increment(t.id, 'api_calls', 1, { idempotencyKey: bad })],
      ['name', () => tenantry.keys.create(t.id, { name: bad })],
      ['keyId', () => tenantry.keys.revoke(t.id, bad)],
      ['presented', () => tenantry.keys.verify(`tnt_live_${bad}`)],
      ['email', () => tenantry.members.add(t.id, { email: `${bad}@example.com`, role: 'member' })],
      ['name', () => tenantry.members.add(t.id, { email: 'named@example.com', name: bad, role: 'member' })],
      ['email', () => tenantry.members.invite(t.id, { email: `${bad}@example.com`, role: 'viewer' })],
      ['userId', () => tenantry.members.updateRole(t.id, bad, 'admin')],
      ['token', () => tenantry.members.accept(bad, {})],
      ['feature', () => tenantry.features.set(t.id, bad, true)],
      ['text', () => tenantry.query(t.id, `select '${bad}'`)],
      ['params[0]', () => tenantry.query(t.id, 'select $1::text', [bad])],
      ['sql', () => tenantry.runTenantSql(t.id, { sql: `select '${bad}'` })],
      ['params[1]', () => tenantry.runTenantSql(t.id, { sql: 'select $1::text, $2::text', params: ['ok', bad] })],
      ['before', () => tenantry.audit(t.id, { before: bad })],
      ['idOrSlug', () => tenantry.withTenant(bad, async () => 1)],
    ];
    for (const [field, call] of calls) {
      const err = await refused(call, 'INVALID_INPUT', [field]);
      assert.equal(err.details?.field, field, `details.field of ${err.message}`);
    }
    // the tenant, its member and key are untouched, and valid text with astral characters passes
    assert.equal((await tenantry.tenants.get(t.id)).status, 'active');
    assert.equal((await tenantry.members.list(t.id)).some((m) => m.userId === member.userId), true);
    assert.equal((await tenantry.keys.list(t.id)).find((k) => k.id === key.id)?.revokedAt, null);
    const named = await tenantry.tenants.update(t.id, { name: 'Ok \ud83d\ude00 Inc', metadata: { emoji: '\ud83d\udc4d' } });
    assert.equal(named.name, 'Ok \ud83d\ude00 Inc');
  });
}

test('absurdly long or deeply nested input is refused with INVALID_INPUT before PostgreSQL sees it', async () => {
  await refused(() => inst.tenantry.tenants.get('x'.repeat(2_000_000)), 'INVALID_INPUT', ['idOrSlug', '1048576']);
  let deep: unknown = 'leaf';
  for (let i = 0; i < 100; i++) deep = { d: deep };
  await refused(() => create({ slug: 'deep-meta', metadata: deep as Record<string, unknown> }), 'INVALID_INPUT', ['metadata', 'deeper than 64']);
});
