import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Tenantry, type Tenant, type Isolation } from '../src/index.js';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';

/**
 * Round trips of a tenant transaction, counted on the socket (issue #10): a TCP proxy between Tenantry
 * and PostgreSQL counts, on the runtime role's connections, every burst the client sends after the
 * server has answered (a client write waiting for a reply is one round trip). The batch form (a
 * statement or a list handed back unawaited, and query()) must be one round trip in every mode, direct
 * and behind a transaction pooler; the awaited form with one statement two.
 */

interface Tap { user: string; roundTrips: number }

/** A loopback proxy to host:port that tags each connection with its startup user and counts round trips. */
async function countingProxy(host: string, port: number): Promise<{ port: number; taps: Tap[]; close(): Promise<void> }> {
  const taps: Tap[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    sockets.add(client).add(upstream);
    const tap: Tap = { user: '', roundTrips: 0 };
    taps.push(tap);
    let lastFromClient = false;
    let head = Buffer.alloc(0);
    client.on('data', (d) => {
      if (!tap.user) {
        // the startup message: int32 length, int32 protocol (or the SSLRequest code), then key\0value\0 pairs
        head = Buffer.concat([head, d]);
        if (head.length >= 8 && head.readInt32BE(4) === 196608 && head.length >= head.readInt32BE(0)) {
          const pairs = head.subarray(8, head.readInt32BE(0)).toString('utf8').split('\0');
          const i = pairs.indexOf('user');
          tap.user = i >= 0 ? pairs[i + 1]! : '?';
        }
      } else if (!lastFromClient) {
        tap.roundTrips++;
      }
      lastFromClient = true;
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      lastFromClient = false;
      client.write(d);
    });
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    taps,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let inst: TestInstallation;
let proxy: Awaited<ReturnType<typeof countingProxy>>;
let direct: Tenantry;
let behindPooler: Tenantry;
const tenants = new Map<Isolation, Tenant>();

before(async () => {
  inst = await freshInstallation({ poolSize: 1 });
  const target = new URL(inst.adminUrl);
  proxy = await countingProxy(target.hostname, Number(target.port || 5432));
  const proxied = new URL(inst.adminUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(proxy.port);
  // two more instances of the installation, their data-plane connections through the proxy: one direct,
  // one told the URL is a transaction pooler (no startup parameters, settings pinned in each transaction)
  direct = await Tenantry.open({ databaseUrl: proxied.toString(), namespace: inst.namespace, schemaPoolSize: 0, poolSize: 1, maxConnections: 8 });
  behindPooler = await Tenantry.open({ databaseUrl: proxied.toString(), directUrl: inst.adminUrl, pooler: 'transaction', namespace: inst.namespace, schemaPoolSize: 0, poolSize: 1, maxConnections: 8 });
  for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
    const t = await inst.tenantry.tenants.create({ slug: `rt-${mode}`, isolation: mode });
    await inst.tenantry.withTenant(t.id, (sql) => sql`insert into agents (name, agent_type) select 'agent-' || g, 'calculator' from generate_series(1, 3) g`);
    tenants.set(mode, t);
  }
});
after(async () => {
  await direct?.close();
  await behindPooler?.close();
  await proxy?.close();
  await inst?.cleanup();
});

/** Round trips on the runtime role's connections while `run` runs (after one warm-up run opened the pool). */
async function roundTrips<T>(run: () => Promise<T>): Promise<{ value: T; roundTrips: number }> {
  await run();
  const runtime = `${inst.namespace}_runtime`;
  const total = (): number => proxy.taps.filter((t) => t.user === runtime).reduce((n, t) => n + t.roundTrips, 0);
  const before = total();
  const value = await run();
  return { value, roundTrips: total() - before };
}

for (const [label, lib] of [['direct', () => direct], ['behind a transaction pooler', () => behindPooler]] as const) {
  for (const mode of ['pooled', 'schema', 'database'] as Isolation[]) {
    test(`${label}, ${mode}: the batch form (one statement handed back unawaited) is one round trip`, async () => {
      const t = tenants.get(mode)!;
      const { value, roundTrips: n } = await roundTrips(() => lib().withTenant(t.id, (sql) => sql<{ name: string }[]>`select name from agents order by name`));
      assert.deepEqual(value.map((r) => r.name), ['agent-1', 'agent-2', 'agent-3']);
      assert.equal(n, 1);
    });

    test(`${label}, ${mode}: the batch form with a list of statements, one with a typed parameter, is one round trip`, async () => {
      const t = tenants.get(mode)!;
      const { value, roundTrips: n } = await roundTrips(() => lib().withTenant(t.id, (sql) => [
        sql`select count(*)::int as n from agents`,
        sql<{ name: string }[]>`select name from agents where name = ${sql.typed('agent-2', 25)}`,
        sql`select tenantry.current_tenant() as id`,
      ] as unknown as Promise<unknown>) as unknown as Promise<[{ n: number }[], { name: string }[], { id: string }[]]>);
      assert.equal(value[0][0]!.n, 3);
      assert.deepEqual(value[1].map((r) => r.name), ['agent-2']);
      assert.equal(value[2][0]!.id, t.id);
      assert.equal(n, 1);
    });

    test(`${label}, ${mode}: query() is one round trip`, async () => {
      const t = tenants.get(mode)!;
      const { value, roundTrips: n } = await roundTrips(() => lib().query(t.id, 'select count(*)::int as n from agents', [], 'val'));
      assert.equal(value, 3);
      assert.equal(n, 1);
    });

    test(`${label}, ${mode}: the awaited form with one statement is two round trips`, async () => {
      const t = tenants.get(mode)!;
      const { value, roundTrips: n } = await roundTrips(() => lib().withTenant(t.id, async (sql) => {
        const rows = await sql<{ id: string }[]>`select tenantry.current_tenant() as id`;
        return rows[0]!.id;
      }));
      assert.equal(value, t.id);
      assert.equal(n, 2);
    });
  }
}

test('the known cost of an untyped parameter: postgres.js asks the server for its type and holds the rest of the pipeline until it has run', async () => {
  // README "Round trips": a statement whose parameters have no type (a JS string or number) waits for the
  // server's Describe before its Bind, and postgres.js sends nothing else on the connection until it has
  // run, so COMMIT follows a round trip later: three in all. Typed, the same statement is one (above).
  const t = tenants.get('pooled')!;
  const { value, roundTrips: n } = await roundTrips(() => direct.withTenant(t.id, (sql) => sql<{ name: string }[]>`select name from agents where name = ${'agent-3'}`));
  assert.deepEqual(value.map((r) => r.name), ['agent-3']);
  assert.equal(n, 3);
});
