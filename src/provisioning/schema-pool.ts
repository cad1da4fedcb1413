import { randomBytes } from 'node:crypto';
import type { Core } from '../core.js';
import { latestVersion } from '../core.js';
import { ident } from '../identifiers.js';
import { migrateTarget } from '../isolation/data-plane.js';

/**
 * Pre-created, pre-migrated schemas for schema-mode signups. Claiming one is a rename plus the tenant's
 * grants and pinned policies, instead of running every CREATE of the tenant migrations; the pool is
 * refilled in the background. Pool schemas are named `p_<random>`, hold no rows and grant nothing to
 * anyone until claimed.
 */
export class SchemaPool {
  private filling: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly core: Core, private readonly size: number) {}

  /**
   * Takes a current pool schema and renames it to `target`, in one transaction; false when the pool is
   * empty (the caller then creates the schema). SKIP LOCKED lets concurrent signups take different ones.
   */
  async claim(target: string): Promise<boolean> {
    if (this.size === 0) return false;
    const claimed = await this.core.sharedAdmin.begin(async (tx) => {
      const [row] = await tx<{ schema_name: string }[]>`
        delete from tenantry.schema_pool
        where schema_name = (
          select schema_name from tenantry.schema_pool where version = ${latestVersion(this.core)}
          order by created_at limit 1 for update skip locked)
        returning schema_name`;
      if (!row) return false;
      await tx.unsafe(`alter schema ${ident(row.schema_name)} rename to ${ident(target)}`);
      await tx`update tenantry.migrations set schema_name = ${target} where schema_name = ${row.schema_name}`;
      return true;
    });
    this.refill();
    return claimed;
  }

  /** Starts a background refill unless one is running; errors are logged, never thrown. */
  refill(): void {
    if (this.size === 0 || this.filling || this.stopped) return;
    this.filling = this.fill()
      .catch((err: unknown) => this.core.logger.warn({ err }, 'schema pool refill failed'))
      .finally(() => { this.filling = undefined; });
  }

  /** Drops pool schemas behind the latest tenant migration and creates new ones up to the pool size. */
  async fill(): Promise<void> {
    const sql = this.core.sharedAdmin;
    const latest = latestVersion(this.core);
    const stale = await sql<{ schema_name: string }[]>`
      delete from tenantry.schema_pool
      where version < ${latest} and (version > 0 or created_at < now() - interval '10 minutes') returning schema_name`;
    for (const { schema_name } of stale) await sql.unsafe(`drop schema if exists ${ident(schema_name)} cascade`);
    for (;;) {
      if (this.stopped) return;
      const [c] = await sql<{ n: number }[]>`select count(*)::int as n from tenantry.schema_pool`;
      if ((c?.n ?? 0) >= this.size) return;
      const name = `p_${randomBytes(16).toString('hex')}`;
      await sql.begin(async (tx) => {
        await tx.unsafe(`create schema ${ident(name)} authorization ${ident(this.core.roles.owner)}`);
        await tx`insert into tenantry.schema_pool (schema_name, version) values (${name}, 0)`;
      });
      const r = await migrateTarget(sql, {
        schema: name, owner: this.core.roles.owner, migrations: this.core.migrations,
        // nobody may touch a pool schema until a tenant claims it
        rls: { schema: name, grantees: [] },
      });
      await sql`update tenantry.schema_pool set version = ${r.version} where schema_name = ${name}`;
    }
  }

  /** Waits for a running refill and stops new ones (before closing the pools). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.filling;
  }
}
