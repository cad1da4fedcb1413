import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { TenantryError } from '../errors.js';

/** The longest name DNS carries (RFC 1035), without the trailing dot. */
export const MAX_DOMAIN_LENGTH = 253;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function invalid(message: string, raw: string): never {
  throw new TenantryError('DOMAIN_INVALID', message, { domain: raw.length > 100 ? `${raw.slice(0, 100)}...` : raw });
}

/**
 * A domain as the catalog keeps it: lowercase ASCII (an IDN in punycode, through WHATWG's
 * domainToASCII), no trailing dot, at least two labels of 1-63 characters, at most 253 in all. IP
 * addresses (in any of the forms URL parsers accept, such as 0x7f.1), wildcards, single labels,
 * localhost names and hostile bytes are refused with DOMAIN_INVALID.
 */
export function normalizeDomain(raw: unknown): string {
  if (typeof raw !== 'string' || raw.length === 0) throw new TenantryError('DOMAIN_INVALID', 'A domain is a non-empty string such as shop.example.com.');
  if (raw.length > 1024) invalid(`A domain has at most ${MAX_DOMAIN_LENGTH} characters; this one has ${raw.length}.`, raw);
  // NUL, controls, whitespace, lone surrogates: nothing a name can hold
  if (/[\u0000-\u0020\u007f-\u009f]/.test(raw) || /[\ud800-\udfff]/.test(raw.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ''))) {
    invalid('A domain holds no control characters, spaces or unpaired surrogates.', raw);
  }
  if (raw.includes('*')) invalid(`Wildcard domains are not supported; add each name (${JSON.stringify(raw.replace(/^\*\./, 'www.'))}) on its own.`, raw);
  let name = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (name.startsWith('[') || isIP(name)) invalid('An IP address is not a domain; point a name at it and add the name.', raw);
  if (/[/\\:@?#%]/.test(name)) invalid('A domain is a bare name (shop.example.com), without a scheme, port, path or credentials.', raw);
  name = name.toLowerCase();
  const ascii = domainToASCII(name);
  if (!ascii) invalid(`${JSON.stringify(raw)} is not a valid domain name (its international form cannot be converted to punycode).`, raw);
  // domainToASCII turns 0x7f.1 or 2130706433-like forms into dotted IPv4 addresses
  if (isIP(ascii)) invalid('An IP address is not a domain; point a name at it and add the name.', raw);
  if (ascii.length > MAX_DOMAIN_LENGTH) invalid(`A domain has at most ${MAX_DOMAIN_LENGTH} characters; this one has ${ascii.length} (in punycode).`, raw);
  const labels = ascii.split('.');
  if (labels.length < 2) invalid(`${JSON.stringify(raw)} is a single label; a custom domain has at least two (shop.example.com).`, raw);
  for (const l of labels) {
    if (!LABEL.test(l)) invalid(`${JSON.stringify(raw)} has a label ${JSON.stringify(l.slice(0, 70))} that is not 1-63 letters, digits or inner hyphens.`, raw);
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) invalid(`${JSON.stringify(raw)} ends in a numeric label; top-level domains are never all digits.`, raw);
  if (labels[labels.length - 1] === 'localhost') invalid('localhost names are not custom domains.', raw);
  return ascii;
}

/** The domain a Host header names (port and brackets aside), or undefined when it names none. */
export function domainOfHost(host: unknown): string | undefined {
  if (typeof host !== 'string' || host.length === 0 || host.length > 300) return undefined;
  if (host.startsWith('[')) return undefined; // an IPv6 literal
  const name = host.replace(/:\d{1,5}$/, '');
  // an IPv4 address names no domain: answered here, without the refusal normalizeDomain would throw
  // (an exception per request cost GET /v1/tenant 4% of its CPU when clients connect by address)
  if (isIP(name)) return undefined;
  try {
    return normalizeDomain(name);
  } catch {
    return undefined;
  }
}
