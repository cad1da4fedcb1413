import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, extname, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * The admin console at /console: the static files Vite built into dist/console-assets (console/ holds
 * their source), served from memory with a gzip copy of each. The console is only a face: it calls
 * the public HTTP API with the token the person typed, so serving it needs no credential.
 *
 * Every answer carries a strict Content-Security-Policy: scripts, styles and connections from this
 * origin only, no inline script or style, no frames, no forms posting anywhere.
 */
export const CONSOLE_CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
  "connect-src 'self'", "manifest-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.json': 'application/json', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
};

interface Asset { body: Buffer; gzip: Buffer | null; type: string; immutable: boolean }

/** dist/console-assets of the package, from src/console (tsx) or dist/console (built) alike */
export function consoleAssetsDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'console-assets');
}

function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  if (!existsSync(dir)) return assets;
  const walk = (d: string, prefix: string): void => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) { walk(full, `${prefix}${name}/`); continue; }
      const body = readFileSync(full);
      const type = TYPES[extname(name)] ?? 'application/octet-stream';
      const compressible = /^(text\/|application\/json|image\/svg)/.test(type);
      // Vite names built files by content hash: they never change under their name
      assets.set(`${prefix}${name}`, { body, gzip: compressible ? gzipSync(body, { level: 9 }) : null, type, immutable: prefix.startsWith('assets/') });
    }
  };
  walk(dir, '');
  return assets;
}

export async function registerConsole(app: FastifyInstance, options: { dir?: string } = {}): Promise<void> {
  const assets = loadAssets(options.dir ?? consoleAssetsDir());
  const send = (req: FastifyRequest, reply: FastifyReply, path: string): FastifyReply => {
    void reply.header('content-security-policy', CONSOLE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cross-origin-opener-policy', 'same-origin')
      .header('x-frame-options', 'DENY');
    const asset = assets.get(path);
    if (!asset) {
      if (assets.size === 0) return reply.status(503).type('text/plain; charset=utf-8').send('The console is not built: run `npm run build`.\n');
      return reply.status(404).type('text/plain; charset=utf-8').send('Not found\n');
    }
    void reply.type(asset.type).header('vary', 'accept-encoding')
      .header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (asset.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) return reply.header('content-encoding', 'gzip').send(asset.gzip);
    return reply.send(asset.body);
  };
  app.get('/console', { schema: { hide: true } }, (req, reply) => send(req, reply, 'index.html'));
  app.get('/console/*', { schema: { hide: true } }, (req, reply) => {
    const rest = (req.params as { '*': string })['*'];
    // only names of the built files are looked up: nothing from the request reaches the file system
    return send(req, reply, rest === '' ? 'index.html' : rest);
  });
}
