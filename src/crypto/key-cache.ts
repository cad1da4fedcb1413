/**
 * Unwrapped data keys, held briefly so that a warm encrypt or decrypt costs no KMS round trip.
 * Bounded in time (ttlMs) and size (max entries, oldest evicted first); an evicted or expired key's
 * bytes are overwritten with zeros (node's own copies inside a cipher are beyond reach). Nothing here
 * is ever logged: entries are Buffers kept in a private map, and the cache has no toJSON of them.
 */
export class DataKeyCache {
  private readonly entries = new Map<string, { key: Buffer; expires: number }>();
  private readonly current = new Map<string, { version: number; expires: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly ttlMs: number, private readonly max: number) {
    if (ttlMs > 0) {
      this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(ttlMs, 60_000)));
      this.timer.unref();
    }
  }

  get(tenantId: string, version: number): Buffer | undefined {
    const k = `${tenantId}:${version}`;
    const e = this.entries.get(k);
    if (!e) return undefined;
    if (e.expires <= Date.now()) {
      this.drop(k);
      return undefined;
    }
    return e.key;
  }

  /** Keeps a copy of `key` (the caller may zero its own). */
  set(tenantId: string, version: number, key: Buffer): void {
    if (this.ttlMs <= 0 || this.max <= 0) return;
    const k = `${tenantId}:${version}`;
    this.drop(k);
    while (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.drop(oldest);
    }
    this.entries.set(k, { key: Buffer.from(key), expires: Date.now() + this.ttlMs });
  }

  currentVersion(tenantId: string): number | undefined {
    const c = this.current.get(tenantId);
    if (!c || c.expires <= Date.now()) return undefined;
    return c.version;
  }

  setCurrentVersion(tenantId: string, version: number): void {
    if (this.ttlMs <= 0) return;
    this.current.set(tenantId, { version, expires: Date.now() + this.ttlMs });
  }

  /** Drops (and zeroes) one tenant's keys, or every key. */
  forget(tenantId?: string): void {
    for (const k of [...this.entries.keys()]) if (tenantId === undefined || k.startsWith(`${tenantId}:`)) this.drop(k);
    if (tenantId === undefined) this.current.clear();
    else this.current.delete(tenantId);
  }

  get size(): number {
    return this.entries.size;
  }

  private drop(k: string): void {
    const e = this.entries.get(k);
    if (!e) return;
    e.key.fill(0);
    this.entries.delete(k);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.entries) if (e.expires <= now) this.drop(k);
    for (const [k, c] of this.current) if (c.expires <= now) this.current.delete(k);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.forget();
  }
}
