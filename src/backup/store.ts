import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { TenantryError } from '../errors.js';

/**
 * Where backup archives are kept. A key is a relative path of safe segments
 * (`<tenant id>/<backup id>/manifest.json`); stores never see anything a caller typed.
 */
export interface BackupStore {
  /** a short name recorded with each backup ('local', 's3') */
  readonly kind: string;
  put(key: string, body: Buffer): Promise<void>;
  get(key: string): Promise<Buffer>;
  /** the keys under a prefix */
  list(prefix: string): Promise<string[]>;
  /** removes every key under a prefix */
  remove(prefix: string): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/** Refuses any key that is not made of plain segments (no `..`, no absolute path, no empty part). */
export function checkKey(key: string): string {
  const parts = key.split('/');
  if (parts.length === 0 || parts.some((p) => !SEGMENT.test(p) || p.includes('..'))) {
    throw new TenantryError('INVALID_INPUT', `Not a backup store key: ${JSON.stringify(key)}.`);
  }
  return key;
}

/** A folder on this machine (TENANTRY_BACKUP_DIR); files are written whole or not at all (temp file, rename). */
export class LocalBackupStore implements BackupStore {
  readonly kind = 'local';

  constructor(private readonly dir: string) {}

  private file(key: string): string {
    return path.join(this.dir, ...checkKey(key).split('/'));
  }

  async put(key: string, body: Buffer): Promise<void> {
    const file = this.file(key);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${randomBytes(6).toString('hex')}.partial`;
    await writeFile(tmp, body, { mode: 0o600 });
    await rename(tmp, file);
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.file(key));
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') throw new TenantryError('BACKUP_NOT_FOUND', `No ${key} in the backup store.`);
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.file(prefix);
    const out: string[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        if (e.name.endsWith('.partial')) continue;
        if (e.isDirectory()) await walk(path.join(dir, e.name), `${rel}/${e.name}`);
        else if (e.isFile()) out.push(`${rel}/${e.name}`);
      }
    };
    await walk(base, prefix);
    return out.sort();
  }

  async remove(prefix: string): Promise<void> {
    await rm(this.file(prefix), { recursive: true, force: true });
  }
}

/** A store built on first use (the S3 SDK is loaded only by a process that touches backups). */
export function lazyStore(kind: string, load: () => Promise<BackupStore>): BackupStore {
  let store: Promise<BackupStore> | undefined;
  const get = (): Promise<BackupStore> => (store ??= load().catch((err: unknown) => { store = undefined; throw err; }));
  return {
    kind,
    put: async (key, body) => (await get()).put(key, body),
    get: async (key) => (await get()).get(key),
    list: async (prefix) => (await get()).list(prefix),
    remove: async (prefix) => (await get()).remove(prefix),
  };
}
