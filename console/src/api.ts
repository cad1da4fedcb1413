import { createTenantryClient, type TenantryClient, type components } from '../../src/client/index.ts';

export type Tenant = components['schemas']['Tenant'];
export interface Problem { code: string; title: string; detail: string; status: number }
export type Session = { token: string; kind: 'operator' } | { token: string; kind: 'tenant'; tenantId: string; slug: string };

const KEY = 'tenantry.console.session';

/** The session lives in this tab's sessionStorage only: never a cookie, never the URL. */
export function loadSession(): Session | null {
  try { const raw = sessionStorage.getItem(KEY); return raw ? (JSON.parse(raw) as Session) : null; } catch { return null; }
}
export function saveSession(s: Session): void { sessionStorage.setItem(KEY, JSON.stringify(s)); }
export function forgetSession(): void { sessionStorage.removeItem(KEY); }

export function clientFor(token: string): TenantryClient {
  return createTenantryClient({ baseUrl: location.origin, token });
}

export class ApiError extends Error {
  constructor(readonly problem: Problem) { super(problem.detail || problem.title); }
}

/** The data of an openapi-fetch answer, or an ApiError carrying the problem+json the server sent. */
export async function must<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const r = await p;
  if (r.error !== undefined || !r.response.ok) {
    const e = (r.error ?? {}) as Partial<Problem>;
    throw new ApiError({ code: e.code ?? `HTTP_${r.response.status}`, title: e.title ?? r.response.statusText, detail: e.detail ?? '', status: r.response.status });
  }
  return r.data as T;
}

/** Signs in: the operator token lists tenants; a tenant key reads its own tenant. */
export async function signIn(token: string): Promise<Session> {
  const api = clientFor(token);
  const list = await api.GET('/v1/tenants', { params: { query: { limit: 1 } } });
  if (list.response.ok) return { token, kind: 'operator' };
  const own = await api.GET('/v1/tenant', {});
  if (own.response.ok && own.data) return { token, kind: 'tenant', tenantId: own.data.id, slug: own.data.slug };
  throw new ApiError({ code: 'UNAUTHORIZED', title: 'Not signed in', detail: 'The server did not accept this token or key.', status: 401 });
}
