/**
 * Key checks (issue 8, finding 8): the time of `keys.verify()` for a wrong secret of a real key id and
 * for an unknown key id, which must not be told apart, beside the unavoidable work (one SHA-256 and one
 * constant-time compare); and a forged key id's cost beside the catalog lookup by id that each forged
 * key cost before. Interleaved rounds in this one process; medians and p99 in microseconds.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { intFromEnv, median, percentile, progress, type BenchContext } from './lib.js';
import { assembleKey, keyIdOf, randomBase62 } from '../test/helpers/keys.js';

const N = intFromEnv('BENCH_KEY_CHECKS', 20_000, 100);
const ROUNDS = 5;

const us = (x: number): string => `${x.toFixed(1)} µs`;

async function sample(n: number, op: (i: number) => Promise<unknown> | unknown): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await op(i);
    out.push((performance.now() - start) * 1000);
  }
  return out;
}

export async function benchKeyChecks({ inst, version }: BenchContext): Promise<string> {
  const { tenantry } = inst;
  const t = await tenantry.tenants.create({ slug: 'bench-keys', tier: 'enterprise' });
  for (let i = 0; i < 200; i++) await tenantry.keys.create(t.id, { name: `k${i}`, scopes: ['read'] });
  const realId = keyIdOf(t.apiKey!.key);
  await tenantry.keys.verify(t.apiKey!.key);
  const wrong = Array.from({ length: 64 }, () => assembleKey(realId, randomBase62(32)));
  const unknown = Array.from({ length: 64 }, () => assembleKey(randomBase62(12), randomBase62(32)));
  const fail = (k: string): Promise<unknown> => tenantry.keys.verify(k).catch(() => undefined);
  const stored = createHash('sha256').update(randomBytes(24)).digest();
  const secrets = Array.from({ length: 64 }, () => randomBase62(32));
  const su = inst.su;
  const lookups = Array.from({ length: 64 }, () => randomBase62(12));

  const wrongT: number[] = [];
  const unknownT: number[] = [];
  const bareT: number[] = [];
  const queryT: number[] = [];
  const queriesBefore = tenantry.keys.work.lookups;
  for (let r = 0; r < ROUNDS; r++) {
    wrongT.push(...await sample(N / ROUNDS, (i) => fail(wrong[i % wrong.length]!)));
    unknownT.push(...await sample(N / ROUNDS, (i) => fail(unknown[i % unknown.length]!)));
    bareT.push(...await sample(N / ROUNDS, (i) => timingSafeEqual(createHash('sha256').update(secrets[i % secrets.length]!).digest(), stored)));
    // what each forged key cost before: a catalog lookup by key id (fewer samples: it is slow)
    queryT.push(...await sample(Math.max(50, N / ROUNDS / 20), async (i) => su`
      select k.*, m.role from tenantry_catalog.api_keys k
      left join tenantry_catalog.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.member_user_id
      where k.id = ${lookups[i % lookups.length]!}`));
    progress(`key-checks: round ${r + 1}/${ROUNDS}`);
  }
  const catalogQueries = tenantry.keys.work.lookups - queriesBefore;
  const stats = (xs: number[]): { med: number; p99: number } => ({ med: median(xs), p99: percentile(xs, 99) });
  const [w, u, b, q] = [stats(wrongT), stats(unknownT), stats(bareT), stats(queryT)];
  return [
    '### Key checks: a wrong secret and an unknown key id',
    '',
    `PostgreSQL ${version}; ${N} checks per kind in ${ROUNDS} interleaved rounds, 201 keys in the installation; ${catalogQueries} catalog queries made by the ${2 * N} failed checks.`,
    '',
    '| check | tenantry median (p99) | baseline median (p99) | ratio of medians |',
    '| --- | ---: | ---: | ---: |',
    `| \`verify()\`, wrong secret of a real key id | ${us(w.med)} (${us(w.p99)}) | bare SHA-256 + constant-time compare: ${us(b.med)} (${us(b.p99)}) | ${(w.med / b.med).toFixed(2)}x |`,
    `| \`verify()\`, unknown key id | ${us(u.med)} (${us(u.p99)}) | bare SHA-256 + constant-time compare: ${us(b.med)} (${us(b.p99)}) | ${(u.med / b.med).toFixed(2)}x |`,
    `| wrong secret vs unknown id (1.00: not told apart) | ${us(w.med)} | ${us(u.med)} | ${(w.med / u.med).toFixed(2)} |`,
    `| a forged key id, refused | ${us(u.med)} (${us(u.p99)}) | a catalog lookup by key id (its cost before): ${us(q.med)} (${us(q.p99)}) | ${(q.med / u.med).toFixed(1)}x cheaper |`,
  ].join('\n');
}
