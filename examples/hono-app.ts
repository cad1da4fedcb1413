/**
 * An app's own Hono server using tenantry/hono (run: DATABASE_URL=... npx tsx examples/hono-app.ts).
 * In your app, import from 'tenantry' and 'tenantry/hono' instead of ../src.
 */
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { Tenantry, TenantryError } from '../src/index.js';
import { tenantry as tenantryMiddleware, tenantryOnError, type TenantryVariables } from '../src/app-plugins/hono.js';
import type { TenantryAppOptions } from '../src/app-plugins/request-tenant.js';

export async function start(tenantry: Tenantry, opts: Omit<TenantryAppOptions, 'tenantry'> = {}, port = 0): Promise<{ url: string; close: () => Promise<void> }> {
  const app = new Hono<{ Variables: TenantryVariables }>();
  const tenant = tenantryMiddleware({ tenantry, ...opts });
  app.onError(tenantryOnError);
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/me', tenant, (c) => c.json({ tenant: c.get('tenant').slug }));
  app.get('/t/:tenant/me', tenant, (c) => c.json({ tenant: c.get('tenant').slug }));
  app.post('/agents', tenant, async (c) => {
    const { name } = await c.req.json<{ name: string }>();
    const [row] = await c.get('withTenant')((sql) => sql`insert into agents (name, agent_type) values (${name}, 'example') returning name`);
    return c.json(row, 201);
  });
  app.get('/agents', tenant, async (c) => c.json(await c.get('withTenant')((sql) => sql`select name from agents order by name`)));
  app.get('/boom', tenant, () => { throw new TenantryError('FORBIDDEN', 'This example route always refuses.'); });
  const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  const { port: bound } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${bound}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const tenantry = await Tenantry.open();
  const { url } = await start(tenantry, { baseDomain: process.env.TENANTRY_BASE_DOMAIN }, Number(process.env.PORT ?? 3000));
  process.stdout.write(`example (hono) listening on ${url}\n`);
}
