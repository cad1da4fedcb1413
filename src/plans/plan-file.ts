import { TenantryError } from '../errors.js';

/**
 * The plan file an app keeps in its repository (tenantry.plans.json): its metrics, its tiers in order
 * and its features. Parsed and checked here, with every complaint naming the path (or, for broken
 * JSON, the line) it is about; schemas/tenantry.plans.schema.json describes the same shape for editors.
 */

export const METRIC_KINDS = ['count', 'window', 'lease', 'gauge'] as const;
export type MetricKind = (typeof METRIC_KINDS)[number];
export const WINDOW_UNITS = ['minute', 'hour', 'day', 'month'] as const;
export type WindowUnit = (typeof WINDOW_UNITS)[number];
export const GAUGE_SOURCES = ['storage', 'app'] as const;
export type GaugeSource = (typeof GAUGE_SOURCES)[number];

/** Quota keys every tier carries besides its metrics' limits: the API rate limit and the retention. */
export const RATE_LIMIT_QUOTA = 'api_calls_per_minute';
export const RETENTION_QUOTA = 'data_retention_days';

/** A plan file may not be larger than this (it is read whole, and stored in the audit log). */
export const MAX_PLAN_FILE_BYTES = 1_048_576;

export interface PlanMetric {
  name: string;
  kind: MetricKind;
  /** the key its limit is stored and overridden under (default: the metric's name) */
  quota: string;
  /** the unit it is shown in (`participants`, `GB`, `tokens`) */
  unit: string;
  /** measured units per limit unit: a limit of 1 (GB) with scale 1e9 admits 1e9 (bytes). Default 1. */
  scale: number;
  /** window metrics: the window that resets */
  window: WindowUnit | null;
  /** lease metrics: the time-to-live of a lease when the caller names none */
  ttlSeconds: number | null;
  /** gauge metrics: `storage` (measured by Tenantry) or `app` (set by the app) */
  source: GaugeSource | null;
  description: string;
}

export interface PlanFeature { name: string; description: string }

/** What a tier costs per billing period (a calendar month), in the currency's minor units (cents). */
export interface TierPrice {
  /** ISO 4217 code, lowercase (`usd`, `eur`) */
  currency: string;
  /** the tier's own price per period */
  amount: number;
  /** per metric: usage included in the price, and the price of each `perUnits` beyond it */
  metrics: Record<string, { included: number; unitAmount: number; perUnits: number }>;
}

export interface PlanTier {
  name: string;
  /** per metric name: the limit, or null for unlimited */
  limits: Record<string, number | null>;
  features: string[];
  /** API requests per minute */
  rateLimit: number;
  retentionDays: number;
  /** new tenants land here when they name no tier */
  default: boolean;
  /** set on the tier trials run on: the tier a trial falls back to */
  trialOf: string | null;
  /** what the tier costs per billing period; null: not billed */
  price: TierPrice | null;
}

export interface Plans {
  metrics: PlanMetric[];
  features: PlanFeature[];
  tiers: PlanTier[];
}

const NAME = /^[a-z][a-z0-9_]{0,62}$/;
const TIER_NAME = /^[a-z][a-z0-9_-]{0,48}[a-z0-9]$|^[a-z]$/;
const MAX_ITEMS = 200;
const MAX_LIMIT = 1e15;

function bad(path: string, message: string): never {
  throw new TenantryError('INVALID_PLANS', `Plan file: ${path}: ${message}.`, { path });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(v: Record<string, unknown>, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) bad(`${path}.${k}`, `unknown field (allowed: ${allowed.join(', ')})`);
  }
}

function text(v: unknown, path: string, max = 500): string {
  if (typeof v !== 'string' || v.length > max || /[\u0000-\u001f]/.test(v) || /[\ud800-\udfff]/.test(v.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ''))) {
    bad(path, `must be a string of at most ${max} printable characters, got ${brief(v)}`);
  }
  return v;
}

function name(v: unknown, path: string, rule = NAME, what = '1-63 characters of [a-z0-9_], starting with a letter'): string {
  if (typeof v !== 'string' || !rule.test(v)) bad(path, `a name is ${what}; got ${brief(v)}`);
  return v;
}

function limit(v: unknown, path: string, allowUnlimited: boolean): number | null {
  if (allowUnlimited && (v === 'unlimited' || v === null)) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > MAX_LIMIT) {
    bad(path, `must be a whole number from 0 to ${MAX_LIMIT}${allowUnlimited ? ' or "unlimited"' : ''}, got ${brief(v)}`);
  }
  return v;
}

