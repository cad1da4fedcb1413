/**
 * An app's own Express server using tenantry/express (run: DATABASE_URL=... npx tsx examples/express-app.ts).
 * In your app, import from 'tenantry' and 'tenantry/express' instead of ../src.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import { Tenantry, TenantryError } from '../src/index.js';
import { tenantry as tenantryMiddleware, tenantryErrors, type TenantRequest } from '../src/app-plugins/express.js';
import type { TenantryAppOptions } from '../src/app-plugins/request-tenant.js';

export async function start(tenantry: Tenantry, opts: Omit<TenantryAppOptions, 'tenantry'> = {}, port = 0): Promise<{ url: string; close: () => Promise<void> }> {
  const app = express();
  app.use(express.json());
  const tenant = tenantryMiddleware({ tenantry, ...opts });
  app.get('/healthz', (_req, res) => { res.json({ ok: true }); });
  app.get('/me', tenant, (req, res) => { res.json({ tenant: (req as TenantRequest).tenant.slug }); });
  app.get('/t/:tenant/me', tenant, (req, res) => { res.json({ tenant: (req as TenantRequest).tenant.slug }); });
  app.post('/agents', tenant, async (req, res, next) => {
    try {
      const [row] = await (req as TenantRequest).withTenant((sql) => sql`insert into agents (name, agent_type) values (${(req.body as { name: string }).name}, 'example') returning name`);
      res.status(201).json(row);
    } catch (err) { next(err); }
  });
  app.get('/agents', tenant, async (req, res, next) => {
    try { res.json(await (req as TenantRequest).withTenant((sql) => sql`select name from agents order by name`)); } catch (err) { next(err); }
  });
  app.get('/boom', tenant, () => { throw new TenantryError('FORBIDDEN', 'This example route always refuses.'); });
  app.use(tenantryErrors());
  const server = app.listen(port, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port: bound } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${bound}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const tenantry = await Tenantry.open();
  const { url } = await start(tenantry, { baseDomain: process.env.TENANTRY_BASE_DOMAIN }, Number(process.env.PORT ?? 3000));
  process.stdout.write(`example (express) listening on ${url}\n`);
}
