import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { freshInstallation, type TestInstallation } from './helpers/installation.js';
import { buildServer } from '../src/server/app.js';
import { CONSOLE_CSP, consoleAssetsDir } from '../src/console/plugin.js';

/**
 * The admin console end to end: the real server on a real socket, the built console, Debian's
 * Chromium driven by playwright-core. Every flow of issue #17's Tests section, axe-core on every
 * page, screenshots at 1280 px and 390 px in light and dark (CONSOLE_SHOTS or a temp folder).
 */

const CHROMIUM = '/usr/bin/chromium';
const ADMIN = `op_${randomBytes(18).toString('hex')}`;
const SHOTS = process.env.CONSOLE_SHOTS ?? join(tmpdir(), 'tenantry-console-shots');
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let inst: TestInstallation;
let app: FastifyInstance;
let base: string;
let browser: Browser;
const cspViolations: string[] = [];

before(async () => {
  if (!existsSync(join(consoleAssetsDir(), 'index.html'))) execFileSync('npx', ['vite', 'build', '--config', 'console/vite.config.ts'], { stdio: 'inherit' });
  mkdirSync(SHOTS, { recursive: true });
  inst = await freshInstallation({ adminKey: ADMIN, authFailuresPerAddress: 1_000_000, authFailuresPerKey: 1_000_000, backupDir: mkdtempSync(join(tmpdir(), 'tenantry-console-backups-')), jobTickMs: 200 });
  app = await buildServer({ tenantry: inst.tenantry, logLevel: 'silent' });
  base = await app.listen({ port: 0, host: '127.0.0.1' });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});
after(async () => {
  await browser?.close();
  await app?.close();
  await inst?.cleanup();
});

async function api(method: string, path: string, body?: unknown, token = ADMIN): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

async function newPage(opts: { width?: number; dark?: boolean } = {}): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: opts.width ?? 1280, height: 900 }, colorScheme: opts.dark ? 'dark' : 'light' });
  const page = await context.newPage();
  page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on('pageerror', (e) => { cspViolations.push(`page error: ${e.message}`); });
  return { context, page };
}

async function signInAs(page: Page, token: string): Promise<void> {
  await page.goto(`${base}/console`);
  await page.getByLabel('Operator token or API key').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** axe-core with no serious or critical violation, then a screenshot at both widths (and dark at 390). */
async function checkPage(page: Page, name: string): Promise<void> {
  await page.waitForLoadState('networkidle');
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), [], `axe on ${name}`);
  const vp = page.viewportSize()!;
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: 'dark' });
  const dark = await new AxeBuilder({ page }).withTags(['wcag2aa']).analyze();
  assert.deepEqual(dark.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id} ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name} (dark)`);
  await page.screenshot({ path: join(SHOTS, `${name}-390-dark.png`), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize(vp);
}

test('the console is served with a strict CSP, gzip, and no third-party origin', async () => {
  const r = await fetch(`${base}/console`, { headers: { 'accept-encoding': 'gzip' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-security-policy'), CONSOLE_CSP);
  assert.doesNotMatch(CONSOLE_CSP, /unsafe-inline|unsafe-eval|https?:|\*/);
  const html = await r.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
  assert.doesNotMatch(html, /<style|style=/, 'no inline style');
  assert.doesNotMatch(html, /https?:\/\//, 'nothing from another origin');
  const missing = await fetch(`${base}/console/../../package.json`);
  assert.notEqual(missing.status, 200);
  const traversal = await fetch(`${base}/console/assets/..%2f..%2fpackage.json`);
  assert.equal(traversal.status, 404, 'only built files are served');
});

test('operator: sign in, overview, create a tenant and find it in the list; a bad slug shows its error by the field', async () => {
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await checkPage(page, 'overview');

  await page.goto(`${base}/console#/tenants/new`);
  await page.getByLabel('Slug').fill('Bad Slug!');
  await page.getByRole('button', { name: 'Create tenant' }).click();
  const slugError = page.locator('#new-slug-error');
  await slugError.waitFor();
  assert.match(await slugError.innerText(), /slug/i);
  assert.equal(await page.getByLabel('Slug').getAttribute('aria-invalid'), 'true');
  assert.match((await page.getByLabel('Slug').getAttribute('aria-describedby')) ?? '', /new-slug-error/);
  await checkPage(page, 'create-error');

  await page.getByLabel('Slug').fill('console-made');
  await page.getByLabel('Name', { exact: true }).fill('Console Made Ltd');
  await page.getByRole('button', { name: 'Create tenant' }).click();
  await page.getByRole('heading', { name: 'Tenant created' }).waitFor();
  const key = await page.getByLabel("The tenant's first API key.").inputValue();
  assert.match(key, /^tnt_/);
  assert.equal((await api('GET', '/v1/tenant', undefined, key)).body.slug, 'console-made', 'the key shown works for the new tenant');
  await checkPage(page, 'created');

  await page.goto(`${base}/console#/tenants`);
  await page.getByRole('link', { name: 'console-made' }).waitFor();
  await page.getByLabel('Search (start of slug or name)').fill('CONSOLE MADE');
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document.querySelectorAll('tbody tr').length === 1);
  await page.getByRole('link', { name: 'console-made' }).waitFor();
  await checkPage(page, 'tenants');
  await context.close();
});

