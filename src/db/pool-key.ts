import { TenantryError } from '../errors.js';

/**
 * Connection pools are keyed by the placement they reach: server, database and role. Today every
 * placement names the one server Tenantry is configured with; a later fleet of servers is rows of the
 * catalog (tenants.server_name) and entries of `serverUrl`, not a rewrite of who pools what.
 */

/** The server a placement lives on when none is named: the one of DATABASE_URL. */
export const DEFAULT_SERVER = 'default';

/** `server` absent (a placement recorded before servers were named): the configured one */
export interface PoolTarget { server?: string | undefined; database: string; role: string }

/** One key per server, database and role (JSON: no name can run into the next). */
export function poolKey(t: PoolTarget): string {
  return JSON.stringify([t.server ?? DEFAULT_SERVER, t.database, t.role]);
}

/**
 * The URL of the server a placement names. Only the configured server exists today: a placement on
 * any other is refused rather than silently connected to the wrong server.
 */
export function serverUrl(url: string, server: string): string {
  if (server === DEFAULT_SERVER) return url;
  throw new TenantryError('INVALID_CONFIG', `A tenant is placed on server ${JSON.stringify(server)}, which this installation does not know (only "${DEFAULT_SERVER}", the server of DATABASE_URL). Move the tenant back, or run a Tenantry that knows that server.`, { server });
}
