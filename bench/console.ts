/**
 * The admin console's first load on the tenants page with 10,000 tenants, from a real browser
 * (Debian's chromium driven by playwright-core): bytes transferred (gzip) and time until the page is
 * interactive (the first page of rows shown and the pager enabled). Beside it, the baseline: the same
 * first page of tenants fetched by the browser as raw JSON from the API, with no console at all. Each run is a fresh browser
 * context (a cold cache); medians of BENCH_CONSOLE_RUNS runs.
 */
import { randomBytes } from 'node:crypto';
import { chromium, type Browser, type Page } from 'playwright-core';
import { buildServer } from '../src/server/app.js';
import { intFromEnv, median, progress, type BenchContext } from './lib.js';

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

async function load(browser: Browser, url: string, prepare: (page: Page) => Promise<void>, ready: (page: Page) => Promise<unknown>): Promise<{ ms: number; bytes: number; assetBytes: number }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('response', (r) => { if (r.url().includes('/v1/') && r.status() >= 400) void r.text().then((t) => progress(`console: ${r.status()} ${r.url()} ${t.slice(0, 300)}`), () => {}); });
  await prepare(page);
  let bytes = 0; let assetBytes = 0;
  page.on('requestfinished', (req) => {
    void req.sizes().then((s) => {
      const n = s.responseBodySize + s.responseHeadersSize;
      bytes += n;
      if (!req.url().includes('/v1/')) assetBytes += n;
    }, () => {});
  });
  const t0 = performance.now();
  await page.goto(url);
  await ready(page);
  const ms = performance.now() - t0;
  await page.waitForLoadState('networkidle');
  await context.close();
  return { ms, bytes, assetBytes };
}

export async function benchConsole(ctx: BenchContext): Promise<string> {
  const TENANTS = intFromEnv('BENCH_CONSOLE_TENANTS', 10_000, 1);
  const RUNS = intFromEnv('BENCH_CONSOLE_RUNS', 5, 1);
  const admin = `op_${randomBytes(18).toString('hex')}`;
  const own = await ctx.fresh({ adminKey: admin });
  // catalog rows only (the list reads nothing else), as the migrations section does for its idle tenants
  await own.su`
    insert into tenantry_catalog.tenants (id, slug, name, status, tier, isolation, database_name, schema_name, role_name, schema_version)
    select gen_random_uuid(), 'list-' || g, 'List tenant ' || g, 'active', 'free', 'schema', ${own.namespace + '_shared'}, 't_list_' || g, ${own.namespace} || '_list_' || g, 0
    from generate_series(1, ${TENANTS}) g`;
  const app = await buildServer({ tenantry: own.tenantry, logLevel: 'silent' });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS, headless: true });
  try {
    const consoleRuns = []; const docsRuns = []; const searchRuns: number[] = []; const apiSearchRuns: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      consoleRuns.push(await load(browser, `${base}/console#/tenants`,
        async (page) => { await page.addInitScript(`sessionStorage.setItem('tenantry.console.session', ${JSON.stringify(JSON.stringify({ token: admin, kind: 'operator' }))})`); },
        async (page) => { await page.locator('tbody tr a').first().waitFor({ timeout: 120_000 }); await page.getByRole('button', { name: 'Next' }).and(page.locator(':enabled')).waitFor({ timeout: 120_000 }); }));
      // server-side search (issue #17): type a name's start into the box until its one row shows
      // (the box waits 250 ms for typing to settle before it asks), beside the same search as raw JSON
      {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        const page = await context.newPage();
        await page.addInitScript(`sessionStorage.setItem('tenantry.console.session', ${JSON.stringify(JSON.stringify({ token: admin, kind: 'operator' }))})`);
        await page.goto(`${base}/console#/tenants`);
        await page.locator('tbody tr a').first().waitFor({ timeout: 120_000 });
        const want = `list-${TENANTS - 1 - i}`;
        const t0 = performance.now();
        await page.getByLabel('Search (start of slug or name)').fill(`${want}`);
        await page.waitForFunction((w) => { const d = (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number; [i: number]: { textContent: string } } } }).document; const rows = d.querySelectorAll('tbody tr td a'); return rows.length === 1 && rows[0]!.textContent === w; }, want, { timeout: 120_000 });
        searchRuns.push(performance.now() - t0);
        await context.close();
        const a0 = performance.now();
        const r = await fetch(`${base}/v1/tenants?limit=50&sort=created_at&order=desc&q=${want}`, { headers: { authorization: `Bearer ${admin}` } });
        await r.json();
        apiSearchRuns.push(performance.now() - a0);
      }
      docsRuns.push(await load(browser, `${base}/v1/tenants?limit=50`, async (page) => { await page.setExtraHTTPHeaders({ authorization: `Bearer ${admin}`, 'accept-encoding': 'gzip' }); }, (page) => page.waitForLoadState('load')));
      progress(`console: run ${i + 1}/${RUNS}`);
    }
    const m = (xs: { ms: number; bytes: number; assetBytes: number }[], k: 'ms' | 'bytes' | 'assetBytes'): number => median(xs.map((x) => x[k]));
    const kb = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
    return [
      '### Admin console first load',
      '',
      `${TENANTS.toLocaleString('en')} tenants; headless Chromium, a cold cache each run, loopback; medians of ${RUNS} runs. Interactive: the first 50 rows shown and the pager enabled (console); the JSON loaded (baseline).`,
      '',
      '| page | transferred (gzip) | of which assets | time to interactive |',
      '|---|---|---|---|',
      `| Tenantry console, tenants page | ${kb(m(consoleRuns, 'bytes'))} | ${kb(m(consoleRuns, 'assetBytes'))} | ${m(consoleRuns, 'ms').toFixed(0)} ms |`,
      `| the same 50 tenants as raw JSON from the API (baseline) | ${kb(m(docsRuns, 'bytes'))} | ${kb(m(docsRuns, 'assetBytes'))} | ${m(docsRuns, 'ms').toFixed(0)} ms |`,
      `| ratio console / raw JSON | ${(m(consoleRuns, 'bytes') / m(docsRuns, 'bytes')).toFixed(2)} | | ${(m(consoleRuns, 'ms') / m(docsRuns, 'ms')).toFixed(2)} |`,
      '',
      `Server-side search on the tenants page (a slug's start typed into the box until its one row shows; the box waits 250 ms for typing to settle): console ${median(searchRuns).toFixed(0)} ms; the same search as one API call (GET /v1/tenants?q=..., baseline) ${median(apiSearchRuns).toFixed(1)} ms.`,
      '',
    ].join('\n');
  } finally {
    await browser.close();
    await app.close();
    await own.cleanup();
  }
}