test('quota bars move and change colour as usage is recorded through the API; a new key is shown only once', async () => {
  const t = (await api('POST', '/v1/tenants', { slug: 'bars-co', name: 'Bars Co' })).body;
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/tenants/${t.id}`);
  const bar = page.locator('.quota[data-metric="agents"]');
  await bar.waitFor();
  assert.equal(await bar.getAttribute('data-level'), 'ok');
  const width = async (): Promise<number> => bar.locator('.fill').evaluate((el) => el.getBoundingClientRect().width);
  const colour = async (): Promise<string> => bar.locator('.fill').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor);
  const w0 = await width(); const c0 = await colour();
  assert.equal((await api('POST', `/v1/tenants/${t.id}/usage`, { metric: 'agents', amount: 8 })).status, 200);
  await page.reload();
  await page.locator('.quota[data-metric="agents"][data-level="warn"]').waitFor();
  const w1 = await width(); const c1 = await colour();
  assert.ok(w1 > w0, `the bar grew (${w0} -> ${w1})`);
  assert.notEqual(c1, c0, 'amber past 75%');
  assert.equal((await api('POST', `/v1/tenants/${t.id}/usage`, { metric: 'agents', amount: 2 })).status, 200);
  await page.reload();
  await page.locator('.quota[data-metric="agents"][data-level="danger"]').waitFor();
  assert.notEqual(await colour(), c1, 'red past 90%');
  assert.match((await bar.getByRole('meter').getAttribute('aria-valuetext')) ?? '', /10 of 10/);

  await page.getByLabel("New key's name").fill('ci key');
  await page.getByRole('button', { name: 'Create key' }).click();
  const shown = page.getByLabel('The new API key.');
  await shown.waitFor();
  const secret = await shown.inputValue();
  assert.equal((await api('GET', '/v1/tenant', undefined, secret)).status, 200);
  await checkPage(page, 'tenant');
  await page.reload();
  await page.getByText('ci key', { exact: true }).waitFor();
  assert.equal(await page.getByLabel('The new API key.').count(), 0, 'gone after a reload');
  assert.equal(await page.locator(`text=${secret}`).count(), 0);
  assert.ok(!(await page.content()).includes(secret), 'the secret is nowhere in the page');
  await context.close();
});

test('suspend behind a dialog that wants the slug typed: the badge turns and the audit trail shows it', async () => {
  const t = (await api('POST', '/v1/tenants', { slug: 'to-suspend', name: 'To Suspend' })).body;
  const { context, page } = await newPage({ width: 390 });
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/tenants/${t.id}`);
  await page.getByRole('button', { name: 'Suspend' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Reason').fill('unpaid invoice');
  const confirm = dialog.getByRole('button', { name: 'Suspend' });
  await dialog.getByLabel(/to confirm/).fill('to-suspen');
  assert.equal(await confirm.isDisabled(), true, 'a wrong slug does not arm the button');
  assert.equal((await api('GET', `/v1/tenants/${t.id}`)).body.status, 'active');
  await dialog.getByLabel(/to confirm/).fill('to-suspend');
  await confirm.press('Enter');
  await page.locator('.title-row .badge-suspended', { hasText: 'suspended' }).waitFor();
  await page.locator('td', { hasText: 'tenant.suspended' }).first().waitFor();
  assert.equal((await api('GET', `/v1/tenants/${t.id}`)).body.status, 'suspended');
  assert.match(await page.getByTestId('chain').innerText(), /verified/);
  await checkPage(page, 'suspended');
  await context.close();
});

test('a tenant key sees only its own tenant and gets nothing from another tenant\'s URL', async () => {
  const mine = (await api('POST', '/v1/tenants', { slug: 'key-own', name: 'Key Own' })).body;
  const other = (await api('POST', '/v1/tenants', { slug: 'key-other', name: 'Secret Other Corp' })).body;
  const { context, page } = await newPage();
  await signInAs(page, mine.apiKey);
  await page.getByRole('heading', { name: /Key Own/ }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Tenants' }).count(), 0, 'no tenant list for a tenant key');
  await checkPage(page, 'tenant-key');
  for (const ref of [other.id, other.slug]) {
    await page.goto(`${base}/console#/tenants/${ref}`);
    await page.getByRole('heading', { name: 'Tenant not found' }).waitFor();
    assert.ok(!(await page.content()).includes('Secret Other Corp'));
  }
  await page.goto(`${base}/console#/tenants`);
  await page.getByRole('heading', { name: /Key Own/ }).waitFor();
  assert.ok(!(await page.content()).includes('key-other'));
  await context.close();
});

test('sign out forgets the token: sessionStorage empty, no cookie, the sign-in form again', async () => {
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  assert.ok(await page.evaluate<number>('sessionStorage.length') > 0);
  assert.ok(!page.url().includes(ADMIN), 'never in the URL');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Operator token or API key').waitFor();
  assert.equal(await page.evaluate<number>('sessionStorage.length'), 0);
  assert.deepEqual(await context.cookies(), []);
  assert.equal(await page.evaluate<number>('localStorage.length'), 0);
  await checkPage(page, 'signin');
  await page.reload();
  await page.getByLabel('Operator token or API key').waitFor();
  await context.close();
});

test('HTML and script in a tenant\'s name and metadata are shown as text, never run', async () => {
  const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
  const t = (await api('POST', '/v1/tenants', { slug: 'evil-name', name: evil, metadata: { note: evil, '<b>k</b>': '<svg onload=alert(1)>' } })).body;
  assert.equal(t.name, evil);
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/tenants/${t.id}`);
  await page.getByRole('heading', { name: /evil-name/ }).waitFor();
  assert.equal(await page.evaluate<unknown>('window.__pwned'), undefined);
  assert.equal(await page.locator('main img, main script, main svg[onload]').count(), 0);
  assert.ok((await page.locator('h1').innerText()).includes('<script>window.__pwned=2</script>'), 'the name is shown as text');
  await page.goto(`${base}/console#/tenants`);
  await page.getByText(evil).first().waitFor();
  assert.equal(await page.evaluate<unknown>('window.__pwned'), undefined);
  await context.close();
});

test('plans and webhooks pages pass axe; no page hit a CSP violation', async () => {
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/plans`);
  await page.getByRole('heading', { name: 'Plans' }).waitFor();
  await page.getByRole('columnheader', { name: /free/ }).waitFor();
  await checkPage(page, 'plans');
  await page.goto(`${base}/console#/webhooks`);
  await page.getByRole('heading', { name: 'Webhooks' }).waitFor();
  await checkPage(page, 'webhooks');
  await context.close();
  assert.deepEqual(cspViolations, []);
});

/** The /v1/tenants requests a page makes, as their query strings. */
function listRequests(page: Page): URLSearchParams[] {
  const seen: URLSearchParams[] = [];
  page.on('request', (r) => { const u = new URL(r.url()); if (u.pathname === '/v1/tenants' && r.method() === 'GET') seen.push(u.searchParams); });
  return seen;
}

test('tenants list: search finds a tenant by name on the server (not on the page shown), and sorting asks the server', async () => {
  // 55 tenants: more than one page of 50, and the one searched for is made first, so it is not on the
  // first page of the default newest-first order
  const wanted = (await api('POST', '/v1/tenants', { slug: 'zz-needle', name: 'Haystack Needle GmbH', tier: 'free' })).body;
  for (let i = 0; i < 55; i++) assert.equal((await api('POST', '/v1/tenants', { slug: `hay-${String(i).padStart(2, '0')}`, name: `Hay ${i}`, tier: 'free', isolation: 'pooled' })).status, 201);
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  const requests = listRequests(page);
  await page.goto(`${base}/console#/tenants`);
  await page.getByRole('link', { name: 'hay-54' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'zz-needle' }).count(), 0, 'not on the first page');
  await page.getByLabel('Search (start of slug or name)').fill('haystack n');
  await page.getByRole('link', { name: 'zz-needle' }).waitFor();
  assert.equal(await page.locator('tbody tr').count(), 1);
  assert.ok(requests.some((q) => q.get('q') === 'haystack n'), 'the search went to the server');
  await checkPage(page, 'tenants-search');

  await page.getByLabel('Search (start of slug or name)').fill('hay-');
  await page.getByRole('link', { name: 'hay-54' }).waitFor();
  await page.getByRole('button', { name: /^Slug/ }).click();
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null } }).document.querySelector('tbody tr td a')?.textContent === 'hay-00');
  assert.ok(requests.some((q) => q.get('sort') === 'slug' && q.get('order') === 'asc' && q.get('q') === 'hay-'), 'the sort went to the server');
  await page.getByRole('button', { name: /^Slug/ }).click();
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null } }).document.querySelector('tbody tr td a')?.textContent === 'hay-54');
  assert.equal(await page.getByRole('columnheader', { name: /Slug/ }).getAttribute('aria-sort'), 'descending');
  // the next page continues the server's order with its cursor: hay-04 .. hay-00 after the first 50
  await page.getByRole('button', { name: 'Next' }).click();
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null } }).document.querySelector('tbody tr td a')?.textContent === 'hay-04');
  assert.equal(await page.locator('tbody tr').count(), 5);
  assert.equal(wanted.slug, 'zz-needle');
  await context.close();
});

