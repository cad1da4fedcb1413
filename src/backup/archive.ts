import { Readable } from 'node:stream';
import type { BackupStore } from './store.js';

/**
 * A backup as one tar (POSIX ustar) stream, for download: every file of the backup under its id's
 * folder, read from the store one file at a time. The bytes are the store's own (compressed COPY text,
 * the signed manifest, an export's JSON Lines and CSV), so a downloaded backup verifies like a stored one.
 */
export function tarStream(store: BackupStore, prefix: string, root: string): Readable {
  async function* entries(): AsyncGenerator<Buffer> {
    const keys = await store.list(prefix);
    for (const key of keys) {
      const rel = key.slice(prefix.length + 1);
      const body = await store.get(key);
      const slash = rel.lastIndexOf('/');
      const dir = slash === -1 ? root : `${root}/${rel.slice(0, slash)}`;
      yield tarHeader(dir, rel.slice(slash + 1), body.length);
      yield body;
      const pad = (512 - (body.length % 512)) % 512;
      if (pad) yield Buffer.alloc(pad);
    }
    // end of archive: two empty blocks
    yield Buffer.alloc(1024);
  }
  return Readable.from(entries(), { objectMode: false });
}

function tarHeader(dir: string, name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (value: string, offset: number, length: number): void => { h.write(value, offset, Math.min(length, Buffer.byteLength(value)), 'utf8'); };
  const octal = (n: number, length: number): string => `${n.toString(8).padStart(length - 1, '0')}\0`;
  put(name, 0, 100);
  put(octal(0o600, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(Math.floor(Date.now() / 1000), 12), 136, 12);
  put('        ', 148, 8);
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put(dir, 345, 155);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}
