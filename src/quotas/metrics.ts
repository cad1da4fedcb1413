import { TenantryError } from '../errors.js';

/**
 * The built-in agent platform's quota and metric names, as types and constants (the plans in force
 * without a plan file: src/plans/builtin.ts). What is metered at run time is whatever the plans in
 * the catalog declare (core.plans); these only give the built-in names their types.
 */
/** The quotas every built-in tier defines (the keys of `tiers.quotas`). */
export const QUOTAS = [
  'max_agents', 'max_users', 'api_calls_per_minute', 'storage_gb', 'llm_tokens_per_day',
  'max_concurrent_agents', 'data_retention_days',
] as const;
export type QuotaName = (typeof QUOTAS)[number];

export type WindowUnit = 'minute' | 'hour' | 'day' | 'month';

/**
 * The metered metrics and the quota each is held against:
 * - `count`: a level that goes up and down (agents, users);
 * - `window`: a rate that resets at the start of each window (per minute, day, month);
 * - `lease`: concurrency slots acquired and released, each with a time-to-live;
 * - `gauge`: measured, not debited (storage, from PostgreSQL's own sizes).
 */
export type MetricDef =
  | { kind: 'count'; quota: QuotaName; scale: 1 }
  | { kind: 'window'; quota: QuotaName; window: WindowUnit; scale: 1 }
  | { kind: 'lease'; quota: QuotaName; scale: 1 }
  | { kind: 'gauge'; quota: QuotaName; scale: number };

export const METRICS = {
  agents: { kind: 'count', quota: 'max_agents', scale: 1 },
  users: { kind: 'count', quota: 'max_users', scale: 1 },
  api_calls: { kind: 'window', quota: 'api_calls_per_minute', window: 'minute', scale: 1 },
  llm_tokens: { kind: 'window', quota: 'llm_tokens_per_day', window: 'day', scale: 1 },
  concurrent_agents: { kind: 'lease', quota: 'max_concurrent_agents', scale: 1 },
  // the quota is in GB, the measurement in bytes
  storage_bytes: { kind: 'gauge', quota: 'storage_gb', scale: 1_000_000_000 },
} as const satisfies Record<string, MetricDef>;
export type MetricName = keyof typeof METRICS;

export function validateAmount(amount: unknown, what = 'amount'): number {
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount < 1 || amount > 1e15) {
    throw new TenantryError('INVALID_INPUT', `${what} must be a positive integer, got ${JSON.stringify(amount)}.`, { field: what });
  }
  return amount;
}

export function validateLimit(value: unknown, quota: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TenantryError('INVALID_INPUT', `The limit for ${quota} must be a non-negative integer, got ${JSON.stringify(value)}.`, { quota });
  }
  return value;
}