function brief(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function list(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) bad(path, 'must be an array');
  if (v.length > MAX_ITEMS) bad(path, `has ${v.length} entries; the limit is ${MAX_ITEMS}`);
  return v;
}

function unique(names: string[], path: string, what: string): void {
  const seen = new Map<string, number>();
  names.forEach((n, i) => {
    const first = seen.get(n);
    if (first !== undefined) bad(`${path}[${i}].name`, `duplicate ${what} name ${JSON.stringify(n)} (also ${path}[${first}])`);
    seen.set(n, i);
  });
}

/** Reads plan-file text (JSON): size-checked before parsing, syntax errors named by line and column. */
export function parsePlansText(source: string, from = 'tenantry.plans.json'): Plans {
  if (typeof source !== 'string') bad(from, 'is not text');
  const bytes = Buffer.byteLength(source, 'utf8');
  if (bytes > MAX_PLAN_FILE_BYTES) {
    throw new TenantryError('INVALID_PLANS', `Plan file ${from} is ${(bytes / 1_048_576).toFixed(1)} MiB; the limit is ${MAX_PLAN_FILE_BYTES / 1_048_576} MiB.`, { path: '$', bytes });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(source);
  } catch (err) {
    const msg = (err as Error).message.replace(/, ".*" is not valid JSON$/s, '');
    const at = jsonErrorOffset(source);
    let where = '';
    if (at !== undefined) {
      const before = source.slice(0, at);
      where = `line ${before.split('\n').length}, column ${at - before.lastIndexOf('\n')}`;
    }
    throw new TenantryError('INVALID_PLANS', `Plan file ${from} is not valid JSON${where ? ` at ${where}` : ''}: ${msg}`, { path: '$', ...(where ? { where } : {}) });
  }
  return validatePlans(doc);
}

/**
 * Where JSON text first goes wrong (JSON.parse's own message names no position on every Node
 * version): a scan of the grammar, run only after JSON.parse has refused the text.
 */
function jsonErrorOffset(s: string): number | undefined {
  let i = 0;
  const ws = (): void => { while (i < s.length && ' \t\n\r'.includes(s[i]!)) i++; };
  const fail = (): never => { throw i; };
  const lit = (word: string): void => { if (s.startsWith(word, i)) i += word.length; else fail(); };
  const str = (): void => {
    if (s[i] !== '"') fail();
    i++;
    while (i < s.length && s[i] !== '"') {
      if (s.charCodeAt(i) < 0x20) fail();
      i += s[i] === '\\' ? 2 : 1;
    }
    if (i >= s.length) fail();
    i++;
  };
  const num = (): void => { const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(s.slice(i, i + 400)); if (!m) fail(); i += m![0].length; };
  const value = (depth: number): void => {
    if (depth > 512) fail();
    ws();
    const c = s[i];
    if (c === '{') {
      i++; ws();
      if (s[i] === '}') { i++; return; }
      for (;;) { ws(); str(); ws(); if (s[i] !== ':') fail(); i++; value(depth + 1); ws(); if (s[i] === ',') { i++; continue; } if (s[i] === '}') { i++; return; } fail(); }
    }
    if (c === '[') {
      i++; ws();
      if (s[i] === ']') { i++; return; }
      for (;;) { value(depth + 1); ws(); if (s[i] === ',') { i++; continue; } if (s[i] === ']') { i++; return; } fail(); }
    }
    if (c === '"') return str();
    if (c === 't') return lit('true');
    if (c === 'f') return lit('false');
    if (c === 'n') return lit('null');
    return num();
  };
  try {
    value(0);
    ws();
    return i < s.length ? i : undefined;
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, s.length) : undefined;
  }
}

/**
 * Checks a plan document and returns it in its full form (every optional field filled in). Throws
 * INVALID_PLANS naming the first path that is wrong.
 */
