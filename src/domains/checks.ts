import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { Resolver } from 'node:dns/promises';
import { lookup } from 'node:dns/promises';
import { isPrivateAddress } from '../webhooks/address-policy.js';

/** The TXT record name that proves control of a domain: `_tenantry-challenge.<domain>`, value the token. */
export const TXT_PREFIX = '_tenantry-challenge';
/** The HTTP path that proves it: `http://<domain>/.well-known/tenantry-challenge/<token>`, body the token. */
export const HTTP_PATH = '/.well-known/tenantry-challenge/';

export type CheckResult = { ok: true } | { ok: false; reason: string; definitive: boolean };

export interface CheckOptions {
  /** resolver servers (`host` or `host:port`); empty: the system's */
  dnsServers: string[];
  timeoutMs: number;
  /** port of the first HTTP request (80; tests point it at a loopback server) */
  httpPort: number;
  /** connect to private, loopback and link-local addresses (tests only) */
  allowPrivate: boolean;
  /** which addresses count as private (default: the webhooks' SSRF rule, isPrivateAddress) */
  isPrivate?: (address: string) => boolean;
}

/** Failures that say the record or the name is not there, as opposed to a resolver that did not answer. */
const DEFINITIVE_DNS = new Set(['ENODATA', 'ENOTFOUND', 'NXDOMAIN']);

function resolver(o: CheckOptions): Resolver {
  const r = new Resolver({ timeout: Math.max(50, Math.floor(o.timeoutMs / 2)), tries: 2 });
  if (o.dnsServers.length) r.setServers(o.dnsServers);
  return r;
}

async function bounded<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => {
      timer = setTimeout(() => { onTimeout(); reject(Object.assign(new Error(`no answer within ${ms} ms`), { code: 'ETIMEOUT' })); }, ms);
    })]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Whether `_tenantry-challenge.<domain>` holds a TXT record equal to the token. */
export async function checkDns(domain: string, token: string, o: CheckOptions): Promise<CheckResult> {
  const r = resolver(o);
  try {
    const records = await bounded(r.resolveTxt(`${TXT_PREFIX}.${domain}`), o.timeoutMs, () => r.cancel());
    // a TXT record may be split into strings of 255; they are one value
    if (records.some((chunks) => chunks.join('') === token)) return { ok: true };
    return { ok: false, definitive: true, reason: `${TXT_PREFIX}.${domain} has ${records.length} TXT record(s), none equal to this domain's token.` };
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'ERROR';
    return { ok: false, definitive: DEFINITIVE_DNS.has(code), reason: `DNS lookup of ${TXT_PREFIX}.${domain} TXT failed (${code}).` };
  }
}

/** The addresses a name resolves to, through the configured servers when there are any. */
async function addresses(host: string, o: CheckOptions): Promise<{ address: string; family: 4 | 6 }[]> {
  if (isIP(host)) return [{ address: host, family: isIP(host) === 6 ? 6 : 4 }];
  if (o.dnsServers.length === 0) {
    const all = await bounded(lookup(host, { all: true, verbatim: true }), o.timeoutMs, () => undefined);
    return all.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
  }
  const r = resolver(o);
  const settle = async (family: 4 | 6): Promise<{ address: string; family: 4 | 6 }[]> => {
    try {
      const list = await bounded(family === 4 ? r.resolve4(host) : r.resolve6(host), o.timeoutMs, () => r.cancel());
      return list.map((address) => ({ address, family }));
    } catch (err) {
      if (DEFINITIVE_DNS.has((err as { code?: string }).code ?? '')) return [];
      throw err;
    }
  };
  const [v4, v6] = await Promise.all([settle(4), settle(6)]);
  return [...v4, ...v6];
}

/**
 * Whether `http://<domain>/.well-known/tenantry-challenge/<token>` answers 200 with the token as its
 * body. Server-side request forgery: the name is resolved here, every address it has must be public
 * (unless allowPrivate), and the connection goes to exactly the address checked (a second lookup
 * could answer differently: DNS rebinding). Up to three redirects are followed, each target checked
 * the same way; the body read is capped, and the whole check is bounded by the timeout.
 */
export async function checkHttp(domain: string, token: string, o: CheckOptions): Promise<CheckResult> {
  let url = new URL(`http://${domain}:${o.httpPort}${HTTP_PATH}${token}`);
  for (let hop = 0; hop < 4; hop++) {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let addrs: { address: string; family: 4 | 6 }[];
    try {
      addrs = await addresses(host, o);
    } catch (err) {
      return { ok: false, definitive: false, reason: `${host} did not resolve (${(err as { code?: string }).code ?? 'lookup failed'}).` };
    }
    if (addrs.length === 0) return { ok: false, definitive: true, reason: `${host} has no address.` };
    const bad = o.allowPrivate ? undefined : addrs.find((a) => (o.isPrivate ?? isPrivateAddress)(a.address));
    if (bad) return { ok: false, definitive: true, reason: `${host} resolves to ${bad.address}, a private, loopback or link-local address; it is not fetched.` };
    const answer = await fetchPinned(url, addrs[0]!, o.timeoutMs);
    if ('error' in answer) return { ok: false, definitive: false, reason: `GET ${url.href} failed: ${answer.error}.` };
    if (answer.status >= 300 && answer.status < 400 && answer.location) {
      let next: URL;
      try { next = new URL(answer.location, url); } catch { return { ok: false, definitive: true, reason: `GET ${url.href} redirected to an unreadable location.` }; }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') return { ok: false, definitive: true, reason: `GET ${url.href} redirected to a ${next.protocol} URL.` };
      if (next.username || next.password) return { ok: false, definitive: true, reason: `GET ${url.href} redirected to a URL with credentials.` };
      url = next;
      continue;
    }
    if (answer.status !== 200) return { ok: false, definitive: answer.status === 404 || answer.status === 410, reason: `GET ${url.href} answered ${answer.status}.` };
    if (answer.body.trim() !== token) return { ok: false, definitive: true, reason: `GET ${url.href} answered 200 without this domain's token as its body.` };
    return { ok: true };
  }
  return { ok: false, definitive: true, reason: 'More than three redirects.' };
}

type Fetched = { status: number; location: string | undefined; body: string } | { error: string };

function fetchPinned(url: URL, target: { address: string; family: 4 | 6 }, timeoutMs: number): Promise<Fetched> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<Fetched>((resolve) => {
    let settled = false;
    const done = (f: Fetched): void => { if (!settled) { settled = true; resolve(f); } };
    const req = mod.request(url, {
      method: 'GET', agent: false, timeout: timeoutMs,
      headers: { 'user-agent': 'Tenantry-Domain-Verification/1', accept: 'text/plain' },
      ...(url.protocol === 'https:' ? { servername: url.hostname } : {}),
      lookup: (_host, opts, cb) => {
        if (typeof opts === 'object' && (opts as { all?: boolean }).all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [target]);
        else (cb as (e: null, a: string, f: number) => void)(null, target.address, target.family);
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        // a token is 43 characters: anything much longer is not the answer, and is not read further
        if (size > 1024) { req.destroy(); done({ status: res.statusCode ?? 0, location: undefined, body: '' }); return; }
        chunks.push(c);
      });
      res.on('end', () => done({ status: res.statusCode ?? 0, location: typeof res.headers.location === 'string' ? res.headers.location : undefined, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => done({ error: err.message }));
    });
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => done({ error: err.message }));
    req.on('close', () => clearTimeout(deadline));
    req.end();
  });
}
