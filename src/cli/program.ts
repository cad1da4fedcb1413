/**
 * The `tenantry` command. It only parses flags, calls the library and prints the result: a table for
 * people, `--json` for scripts, and an exit code that says what kind of failure happened.
 */
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { Tenantry } from '../tenantry.js';
import { TenantryError, isTenantryError } from '../errors.js';
import { serverOptions } from '../config.js';
import type { Tenant } from '../tenants/model.js';
import { buildServer, tenantView } from '../server/app.js';

/** Exit codes by failure kind, stable for scripts. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, NOT_FOUND: 3, CONFLICT: 4, CHECK_FAILED: 5, CONFIG: 6 } as const;

function exitCodeFor(err: unknown): number {
  if (!isTenantryError(err)) return EXIT.FAILURE;
  switch (err.code) {
    case 'INVALID_INPUT': case 'INVALID_SLUG': case 'INVALID_TIER': case 'INVALID_ISOLATION': return EXIT.USAGE;
    case 'TENANT_NOT_FOUND': return EXIT.NOT_FOUND;
    case 'SLUG_TAKEN': case 'INVALID_TRANSITION': case 'TENANT_SUSPENDED': case 'TENANT_DELETED': case 'TENANT_NOT_READY': return EXIT.CONFLICT;
    case 'INVALID_CONFIG': case 'INSUFFICIENT_PRIVILEGE': case 'NAMESPACE_IN_USE': return EXIT.CONFIG;
    default: return EXIT.FAILURE;
  }
}

interface GlobalFlags { json?: boolean }

function print(flags: GlobalFlags, data: unknown, human: () => string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(data, null, 2)}\n` : `${human()}\n`);
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const cell = (v: unknown): string => (v === null || v === undefined ? '-' : v instanceof Date ? v.toISOString() : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]): string => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join('\n');
}

const TENANT_COLUMNS = ['id', 'slug', 'name', 'status', 'tier', 'isolation', 'createdAt'];
const showTenant = (t: Tenant): string => table([tenantView(t)], TENANT_COLUMNS) + (t.suspendedReason ? `\nsuspended: ${t.suspendedReason}` : '');

/** Opens the library for one command and always closes it. */
async function withTenantry<T>(fn: (t: Tenantry) => Promise<T>): Promise<T> {
  const level = process.env.LOG_LEVEL ?? 'warn';
  const tenantry = await Tenantry.open({ logger: pino({ level }, pino.destination(2)) });
  try {
    return await fn(tenantry);
  } finally {
    await tenantry.close();
  }
}

