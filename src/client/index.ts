/**
 * `tenantry/client`: a typed client of the HTTP API for an app's other services, openapi-fetch over
 * the types generated from the served OpenAPI document (scripts/generate-client.ts). Paths, path and
 * query parameters, bodies and responses are all typed:
 *
 *   const api = createTenantryClient({ baseUrl: 'https://tenantry.internal', token: process.env.TENANTRY_TOKEN });
 *   const { data, error } = await api.GET('/v1/tenants/{id}', { params: { path: { id: 'acme-corp' } } });
 *
 * `error` is the RFC 9457 problem (with its stable `code`) when the server refused.
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { paths, components, operations } from './openapi-types.js';

export type { paths, components, operations };
/** The problem+json body of every error response. */
export type Problem = components['schemas']['Problem'];
export type TenantryClient = Client<paths>;

export interface TenantryClientOptions extends ClientOptions {
  /** where the server listens, e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** the operator token or a tenant API key, sent as `Authorization: Bearer <token>` */
  token?: string;
}

export function createTenantryClient(options: TenantryClientOptions): TenantryClient {
  const { token, headers, ...rest } = options;
  return createClient<paths>({
    ...rest,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(headers as Record<string, string> | undefined) },
  });
}
