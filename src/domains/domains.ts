import { randomBytes } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import { normalizeDomain, domainOfHost } from './normalize.js';
import { checkDns, checkHttp, HTTP_PATH, TXT_PREFIX, type CheckOptions, type CheckResult } from './checks.js';

export type DomainMethod = 'dns' | 'http';

export interface TenantDomain {
  id: string;
  tenantId: string;
  domain: string;
  verified: boolean;
  verifiedAt: Date | null;
  method: DomainMethod | null;
  /** what proves control: a TXT record `txtName` = `token`, or `httpUrl` answering `token` */
  token: string;
  txtName: string;
  httpUrl: string;
  lastCheckedAt: Date | null;
  lastError: string | null;
  createdAt: Date;
}

interface DomainRow {
  id: string; tenant_id: string; domain: string; token: string; verified_at: Date | null; method: DomainMethod | null;
  last_checked_at: Date | null; last_error: string | null; failures: number; created_at: Date;
}

const view = (r: DomainRow): TenantDomain => ({
  id: r.id, tenantId: r.tenant_id, domain: r.domain, verified: r.verified_at !== null, verifiedAt: r.verified_at, method: r.method,
  token: r.token, txtName: `${TXT_PREFIX}.${r.domain}`, httpUrl: `http://${r.domain}${HTTP_PATH}${r.token}`,
  lastCheckedAt: r.last_checked_at, lastError: r.last_error, createdAt: r.created_at,
});

/** Transient re-verification failures in a row (timeouts, resolvers away) before a domain is unverified. */
export const REVERIFY_TRANSIENT_FAILURES = 3;
/** Host answers kept in memory at most (random Host headers must not grow it without bound). */
const HOST_CACHE_MAX = 10_000;
const HOST_CACHE_TTL_MS = 60_000;

/**
 * Custom domains: a tenant claims a name, proves control of it (DNS TXT or HTTP token), and verified
 * names then resolve to it (Host headers in the server and the app plugins, Caddy's on-demand TLS).
 */
export class DomainService {
  /** domain -> verified owner (or null), per process; dropped by NOTIFY tenantry_domain_changed */
  private readonly hosts = new Map<string, { tenantId: string | null; at: number }>();

  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  private get checks(): CheckOptions {
    const o = this.core.opts;
    return { dnsServers: o.dnsServers, timeoutMs: o.domainVerifyTimeoutMs, httpPort: o.domainVerifyHttpPort, allowPrivate: o.domainVerifyAllowPrivate };
  }

