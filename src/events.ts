import { EventEmitter } from 'node:events';
import type { Isolation } from './tenants/model.js';

/** What the library reports to whoever listens (the server's metrics); nothing here is needed to work. */
export interface TenantryEvents {
  provisioned: [{ isolation: Isolation; outcome: 'success' | 'failure'; durationMs: number }];
  quotaRejected: [{ metric: string; tenantId: string }];
  rateLimited: [{ tenantId: string }];
  /** a failed authentication (reason: the error code it got) */
  authFailed: [{ reason: string }];
  /** a client address or key id went over its limit of failed authentications (once per burst) */
  authThrottled: [{ scope: 'address' | 'key' }];
  /** a request refused because its client address or key id is throttled */
  authRefused: [{ scope: 'address' | 'key' }];
}

export class TenantryEventEmitter extends EventEmitter<TenantryEvents> {}
