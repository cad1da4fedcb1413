import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

// The console's build: React's JSX through Vite's own esbuild (no plugin needed), served under
// /console by src/console/plugin.ts with a strict CSP: no inline script (no module-preload
// polyfill), no inline style, nothing from another origin.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/console/',
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: fileURLToPath(new URL('../dist/console-assets', import.meta.url)),
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    target: 'es2022',
    reportCompressedSize: false,
  },
  logLevel: 'warn',
});