test('usage chart: usage recorded through the API shows as today\'s bar, labelled for screen readers', async () => {
  const t = (await api('POST', '/v1/tenants', { slug: 'chart-co', name: 'Chart Co', tier: 'free' })).body;
  assert.equal((await api('POST', `/v1/tenants/${t.id}/usage`, { metric: 'llm_tokens', amount: 1234 })).status, 200);
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/tenants/${t.id}`);
  const today = new Date().toISOString().slice(0, 10);
  const chart = page.getByRole('img', { name: /Daily llm_tokens, last 30 days/ });
  await chart.waitFor();
  const bar = page.locator(`svg.chart rect[data-day="${today}"]`);
  const heights = await page.locator('svg.chart rect.col').evaluateAll((els) => els.map((e) => Number(e.getAttribute('height'))));
  assert.equal(heights.length, 30);
  assert.ok(Number(await bar.getAttribute('height')) > 50, 'today has a tall bar');
  assert.equal(heights.filter((h) => h > 0).length, 1, 'and no other day has one');
  assert.match(await page.locator('.chart-summary').innerText(), /1,234 in 30 days/);
  assert.ok((await page.locator('.usage-chart table td').allInnerTexts()).includes('1,234'), 'the data table behind the chart');
  await checkPage(page, 'usage-chart');
  await context.close();
});

test('migrations page: tenants per version and the last run, for the operator only', async () => {
  await inst.tenantry.migrate();
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.getByRole('link', { name: 'Migrations' }).click();
  await page.getByRole('heading', { name: 'Migrations', level: 1 }).waitFor();
  await page.getByRole('heading', { name: 'Tenants per version' }).waitFor();
  const status = (await api('GET', '/v1/migrations')).body;
  const rows = await page.getByRole('region', { name: 'Tenants per migration version' }).locator('tbody tr').count();
  assert.equal(rows, status.versions.length);
  await page.getByText('No failures').waitFor();
  await checkPage(page, 'migrations');
  await context.close();
});

test('webhooks page: a failed or delivered delivery is sent again with Redeliver', async () => {
  const http = await import('node:http');
  const got: string[] = [];
  const receiver = http.createServer((req, res) => { req.resume(); req.on('end', () => { got.push(String(req.headers['tenantry-id'])); res.writeHead(200); res.end(); }); });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  try {
    const t = (await api('POST', '/v1/tenants', { slug: 'hook-co', name: 'Hook Co', tier: 'free' })).body;
    const ep = await inst.tenantry.webhooks.create({ tenant: t.id, url: `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`, events: ['tenant.suspended'] });
    await inst.tenantry.tenants.suspend(t.id, 'webhook test');
    await inst.tenantry.webhooks.drain(`${ep.id}:${t.id}`);
    assert.equal(got.length, 1);
    const { context, page } = await newPage();
    await signInAs(page, ADMIN);
    await page.goto(`${base}/console#/webhooks`);
    await page.getByRole('heading', { name: 'Webhooks' }).waitFor();
    const row = page.locator('li', { hasText: '/hook' }).first();
    await row.getByRole('button', { name: 'Deliveries' }).click();
    await page.getByRole('button', { name: /Redeliver delivery .* \(tenant.suspended\)/ }).click();
    await page.getByText(/queued again as delivery/).waitFor();
    const list = await inst.tenantry.webhooks.deliveries(ep.id);
    assert.deepEqual(list.map((d) => d.status), ['pending', 'succeeded']);
    assert.equal(list[0]!.eventId, list[1]!.eventId);
    await page.locator('.deliveries li', { hasText: 'pending' }).waitFor();
    await checkPage(page, 'webhooks-redeliver');
    await inst.tenantry.webhooks.drain(`${ep.id}:${t.id}`);
    assert.equal(got.length, 2);
    assert.equal(got[0], got[1], 'the same event id');
    await context.close();
    assert.deepEqual(cspViolations, [], 'no new page hit a CSP violation');
  } finally {
    receiver.closeAllConnections();
    await new Promise<void>((r) => receiver.close(() => r()));
  }
});

