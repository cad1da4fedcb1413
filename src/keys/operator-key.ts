import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Sql } from 'postgres';

/**
 * The operator token guarding the HTTP API's operator routes. From TENANTRY_ADMIN_KEY when set;
 * otherwise generated on first start, shown once, and kept only as a SHA-256 hash in the catalog.
 */
export class OperatorKey {
  private hash: Buffer | undefined;

  constructor(private readonly sql: Sql, private readonly configured: string | undefined) {
    if (configured) this.hash = digest(configured);
  }

  /** Loads the stored hash, or creates a key; returns the plaintext only when it was just created. */
  async ensure(): Promise<string | undefined> {
    if (this.hash) return undefined;
    const [row] = await this.sql<{ value: string }[]>`select value #>> '{}' as value from tenantry_catalog.settings where key = 'operator_key_sha256'`;
    if (row) {
      this.hash = Buffer.from(row.value, 'hex');
      return undefined;
    }
    const key = `tnt_op_${randomBytes(24).toString('base64url')}`;
    const inserted = await this.sql`
      insert into tenantry_catalog.settings (key, value) values ('operator_key_sha256', ${this.sql.json(digest(key).toString('hex'))})
      on conflict (key) do nothing returning key`;
    if (inserted.length === 0) return this.ensure(); // another process created it first
    this.hash = digest(key);
    return key;
  }

  /** Constant-time comparison of hashes, so timing reveals nothing about the key. */
  verify(token: string): boolean {
    if (!this.hash || typeof token !== 'string' || token.length === 0 || token.length > 512) return false;
    return timingSafeEqual(digest(token), this.hash);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
