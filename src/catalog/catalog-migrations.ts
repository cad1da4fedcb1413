import type { Sql } from 'postgres';
import { TenantryError } from '../errors.js';
import { loadMigrationFiles } from '../migrations/files.js';
import { CATALOG_MIGRATIONS_DIR } from '../config.js';
import type { Logger } from '../logger.js';

/** Advisory lock key serialising catalog upgrades and installation bootstrap across processes. */
export const CATALOG_LOCK_KEY = 0x74656e61; // 'tena'

export const CATALOG_SCHEMA = 'tenantry_catalog';

/**
 * Creates or upgrades the catalog schema. A session-level advisory lock on a reserved connection
 * serialises concurrent starts (two processes racing would otherwise both try file 0001); each file
 * then runs in its own transaction and is recorded with its checksum.
 */
export async function migrateCatalog(sql: Sql, logger: Logger, body?: (lock: Sql) => Promise<void>): Promise<number> {
  const files = loadMigrationFiles(CATALOG_MIGRATIONS_DIR);
  const conn = await sql.reserve();
  try {
    await conn`select pg_advisory_lock(${CATALOG_LOCK_KEY})`;
    try {
      await conn.unsafe(`
        create schema if not exists ${CATALOG_SCHEMA};
        revoke all on schema ${CATALOG_SCHEMA} from public;
        create table if not exists ${CATALOG_SCHEMA}.migrations (
          version integer primary key, name text not null, checksum text not null,
          applied_at timestamptz not null default now());`);
      const applied = await conn<{ version: number; name: string; checksum: string }[]>`
        select version, name, checksum from tenantry_catalog.migrations order by version`;
      const byVersion = new Map(applied.map((r) => [r.version, r]));
      for (const file of files) {
        const done = byVersion.get(file.version);
        if (done) {
          if (done.checksum !== file.checksum) {
            throw new TenantryError('MIGRATION_CHECKSUM_MISMATCH', `Catalog migration ${file.name} was changed after it was applied (checksum differs). Restore the original file; add a new numbered file for new changes.`);
          }
          continue;
        }
        // a reserved connection has no begin(): run the transaction by hand
        await conn`begin`;
        try {
          await conn.unsafe(file.sql);
          await conn`insert into tenantry_catalog.migrations (version, name, checksum) values (${file.version}, ${file.name}, ${file.checksum})`;
          await conn`commit`;
        } catch (err) {
          await conn`rollback`.catch(() => undefined);
          throw new TenantryError('MIGRATION_FAILED', `Catalog migration ${file.name} failed: ${(err as Error).message}`, { migration: file.name }, { cause: err });
        }
        logger.info({ migration: file.name }, 'applied catalog migration');
      }
      const newest = Math.max(...files.map((f) => f.version));
      const known = applied.length ? Math.max(...applied.map((r) => r.version)) : 0;
      if (known > newest) {
        throw new TenantryError('INVALID_CONFIG', `The catalog is at version ${known}, newer than this Tenantry (${newest}). Upgrade Tenantry.`);
      }
      if (body) await body(conn);
      return newest;
    } finally {
      await conn`select pg_advisory_unlock(${CATALOG_LOCK_KEY})`.catch(() => undefined);
    }
  } finally {
    conn.release();
  }
}

/** The newest catalog version this code knows and the one the database holds (for readiness checks). */
export async function catalogVersions(sql: Sql): Promise<{ expected: number; current: number }> {
  const files = loadMigrationFiles(CATALOG_MIGRATIONS_DIR);
  const [row] = await sql<{ v: number | null }[]>`select max(version) as v from tenantry_catalog.migrations`;
  return { expected: Math.max(...files.map((f) => f.version)), current: row?.v ?? 0 };
}