test('overview: a tenant past 90% of a quota is listed at risk, from the server\'s stats (no tenant list is fetched for it)', async () => {
  const t = (await api('POST', '/v1/tenants', { slug: 'risky-co', name: 'Risky Co', tier: 'free' })).body;
  const m = (await api('GET', `/v1/tenants/${t.id}/usage`)).body.metrics.find((x: { metric: string }) => x.metric === 'llm_tokens');
  assert.equal((await api('POST', `/v1/tenants/${t.id}/usage`, { metric: 'llm_tokens', amount: Math.ceil(m.limit * 0.95) })).status, 200);
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  const requests = listRequests(page);
  await page.goto(`${base}/console#/`);
  const panel = page.locator('[data-panel="at-risk"]');
  await panel.getByRole('link', { name: 'risky-co' }).waitFor();
  assert.match(await panel.innerText(), /llm_tokens/);
  await page.locator('[data-panel="provisioning"]').getByText('Succeeded').waitFor();
  await page.locator('[data-panel="jobs"]').waitFor();
  await page.locator('[data-panel="webhooks"]').waitFor();
  assert.ok(requests.every((q) => q.get('status') === 'suspended'), 'only the suspended list is asked for, not every tenant');
  await checkPage(page, 'overview-stats');
  await context.close();
  assert.deepEqual(cspViolations, []);
});

