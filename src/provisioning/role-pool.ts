import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import type { Core } from '../core.js';
import { cachedTenantRoleDefaults } from '../installation.js';
import { ident } from '../identifiers.js';
import { STRATEGIES, createTenantRole } from '../isolation/modes.js';

/**
 * Login roles made in advance for pooled signups. Creating a tenant's role (CREATE ROLE with its
 * verifier, its role defaults, its comment, the group grant and the grant to Tenantry's user) is most
 * of a pooled signup's time; the pool creates roles for tenant ids chosen beforehand, exactly as a
 * signup would (same name, password, defaults, comment and grants, by the same createTenantRole), and
 * a signup takes one of those ids inside its own transaction. No role DDL runs on the signup's path.
 *
 * - Taking is `DELETE ... FOR UPDATE SKIP LOCKED ... RETURNING`, committed at once: concurrent signups
 *   take different ids, and an id is handed out once. A signup that then fails drops the role like any
 *   role it made; one that crashes leaves a role without a tenant row, which repair removes.
 * - A pool role belongs to no tenant: it has no catalog row, its name is that of a tenant id nobody has
 *   yet, and repair counts pool ids as known (never orphans). Its password is derived from the
 *   installation secret like every tenant role's, so nobody but Tenantry can log in with it, and with
 *   no tenant row nothing routes to it; its policies admit only rows of its own (unused) tenant id.
 * - `spec` pins the settings a role was made with; a process with other settings never takes it, and
 *   the refill drops roles no process of these settings will take once they are an hour old.
 */
export class RolePool {
  private filling: Promise<void> | undefined;
  private stopped = false;
  private spec: Promise<string> | undefined;

  constructor(private readonly core: Core, private readonly size: number) {}

  /** The settings a pool role is made with, as compared on claim. */
  private specOf(): Promise<string> {
    this.spec ??= cachedTenantRoleDefaults(this.core.admin, this.core.opts.sqlTempFileLimitKb).then((defaults) =>
      JSON.stringify({ group: STRATEGIES.pooled.group(this.core), connectionLimit: this.core.opts.tenantConnectionLimit, defaults }))
      .catch((err: unknown) => { this.spec = undefined; throw err; });
    return this.spec;
  }

  /**
   * Takes a pre-made role's tenant id (committed at once: the id is never handed out twice), or
   * undefined when the pool is empty (the caller then picks an id and creates the role itself). The
   * role must still exist: a pool row whose role someone dropped is skipped (and removed by the refill).
   */
  async take(sql: Sql): Promise<string | undefined> {
    if (this.size === 0) return undefined;
    const spec = await this.specOf();
    const prefix = `${this.core.namespace}_t_`;
    // The take commits on its own without waiting for its WAL flush (synchronous_commit off): the
    // signup's own commit comes after it and flushes the WAL up to and past it, so a crash can lose the
    // take only together with a signup that never committed (the id then simply stays in the pool, its
    // role untouched).
    // a transaction of its own on the pool (a failure rolls back on the same connection)
    const rows = await sql.begin(async (tx) => {
      await tx.unsafe('set local synchronous_commit = off');
      return tx<{ tenant_id: string }[]>`
        delete from tenantry_catalog.role_pool where tenant_id = (
          select p.tenant_id from tenantry_catalog.role_pool p
          where p.spec = ${spec}
            and exists (select 1 from pg_roles r where r.rolname = ${prefix} || replace(p.tenant_id::text, '-', ''))
          order by p.created_at limit 1 for update of p skip locked)
        returning tenant_id`;
    });
    return (rows as unknown as { tenant_id: string }[])[0]?.tenant_id;
  }

  /** Pool tenant ids (repair treats them as known: their roles are not orphans). */
  async ids(sql: Sql): Promise<string[]> {
    return (await sql<{ tenant_id: string }[]>`select tenant_id from tenantry_catalog.role_pool`).map((r) => r.tenant_id);
  }

  /** Starts a background refill unless one is running; errors are logged, never thrown. */
  refill(): void {
    if (this.size === 0 || this.filling || this.stopped) return;
    this.filling = this.fill()
      .catch((err: unknown) => this.core.logger.warn({ err }, 'role pool refill failed'))
      .finally(() => { this.filling = undefined; });
  }

  /** Removes pool rows whose role is gone, then creates roles up to the pool size, one transaction each. */
  async fill(): Promise<void> {
    const sql = this.core.admin;
    const spec = await this.specOf();
    const prefix = `${this.core.namespace}_t_`;
    await sql`
      delete from tenantry_catalog.role_pool p
      where not exists (select 1 from pg_roles r where r.rolname = ${prefix} || replace(p.tenant_id::text, '-', ''))`;
    // roles made under other settings an hour ago: no process of today's settings takes them
    const stale = await sql<{ tenant_id: string }[]>`
      select tenant_id from tenantry_catalog.role_pool where spec <> ${spec} and created_at < now() - interval '1 hour'`;
    for (const { tenant_id } of stale) await this.discard(tenant_id);
    for (;;) {
      if (this.stopped) return;
      const [c] = await sql<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.role_pool where spec = ${spec}`;
      if ((c?.n ?? 0) >= this.size) return;
      const placement = STRATEGIES.pooled.placementFor(this.core, randomUUID());
      // role and pool row commit together (CREATE ROLE is transactional): a crash leaves neither
      await sql.begin(async (tx) => {
        await createTenantRole(this.core, placement, tx);
        await tx`insert into tenantry_catalog.role_pool (tenant_id, spec) values (${placement.id}, ${spec})`;
      });
    }
  }

  /** Drops one pool role and its row (taken under the row lock, so a concurrent claim skips it). */
  private async discard(tenantId: string): Promise<void> {
    const role = STRATEGIES.pooled.placementFor(this.core, tenantId).role;
    await this.core.admin.begin(async (tx) => {
      const [row] = await tx`delete from tenantry_catalog.role_pool where tenant_id = ${tenantId} returning tenant_id`;
      if (row) await tx.unsafe(`drop role if exists ${ident(role)}`);
    });
  }

  /** Waits for a running refill and stops new ones (before closing the pools). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.filling;
  }
}
