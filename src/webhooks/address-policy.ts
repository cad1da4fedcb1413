import { BlockList, isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { TenantryError } from '../errors.js';

/**
 * Server-side request forgery through webhooks: a tenant registering http://169.254.169.254/ (cloud
 * metadata), http://127.0.0.1:5432/ or a name that resolves to an internal address would make
 * Tenantry's worker call into the operator's network. Addresses in these ranges are refused for
 * endpoints a tenant key registered, unless the operator allows them.
 */
const PRIVATE = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) PRIVATE.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['2001:db8::', 32], ['100::', 64],
  // transition ranges that carry an IPv4 address a relay or the host may route to: IPv4-compatible
  // (::a.b.c.d, the red team registered http://[::127.0.0.1]/), 6to4 (2002:a.b.c.d::, it registered
  // 127.0.0.1 as 2002:7f00:1::), Teredo and local-use NAT64. No real receiver needs them.
  ['::', 96], ['2002::', 16], ['2001::', 32], ['64:ff9b:1::', 48],
] as const) PRIVATE.addSubnet(net, bits, 'ipv6');

/** Whether an address is loopback, private, link-local, shared, reserved or multicast (IPv4 inside IPv6 too). */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return PRIVATE.check(address, 'ipv4');
  if (family !== 6) return true;
  const lower = address.toLowerCase();
  // IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and their hex forms carry an IPv4 address
  const embedded = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower)?.[1]
    ?? hexEmbedded(/^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower));
  if (embedded) return PRIVATE.check(embedded, 'ipv4');
  return PRIVATE.check(address, 'ipv6');
}

function hexEmbedded(m: RegExpExecArray | null): string | undefined {
  if (!m) return undefined;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Parses and checks the shape of a webhook URL: http(s), a host, no credentials, at most 2048 chars. */
export function parseWebhookUrl(raw: unknown): URL {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 2048) throw new TenantryError('WEBHOOK_URL_INVALID', 'A webhook URL is a string of 1-2048 characters.');
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new TenantryError('WEBHOOK_URL_INVALID', `${JSON.stringify(raw.slice(0, 100))} is not a URL.`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TenantryError('WEBHOOK_URL_INVALID', `A webhook URL is http or https, not ${u.protocol.replace(/:$/, '')}.`);
  if (!u.hostname) throw new TenantryError('WEBHOOK_URL_INVALID', 'A webhook URL names a host.');
  if (u.username || u.password) throw new TenantryError('WEBHOOK_URL_INVALID', 'A webhook URL carries no credentials; the signature authenticates Tenantry to the receiver.');
  return u;
}

/**
 * Resolves the URL's host to the address Tenantry will connect to. With `allowPrivate` false, every
 * address the name resolves to must be public (a name with one public and one private address is
 * refused: the connection could go to either).
 */
export async function resolveTarget(u: URL, allowPrivate: boolean): Promise<{ address: string; family: 4 | 6 }> {
  const host = u.hostname.replace(/^\[|\]$/g, '');
  let addrs: { address: string; family: number }[];
  if (isIP(host)) {
    addrs = [{ address: host, family: isIP(host) }];
  } else {
    try {
      addrs = await lookup(host, { all: true, verbatim: true });
    } catch (err) {
      throw new TenantryError('WEBHOOK_URL_INVALID', `The webhook host ${JSON.stringify(host)} does not resolve (${(err as { code?: string }).code ?? 'lookup failed'}).`);
    }
  }
  if (addrs.length === 0) throw new TenantryError('WEBHOOK_URL_INVALID', `The webhook host ${JSON.stringify(host)} does not resolve.`);
  if (!allowPrivate) {
    const bad = addrs.find((a) => isPrivateAddress(a.address));
    if (bad) {
      throw new TenantryError('WEBHOOK_URL_FORBIDDEN', `The webhook host ${JSON.stringify(host)} resolves to ${bad.address}, a private, loopback or link-local address; only the operator may allow such targets (TENANTRY_WEBHOOK_ALLOW_PRIVATE).`);
    }
  }
  return { address: addrs[0]!.address, family: addrs[0]!.family === 6 ? 6 : 4 };
}
