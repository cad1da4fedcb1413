/**
 * Chaos: a Tenantry server process on a PostgreSQL cluster of the test's own, under mixed load (tenant
 * creates in every mode, metered debits, reads, all with Idempotency-Keys and retried the way a client
 * should: same key until a definitive answer), while the postmaster is kill -9'd and restarted and the
 * server itself is kill -9'd and restarted. Afterwards: the server never ended on its own, every
 * request got an answer (no hang past the deadline), every error was problem+json with a code, zero
 * rows stuck in provisioning, zero half-made objects, every acknowledged create present once, every
 * tenant's metered usage exactly its acknowledged debits, and no idempotency claim left in progress.
 *
 * CHAOS_SECONDS (default 30; 0 skips the test) sets how long faults are injected, with at least three
 * rounds (two postmaster kills, one server kill); CI runs the default once.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { findPgBin, startPgCluster, type PgCluster } from './helpers/pg-cluster.js';
import { sleep, startServerProcess, type Answer, type ServerProcess } from './helpers/chaos-harness.js';
import { Tenantry } from '../src/tenantry.js';

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 30);
const DEADLINE_MS = 5_000;
const MODES = ['pooled', 'schema', 'database'] as const;

interface Stats {
  answered: number;
  /** no answer within the deadline plus a margin, while the server process was up */
  hung: number;
  connectionErrors: number;
  notProblemJson: string[];
  unexpected: string[];
  byStatus: Record<string, number>;
}

