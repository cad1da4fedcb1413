/**
 * An app's own Fastify server using tenantry/fastify (run: DATABASE_URL=... npx tsx examples/fastify-app.ts).
 * In your app, import from 'tenantry' and 'tenantry/fastify' instead of ../src.
 */
import Fastify from 'fastify';
import { Tenantry, TenantryError } from '../src/index.js';
import { tenantryPlugin } from '../src/app-plugins/fastify.js';
import type { TenantryAppOptions } from '../src/app-plugins/request-tenant.js';

export async function start(tenantry: Tenantry, opts: Omit<TenantryAppOptions, 'tenantry'> = {}, port = 0): Promise<{ url: string; close: () => Promise<void> }> {
  const app = Fastify();
  await app.register(tenantryPlugin, { tenantry, ...opts, skip: (req) => req.url === '/healthz' });
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/me', async (req) => ({ tenant: req.tenant!.slug }));
  app.get('/t/:tenant/me', async (req) => ({ tenant: req.tenant!.slug }));
  app.post('/agents', async (req, reply) => {
    const { name } = req.body as { name: string };
    const [row] = await req.withTenant((sql) => sql`insert into agents (name, agent_type) values (${name}, 'example') returning name`);
    return reply.status(201).send(row);
  });
  app.get('/agents', async (req) => req.withTenant((sql) => sql`select name from agents order by name`));
  app.get('/boom', async () => { throw new TenantryError('FORBIDDEN', 'This example route always refuses.'); });
  const url = await app.listen({ port, host: '127.0.0.1' });
  return { url, close: () => app.close() };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const tenantry = await Tenantry.open();
  const { url } = await start(tenantry, { baseDomain: process.env.TENANTRY_BASE_DOMAIN }, Number(process.env.PORT ?? 3000));
  process.stdout.write(`example (fastify) listening on ${url}\n`);
}
