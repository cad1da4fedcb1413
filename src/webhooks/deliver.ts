import http from 'node:http';
import https from 'node:https';
import { isTenantryError } from '../errors.js';
import { parseWebhookUrl, resolveTarget } from './address-policy.js';
import { signWebhook, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER } from './signature.js';

export interface DeliveryOutcome {
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  latencyMs: number;
}

/**
 * One POST of one event. The host is resolved and checked again now (a name that resolved to a public
 * address at registration may point inside since: DNS rebinding), and the connection goes to exactly
 * the address that was checked. Redirects are not followed: a 3xx is a failed attempt.
 */
export async function postWebhook(input: { url: string; key: Buffer; allowPrivate: boolean; eventId: string; body: string; timeoutMs: number; now: Date }): Promise<DeliveryOutcome> {
  const started = process.hrtime.bigint();
  const latency = (): number => Number((process.hrtime.bigint() - started) / 1_000_000n);
  let target: { address: string; family: 4 | 6 };
  let u: URL;
  try {
    u = parseWebhookUrl(input.url);
    target = await resolveTarget(u, input.allowPrivate);
  } catch (err) {
    return { ok: false, statusCode: null, error: isTenantryError(err) ? `${err.code}: ${err.message}` : String(err), latencyMs: latency() };
  }
  const timestamp = Math.floor(input.now.getTime() / 1000);
  const headers = {
    'content-type': 'application/json',
    'user-agent': 'Tenantry-Webhooks/1',
    [ID_HEADER]: input.eventId,
    [TIMESTAMP_HEADER]: String(timestamp),
    [SIGNATURE_HEADER]: signWebhook(input.key, input.eventId, timestamp, input.body),
  };
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise<DeliveryOutcome>((resolve) => {
    let settled = false;
    const done = (o: Omit<DeliveryOutcome, 'latencyMs'>): void => {
      if (settled) return;
      settled = true;
      resolve({ ...o, latencyMs: latency() });
    };
    const req = mod.request(u, {
      method: 'POST', headers, timeout: input.timeoutMs, agent: false,
      // pinned to the address that was checked, whatever the name resolves to a moment later
      lookup: (_host, opts, cb) => {
        const all = typeof opts === 'object' && (opts as { all?: boolean }).all;
        if (all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: target.address, family: target.family }]);
        else (cb as (e: null, a: string, f: number) => void)(null, target.address, target.family);
      },
    }, (res) => {
      const code = res.statusCode ?? 0;
      res.resume();
      res.on('end', () => done({ ok: code >= 200 && code < 300, statusCode: code, error: code >= 300 && code < 400 ? 'redirect not followed' : code >= 300 ? `HTTP ${code}` : null }));
      res.on('error', (err) => done({ ok: false, statusCode: code, error: err.message }));
      res.on('close', () => done({ ok: false, statusCode: code, error: 'the connection closed before the response ended' }));
    });
    const deadline = setTimeout(() => { req.destroy(new Error(`timed out after ${input.timeoutMs} ms`)); }, input.timeoutMs);
    req.on('timeout', () => req.destroy(new Error(`timed out after ${input.timeoutMs} ms`)));
    req.on('error', (err) => done({ ok: false, statusCode: null, error: err.message }));
    req.on('close', () => clearTimeout(deadline));
    req.end(input.body);
  });
}