export function validatePlans(doc: unknown): Plans {
  if (!isObject(doc)) bad('$', 'a plan file is a JSON object with metrics, tiers and features');
  onlyKeys(doc, '$', ['$schema', 'metrics', 'tiers', 'features']);
  if (doc.$schema !== undefined) text(doc.$schema, '$.$schema', 2000);

  const metrics = list(doc.metrics ?? [], '$.metrics').map((m, i): PlanMetric => {
    const p = `$.metrics[${i}]`;
    if (!isObject(m)) bad(p, 'must be an object with name and kind');
    onlyKeys(m, p, ['name', 'kind', 'window', 'ttlSeconds', 'source', 'unit', 'scale', 'quota', 'description']);
    const metricName = name(m.name, `${p}.name`);
    if (typeof m.kind !== 'string' || !(METRIC_KINDS as readonly string[]).includes(m.kind)) {
      bad(`${p}.kind`, `unknown kind ${brief(m.kind)}; use one of ${METRIC_KINDS.join(', ')}`);
    }
    const kind = m.kind as MetricKind;
    let window: WindowUnit | null = null;
    if (kind === 'window') {
      if (m.window === undefined) bad(`${p}.window`, `a window metric needs its window unit (${WINDOW_UNITS.join(', ')})`);
      if (typeof m.window !== 'string' || !(WINDOW_UNITS as readonly string[]).includes(m.window)) bad(`${p}.window`, `unknown window unit ${brief(m.window)}; use one of ${WINDOW_UNITS.join(', ')}`);
      window = m.window as WindowUnit;
    } else if (m.window !== undefined) bad(`${p}.window`, `only window metrics have a window (this one is ${kind})`);
    let ttlSeconds: number | null = null;
    if (kind === 'lease') {
      const ttl = m.ttlSeconds ?? 300;
      if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) bad(`${p}.ttlSeconds`, `must be a whole number of seconds from 1 to 86400, got ${brief(ttl)}`);
      ttlSeconds = ttl;
    } else if (m.ttlSeconds !== undefined) bad(`${p}.ttlSeconds`, `only lease metrics have a time-to-live (this one is ${kind})`);
    let source: GaugeSource | null = null;
    if (kind === 'gauge') {
      const s = m.source ?? 'app';
      if (typeof s !== 'string' || !(GAUGE_SOURCES as readonly string[]).includes(s)) bad(`${p}.source`, `a gauge is measured from ${GAUGE_SOURCES.join(' or ')}, got ${brief(s)}`);
      source = s as GaugeSource;
    } else if (m.source !== undefined) bad(`${p}.source`, `only gauges have a source (this one is ${kind})`);
    const scale = m.scale ?? 1;
    if (typeof scale !== 'number' || !Number.isSafeInteger(scale) || scale < 1 || scale > 1e12) bad(`${p}.scale`, `must be a whole number from 1 to 1e12, got ${brief(scale)}`);
    if (scale !== 1 && kind !== 'gauge') bad(`${p}.scale`, `only a gauge is measured in other units than its limit (this one is ${kind})`);
    const quota = m.quota === undefined ? metricName : name(m.quota, `${p}.quota`);
    if (quota === RETENTION_QUOTA) bad(`${p}.quota`, `${RETENTION_QUOTA} is the tiers' retentionDays, not a metric's quota`);
    if (quota === RATE_LIMIT_QUOTA && !(kind === 'window' && window === 'minute')) bad(`${p}.quota`, `${RATE_LIMIT_QUOTA} is the rate limit: only a per-minute window metric may share it`);
    return {
      name: metricName, kind, quota, unit: m.unit === undefined ? metricName : text(m.unit, `${p}.unit`, 40),
      scale, window, ttlSeconds, source, description: m.description === undefined ? '' : text(m.description, `${p}.description`),
    };
  });
  unique(metrics.map((m) => m.name), '$.metrics', 'metric');
  const quotas = new Map<string, number>();
  metrics.forEach((m, i) => {
    const first = quotas.get(m.quota);
    if (first !== undefined) bad(`$.metrics[${i}].quota`, `quota ${JSON.stringify(m.quota)} is already metrics[${first}]'s`);
    quotas.set(m.quota, i);
  });
  const storageGauges = metrics.filter((m) => m.source === 'storage');
  if (storageGauges.length > 1) bad(`$.metrics[${metrics.indexOf(storageGauges[1]!)}].source`, 'only one gauge can be the measured storage');

  const features = list(doc.features ?? [], '$.features').map((f, i): PlanFeature => {
    const p = `$.features[${i}]`;
    if (!isObject(f)) bad(p, 'must be an object with name and description');
    onlyKeys(f, p, ['name', 'description']);
    return { name: name(f.name, `${p}.name`), description: f.description === undefined ? '' : text(f.description, `${p}.description`) };
  });
  unique(features.map((f) => f.name), '$.features', 'feature');
  const featureNames = new Set(features.map((f) => f.name));
  const metricNames = new Set(metrics.map((m) => m.name));

  const rawTiers = list(doc.tiers, '$.tiers');
  if (rawTiers.length === 0) bad('$.tiers', 'declare at least one tier');
  const tiers = rawTiers.map((t, i): PlanTier => {
    const p = `$.tiers[${i}]`;
    if (!isObject(t)) bad(p, 'must be an object with name and limits');
    onlyKeys(t, p, ['name', 'limits', 'features', 'rateLimit', 'retentionDays', 'default', 'trialOf', 'price']);
    const tierName = name(t.name, `${p}.name`, TIER_NAME, '1-50 characters of [a-z0-9_-], starting with a letter');
    const rawLimits = t.limits ?? {};
    if (!isObject(rawLimits)) bad(`${p}.limits`, 'must be an object of metric name to limit');
    const limits: Record<string, number | null> = {};
    for (const [k, v] of Object.entries(rawLimits)) {
      if (!metricNames.has(k)) bad(`${p}.limits.${k}`, `unknown metric ${JSON.stringify(k)}; declared metrics: ${[...metricNames].join(', ') || 'none'}`);
      limits[k] = limit(v, `${p}.limits.${k}`, true);
    }
    for (const m of metrics) if (!(m.name in limits)) bad(`${p}.limits.${m.name}`, 'missing: every tier gives every metric a limit (write "unlimited" for none)');
    const tierFeatures = list(t.features ?? [], `${p}.features`).map((f, j) => {
      const fname = name(f, `${p}.features[${j}]`);
      if (!featureNames.has(fname)) bad(`${p}.features[${j}]`, `unknown feature ${JSON.stringify(fname)}; declare it under features`);
      return fname;
    });
    if (new Set(tierFeatures).size !== tierFeatures.length) bad(`${p}.features`, 'lists a feature twice');
    // a per-minute metric that shares the rate limit's quota is the rate limit itself
    const shared = metrics.find((m) => m.quota === RATE_LIMIT_QUOTA);
    let rateLimit: number;
    if (shared) {
      const l = limits[shared.name];
      if (l === null || l === undefined) bad(`${p}.limits.${shared.name}`, `${shared.name} is the rate limit (${RATE_LIMIT_QUOTA}), so it needs a number`);
      if (t.rateLimit !== undefined && t.rateLimit !== l) bad(`${p}.rateLimit`, `must equal limits.${shared.name} (${l}), which shares the ${RATE_LIMIT_QUOTA} quota`);
      rateLimit = l;
    } else {
      if (t.rateLimit === undefined) bad(`${p}.rateLimit`, 'missing: API requests per minute for this tier');
      rateLimit = limit(t.rateLimit, `${p}.rateLimit`, false)!;
    }
    if (t.retentionDays === undefined) bad(`${p}.retentionDays`, 'missing: how many days of data this tier keeps');
    const retentionDays = limit(t.retentionDays, `${p}.retentionDays`, false)!;
    if (t.default !== undefined && typeof t.default !== 'boolean') bad(`${p}.default`, 'must be true or false');
    const trialOf = t.trialOf === undefined || t.trialOf === null ? null : name(t.trialOf, `${p}.trialOf`, TIER_NAME, 'a tier name');
    const price = t.price === undefined || t.price === null ? null : tierPrice(t.price, `${p}.price`, metrics);
    return { name: tierName, limits, features: tierFeatures, rateLimit, retentionDays, default: t.default === true, trialOf, price };
  });
  unique(tiers.map((t) => t.name), '$.tiers', 'tier');
  const tierNames = new Set(tiers.map((t) => t.name));
  const defaults = tiers.filter((t) => t.default);
  if (defaults.length > 1) bad(`$.tiers[${tiers.indexOf(defaults[1]!)}].default`, `only one tier is the default (also ${defaults[0]!.name})`);
  if (defaults.length === 0) tiers[0]!.default = true;
  const trials = tiers.filter((t) => t.trialOf !== null);
  if (trials.length > 1) bad(`$.tiers[${tiers.indexOf(trials[1]!)}].trialOf`, `only one tier is the trial tier (also ${trials[0]!.name})`);
  tiers.forEach((t, i) => {
    if (t.trialOf === null) return;
    if (!tierNames.has(t.trialOf)) bad(`$.tiers[${i}].trialOf`, `unknown tier ${JSON.stringify(t.trialOf)}`);
    if (t.trialOf === t.name) bad(`$.tiers[${i}].trialOf`, 'a trial cannot fall back to its own tier');
  });
  return { metrics, features, tiers };
}

