/**
 * Envelope encryption (issue #15): tenantry.crypto.encrypt and decrypt of a 1 KiB value, cycling over
 * 10 tenants with their data keys warm in the key cache, beside a bare AES-256-GCM loop (node:crypto,
 * one fixed key, a fresh nonce and the same size of additional data per call) in the same process.
 * Interleaved rounds; medians of the rounds' per-operation times and throughput.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Tenantry } from '../src/index.js';
import { intFromEnv, median, progress, ratio, type BenchContext } from './lib.js';

const N = intFromEnv('BENCH_CRYPTO_OPS', 20_000, 100);
const ROUNDS = 5;
const TENANTS = 10;
const SIZE = 1024;

async function round(n: number, op: (i: number) => Promise<unknown> | unknown): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < n; i++) await op(i);
  return ((performance.now() - start) * 1000) / n; // µs per operation
}

export async function benchCrypto({ inst, version }: BenchContext): Promise<string> {
  const tn = await Tenantry.open({ databaseUrl: inst.adminUrl, namespace: inst.namespace, maxConnections: 4, masterKey: randomBytes(32).toString('base64') });
  try {
    const ids: string[] = [];
    for (let i = 0; i < TENANTS; i++) ids.push((await tn.tenants.create({ slug: `bench-crypto-${i}`, isolation: 'pooled' })).id);
    const plain = randomBytes(SIZE);
    const context = 'users.ssn:42';
    const cts = await Promise.all(ids.map((id) => tn.crypto.encrypt(id, plain, { context })));
    // the bare loop: what the same sealing costs without a tenant, a key lookup or a format
    const key = randomBytes(32);
    const aad = randomBytes(5 + 16 + 4 + Buffer.byteLength(context));
    const bareSeal = (): Buffer => {
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', key, nonce);
      c.setAAD(aad);
      return Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()]);
    };
    const bareCt = bareSeal();
    const bareOpen = (): Buffer => {
      const d = createDecipheriv('aes-256-gcm', key, bareCt.subarray(0, 12));
      d.setAAD(aad);
      d.setAuthTag(bareCt.subarray(bareCt.length - 16));
      return Buffer.concat([d.update(bareCt.subarray(12, bareCt.length - 16)), d.final()]);
    };
    const per = Math.max(1, Math.floor(N / ROUNDS));
    const enc: number[] = []; const dec: number[] = []; const benc: number[] = []; const bdec: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      enc.push(await round(per, (i) => tn.crypto.encrypt(ids[i % TENANTS]!, plain, { context })));
      benc.push(await round(per, () => bareSeal()));
      dec.push(await round(per, (i) => tn.crypto.decrypt(ids[i % TENANTS]!, cts[i % TENANTS]!, { context })));
      bdec.push(await round(per, () => bareOpen()));
      progress(`crypto: round ${r + 1}/${ROUNDS}`);
    }
    const row = (name: string, t: number, b: number): string =>
      `| ${name} | ${t.toFixed(1)} µs (${Math.round(1e6 / t).toLocaleString('en')}/s) | ${b.toFixed(1)} µs (${Math.round(1e6 / b).toLocaleString('en')}/s) | ${ratio(t, b)} |`;
    return [
      `### Envelope encryption (PostgreSQL ${version}; ${per * ROUNDS} operations each, ${SIZE}-byte values, ${TENANTS} tenants, data keys warm)`,
      '',
      '| operation | tenantry.crypto (median per op, throughput) | bare AES-256-GCM loop | ratio |',
      '| --- | --- | --- | --- |',
      row('encrypt', median(enc), median(benc)),
      row('decrypt', median(dec), median(bdec)),
      '',
      'The difference is the tenant lookup (cached), the key cache, the input checks and the versioned format; a cold key adds one catalog read and one unwrap.',
    ].join('\n');
  } finally {
    await tn.close();
  }
}
