import type { Tenant } from './model.js';

/**
 * Tenant lookups for the hot path (withTenant). Entries expire after `ttlMs`, are dropped at once in
 * the process that changed the tenant, and in every other process by the catalog's NOTIFY.
 */
export class TenantCache {
  private readonly byId = new Map<string, { tenant: Tenant; at: number }>();
  private readonly idBySlug = new Map<string, string>();
  private readonly listeners: ((id: string | undefined) => void)[] = [];

  constructor(private readonly ttlMs: number) {}

  get(idOrSlug: string): Tenant | undefined {
    const id = this.idBySlug.get(idOrSlug) ?? idOrSlug;
    const hit = this.byId.get(id);
    if (!hit) return undefined;
    if (Date.now() - hit.at > this.ttlMs) {
      this.invalidate(id);
      return undefined;
    }
    return hit.tenant;
  }

  set(tenant: Tenant): void {
    if (this.ttlMs === 0) return;
    this.byId.set(tenant.id, { tenant, at: Date.now() });
    this.idBySlug.set(tenant.slug, tenant.id);
  }

  /** Also told when a tenant changes (undefined: every tenant), for caches derived from tenants. */
  onInvalidate(listener: (id: string | undefined) => void): void {
    this.listeners.push(listener);
  }

  invalidate(id: string): void {
    const hit = this.byId.get(id);
    this.byId.delete(id);
    if (hit) this.idBySlug.delete(hit.tenant.slug);
    for (const l of this.listeners) l(id);
  }

  clear(): void {
    this.byId.clear();
    this.idBySlug.clear();
    for (const l of this.listeners) l(undefined);
  }
}