// last: it starts the job runner, which would deliver the webhooks the tests above keep pending
test('backups on the tenant page: back up now, then restore behind a dialog that wants the slug typed', async () => {
  await inst.tenantry.startJobs({ kind: 'test', schedule: false, concurrency: 2 });
  const t = (await api('POST', '/v1/tenants', { slug: 'backup-co', name: 'Backup Co', tier: 'free' })).body;
  const { context, page } = await newPage();
  await signInAs(page, ADMIN);
  await page.goto(`${base}/console#/tenants/${t.id}`);
  await page.getByText('No backups yet.').waitFor();
  await page.getByRole('button', { name: 'Back up now' }).click();
  await page.getByText('Backup succeeded').waitFor({ timeout: 60_000 });
  const list = (await api('GET', `/v1/tenants/${t.id}/backups`)).body.items;
  assert.equal(list.length, 1);
  await page.locator(`tr[data-backup="${list[0].id}"]`).waitFor();
  await page.getByRole('button', { name: /^Restore the backup of/ }).click();
  const dialog = page.getByRole('dialog');
  const confirm = dialog.getByRole('button', { name: 'Restore' });
  await dialog.getByLabel(/to confirm/).fill('backup-c');
  assert.equal(await confirm.isDisabled(), true, 'a wrong slug does not arm the button');
  await checkPage(page, 'backups-restore-dialog');
  await dialog.getByLabel(/to confirm/).fill('backup-co');
  await confirm.click();
  await page.getByText('Restore succeeded').waitFor({ timeout: 60_000 });
  const audit = (await api('GET', `/v1/tenants/${t.id}/audit`)).body;
  assert.ok(JSON.stringify(audit).includes('restore'), 'the restore is in the audit trail');
  // nothing sticks out of a phone's width (a visually hidden header once did, widening the page)
  await page.setViewportSize({ width: 390, height: 900 });
  assert.equal(await page.evaluate<number>('document.documentElement.scrollWidth'), 390);
  await checkPage(page, 'backups');
  await context.close();
  assert.deepEqual(cspViolations, []);
});