const MAX_AMOUNT = 1e12;

function amount(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(path, `must be a whole number from ${min} to ${max} (amounts are in the currency's minor units, such as cents), got ${brief(v)}`);
  return v;
}

/** A tier's price: currency, its amount per period, and per metric the included usage and the price beyond it. */
function tierPrice(v: unknown, path: string, metrics: PlanMetric[]): TierPrice {
  if (!isObject(v)) bad(path, 'must be an object with currency, amount and metrics');
  onlyKeys(v, path, ['currency', 'amount', 'metrics']);
  if (typeof v.currency !== 'string' || !/^[a-z]{3}$/.test(v.currency)) bad(`${path}.currency`, `must be a lowercase ISO 4217 code such as "usd", got ${brief(v.currency)}`);
  const out: TierPrice = { currency: v.currency, amount: amount(v.amount ?? 0, `${path}.amount`, 0, MAX_AMOUNT), metrics: {} };
  const raw = v.metrics ?? {};
  if (!isObject(raw)) bad(`${path}.metrics`, 'must be an object of metric name to { included, unitAmount, perUnits }');
  for (const [k, m] of Object.entries(raw)) {
    const mp = `${path}.metrics.${k}`;
    const metric = metrics.find((x) => x.name === k);
    if (!metric) bad(mp, `unknown metric ${JSON.stringify(k)}; declared metrics: ${metrics.map((x) => x.name).join(', ') || 'none'}`);
    // a gauge's daily history is its highest level, not an amount used: summing it bills nonsense
    if (metric.kind === 'gauge') bad(mp, 'a gauge is a level, not usage; only count, window and lease metrics are billed by use');
    if (!isObject(m)) bad(mp, 'must be an object with included, unitAmount and perUnits');
    onlyKeys(m, mp, ['included', 'unitAmount', 'perUnits']);
    out.metrics[k] = {
      included: amount(m.included ?? 0, `${mp}.included`, 0, MAX_LIMIT),
      unitAmount: amount(m.unitAmount, `${mp}.unitAmount`, 0, MAX_AMOUNT),
      perUnits: amount(m.perUnits ?? 1, `${mp}.perUnits`, 1, MAX_AMOUNT),
    };
  }
  return out;
}