  /**
   * Claims a domain for a tenant (unverified until `verify`). Adding a name the tenant already holds
   * returns that claim. Refused with DOMAIN_TAKEN when another tenant has it verified; other tenants'
   * unverified claims do not block (each claim has its own token, so only whoever controls the
   * domain can verify).
   */
  async add(idOrSlug: string, domain: string, who: AuditActor = {}): Promise<TenantDomain> {
    const name = normalizeDomain(domain);
    const t = await this.tenants.get(idOrSlug);
    if (t.status === 'deleted' || t.status === 'provisioning') throw new TenantryError('INVALID_TRANSITION', `Tenant "${t.slug}" is ${t.status}; domains are added to live tenants.`);
    return this.core.admin.begin(async (tx) => {
      // one claim at a time per tenant: the count below cannot be passed by concurrent adds
      await tx`select 1 from tenantry_catalog.tenants where id = ${t.id} for update`;
      const [mine] = await tx<DomainRow[]>`select * from tenantry_catalog.tenant_domains where tenant_id = ${t.id} and domain = ${name}`;
      if (mine) return view(mine);
      await this.refuseIfTaken(tx, name, t.id);
      const [{ n }] = await tx<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.tenant_domains where tenant_id = ${t.id}` as unknown as [{ n: number }];
      if (n >= this.core.opts.maxDomainsPerTenant) {
        throw new TenantryError('DOMAIN_LIMIT_REACHED', `Tenant "${t.slug}" holds ${n} domains, the most allowed (TENANTRY_MAX_DOMAINS_PER_TENANT); remove one first.`, { limit: this.core.opts.maxDomainsPerTenant });
      }
      const token = randomBytes(32).toString('base64url');
      const [row] = await tx<DomainRow[]>`
        insert into tenantry_catalog.tenant_domains (tenant_id, domain, token) values (${t.id}, ${name}, ${token}) returning *`;
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'domain.added', target: `domain:${name}`, details: { domain: name }, requestId: who.requestId });
      return view(row!);
    });
  }

  private async refuseIfTaken(tx: TransactionSql, name: string, tenantId: string): Promise<void> {
    const [other] = await tx<{ tenant_id: string }[]>`
      select tenant_id from tenantry_catalog.tenant_domains where domain = ${name} and verified_at is not null and tenant_id <> ${tenantId}`;
    // which tenant holds it is not said: a tenant key must not learn other tenants from this
    if (other) throw new TenantryError('DOMAIN_TAKEN', `${name} is verified by another tenant; it can be claimed again only after that tenant removes it or its verification lapses.`, { domain: name });
  }

  async list(idOrSlug: string): Promise<TenantDomain[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<DomainRow[]>`select * from tenantry_catalog.tenant_domains where tenant_id = ${t.id} order by domain`;
    return rows.map(view);
  }

  async get(idOrSlug: string, domain: string): Promise<TenantDomain> {
    return view(await this.row(idOrSlug, domain));
  }

  private async row(idOrSlug: string, domain: string): Promise<DomainRow> {
    const name = normalizeDomain(domain);
    const t = await this.tenants.get(idOrSlug);
    const [row] = await this.core.admin<DomainRow[]>`select * from tenantry_catalog.tenant_domains where tenant_id = ${t.id} and domain = ${name}`;
    if (!row) throw new TenantryError('DOMAIN_NOT_FOUND', `Tenant "${t.slug}" has no domain ${name}; add it first.`, { domain: name });
    return row;
  }

  /**
   * Checks the claim's token (by `method`, or DNS then HTTP) and marks the domain verified. Fails with
   * DOMAIN_VERIFICATION_FAILED (saying what each check saw) or DOMAIN_TAKEN when another tenant
   * verified it first.
   */
  async verify(idOrSlug: string, domain: string, opts: { method?: DomainMethod } = {}, who: AuditActor = {}): Promise<TenantDomain> {
    if (opts.method !== undefined && opts.method !== 'dns' && opts.method !== 'http') throw new TenantryError('INVALID_INPUT', 'method is dns or http (or left out to try both).');
    const row = await this.row(idOrSlug, domain);
    const methods: DomainMethod[] = opts.method ? [opts.method] : ['dns', 'http'];
    const reasons: string[] = [];
    let passed: DomainMethod | undefined;
    for (const m of methods) {
      const r = await this.check(m, row.domain, row.token);
      if (r.ok) { passed = m; break; }
      reasons.push(`${m}: ${r.reason}`);
    }
    if (!passed) {
      await this.core.admin`update tenantry_catalog.tenant_domains set last_checked_at = now(), last_error = ${reasons.join(' ').slice(0, 1000)} where id = ${row.id}`;
      throw new TenantryError('DOMAIN_VERIFICATION_FAILED', `${row.domain} could not be verified. Publish a TXT record ${TXT_PREFIX}.${row.domain} with the value ${row.token}, or serve ${row.token} at http://${row.domain}${HTTP_PATH}${row.token}; then verify again. ${reasons.join(' ')}`, { domain: row.domain, reasons });
    }
    const method = passed;
    try {
      return await this.core.admin.begin(async (tx) => {
        await this.refuseIfTaken(tx, row.domain, row.tenant_id);
        const [r] = await tx<DomainRow[]>`
          update tenantry_catalog.tenant_domains set verified_at = coalesce(verified_at, now()), method = ${method}, last_checked_at = now(), last_error = null, failures = 0
          where id = ${row.id} returning *`;
        if (!r) throw new TenantryError('DOMAIN_NOT_FOUND', `${row.domain} was removed while it was being verified.`, { domain: row.domain });
        if (row.verified_at === null) {
          await appendAudit(tx, { tenantId: r.tenant_id, actor: who.actor ?? this.core.opts.actor, action: 'domain.verified', target: `domain:${r.domain}`, details: { domain: r.domain, method }, requestId: who.requestId });
          await tx`select tenantry_catalog.webhook_enqueue(${r.tenant_id}, 'domain.verified', ${tx.json({ domain: r.domain, method } as never)}::jsonb)`;
        }
        return view(r);
      });
    } catch (err) {
      // two tenants proved control at once (the name changed hands between their checks): the
      // partial unique index lets one win
      if ((err as { code?: string }).code === '23505') throw new TenantryError('DOMAIN_TAKEN', `${row.domain} was verified by another tenant a moment ago.`, { domain: row.domain });
      throw err;
    } finally {
      this.hosts.delete(row.domain);
    }
  }

  private check(method: DomainMethod, domain: string, token: string): Promise<CheckResult> {
    return method === 'dns' ? checkDns(domain, token, this.checks) : checkHttp(domain, token, this.checks);
  }

  /** Removes a domain; from the commit on, no process resolves it to the tenant (NOTIFY). */
  async remove(idOrSlug: string, domain: string, who: AuditActor = {}): Promise<void> {
    const row = await this.row(idOrSlug, domain);
    await this.core.admin.begin(async (tx) => {
      const [gone] = await tx<DomainRow[]>`delete from tenantry_catalog.tenant_domains where id = ${row.id} returning *`;
      if (!gone) return;
      await appendAudit(tx, { tenantId: row.tenant_id, actor: who.actor ?? this.core.opts.actor, action: 'domain.removed', target: `domain:${row.domain}`, details: { domain: row.domain, wasVerified: row.verified_at !== null }, requestId: who.requestId });
    });
    this.hosts.delete(row.domain);
  }

  /**
   * The tenant a Host header's verified custom domain belongs to, or undefined (an IP, a malformed
   * host, an unverified or removed domain). Cached per process, dropped on every change by NOTIFY.
   */
  async tenantIdForHost(host: string | undefined): Promise<string | undefined> {
    const name = domainOfHost(host);
    if (!name) return undefined;
    const hit = this.hosts.get(name);
    if (hit && Date.now() - hit.at < HOST_CACHE_TTL_MS) return hit.tenantId ?? undefined;
    const [row] = await this.core.admin<{ tenant_id: string }[]>`
      select d.tenant_id from tenantry_catalog.tenant_domains d join tenantry_catalog.tenants t on t.id = d.tenant_id
      where d.domain = ${name} and d.verified_at is not null and t.status not in ('deleted', 'provisioning')`;
    if (this.hosts.size >= HOST_CACHE_MAX) this.hosts.clear();
    this.hosts.set(name, { tenantId: row?.tenant_id ?? null, at: Date.now() });
    return row?.tenant_id;
  }

  /** Whether a TLS certificate may be issued for a name (Caddy's on-demand `ask`): it is verified. */
  async allowsCertificate(domain: unknown): Promise<boolean> {
    let name: string;
    try { name = normalizeDomain(domain); } catch { return false; }
    return (await this.tenantIdForHost(name)) !== undefined;
  }

  /** Drops cached host answers (NOTIFY from another process; undefined: all). */
  invalidate(domain?: string): void {
    if (domain === undefined) this.hosts.clear();
    else this.hosts.delete(domain);
  }

  /**
   * Re-checks verified domains (the schedule's domains.reverify). A domain whose proof is gone (the
   * record or token no longer there, the name moved away) is unverified at once; one whose checks
   * fail for a reason that may pass (a timeout, a resolver away) after REVERIFY_TRANSIENT_FAILURES in
   * a row. Each unverification is audited and sent as the `domain.unverified` webhook event.
   */
  async reverify(opts: { limit?: number } = {}): Promise<{ checked: number; unverified: string[] }> {
    const limit = opts.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new TenantryError('INVALID_INPUT', 'limit is a whole number of domains from 1 to 100000.');
    const rows = await this.core.admin<DomainRow[]>`
      select * from tenantry_catalog.tenant_domains where verified_at is not null
      order by last_checked_at nulls first limit ${limit}`;
    const unverified: string[] = [];
    for (const row of rows) {
      const r = await this.check(row.method ?? 'dns', row.domain, row.token);
      if (r.ok) {
        await this.core.admin`update tenantry_catalog.tenant_domains set last_checked_at = now(), last_error = null, failures = 0 where id = ${row.id} and verified_at is not null`;
        continue;
      }
      const failures = row.failures + 1;
      if (!r.definitive && failures < REVERIFY_TRANSIENT_FAILURES) {
        await this.core.admin`update tenantry_catalog.tenant_domains set last_checked_at = now(), last_error = ${r.reason}, failures = ${failures} where id = ${row.id}`;
        continue;
      }
      const done = await this.core.admin.begin(async (tx) => {
        const [u] = await tx<DomainRow[]>`
          update tenantry_catalog.tenant_domains set verified_at = null, method = null, last_checked_at = now(), last_error = ${r.reason}, failures = ${failures}
          where id = ${row.id} and verified_at is not null returning *`;
        if (!u) return false;
        await appendAudit(tx, { tenantId: u.tenant_id, actor: 'system', action: 'domain.unverified', target: `domain:${u.domain}`, details: { domain: u.domain, reason: r.reason, method: row.method } });
        await tx`select tenantry_catalog.webhook_enqueue(${u.tenant_id}, 'domain.unverified', ${tx.json({ domain: u.domain, reason: r.reason } as never)}::jsonb)`;
        return true;
      });
      this.hosts.delete(row.domain);
      if (done) unverified.push(row.domain);
    }
    return { checked: rows.length, unverified };
  }
}