test('chaos: kill -9 of PostgreSQL and of the server under load leaves nothing stuck, lost or doubled', { skip: SECONDS <= 0 ? 'CHAOS_SECONDS=0' : findPgBin() ? false : 'no PostgreSQL binaries (set PG_BIN)', timeout: (SECONDS + 300) * 1000 }, async (t) => {
  const cluster: PgCluster = await startPgCluster();
  let server: ServerProcess | undefined;
  try {
    server = await startServerProcess(cluster);
    await server.waitReady(120_000);
    const s = server;
    const stats: Stats = { answered: 0, hung: 0, connectionErrors: 0, notProblemJson: [], unexpected: [], byStatus: {} };
    let serverDown = false;

    const record = (what: string, r: Answer | 'no-answer' | 'connection-error'): Answer | undefined => {
      if (r === 'no-answer') { if (!serverDown) stats.hung++; return undefined; }
      if (r === 'connection-error') { stats.connectionErrors++; return undefined; }
      stats.answered++;
      stats.byStatus[r.status] = (stats.byStatus[r.status] ?? 0) + 1;
      if (r.status >= 400 && !r.problem) stats.notProblemJson.push(`${what}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      if (r.ms > DEADLINE_MS + 3_000) stats.hung++;
      return r;
    };
    /** retries with the same key until a definitive answer, as a client should */
    const untilDone = async (what: string, method: string, url: string, body: unknown, key: string, ok: number): Promise<Answer | undefined> => {
      const started = Date.now();
      while (Date.now() - started < 180_000) {
        const r = record(what, await s.call(method, url, body, { 'idempotency-key': key }, DEADLINE_MS + 10_000));
        if (r && r.status === ok) return r;
        if (r && r.status < 500 && r.status !== 409) { stats.unexpected.push(`${what}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`); return undefined; }
        if (r && r.status === 409 && r.body?.code !== 'IDEMPOTENCY_IN_PROGRESS') { stats.unexpected.push(`${what}: 409 ${JSON.stringify(r.body).slice(0, 300)}`); return undefined; }
        await sleep(Math.min(2_000, (r?.retryAfter ?? 0.2) * 1000));
      }
      stats.unexpected.push(`${what}: no definitive answer in 180 s`);
      return undefined;
    };

    const created = new Map<string, string>(); // slug -> id
    const debits = new Map<string, number>(); // tenant id -> acknowledged debits
    let seq = 0;
    const create = async (): Promise<void> => {
      const n = seq++;
      const slug = `c-${n}-${randomBytes(3).toString('hex')}`;
      const r = await untilDone(`create ${slug}`, 'POST', '/v1/tenants', { slug, isolation: MODES[n % 3] }, `create-${slug}`, 201);
      if (r) {
        if (r.body?.slug !== slug) stats.unexpected.push(`create ${slug}: answered with ${JSON.stringify(r.body).slice(0, 200)}`);
        created.set(slug, r.body.id);
        debits.set(r.body.id, 0);
      }
    };
    const debit = async (): Promise<void> => {
      const ids = [...debits.keys()];
      if (ids.length === 0) return create();
      const id = ids[seq++ % ids.length]!;
      const r = await untilDone(`debit ${id}`, 'POST', `/v1/tenants/${id}/usage`, { metric: 'llm_tokens', amount: 1 }, `debit-${randomBytes(8).toString('hex')}`, 200);
      if (r) debits.set(id, debits.get(id)! + 1);
    };
    const read = async (): Promise<void> => {
      const ids = [...debits.keys()];
      if (ids.length === 0) return;
      record('read', await s.call('GET', `/v1/tenants/${ids[seq++ % ids.length]}`, undefined, {}, DEADLINE_MS + 10_000));
    };

    let loading = true;
    const worker = async (): Promise<void> => {
      while (loading) {
        const dice = Math.random();
        await (dice < 0.3 ? create() : dice < 0.85 ? debit() : read());
      }
    };
    const workers = Array.from({ length: 4 }, () => worker());

    // faults: the postmaster and the server, alternately, every few seconds
    const recoveries: { readyMs: number; firstTenantOkMs: number }[] = [];
    const faultsUntil = Date.now() + SECONDS * 1000;
    let round = 0;
    while (Date.now() < faultsUntil || round < 3) {
      await sleep(2_000 + Math.random() * 2_000);
      if (round++ % 3 === 2) {
        serverDown = true;
        await s.kill();
        await s.start();
        await s.waitReady(120_000);
        serverDown = false;
      } else {
        await cluster.kill();
        // while PostgreSQL is down the server answers, fast, with 503
        await sleep(500);
        const during = await s.call('GET', `/v1/tenants`, undefined, {}, DEADLINE_MS + 5_000);
        assert.ok(typeof during === 'object', `a request while PostgreSQL is down got ${String(during)}`);
        assert.equal(during.status, 503, JSON.stringify(during.body));
        assert.ok(during.problem && ['DATABASE_UNAVAILABLE', 'REQUEST_TIMEOUT'].includes(during.body.code), JSON.stringify(during.body));
        assert.ok(during.retryAfter !== undefined && during.retryAfter > 0, 'Retry-After on 503');
        await sleep(Math.random() * 1_500);
        await cluster.start();
        const up = Date.now();
        await s.waitReady(60_000);
        const readyMs = Date.now() - up;
        let firstTenantOkMs = -1;
        while (Date.now() - up < 60_000) {
          const r = await s.call('GET', '/v1/tenants?limit=1', undefined, {}, DEADLINE_MS + 5_000);
          if (typeof r === 'object' && r.status === 200) { firstTenantOkMs = Date.now() - up; break; }
          await sleep(20);
        }
        recoveries.push({ readyMs, firstTenantOkMs });
        assert.ok(s.alive(), `the server ended when PostgreSQL died:\n${s.log().slice(-3000)}`);
      }
    }
    loading = false;
    await Promise.all(workers);
    await s.waitReady(60_000);

    // the background healer removes whatever the killed server left in provisioning (repair-after 5 s)
    const catalog = postgres(cluster.url, { max: 2, onnotice: () => {} });
    try {
      let stuck = -1;
      for (let i = 0; i < 120; i++) {
        const [row] = await catalog<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenants where status = 'provisioning'`;
        stuck = row!.n;
        if (stuck === 0) break;
        await sleep(500);
      }
      assert.equal(stuck, 0, 'no tenant stuck in provisioning');

      t.diagnostic(`faults for ${SECONDS} s: ${round} rounds; ${created.size} tenants created, ${[...debits.values()].reduce((a, b) => a + b, 0)} debits acknowledged`);
      t.diagnostic(`answers: ${stats.answered} (${JSON.stringify(stats.byStatus)}), hung: ${stats.hung}, connection errors (server killed): ${stats.connectionErrors}`);
      t.diagnostic(`PostgreSQL back up -> /readyz 200 (ms): ${recoveries.map((r) => r.readyMs).join(', ')}; -> first tenant request 200 (ms): ${recoveries.map((r) => r.firstTenantOkMs).join(', ')}`);

      assert.deepEqual(s.unexpectedExits, [], 'the server never ended on its own');
      assert.ok(s.alive(), 'the server is still up');
      assert.equal(stats.hung, 0, 'every request got an answer within its deadline');
      assert.deepEqual(stats.notProblemJson, [], 'every error is problem+json with a code');
      assert.deepEqual(stats.unexpected, [], `no request got a wrong definitive answer; the server's log ends:\n${s.log().slice(-6000)}`);
      assert.ok(created.size > 0 && recoveries.length > 0, 'the run created tenants and restarted PostgreSQL');

      // every acknowledged create is present exactly once; nothing else was created
      const rows = await catalog<{ slug: string; id: string; status: string }[]>`
        select slug, id::text, status from tenantry_catalog.tenants where slug like 'c-%'`;
      assert.deepEqual(new Map(rows.map((r) => [r.slug, r.id])), created, 'the tenants are exactly the acknowledged creates');
      assert.ok(rows.every((r) => r.status === 'active'), 'every created tenant is active');

      // quotas exact: every tenant's usage is its acknowledged debits, no more, no less
      for (const [id, n] of debits) {
        const u = await s.call('GET', `/v1/tenants/${id}/usage`);
        assert.ok(typeof u === 'object' && u.status === 200, `usage of ${id}`);
        const used = (u.body.metrics as { metric: string; used: number }[]).find((m) => m.metric === 'llm_tokens')?.used ?? 0;
        assert.equal(used, n, `tenant ${id}: usage ${used} for ${n} acknowledged debits`);
      }

      // no claim stuck in progress
      const [claims] = await catalog<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.http_idempotency where status is null`;
      assert.equal(claims!.n, 0, 'no idempotency claim left in progress');
    } finally {
      await catalog.end({ timeout: 5 });
    }

    // zero half-made objects and a clean doctor, seen by the library itself
    const lib = await Tenantry.open({ databaseUrl: cluster.url, namespace: 'chaos', schemaPoolSize: 0 });
    try {
      const report = await lib.doctor();
      for (const check of ['stuck-provisioning', 'half-made-objects', 'idempotency-claims']) {
        const c = report.checks.filter((x) => x.check === check);
        assert.ok(c.length > 0 && c.every((x) => x.ok), `${check}: ${JSON.stringify(c)}`);
      }
      // (the test's catalog is the cluster's `postgres` database, which PUBLIC may connect to: not a fault here)
      const failing = report.checks.filter((c) => !c.ok && c.check !== 'catalog-connect');
      assert.deepEqual(failing, [], 'doctor is otherwise clean');
    } finally {
      await lib.close();
    }
  } finally {
    await server?.stop().catch(() => undefined);
    await cluster.destroy();
  }
});
