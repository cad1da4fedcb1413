import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TenantryError } from '../errors.js';

/**
 * Webhook signatures in the Standard Webhooks scheme, under Tenantry's header names:
 * `Tenantry-Id` (the event id), `Tenantry-Timestamp` (unix seconds) and
 * `Tenantry-Signature: v1,<base64 HMAC-SHA-256(key, "<id>.<timestamp>.<body>")>`, where the key is the
 * base64 after `whsec_` in the endpoint's secret. Several space-separated signatures may be sent (key
 * rotation); one that verifies is enough.
 */
export const SIGNATURE_HEADER = 'tenantry-signature';
export const ID_HEADER = 'tenantry-id';
export const TIMESTAMP_HEADER = 'tenantry-timestamp';

export function newWebhookSecret(): { secret: string; key: Buffer } {
  const key = randomBytes(32);
  return { secret: `whsec_${key.toString('base64')}`, key };
}

export function signWebhook(key: Buffer, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

function keyOf(secret: string | Buffer): Buffer {
  if (Buffer.isBuffer(secret)) return secret;
  if (typeof secret !== 'string' || !secret.startsWith('whsec_')) throw new TenantryError('INVALID_INPUT', 'A webhook secret looks like whsec_<base64>, as it was shown when the endpoint was created.');
  return Buffer.from(secret.slice(6), 'base64');
}

export interface VerifyWebhookInput {
  /** the endpoint's secret (`whsec_...`) */
  secret: string | Buffer;
  /** the request's headers (any case) */
  headers: Record<string, string | string[] | undefined> | Headers;
  /** the raw request body, exactly as received */
  body: string | Buffer;
  /** seconds a timestamp may be away from now (replays of old deliveries are refused). Default 300. */
  toleranceSeconds?: number;
  /** the receiver's clock. Default: now. */
  now?: Date;
}

export interface VerifiedWebhook {
  id: string;
  timestamp: Date;
  type: string;
  data: Record<string, unknown>;
  payload: Record<string, unknown>;
}

/**
 * Verifies a delivery as a receiver: the signature over id, timestamp and the raw body (compared in
 * constant time) and the timestamp's freshness. Returns the parsed event; throws
 * WEBHOOK_SIGNATURE_INVALID otherwise.
 */
export function verifyWebhook(input: VerifyWebhookInput): VerifiedWebhook {
  const header = (name: string): string | undefined => {
    const h = input.headers;
    if (typeof (h as Headers).get === 'function') return (h as Headers).get(name) ?? undefined;
    const rec = h as Record<string, string | string[] | undefined>;
    const key = Object.keys(rec).find((k) => k.toLowerCase() === name);
    const v = key === undefined ? undefined : rec[key];
    return Array.isArray(v) ? v[0] : v;
  };
  const bad = (why: string): TenantryError => new TenantryError('WEBHOOK_SIGNATURE_INVALID', `The webhook does not verify: ${why}.`);
  const id = header(ID_HEADER);
  const ts = header(TIMESTAMP_HEADER);
  const sigs = header(SIGNATURE_HEADER);
  if (!id || !ts || !sigs) throw bad(`the ${ID_HEADER}, ${TIMESTAMP_HEADER} and ${SIGNATURE_HEADER} headers are required`);
  if (!/^\d{1,12}$/.test(ts)) throw bad('the timestamp is not unix seconds');
  const seconds = Number(ts);
  const now = Math.floor((input.now ?? new Date()).getTime() / 1000);
  const tolerance = input.toleranceSeconds ?? 300;
  if (Math.abs(now - seconds) > tolerance) throw bad(`the timestamp is more than ${tolerance} s away from now (a replay, or a skewed clock)`);
  const body = Buffer.isBuffer(input.body) ? input.body.toString('utf8') : input.body;
  const expected = Buffer.from(signWebhook(keyOf(input.secret), id, seconds, body).slice(3), 'base64');
  const ok = sigs.split(' ').some((s) => {
    if (!s.startsWith('v1,')) return false;
    const got = Buffer.from(s.slice(3), 'base64');
    return got.length === expected.length && timingSafeEqual(got, expected);
  });
  if (!ok) throw bad('no signature matches the secret');
  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse(body) as Record<string, unknown>;
  } catch {
    throw bad('the body is not JSON');
  }
  return { id, timestamp: new Date(seconds * 1000), type: String(payload.type), data: (payload.data ?? {}) as Record<string, unknown>, payload };
}
