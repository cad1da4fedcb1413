import { EventEmitter } from 'node:events';
import type { Isolation } from './tenants/model.js';

/** What the library reports to whoever listens (the server's metrics); nothing here is needed to work. */
export interface TenantryEvents {
  provisioned: [{ isolation: Isolation; outcome: 'success' | 'failure'; durationMs: number }];
  quotaRejected: [{ metric: string; tenantId: string }];
  rateLimited: [{ tenantId: string }];
}

export class TenantryEventEmitter extends EventEmitter<TenantryEvents> {}
