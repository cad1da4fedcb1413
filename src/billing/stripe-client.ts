import Stripe from 'stripe';
import type { ResolvedOptions } from '../config.js';

/**
 * The one seam to Stripe: the official SDK, pointed at STRIPE_API_BASE (Stripe itself by default, a
 * loopback stand-in in tests). Built on first use, so an installation without billing never loads it.
 */
export function stripeClient(opts: Pick<ResolvedOptions, 'stripeApiKey' | 'stripeApiBase'>): Stripe | undefined {
  if (!opts.stripeApiKey) return undefined;
  const base = opts.stripeApiBase;
  const protocol = base.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(opts.stripeApiKey, {
    host: base.hostname.replace(/^\[|\]$/g, ''),
    port: base.port ? Number(base.port) : protocol === 'http' ? 80 : 443,
    protocol,
    // every wait is bounded; the SDK retries network faults and 409/429/5xx with the same idempotency key
    timeout: 20_000,
    maxNetworkRetries: 2,
    telemetry: false,
  });
}

/** Checks a webhook's Stripe-Signature against the signing secret; throws on a bad or stale one. */
export function constructStripeEvent(raw: Buffer, signature: string, secret: string): Stripe.Event {
  return Stripe.webhooks.constructEvent(raw, signature, secret, 300);
}
