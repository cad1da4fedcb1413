import { readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { TenantryError } from '../errors.js';

export interface MigrationFile {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

const FILE = /^(\d+)[_-]([\w.-]+)\.sql$/;

/** Reads a folder of numbered `.sql` files (`0001_name.sql`), in version order. */
export function loadMigrationFiles(dir: string): MigrationFile[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new TenantryError('INVALID_CONFIG', `Migrations folder ${dir} does not exist. Point tenantMigrations (TENANTRY_TENANT_MIGRATIONS) at a folder of numbered .sql files.`);
  }
  const files: MigrationFile[] = [];
  const seen = new Map<number, string>();
  for (const entry of readdirSync(dir).sort()) {
    if (!entry.endsWith('.sql')) continue;
    const m = FILE.exec(entry);
    if (!m) {
      throw new TenantryError('INVALID_CONFIG', `Migration file ${entry} in ${dir} is not named like 0001_description.sql.`);
    }
    const version = Number(m[1]);
    if (version < 1) throw new TenantryError('INVALID_CONFIG', `Migration ${entry}: versions start at 1.`);
    const other = seen.get(version);
    if (other) throw new TenantryError('INVALID_CONFIG', `Migrations ${other} and ${entry} in ${dir} share version ${version}.`);
    seen.set(version, entry);
    const sql = readFileSync(path.join(dir, entry), 'utf8');
    files.push({ version, name: entry, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  if (files.length === 0) throw new TenantryError('INVALID_CONFIG', `No .sql migrations found in ${dir}.`);
  return files.sort((a, b) => a.version - b.version);
}