export function buildCli(): Command {
  const program = new Command('tenantry')
    .description('Multi-tenant control plane for PostgreSQL: create, isolate and govern tenants.')
    .option('--json', 'print machine-readable JSON')
    .showHelpAfterError()
    .exitOverride();
  const flags = (): GlobalFlags => program.opts<GlobalFlags>();

  program.command('serve')
    .description('Start the HTTP API (PORT, HOST; embedded PostgreSQL unless DATABASE_URL is set)')
    .addHelpText('after', '\nExamples:\n  tenantry serve\n  PORT=9000 DATABASE_URL=postgres://me@db/app tenantry serve')
    .action(async () => { await serve(); });

  const tenants = program.command('tenants').description('Create, inspect and change tenants');
  tenants.command('create <slug>')
    .description('Provision a tenant')
    .option('--name <name>', 'display name (default: the slug)')
    .option('--tier <tier>', 'free | starter | professional | enterprise | custom', 'free')
    .option('--isolation <mode>', 'pooled | schema | database', 'pooled')
    .option('--trial-days <n>', 'start as a trial ending after n days', (v) => Number(v))
    .option('--metadata <json>', 'JSON object stored with the tenant', parseJsonObject)
    .addHelpText('after', '\nExamples:\n  tenantry tenants create acme-corp --isolation schema --tier enterprise --name "ACME"\n  tenantry tenants create beta-co --trial-days 14 --json')
    .action(async (slug: string, o: { name?: string; tier: string; isolation: string; trialDays?: number; metadata?: Record<string, unknown> }) => {
      const t = await withTenantry((tn) => tn.tenants.create({ slug, tier: o.tier, isolation: o.isolation, ...(o.name ? { name: o.name } : {}), ...(o.trialDays !== undefined ? { trialDays: o.trialDays } : {}), ...(o.metadata ? { metadata: o.metadata } : {}) }, { actor: 'cli' }));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('list')
    .description('List tenants (newest last)')
    .option('--status <status>').option('--tier <tier>').option('--isolation <mode>')
    .option('--limit <n>', 'page size, 1-500', (v) => Number(v), 50)
    .option('--cursor <cursor>', 'nextCursor of the previous page')
    .addHelpText('after', '\nExamples:\n  tenantry tenants list --status suspended\n  tenantry tenants list --isolation database --json')
    .action(async (o: { status?: string; tier?: string; isolation?: string; limit: number; cursor?: string }) => {
      const page = await withTenantry((tn) => tn.tenants.list({ ...o }));
      print(flags(), { items: page.items.map(tenantView), nextCursor: page.nextCursor }, () =>
        table(page.items.map(tenantView), TENANT_COLUMNS) + (page.nextCursor ? `\nmore: --cursor ${page.nextCursor}` : ''));
    });
  tenants.command('show <idOrSlug>').description('Show one tenant')
    .addHelpText('after', '\nExample:\n  tenantry tenants show acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry((tn) => tn.tenants.get(id));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('update <idOrSlug>').description('Change name, tier or metadata')
    .option('--name <name>').option('--tier <tier>').option('--metadata <json>', 'replaces the metadata', parseJsonObject)
    .addHelpText('after', '\nExample:\n  tenantry tenants update acme-corp --tier professional')
    .action(async (id: string, o: { name?: string; tier?: string; metadata?: Record<string, unknown> }) => {
      const t = await withTenantry((tn) => tn.tenants.update(id, o, { actor: 'cli' }));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('suspend <idOrSlug>').description('Suspend: tenant work is refused, its login disabled')
    .requiredOption('--reason <reason>', 'why (kept with the tenant and in the audit log)')
    .addHelpText('after', '\nExample:\n  tenantry tenants suspend acme-corp --reason "payment overdue"')
    .action(async (id: string, o: { reason: string }) => {
      const t = await withTenantry((tn) => tn.tenants.suspend(id, o.reason, { actor: 'cli' }));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('activate <idOrSlug>').description('Lift a suspension')
    .addHelpText('after', '\nExample:\n  tenantry tenants activate acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry((tn) => tn.tenants.activate(id, { actor: 'cli' }));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('delete <idOrSlug>').description('Soft-delete (restorable); --hard removes its data for good')
    .option('--hard', 'remove role, schema or database and every row').option('--force', 'allow --hard on a tenant not soft-deleted first')
    .addHelpText('after', '\nExamples:\n  tenantry tenants delete acme-corp\n  tenantry tenants delete acme-corp --hard')
    .action(async (id: string, o: { hard?: boolean; force?: boolean }) => {
      const t = await withTenantry((tn) => tn.tenants.delete(id, { actor: 'cli', hard: Boolean(o.hard), force: Boolean(o.force) }));
      print(flags(), tenantView(t), () => `${o.hard ? 'hard-deleted' : 'deleted'} ${t.slug} (${t.id})`);
    });
  tenants.command('restore <idOrSlug>').description('Undo a soft delete')
    .addHelpText('after', '\nExample:\n  tenantry tenants restore acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry((tn) => tn.tenants.restore(id, { actor: 'cli' }));
      print(flags(), tenantView(t), () => showTenant(t));
    });

  program.command('repair').description('Remove tenants stuck in provisioning and orphan roles, schemas and databases')
    .option('--older-than <seconds>', 'treat provisioning older than this as crashed', (v) => Number(v))
    .addHelpText('after', '\nExamples:\n  tenantry repair\n  tenantry repair --older-than 0 --json')
    .action(async (o: { olderThan?: number }) => {
      const r = await withTenantry((tn) => tn.repair({ actor: 'cli', ...(o.olderThan !== undefined ? { olderThanSeconds: o.olderThan } : {}) }));
      print(flags(), r, () => [
        `stuck tenants removed: ${r.stuckTenants.map((t) => t.slug).join(', ') || 'none'}`,
        `orphan databases removed: ${r.orphanDatabases.join(', ') || 'none'}`,
        `orphan schemas removed: ${r.orphanSchemas.join(', ') || 'none'}`,
        `orphan roles removed: ${r.orphanRoles.join(', ') || 'none'}`,
      ].join('\n'));
    });

  program.command('doctor').description('Check the installation against the isolation invariants (exit 5 on any failure)')
    .addHelpText('after', '\nExamples:\n  tenantry doctor\n  tenantry doctor --json')
    .action(async () => {
      const r = await withTenantry((tn) => tn.doctor());
      print(flags(), r, () => r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.message}${c.fix ? `\n      fix: ${c.fix}` : ''}`).join('\n'));
      if (!r.ok) process.exitCode = EXIT.CHECK_FAILED;
    });

  return program;
}

function parseJsonObject(value: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new TenantryError('INVALID_INPUT', `--metadata must be a JSON object, e.g. '{"plan":"gold"}'; got ${value}.`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new TenantryError('INVALID_INPUT', '--metadata must be a JSON object.');
  return parsed as Record<string, unknown>;
}

async function serve(): Promise<void> {
  const so = serverOptions();
  const logger = pino({ level: so.logLevel });
  const tenantry = await Tenantry.open({ logger });
  const created = await tenantry.operatorKey.ensure();
  if (created) {
    // shown once: only its hash is kept
    process.stdout.write(`\nOperator token (shown once, store it now; set TENANTRY_ADMIN_KEY to choose your own):\n  ${created}\n\n`);
  }
  const app = await buildServer({ tenantry, logLevel: so.logLevel, baseDomain: so.baseDomain, tenantLabels: so.tenantLabels });
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining requests');
    await app.close();
    await tenantry.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  const address = await app.listen({ port: so.port, host: so.host });
  process.stdout.write(`Tenantry is listening on ${address}\n`);
}

export async function main(argv = process.argv): Promise<void> {
  const program = buildCli();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
      return;
    }
    const json = process.argv.includes('--json');
    if (json) process.stdout.write(`${JSON.stringify({ error: isTenantryError(err) ? err.toJSON() : { message: String(err) } }, null, 2)}\n`);
    else process.stderr.write(`error${isTenantryError(err) ? ` [${err.code}]` : ''}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = exitCodeFor(err);
  }
}