/** The quota keys of one tier as the catalog stores them (metric quotas, rate limit, retention). */
export function tierQuotas(plans: Plans, tier: PlanTier): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const m of plans.metrics) out[m.quota] = tier.limits[m.name] ?? null;
  out[RATE_LIMIT_QUOTA] = tier.rateLimit;
  out[RETENTION_QUOTA] = tier.retentionDays;
  return out;
}

/** Every quota key a plan knows (metric quotas, then the rate limit and retention). */
export function quotaNames(plans: Plans): string[] {
  const names = plans.metrics.map((m) => m.quota);
  for (const q of [RATE_LIMIT_QUOTA, RETENTION_QUOTA]) if (!names.includes(q)) names.push(q);
  return names;
}

/** The plan as a file would write it (short form: defaults left out), for GET /v1/plans and `plans show`. */
export function plansDocument(plans: Plans): Record<string, unknown> {
  return {
    metrics: plans.metrics.map((m) => ({
      name: m.name, kind: m.kind,
      ...(m.window ? { window: m.window } : {}), ...(m.ttlSeconds !== null ? { ttlSeconds: m.ttlSeconds } : {}),
      ...(m.source ? { source: m.source } : {}),
      unit: m.unit, ...(m.scale !== 1 ? { scale: m.scale } : {}), ...(m.quota !== m.name ? { quota: m.quota } : {}),
      ...(m.description ? { description: m.description } : {}),
    })),
    features: plans.features.map((f) => ({ name: f.name, description: f.description })),
    tiers: plans.tiers.map((t) => ({
      name: t.name, ...(t.default ? { default: true } : {}), ...(t.trialOf ? { trialOf: t.trialOf } : {}),
      limits: Object.fromEntries(Object.entries(t.limits).map(([k, v]) => [k, v === null ? 'unlimited' : v])),
      features: t.features, rateLimit: t.rateLimit, retentionDays: t.retentionDays,
      ...(t.price ? { price: t.price } : {}),
    })),
  };
}
