import type { FastifyInstance, FastifyRequest } from 'fastify';
import { assertSafeText } from '../input/safe-text.js';

/** The request headers the server reads (credentials, idempotency, tenant naming, request ids). */
const HEADERS_READ = ['authorization', 'idempotency-key', 'x-tenant-id', 'host', 'x-request-id'] as const;

function checkUrlAndHeaders(req: FastifyRequest): void {
  for (const name of HEADERS_READ) {
    const value = req.headers[name];
    if (value !== undefined) assertSafeText(value, `header ${name}`);
  }
  assertSafeText(req.params, 'path', 'path');
  assertSafeText(req.query, 'query', 'query');
}

/**
 * Hostile text (a NUL byte, a lone surrogate, an absurd length) anywhere a route reads it is refused
 * with 400 INVALID_INPUT naming the field, before authentication, lookups or any other hook could hand
 * it to PostgreSQL (which answers 22021, a 500, or fails half-way through a provisioning).
 */
export function registerInputGuard(app: FastifyInstance): void {
  app.addHook('onRequest', async (req) => { checkUrlAndHeaders(req); });
  app.addHook('preValidation', async (req) => { assertSafeText(req.body, 'body', 'body'); });
}
