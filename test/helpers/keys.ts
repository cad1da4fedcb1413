import { randomBytes } from 'node:crypto';

const B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** The documented checksum (CRC-32 of the body in 6 base-62 digits), to forge well-formed keys. */
export function keyChecksum(body: string): string {
  let c = ~0;
  for (const byte of Buffer.from(body, 'utf8')) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  let n = ~c >>> 0;
  let out = '';
  for (let i = 0; i < 6; i++) { out = B62[n % 62] + out; n = Math.floor(n / 62); }
  return out;
}

/** A well-formed key (right checksum) from a key id and a secret, as a forger would build it. */
export const assembleKey = (keyId: string, secret: string): string => `tnt_live_${keyId}_${secret}${keyChecksum(`tnt_live_${keyId}_${secret}`)}`;

/** The key id of a key. */
export const keyIdOf = (key: string): string => /^tnt_live_([0-9A-Za-z]{12})_/.exec(key)![1]!;

/** Random base-62 text: a key id is 12 characters, a secret 32. */
export function randomBase62(n: number): string {
  let out = '';
  while (out.length < n) for (const b of randomBytes(n * 2)) if (b < 248 && out.length < n) out += B62[b % 62];
  return out;
}
