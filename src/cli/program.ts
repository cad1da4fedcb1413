/**
 * The `tenantry` command. It only parses flags, calls the library and prints the result: a table for
 * people, `--json` for scripts, and an exit code that says what kind of failure happened.
 */
import { Command, CommanderError } from 'commander';
import cliProgress from 'cli-progress';
import pino from 'pino';
import { Tenantry } from '../tenantry.js';
import { TenantryError, isTenantryError, isDatabaseUnavailable } from '../errors.js';
import { cliOptions, serverOptions, PACKAGE_ROOT } from '../config.js';
import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { readPlanFile, type PlanDiff } from '../plans/plans.js';
import { plansDocument } from '../plans/plan-file.js';
import { plansDeclaration } from '../plans/plan-types.js';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Isolation, Tenant, Tier } from '../tenants/model.js';
import { buildServer, tenantView } from '../server/app.js';
import { assertSafeText } from '../input/safe-text.js';
import { auditActor, authorizeTenant, localOperator, requireOperator } from '../keys/authorize.js';
import type { Scope } from '../keys/api-keys.js';
import type { BackupInfo, BackupProgress } from '../backup/backup.js';

/** The installed package's version (package.json beside dist/ or src/). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Exit codes by failure kind, stable for scripts. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, NOT_FOUND: 3, CONFLICT: 4, CHECK_FAILED: 5, CONFIG: 6, PARTIAL: 7 } as const;

function exitCodeFor(err: unknown): number {
  if (!isTenantryError(err)) return EXIT.FAILURE;
  switch (err.code) {
    case 'INVALID_INPUT': case 'INVALID_SLUG': case 'INVALID_TIER': case 'INVALID_ISOLATION': case 'INVALID_PLANS': return EXIT.USAGE;
    case 'PLAN_TIER_IN_USE': case 'PLAN_METRIC_HAS_USAGE': return EXIT.CONFLICT;
    case 'TENANT_NOT_FOUND': case 'API_KEY_NOT_FOUND': case 'MEMBER_NOT_FOUND': case 'INVITATION_NOT_FOUND': return EXIT.NOT_FOUND;
    case 'QUOTA_EXCEEDED': case 'LAST_OWNER': case 'MEMBER_EXISTS': case 'API_KEY_REVOKED': return EXIT.CONFLICT;
    case 'SLUG_TAKEN': case 'INVALID_TRANSITION': case 'TENANT_SUSPENDED': case 'TENANT_DELETED': case 'TENANT_NOT_READY': return EXIT.CONFLICT;
    case 'INVALID_CONFIG': case 'INSUFFICIENT_PRIVILEGE': case 'NAMESPACE_IN_USE': return EXIT.CONFIG;
    case 'BACKUP_NOT_FOUND': return EXIT.NOT_FOUND;
    case 'BACKUP_INVALID': return EXIT.CHECK_FAILED;
    case 'BACKUP_TOO_NEW': return EXIT.CONFLICT;
    case 'MOVE_NOT_NEEDED': case 'MOVE_IN_PROGRESS': case 'MOVE_CANCELLED': case 'TENANT_MOVING': return EXIT.CONFLICT;
    case 'MOVE_NOT_FOUND': return EXIT.NOT_FOUND;
    case 'RESTORE_CONFIRMATION_REQUIRED': return EXIT.USAGE;
    case 'DOMAIN_INVALID': return EXIT.USAGE;
    case 'DOMAIN_NOT_FOUND': return EXIT.NOT_FOUND;
    case 'DOMAIN_TAKEN': case 'DOMAIN_LIMIT_REACHED': case 'BILLING_CUSTOMER_TAKEN': return EXIT.CONFLICT;
    case 'DOMAIN_VERIFICATION_FAILED': return EXIT.CHECK_FAILED;
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

/**
 * Who the CLI acts as: the operator of the installation whose DATABASE_URL it holds (those credentials
 * already give every right the operator token gives). Its commands go through the library's one
 * authorization surface (src/keys/authorize.ts), as the HTTP routes do: every command is an operator
 * command (requireOperator), and the tenant a command names is resolved by authorizeTenant with the
 * scope the HTTP route doing the same needs. Its changes are audited as 'cli'.
 */
export const CLI_PRINCIPAL = localOperator('cli');
const CLI = auditActor(CLI_PRINCIPAL);

/** The tenant a command names, resolved and authorized as the HTTP route that does the same (unknown: TENANT_NOT_FOUND, exit 3). */
function tenantFor(tn: Tenantry, idOrSlug: string, need: Scope | 'operator'): Promise<Tenant> {
  return authorizeTenant(tn, CLI_PRINCIPAL, idOrSlug, need);
}

/** Opens the library for one command and always closes it. */
async function withTenantry<T>(fn: (t: Tenantry) => Promise<T>): Promise<T> {
  requireOperator(CLI_PRINCIPAL);
  const tenantry = await Tenantry.open({ logger: pino({ level: cliOptions().logLevel }, pino.destination(2)) });
  try {
    return await fn(tenantry);
  } finally {
    await tenantry.close();
  }
}

/**
 * A progress bar on stderr for the steps of a backup, restore, export, clone or move (none with --json
 * or when stderr is not a terminal); `format` is cli-progress's, with {step} and {table}.
 */
function stepBar(f: GlobalFlags, format: string): { update: (p: BackupProgress) => void; stop: () => void } {
  let bar: cliProgress.SingleBar | undefined;
  let stopped = false;
  return {
    update: (p) => {
      if (f.json || !process.stderr.isTTY || stopped) return;
      if (!bar) {
        bar = new cliProgress.SingleBar({ stream: process.stderr, format, hideCursor: true }, cliProgress.Presets.shades_classic);
        bar.start(p.total, 0, { step: p.step, table: '' });
      }
      bar.setTotal(p.total);
      bar.update(p.done, { step: p.step, table: p.table ?? '' });
    },
    stop: () => { if (!stopped) { stopped = true; bar?.stop(); } },
  };
}
const backupBar = (f: GlobalFlags): ReturnType<typeof stepBar> => stepBar(f, '{step} {bar} {value}/{total} tables | {table}');
const moveBar = (f: GlobalFlags): ReturnType<typeof stepBar> => stepBar(f, 'move {bar} {value}/{total} {step} {table}');

export function buildCli(): Command {
  const program = new Command('tenantry')
    .description('Multi-tenant control plane for PostgreSQL: create, isolate and govern tenants.')
    .option('--json', 'print machine-readable JSON')
    .version(packageVersion(), '-V, --version', 'print the version of tenantry')
    .showHelpAfterError()
    .exitOverride();
  const flags = (): GlobalFlags => program.opts<GlobalFlags>();
  // every command's arguments and options (JSON ones such as --metadata included) are checked for NUL
  // bytes, lone surrogates and absurd lengths before the library, let alone PostgreSQL, sees them
  program.hook('preAction', (_program, action) => {
    action.processedArgs.forEach((value: unknown, i: number) => assertSafeText(value, `<${action.registeredArguments[i]?.name() ?? `argument ${i + 1}`}>`));
    for (const [name, value] of Object.entries(action.opts())) assertSafeText(value, `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
  });

  program.command('serve')
    .description('Start the HTTP API (PORT, HOST; embedded PostgreSQL unless DATABASE_URL is set)')
    .addHelpText('after', '\nExamples:\n  tenantry serve\n  PORT=9000 DATABASE_URL=postgres://me@db/app tenantry serve')
    .action(async () => { await serve(); });

  const tenants = program.command('tenants').description('Create, inspect and change tenants');
  tenants.command('create <slug>')
    .description('Provision a tenant')
    .option('--name <name>', 'display name (default: the slug)')
    .option('--tier <tier>', 'a tier of the plans (`tenantry plans show`); default: the plans\' default tier, or their trial tier with --trial-days')
    .option('--isolation <mode>', 'pooled | schema | database', 'pooled')
    .option('--trial-days <n>', 'start as a trial ending after n days', (v) => Number(v))
    .option('--metadata <json>', 'JSON object stored with the tenant', parseJsonObject)
    .addHelpText('after', '\nExamples:\n  tenantry tenants create acme-corp --isolation schema --tier enterprise --name "ACME"\n  tenantry tenants create beta-co --trial-days 14 --json')
    .action(async (slug: string, o: { name?: string; tier?: Tier; isolation: Isolation; trialDays?: number; metadata?: Record<string, unknown> }) => {
      // the library validates tier and isolation (INVALID_TIER, INVALID_ISOLATION); commander hands over plain strings
      const t = await withTenantry((tn) => tn.tenants.create({ slug, ...(o.tier !== undefined ? { tier: o.tier } : {}), isolation: o.isolation, ...(o.name ? { name: o.name } : {}), ...(o.trialDays !== undefined ? { trialDays: o.trialDays } : {}), ...(o.metadata ? { metadata: o.metadata } : {}) }, CLI));
      // the tenant's first API key exists only in this result: print it this once, or it can never be used
      const { apiKey } = t;
      print(flags(), { ...tenantView(t), ...(apiKey ? { apiKey } : {}) }, () => showTenant(t)
        + (apiKey ? `\n\nfirst API key ${apiKey.id} (scopes ${apiKey.scopes.join(', ')}; shown once, store it now):\n  ${apiKey.key}` : ''));
    });
  tenants.command('list')
    .description('List tenants (newest last)')
    .option('--status <status>').option('--tier <tier>').option('--isolation <mode>')
    .option('--limit <n>', 'page size, 1-500', (v) => Number(v), 50)
    .option('--cursor <cursor>', 'nextCursor of the previous page')
    .addHelpText('after', '\nExamples:\n  tenantry tenants list --status suspended\n  tenantry tenants list --isolation database --json')
    .action(async (o: { status?: string; tier?: Tier; isolation?: Isolation; limit: number; cursor?: string }) => {
      const page = await withTenantry((tn) => tn.tenants.list({ ...o }));
      print(flags(), { items: page.items.map(tenantView), nextCursor: page.nextCursor }, () =>
        table(page.items.map(tenantView), TENANT_COLUMNS) + (page.nextCursor ? `\nmore: --cursor ${page.nextCursor}` : ''));
    });
  tenants.command('show <idOrSlug>').description('Show one tenant')
    .addHelpText('after', '\nExample:\n  tenantry tenants show acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry(async (tn) => tn.tenants.get((await tenantFor(tn, id, 'read')).id));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('update <idOrSlug>').description('Change name, tier or metadata')
    .option('--name <name>').option('--tier <tier>').option('--metadata <json>', 'replaces the metadata', parseJsonObject)
    .addHelpText('after', '\nExample:\n  tenantry tenants update acme-corp --tier professional')
    .action(async (id: string, o: { name?: string; tier?: Tier; metadata?: Record<string, unknown> }) => {
      const t = await withTenantry(async (tn) => tn.tenants.update((await tenantFor(tn, id, 'operator')).id, o, CLI));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('suspend <idOrSlug>').description('Suspend: tenant work is refused, its login disabled')
    .requiredOption('--reason <reason>', 'why (kept with the tenant and in the audit log)')
    .addHelpText('after', '\nExample:\n  tenantry tenants suspend acme-corp --reason "payment overdue"')
    .action(async (id: string, o: { reason: string }) => {
      const t = await withTenantry(async (tn) => tn.tenants.suspend((await tenantFor(tn, id, 'operator')).id, o.reason, CLI));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('activate <idOrSlug>').description('Lift a suspension')
    .addHelpText('after', '\nExample:\n  tenantry tenants activate acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry(async (tn) => tn.tenants.activate((await tenantFor(tn, id, 'operator')).id, CLI));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('delete <idOrSlug>').description('Soft-delete (restorable); --hard removes its data for good')
    .option('--hard', 'remove role, schema or database and every row').option('--force', 'allow --hard on a tenant not soft-deleted first')
    .addHelpText('after', '\nExamples:\n  tenantry tenants delete acme-corp\n  tenantry tenants delete acme-corp --hard')
    .action(async (id: string, o: { hard?: boolean; force?: boolean }) => {
      const t = await withTenantry(async (tn) => tn.tenants.delete((await tenantFor(tn, id, 'operator')).id, { ...CLI, hard: Boolean(o.hard), force: Boolean(o.force) }));
      print(flags(), tenantView(t), () => `${o.hard ? 'hard-deleted' : 'deleted'} ${t.slug} (${t.id})`);
    });
  tenants.command('restore <idOrSlug>').description('Undo a soft delete')
    .addHelpText('after', '\nExample:\n  tenantry tenants restore acme-corp')
    .action(async (id: string) => {
      const t = await withTenantry(async (tn) => tn.tenants.restore((await tenantFor(tn, id, 'operator')).id, CLI));
      print(flags(), tenantView(t), () => showTenant(t));
    });
  tenants.command('purge').description('Hard-delete soft-deleted tenants whose grace period has passed (the schedule does this hourly)')
    .option('--dry-run', 'only list the tenants that are due')
    .addHelpText('after', '\nExamples:\n  tenantry tenants purge --dry-run\n  tenantry tenants purge')
    .action(async (o: { dryRun?: boolean }) => {
      const r = await withTenantry((tn) => tn.lifecycle.purge({ dryRun: Boolean(o.dryRun) }));
      print(flags(), r, () => `${r.dryRun ? 'due for purge' : 'purged'}:\n${table(r.tenants as unknown as Record<string, unknown>[], ['id', 'slug', 'tier', 'deletedAt', 'graceDays', 'purgeAt'])}`);
    });

  // ---- backups (issue #14) ----
  const backupLine = (b: BackupInfo): string => `backup ${b.id} of ${b.tenantId}: ${b.rows} rows in ${b.manifest.tables.length} tables, ${b.bytes} bytes (${b.store}, ${b.isolation}, migration ${b.migrationVersion})`;
  program.command('backup <tenant>').description('Back up one tenant (any mode) to the backup store: COPY text per table, gzip, signed manifest')
    .addHelpText('after', '\nExample:\n  tenantry backup acme-corp')
    .action(async (tenant: string) => {
      const bar = backupBar(flags());
      try {
        const b = await withTenantry(async (tn) => tn.backups.create((await tenantFor(tn, tenant, 'operator')).id, { ...CLI, onProgress: bar.update }));
        bar.stop();
        print(flags(), b, () => backupLine(b));
      } finally { bar.stop(); }
    });
  program.command('backups <tenant>').description('List a tenant\'s backups, newest first')
    .action(async (tenant: string) => {
      const list = await withTenantry(async (tn) => tn.backups.list((await tenantFor(tn, tenant, 'admin')).id));
      print(flags(), list, () => table(list.map((b) => ({ ...b, tables: b.manifest.tables.length })) as unknown as Record<string, unknown>[], ['id', 'kind', 'createdAt', 'isolation', 'migrationVersion', 'tables', 'rows', 'bytes', 'store']));
    });
  program.command('export <tenant>').description('A backup plus JSON Lines and CSV per table, for a leaving customer')
    .action(async (tenant: string) => {
      const bar = backupBar(flags());
      try {
        const b = await withTenantry(async (tn) => tn.backups.create((await tenantFor(tn, tenant, 'operator')).id, { ...CLI, kind: 'export', onProgress: bar.update }));
        bar.stop();
        print(flags(), b, () => `${backupLine(b)}\nJSON Lines and CSV under ${b.tenantId}/${b.id}/export/ in the ${b.store} store`);
      } finally { bar.stop(); }
    });
  program.command('restore <backupId>').description('Restore a backup over its own tenant, replacing every row it has (needs --yes)')
    .option('--yes', 'confirm that the tenant\'s current rows are replaced')
    .addHelpText('after', '\nExample:\n  tenantry restore 5f0c...e1 --yes')
    .action(async (backupId: string, o: { yes?: boolean }) => {
      const bar = backupBar(flags());
      try {
        const r = await withTenantry((tn) => tn.backups.restore(backupId, { ...CLI, confirm: Boolean(o.yes), onProgress: bar.update }));
        bar.stop();
        print(flags(), { tenant: tenantView(r.tenant), rows: r.rows }, () => `restored ${r.rows} rows into ${r.tenant.slug} (${r.tenant.isolation})`);
      } finally { bar.stop(); }
    });
  program.command('clone <tenant> <newSlug>').description('A new tenant with a copy of a tenant\'s rows, in any mode (from a fresh backup, or --backup <id>)')
    .option('--backup <id>', 'clone from this backup instead of taking one now')
    .option('--isolation <mode>', 'pooled, schema or database (default: the source\'s)')
    .addHelpText('after', '\nExample:\n  tenantry clone acme-corp acme-staging --isolation database')
    .action(async (tenant: string, newSlug: string, o: { backup?: string; isolation?: Isolation }) => {
      const bar = backupBar(flags());
      try {
        const r = await withTenantry(async (tn) => {
          const backupId = o.backup ?? (await tn.backups.create(tenant, { ...CLI, onProgress: bar.update })).id;
          return tn.backups.clone(backupId, { slug: newSlug, isolation: o.isolation, ...CLI, onProgress: bar.update });
        });
        bar.stop();
        print(flags(), { tenant: tenantView(r.tenant), rows: r.rows }, () => `cloned ${r.rows} rows into ${r.tenant.slug} (${r.tenant.id}, ${r.tenant.isolation})`);
      } finally { bar.stop(); }
    });

  // ---- moves between isolation modes (issue #14) ----
  program.command('move <tenant>').description('Move a tenant to another isolation mode, online: writes go on during the copy and are refused (TENANT_MOVING) only for the final catch-up')
    .requiredOption('--to <mode>', 'pooled, schema or database')
    .addHelpText('after', '\nExamples:\n  tenantry move acme-corp --to database\n  tenantry move acme-corp --to pooled --json\n\nCtrl-C before the switch cancels the move and undoes it; the tenant stays where it was.')
    .action(async (tenant: string, o: { to: string }) => {
      const bar = moveBar(flags());
      const cancel = new AbortController();
      const onSigint = (): void => cancel.abort();
      process.once('SIGINT', onSigint);
      try {
        const r = await withTenantry((tn) => tn.tenants.move(tenant, { to: o.to as Isolation, ...CLI, onProgress: bar.update, signal: cancel.signal }));
        bar.stop();
        print(flags(), { moveId: r.moveId, tenant: tenantView(r.tenant), from: r.from, to: r.to, rows: r.rows, readOnlyMs: r.readOnlyMs, totalMs: r.totalMs },
          () => `moved ${r.tenant.slug} from ${r.from} to ${r.to} mode: ${r.rows} rows in ${r.totalMs} ms, read-only for ${r.readOnlyMs} ms (move ${r.moveId})`);
      } finally {
        process.removeListener('SIGINT', onSigint);
        bar.stop();
      }
    });
  program.command('moves <tenant>').description('A tenant\'s moves between isolation modes, newest first')
    .action(async (tenant: string) => {
      const list = await withTenantry((tn) => tn.moves.list(tenant));
      print(flags(), list, () => table(list.map((m) => ({ ...m })), ['id', 'from', 'to', 'phase', 'rows', 'readOnlyMs', 'startedAt', 'error']));
    });

  program.command('worker')
    .description('Run the job runner alone (the queue and the schedule; serve runs it too); any number may run')
    .option('--no-schedule', 'only work jobs; leave the schedule to other processes')
    .addHelpText('after', '\nExamples:\n  tenantry worker\n  TENANTRY_JOB_CONCURRENCY=8 tenantry worker')
    .action(async (o: { schedule?: boolean }) => { await worker(o.schedule !== false); });

  const jobs = program.command('jobs').description('Background jobs');
  jobs.command('run <job>').description('Run one job now in this process (storage.refresh, trial.lifecycle, tenants.purge, usage.rollup, retention.purge, expiry.purge, ...)')
    .addHelpText('after', '\nExample:\n  tenantry jobs run usage.rollup')
    .action(async (job: string) => {
      const r = await withTenantry((tn) => tn.jobs.runNow(job));
      print(flags(), r ?? null, () => JSON.stringify(r ?? null, null, 2));
    });

  program.command('retention').description('Purge data past its retention, per data class and tenant status (the schedule does this daily)')
    .option('--dry-run', 'only count what would be deleted')
    .option('--tenant <tenant>', 'one tenant only')
    .addHelpText('after', '\nExamples:\n  tenantry retention --dry-run\n  tenantry retention --tenant acme-corp')
    .action(async (o: { dryRun?: boolean; tenant?: string }) => {
      const r = await withTenantry(async (tn) => o.tenant
        ? { tenants: [await tn.retention.purgeTenant((await tn.tenants.get(o.tenant!)).id, { dryRun: Boolean(o.dryRun) })], installationAudit: 0 }
        : tn.retention.purgeAll({ dryRun: Boolean(o.dryRun) }));
      print(flags(), r, () => table(r.tenants.flatMap((t) => Object.entries(t.counts).map(([tbl, n]) => ({ tenant: t.slug, status: t.status, table: tbl, [o.dryRun ? 'wouldDelete' : 'deleted']: n }))), ['tenant', 'status', 'table', o.dryRun ? 'wouldDelete' : 'deleted']));
    });

  const webhooks = program.command('webhooks').description('Webhook endpoints and their deliveries');
  webhooks.command('add <url>').description('Register an endpoint; prints its signing secret once')
    .option('--tenant <tenant>', 'only this tenant\'s events (default: every tenant)')
    .option('--events <types>', 'comma-separated event types (default: all)')
    .addHelpText('after', '\nExamples:\n  tenantry webhooks add https://hooks.example.com/tenantry\n  tenantry webhooks add https://acme.example/hook --tenant acme-corp --events tenant.suspended,quota.exceeded')
    .action(async (url: string, o: { tenant?: string; events?: string }) => {
      const ep = await withTenantry((tn) => tn.webhooks.create({ url, tenant: o.tenant ?? null, ...(o.events ? { events: o.events.split(',').map((e) => e.trim()) } : {}) }, CLI));
      print(flags(), ep, () => `${table([ep as unknown as Record<string, unknown>], ['id', 'url', 'tenantId', 'events'])}\nsigning secret (shown once): ${ep.secret}`);
    });
  webhooks.command('list').description('List endpoints').option('--tenant <tenant>', 'one tenant\'s endpoints')
    .action(async (o: { tenant?: string }) => {
      const eps = await withTenantry((tn) => tn.webhooks.list({ tenant: o.tenant ?? null }));
      print(flags(), eps, () => table(eps as unknown as Record<string, unknown>[], ['id', 'url', 'tenantId', 'events', 'enabled', 'createdAt']));
    });
  webhooks.command('remove <id>').description('Remove an endpoint (its pending deliveries go with it)')
    .action(async (id: string) => {
      await withTenantry((tn) => tn.webhooks.remove(id, {}, CLI));
      print(flags(), { removed: id }, () => `removed ${id}`);
    });
  webhooks.command('deliveries <id>').description('An endpoint\'s recent deliveries with every attempt\'s status and latency')
    .action(async (id: string) => {
      const ds = await withTenantry((tn) => tn.webhooks.deliveries(id));
      print(flags(), ds, () => table(ds.map((d) => ({ ...d, attempts: d.attempts.length, last: d.attempts.at(-1)?.statusCode ?? d.attempts.at(-1)?.error ?? null, latencyMs: d.attempts.at(-1)?.latencyMs ?? null })), ['id', 'type', 'status', 'attempts', 'last', 'latencyMs', 'createdAt']));
    });

  const domains = program.command('domains').description('Custom domains: claim, verify (DNS TXT or HTTP token), list, remove');
  const DOMAIN_COLUMNS = ['domain', 'verified', 'method', 'verifiedAt', 'lastCheckedAt', 'lastError'];
  domains.command('add <tenant> <domain>').description('Claim a domain for a tenant; prints the TXT record and HTTP token that prove control')
    .addHelpText('after', '\nExamples:\n  tenantry domains add acme-corp shop.acme.com\n  tenantry domains verify acme-corp shop.acme.com')
    .action(async (tenant: string, domain: string) => {
      const d = await withTenantry(async (tn) => tn.domains.add((await tenantFor(tn, tenant, 'admin')).id, domain, CLI));
      print(flags(), d, () => `${table([d as unknown as Record<string, unknown>], DOMAIN_COLUMNS)}\nprove control with either:\n  DNS:  ${d.txtName} TXT "${d.token}"\n  HTTP: ${d.httpUrl} answering ${d.token}\nthen: tenantry domains verify ${tenant} ${d.domain}`);
    });
  domains.command('list <tenant>').description('A tenant\'s domains and whether each is verified')
    .action(async (tenant: string) => {
      const ds = await withTenantry(async (tn) => tn.domains.list((await tenantFor(tn, tenant, 'read')).id));
      print(flags(), ds, () => table(ds as unknown as Record<string, unknown>[], DOMAIN_COLUMNS));
    });
  domains.command('verify <tenant> <domain>').description('Check the TXT record or HTTP token now and mark the domain verified (exit 5 if it does not check out)')
    .option('--method <method>', 'dns or http (default: DNS, then HTTP)')
    .action(async (tenant: string, domain: string, o: { method?: string }) => {
      const d = await withTenantry(async (tn) => tn.domains.verify((await tenantFor(tn, tenant, 'admin')).id, domain, o.method ? { method: o.method as 'dns' | 'http' } : {}, CLI));
      print(flags(), d, () => table([d as unknown as Record<string, unknown>], DOMAIN_COLUMNS));
    });
  domains.command('remove <tenant> <domain>').description('Remove a domain; it stops resolving to the tenant at once')
    .action(async (tenant: string, domain: string) => {
      await withTenantry(async (tn) => tn.domains.remove((await tenantFor(tn, tenant, 'admin')).id, domain, CLI));
      print(flags(), { removed: domain }, () => `removed ${domain}`);
    });

  const billing = program.command('billing').description('Billing: customer ids, period records pushed to Stripe');
  billing.command('customer <tenant> [customerId]').description('Show, set (cus_...) or with --clear remove a tenant\'s billing customer id')
    .option('--clear', 'remove the customer id')
    .addHelpText('after', '\nExamples:\n  tenantry billing customer acme-corp cus_Q2x9\n  tenantry billing customer acme-corp')
    .action(async (tenant: string, customerId: string | undefined, o: { clear?: boolean }) => {
      const r = await withTenantry(async (tn) => {
        if (o.clear) await tn.billing.setCustomer(tenant, null, CLI);
        else if (customerId !== undefined) await tn.billing.setCustomer(tenant, customerId, CLI);
        return tn.billing.getCustomer(tenant);
      });
      print(flags(), r, () => table([r as unknown as Record<string, unknown>], ['tenantId', 'customerId', 'overdueSince']));
    });
  billing.command('close').description('Close a billing period (default: last month) into records and push them to Stripe; running it again bills nothing twice')
    .option('--period <YYYY-MM>', 'the month to close')
    .action(async (o: { period?: string }) => {
      const r = await withTenantry((tn) => tn.billing.closePeriod(o.period ? { period: o.period } : {}));
      print(flags(), r, () => table([r as unknown as Record<string, unknown>], ['period', 'tenants', 'created', 'pushed', 'failed', 'pending']));
    });
  billing.command('records <tenant>').description('A tenant\'s billing records').option('--period <YYYY-MM>', 'one month')
    .action(async (tenant: string, o: { period?: string }) => {
      const rs = await withTenantry(async (tn) => tn.billing.records((await tenantFor(tn, tenant, 'admin')).id, o.period ? { period: o.period } : {}));
      print(flags(), rs, () => table(rs.map((r) => ({ ...r, period: r.periodStart.toISOString().slice(0, 7) })) as unknown as Record<string, unknown>[], ['period', 'item', 'quantity', 'included', 'billable', 'amount', 'currency', 'status', 'externalId']));
    });

  program.command('init')
    .description('Create or upgrade the catalog, roles, shared and template databases; print the operator token if new')
    .addHelpText('after', '\nExamples:\n  tenantry init\n  DATABASE_URL=postgres://me@db/app tenantry init --json')
    .action(async () => {
      const r = await withTenantry(async (tn) => {
        const created = await tn.operatorKey.ensure();
        const ready = await tn.ready();
        const page = await tn.tenants.list({ limit: 1, includeDeleted: true });
        return { namespace: tn.options.namespace, catalogVersion: ready.catalogVersion, operatorToken: created ?? null, hasTenants: page.items.length > 0 };
      });
      print(flags(), r, () => [
        `Tenantry is initialised (namespace ${r.namespace}, catalog version ${r.catalogVersion}).`,
        r.operatorToken ? `Operator token (shown once, store it now):\n  ${r.operatorToken}` : 'The operator token already exists (or TENANTRY_ADMIN_KEY is set).',
      ].join('\n'));
    });

  const keys = program.command('keys').description('Tenant API keys');
  keys.command('create <tenant>').description('Create an API key (printed once)')
    .requiredOption('--name <name>', 'what the key is for')
    .option('--scopes <list>', 'comma-separated: read,write,admin,sql', 'read,write')
    .option('--expires <iso-date>', 'expiry date')
    .option('--member <userId>', 'tie the key to a member: its powers are then also limited by their role')
    .addHelpText('after', '\nExamples:\n  tenantry keys create acme-corp --name ci --scopes read,write\n  tenantry keys create acme-corp --name analyst --scopes read,sql --expires 2027-01-01')
    .action(async (tenant: string, o: { name: string; scopes: string; expires?: string; member?: string }) => {
      const k = await withTenantry(async (tn) => tn.keys.create((await tenantFor(tn, tenant, 'admin')).id, { name: o.name, scopes: o.scopes.split(',').map((x) => x.trim()), expiresAt: o.expires ? parseDate(o.expires, '--expires') : null, memberUserId: o.member ?? null }, CLI));
      print(flags(), k, () => `${table([k as unknown as Record<string, unknown>], ['id', 'name', 'scopes', 'expiresAt'])}\n\nkey (shown once, store it now):\n  ${k.key}`);
    });
  keys.command('list <tenant>').description('List API keys (never their secrets)')
    .addHelpText('after', '\nExample:\n  tenantry keys list acme-corp')
    .action(async (tenant: string) => {
      const list = await withTenantry(async (tn) => tn.keys.list((await tenantFor(tn, tenant, 'admin')).id));
      print(flags(), list, () => table(list as unknown as Record<string, unknown>[], ['id', 'name', 'scopes', 'createdBy', 'expiresAt', 'revokedAt', 'lastUsedAt']));
    });
  keys.command('revoke <tenant> <keyId>').description('Revoke an API key at once')
    .addHelpText('after', '\nExample:\n  tenantry keys revoke acme-corp K94gaxo0iofc')
    .action(async (tenant: string, keyId: string) => {
      const k = await withTenantry(async (tn) => tn.keys.revoke((await tenantFor(tn, tenant, 'admin')).id, keyId, CLI));
      print(flags(), k, () => `revoked ${k.id} (${k.name})`);
    });
  keys.command('rotate <tenant> <keyId>').description('Issue a replacement key; the old one stays valid for the grace period')
    .option('--grace <seconds>', 'how long the old key keeps working', (v) => Number(v), 0)
    .addHelpText('after', '\nExample:\n  tenantry keys rotate acme-corp K94gaxo0iofc --grace 3600')
    .action(async (tenant: string, keyId: string, o: { grace: number }) => {
      const k = await withTenantry(async (tn) => tn.keys.rotate((await tenantFor(tn, tenant, 'admin')).id, keyId, { graceSeconds: o.grace }, CLI));
      print(flags(), k, () => `new key ${k.id} replaces ${keyId} (old one valid for ${o.grace} s)\n\nkey (shown once, store it now):\n  ${k.key}`);
    });
  // ---- encryption keys (issue #15) ----
  keys.command('rotate-data <tenant>').description('A new data-key version for the tenant\'s encryption: new ciphertexts use it, old ones still decrypt (nothing is re-encrypted)')
    .addHelpText('after', '\nExample:\n  tenantry keys rotate-data acme-corp')
    .action(async (tenant: string) => {
      const r = await withTenantry(async (tn) => tn.crypto.rotateTenantKey((await tenantFor(tn, tenant, 'operator')).id, CLI));
      print(flags(), r, () => `tenant ${r.tenantId} now encrypts with data-key version ${r.version}`);
    });
  keys.command('rotate-master').description('Re-wrap every tenant\'s data keys under the current master key (TENANTRY_MASTER_KEY, old one in TENANTRY_MASTER_KEY_PREVIOUS) or the newest Vault key version; batched and resumable')
    .option('--batch <n>', 'data keys per batch (one transaction each)', (v) => Number(v), 100)
    .addHelpText('after', '\nExample:\n  TENANTRY_MASTER_KEY=<new> TENANTRY_MASTER_KEY_PREVIOUS=<old> tenantry keys rotate-master\n\nRun it again after an interruption: it skips what is already re-wrapped.')
    .action(async (o: { batch: number }) => {
      const r = await withTenantry((tn) => tn.crypto.rotateMasterKey({ ...CLI, batchSize: o.batch, onProgress: (p) => { if (!flags().json) process.stderr.write(`\rchecked ${p.checked}, re-wrapped ${p.rewrapped}`); } }));
      if (!flags().json) process.stderr.write('\n');
      print(flags(), r, () => `re-wrapped ${r.rewrapped} of ${r.checked} data keys${r.failed.length ? `; ${r.failed.length} did not unwrap (altered?): ${r.failed.map((f) => `${f.tenantId} v${f.version}`).join(', ')}` : ''}`);
      if (r.failed.length) process.exitCode = 1;
    });
  keys.command('purges').description('Purges that hard deletes still owe outside PostgreSQL (cache keys, Redis users, objects); --run retries them now')
    .option('--run', 'retry them now (the job runner does every minute)')
    .action(async (o: { run?: boolean }) => {
      const r = await withTenantry(async (tn) => ({ ...(o.run ? { ran: await tn.purgeExternal() } : {}), pending: await tn.pendingPurges() }));
      print(flags(), r, () => `${r.ran ? `done ${r.ran.done}, failed ${r.ran.failed}\n` : ''}${table(r.pending as unknown as Record<string, unknown>[], ['tenantId', 'target', 'attempts', 'lastError', 'createdAt'])}`);
    });

  const members = program.command('members').description('Members, roles and invitations');
  members.command('list <tenant>').description('List members')
    .addHelpText('after', '\nExample:\n  tenantry members list acme-corp')
    .action(async (tenant: string) => {
      const list = await withTenantry(async (tn) => tn.members.list((await tenantFor(tn, tenant, 'read')).id));
      print(flags(), list, () => table(list as unknown as Record<string, unknown>[], ['userId', 'email', 'name', 'role', 'createdAt']));
    });
  members.command('add <tenant> <email>').description('Add a member (counts against max_users)')
    .option('--role <role>', 'owner | admin | member | viewer', 'member').option('--name <name>')
    .addHelpText('after', '\nExample:\n  tenantry members add acme-corp ada@acme.test --role owner')
    .action(async (tenant: string, email: string, o: { role: string; name?: string }) => {
      const m = await withTenantry(async (tn) => tn.members.add((await tenantFor(tn, tenant, 'admin')).id, { email, role: o.role, ...(o.name ? { name: o.name } : {}) }, CLI));
      print(flags(), m, () => table([m as unknown as Record<string, unknown>], ['userId', 'email', 'role']));
    });
  members.command('role <tenant> <userId> <role>').description('Change a member\'s role (never demotes the last owner)')
    .addHelpText('after', '\nExample:\n  tenantry members role acme-corp 7c9e... admin')
    .action(async (tenant: string, userId: string, role: string) => {
      const m = await withTenantry(async (tn) => tn.members.updateRole((await tenantFor(tn, tenant, 'admin')).id, userId, role, CLI));
      print(flags(), m, () => table([m as unknown as Record<string, unknown>], ['userId', 'email', 'role']));
    });
  members.command('remove <tenant> <userId>').description('Remove a member (never the last owner); revokes keys tied to them')
    .addHelpText('after', '\nExample:\n  tenantry members remove acme-corp 7c9e...')
    .action(async (tenant: string, userId: string) => {
      await withTenantry(async (tn) => tn.members.remove((await tenantFor(tn, tenant, 'admin')).id, userId, CLI));
      print(flags(), { removed: userId }, () => `removed ${userId}`);
    });
  members.command('invite <tenant> <email>').description('Invite by email; prints the one-time token')
    .option('--role <role>', 'owner | admin | member | viewer', 'member').option('--hours <n>', 'expiry in hours', (v) => Number(v), 72)
    .addHelpText('after', '\nExample:\n  tenantry members invite acme-corp bob@acme.test --role viewer --hours 24')
    .action(async (tenant: string, email: string, o: { role: string; hours: number }) => {
      const r = await withTenantry(async (tn) => tn.members.invite((await tenantFor(tn, tenant, 'admin')).id, { email, role: o.role, expiresInHours: o.hours }, CLI));
      print(flags(), r, () => `invitation ${r.invitation.id} for ${email} (${o.role}), expires ${r.invitation.expiresAt.toISOString()}\ntoken (shown once):\n  ${r.token}`);
    });

  const usage = program.command('usage').description('Usage against quotas, and billing exports');
  usage.command('show <tenant>').description('Usage, limit and utilization per metric')
    .addHelpText('after', '\nExample:\n  tenantry usage show acme-corp')
    .action(async (tenant: string) => {
      const u = await withTenantry(async (tn) => tn.quotas.summary((await tenantFor(tn, tenant, 'read')).id));
      print(flags(), u, () => table(u.metrics.map((m) => ({ ...m, limit: m.limit ?? 'unlimited', utilization: `${m.utilization}%` })), ['metric', 'kind', 'used', 'limit', 'utilization'])
        + (u.atRisk ? '\nAT RISK: a metric is over 90% of its limit' : '')
        + (u.overQuota ? `\nOVER QUOTA: ${u.overLimit.join(', ')} above the limit (a lowered limit or tier); debits refused until back under` : ''));
    });
  usage.command('export').description('Usage history per day or month, for billing (CSV or JSON on stdout)')
    .option('--tenant <tenant>', 'one tenant (default: all)').option('--metric <metric>')
    .option('--from <date>').option('--to <date>')
    .option('--period <period>', 'day | month', 'day').option('--format <format>', 'csv | json', 'csv')
    .addHelpText('after', '\nExamples:\n  tenantry usage export --period month --from 2026-01-01 > usage.csv\n  tenantry usage export --tenant acme-corp --format json')
    .action(async (o: { tenant?: string; metric?: string; from?: string; to?: string; period: string; format: string }) => {
      const text = await withTenantry((tn) => tn.quotas.exportHistory(o.format as 'csv', {
        ...(o.tenant ? { tenant: o.tenant } : {}), ...(o.metric ? { metric: o.metric } : {}),
        ...(o.from ? { from: parseDate(o.from, '--from') } : {}), ...(o.to ? { to: parseDate(o.to, '--to') } : {}), period: o.period as 'day',
      }));
      process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    });

  const plans = program.command('plans').description('The app\'s plans: metrics, tiers in order, features (tenantry.plans.json)');
  // the plan file: the argument, else TENANTRY_PLANS, else ./tenantry.plans.json
  const planFile = (file?: string): string => path.resolve(file ?? cliOptions().plansFile);
  const showDiff = (d: PlanDiff, applied: boolean): string => [
    d.identical ? 'no changes: the file and the catalog declare the same plans' : table(d.changes.map((c) => ({ ...c, from: c.from === undefined ? '' : JSON.stringify(c.from), to: c.to === undefined ? '' : JSON.stringify(c.to) })), ['change', 'target', 'from', 'to']),
    `tenants affected: ${d.tenantsAffected}`,
    ...(d.moves.length ? [`tenants moved${applied ? '' : ' (would move)'}:`, table(d.moves.map((x) => ({ ...x })), ['slug', 'from', 'to'])] : []),
    ...(d.overLimit.length ? [`over their limit ${applied ? 'now' : 'after it'} (kept; their debits are refused):`, table(d.overLimit.map((x) => ({ ...x })), ['slug', 'metric', 'used', 'limit'])] : []),
    ...(d.refusals.length ? ['REFUSED:', ...d.refusals.map((r) => `  ${r.code}: ${r.message}`)] : []),
    applied ? 'applied.' : '',
  ].filter(Boolean).join('\n');
  plans.command('show').description('The plans in force: each tier\'s limit per metric, rate limit, retention and features')
    .addHelpText('after', '\nExample:\n  tenantry plans show --json > tenantry.plans.json')
    .action(async () => {
      const doc = await withTenantry(async (tn) => tn.plans.current());
      print(flags(), plansDocument(doc), () => [
        table(doc.metrics.map((m) => ({ metric: m.name, kind: m.kind, window: m.window ?? m.source ?? (m.ttlSeconds !== null ? `ttl ${m.ttlSeconds}s` : ''), unit: m.unit, quota: m.quota })), ['metric', 'kind', 'window', 'unit', 'quota']),
        '',
        table(doc.tiers.map((t) => ({
          tier: `${t.name}${t.default ? ' (default)' : ''}${t.trialOf ? ` (trial, then ${t.trialOf})` : ''}`,
          ...Object.fromEntries(doc.metrics.map((m) => [m.name, t.limits[m.name] ?? 'unlimited'])),
          rate_limit: t.rateLimit, retention_days: t.retentionDays, features: t.features.join(',') || '-',
        })), ['tier', ...doc.metrics.map((m) => m.name), 'rate_limit', 'retention_days', 'features']),
      ].join('\n'));
    });
  plans.command('diff [file]').description('What applying a plan file would change, move, put over its limits, or refuse; changes nothing')
    .option('--move-tenants <tier>', 'tenants on a tier the file removes go to this tier')
    .option('--drop-history', 'removing a metric deletes its recorded usage')
    .addHelpText('after', '\nExit code 4 when apply would be refused.\nExamples:\n  tenantry plans diff\n  tenantry plans diff plans/next.json --move-tenants team')
    .action(async (file: string | undefined, o: { moveTenants?: string; dropHistory?: boolean }) => {
      const d = await withTenantry((tn) => tn.plans.diff({ file: planFile(file) }, { ...(o.moveTenants ? { moveTenants: o.moveTenants } : {}), dropHistory: Boolean(o.dropHistory) }));
      print(flags(), d, () => showDiff(d, false));
      if (d.refusals.length) process.exitCode = EXIT.CONFLICT;
    });
  plans.command('apply [file]').description('Apply a plan file in one catalog transaction, audited; refused (nothing changed) when it would strand tenants or usage')
    .option('--move-tenants <tier>', 'tenants on a tier the file removes go to this tier (each move audited)')
    .option('--drop-history', 'removing a metric (or changing its kind) deletes its recorded usage and history')
    .addHelpText('after', '\nExamples:\n  tenantry plans apply\n  tenantry plans apply --move-tenants free --drop-history')
    .action(async (file: string | undefined, o: { moveTenants?: string; dropHistory?: boolean }) => {
      const d = await withTenantry((tn) => tn.plans.apply({ file: planFile(file) }, { ...(o.moveTenants ? { moveTenants: o.moveTenants } : {}), dropHistory: Boolean(o.dropHistory) }, CLI));
      print(flags(), d, () => showDiff(d, true));
    });
  plans.command('types [file]').description('Write a .d.ts of the plans\' metric, tier and feature names, so a misspelt metric fails to compile')
    .option('--out <path>', 'where to write it (- for stdout)', 'tenantry-plans.d.ts')
    .addHelpText('after', '\nWithout a file, the plans in the catalog.\nExamples:\n  tenantry plans types tenantry.plans.json --out src/tenantry-plans.d.ts')
    .action(async (file: string | undefined, o: { out: string }) => {
      // from the file alone when one is named: no database needed
      const text = file !== undefined ? plansDeclaration(readPlanFile(planFile(file)), file) : await withTenantry(async (tn) => tn.plans.types());
      if (o.out === '-') process.stdout.write(text);
      else {
        writeFileSync(o.out, text);
        print(flags(), { written: path.resolve(o.out) }, () => `wrote ${o.out}`);
      }
    });

  const quotas = program.command('quotas').description('Effective quotas and per-tenant overrides');
  quotas.command('show <tenant>').description('Each quota\'s limit and whether it comes from the tier or an override')
    .addHelpText('after', '\nExample:\n  tenantry quotas show acme-corp')
    .action(async (tenant: string) => {
      const q = await withTenantry(async (tn) => tn.quotas.effectiveQuotas((await tenantFor(tn, tenant, 'read')).id));
      print(flags(), q, () => table(Object.entries(q).map(([quota, v]) => ({ quota, ...v, limit: v.limit ?? 'unlimited' })), ['quota', 'limit', 'source']));
    });
  quotas.command('set <tenant> <assignments...>').description('Override quotas: quota=value, or quota=tier to remove the override')
    .addHelpText('after', '\nExamples:\n  tenantry quotas set acme-corp max_agents=500 api_calls_per_minute=2000\n  tenantry quotas set acme-corp max_agents=tier')
    .action(async (tenant: string, assignments: string[]) => {
      const overrides: Record<string, number | null> = {};
      for (const a of assignments) {
        const [k, v] = a.split('=');
        if (!k || v === undefined) throw new TenantryError('INVALID_INPUT', `Write each override as quota=value (or quota=tier), got ${JSON.stringify(a)}.`);
        overrides[k] = v === 'tier' ? null : Number(v);
      }
      const q = await withTenantry(async (tn) => tn.quotas.setOverrides((await tenantFor(tn, tenant, 'operator')).id, overrides, CLI));
      print(flags(), q, () => table(Object.entries(q).map(([quota, v]) => ({ quota, ...v })), ['quota', 'limit', 'source']));
    });

  const audit = program.command('audit').description('The tamper-evident audit log');
  audit.command('tail <tenant>').description('The latest audit entries')
    .option('-n, --limit <n>', 'how many', (v) => Number(v), 20)
    .addHelpText('after', '\nExample:\n  tenantry audit tail acme-corp -n 50')
    .action(async (tenant: string, o: { limit: number }) => {
      const entries = await withTenantry(async (tn) => tn.audit((await tenantFor(tn, tenant, 'admin')).id, { limit: o.limit }));
      print(flags(), entries, () => table(entries.map((e) => ({ ...e, details: JSON.stringify(e.details) })).reverse(), ['id', 'createdAt', 'actor', 'action', 'target', 'details']));
    });
  audit.command('verify <tenant>').description('Recompute the hash chain; exit 5 and name the first broken entry if tampered')
    .addHelpText('after', '\nExample:\n  tenantry audit verify acme-corp')
    .action(async (tenant: string) => {
      const r = await withTenantry(async (tn) => tn.verifyAudit((await tenantFor(tn, tenant, 'admin')).id));
      print(flags(), r, () => r.ok ? `ok: ${r.entries} entries, chain intact` : `BROKEN at entry ${r.firstBroken!.id} (#${r.firstBroken!.chainSeq}): ${r.firstBroken!.reason}`);
      if (!r.ok) process.exitCode = EXIT.CHECK_FAILED;
    });

  program.command('uninstall').description('Remove every tenant, database and role of this installation, and its catalog (irreversible)')
    .requiredOption('--confirm <namespace>', 'repeat the namespace (TENANTRY_NAMESPACE) to confirm')
    .addHelpText('after', '\nExample:\n  tenantry uninstall --confirm tenantry')
    .action(async (o: { confirm: string }) => {
      const tenantry = await Tenantry.open({ logger: pino({ level: cliOptions().logLevel }, pino.destination(2)) });
      try {
        await tenantry.uninstall({ confirm: o.confirm });
      } catch (err) {
        await tenantry.close();
        throw err;
      }
      print(flags(), { uninstalled: o.confirm }, () => `uninstalled ${o.confirm}`);
    });

  program.command('bench').description('Run the benchmarks (needs a source checkout with dev dependencies)')
    .addHelpText('after', '\nExamples:\n  tenantry bench\n  DATABASE_URL=postgres://me@db/bench tenantry bench')
    .action(async () => {
      const script = path.join(PACKAGE_ROOT, 'bench', 'run.ts');
      if (!existsSync(script)) throw new TenantryError('INVALID_CONFIG', 'The benchmarks ship with the source checkout only: run `npm run bench` there.');
      const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'inherit', cwd: PACKAGE_ROOT });
      process.exitCode = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
    });

  program.command('pgbouncer-config').description('Print a pgbouncer.ini (transaction mode) for this installation, or with --userlist its userlist (secrets)')
    .option('--port <n>', 'port PgBouncer listens on', (v) => Number(v), 6432)
    .option('--listen <addr>', 'address PgBouncer listens on', '127.0.0.1')
    .option('--pool-size <n>', 'server connections per database and user', (v) => Number(v), 20)
    .option('--auth-file <path>', 'userlist path as the ini names it', 'userlist.txt')
    .option('--userlist', 'print userlist.txt instead of the ini (store it readable by PgBouncer only)')
    .addHelpText('after', '\nExamples:\n  tenantry pgbouncer-config > /etc/pgbouncer/pgbouncer.ini\n  tenantry pgbouncer-config --userlist > /etc/pgbouncer/userlist.txt\n  DATABASE_URL=postgres://me@127.0.0.1:6432/app TENANTRY_DIRECT_URL=postgres://me@db:5432/app tenantry serve')
    .action(async (o: { port: number; listen: string; poolSize: number; authFile: string; userlist?: boolean }) => {
      const out = await withTenantry((t) => t.pgbouncerConfig({ listenPort: o.port, listenAddr: o.listen, poolSize: o.poolSize, authFile: o.authFile }));
      process.stdout.write(o.userlist ? out.userlist : out.ini);
    });

  const migrate = program.command('migrate').description('Apply pending tenant migrations to every schema and database tenant')
    .option('--concurrency <n>', 'tenants at once (default: sized to the server)', (v) => Number(v))
    .option('--tenants <list>', 'comma-separated ids or slugs')
    .option('--tier <tier>').option('--isolation <mode>', 'schema | database')
    .option('--dry-run', 'print the plan and the SQL, change nothing')
    .option('--wait', 'wait for a concurrent run instead of refusing')
    .option('--reapply-security', 'visit every selected tenant and re-apply row-level security and grants')
    .addHelpText('after', '\nExamples:\n  tenantry migrate\n  tenantry migrate --isolation schema --concurrency 16\n  tenantry migrate --tenants acme-corp,beta-co --dry-run\n  tenantry migrate status')
    .action(async (o: { concurrency?: number; tenants?: string; tier?: Tier; isolation?: Isolation; dryRun?: boolean; wait?: boolean; reapplySecurity?: boolean }) => {
      const report = await withTenantry(async (tn) => {
        const progress = startProgress(flags().json === true);
        try {
          return await tn.migrate({
            ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
            ...(o.tenants ? { tenants: o.tenants.split(',').map((x) => x.trim()).filter(Boolean) } : {}),
            ...(o.tier ? { tier: o.tier } : {}), ...(o.isolation ? { isolation: o.isolation } : {}),
            dryRun: Boolean(o.dryRun), wait: Boolean(o.wait), reapplySecurity: Boolean(o.reapplySecurity),
            onProgress: progress.update,
          });
        } finally {
          progress.stop();
        }
      });
      print(flags(), report, () => {
        if (report.plan) {
          return [`plan: ${report.plan.length} tenant(s) to bring to version ${report.latestVersion}`,
            ...report.plan.map((p) => `  ${p.slug} (${p.isolation}) ${p.from} -> ${report.latestVersion}: ${p.files.join(', ') || 'security re-applied'}`),
            ...(report.sql ?? []).map((f) => `\n-- ${f.name}\n${f.sql.trim()}`)].join('\n');
        }
        if (report.planned === 0) return `nothing to do: every tenant is at version ${report.latestVersion} (decided from the catalog in ${report.durationMs} ms)`;
        return [`migrated ${report.migrated} of ${report.planned} tenant(s) to version ${report.latestVersion} in ${(report.durationMs / 1000).toFixed(1)} s`,
          ...report.failed.map((f) => `  FAILED ${f.slug} (${f.id}, ${f.isolation}): ${f.error}`)].join('\n');
      });
      if (report.failed.length > 0) process.exitCode = EXIT.PARTIAL;
    });
  migrate.command('status').description('How many tenants sit at each version')
    .addHelpText('after', '\nExample:\n  tenantry migrate status --json')
    .action(async () => {
      const st = await withTenantry((tn) => tn.migrationStatus());
      print(flags(), st, () => `latest version ${st.latestVersion}; ${st.behind} tenant(s) behind\n${table(st.versions as unknown as Record<string, unknown>[], ['version', 'isolation', 'tenants'])}`);
    });

  program.command('repair').description('Remove tenants stuck in provisioning, orphan roles, schemas and databases, and orphaned idempotency claims')
    .option('--older-than <seconds>', 'treat provisioning older than this as crashed', (v) => Number(v))
    .addHelpText('after', '\nExamples:\n  tenantry repair\n  tenantry repair --older-than 0 --json')
    .action(async (o: { olderThan?: number }) => {
      const r = await withTenantry((tn) => tn.repair({ ...CLI, ...(o.olderThan !== undefined ? { olderThanSeconds: o.olderThan } : {}) }));
      print(flags(), r, () => [
        `stuck tenants removed: ${r.stuckTenants.map((t) => t.slug).join(', ') || 'none'}`,
        `orphan databases removed: ${r.orphanDatabases.join(', ') || 'none'}`,
        `orphan schemas removed: ${r.orphanSchemas.join(', ') || 'none'}`,
        `orphan roles removed: ${r.orphanRoles.join(', ') || 'none'}`,
        `orphaned idempotency claims cleared: ${r.orphanedClaims}`,
      ].join('\n'));
    });

  program.command('doctor').description('Check the installation against the isolation invariants (exit 5 on any failure)')
    .addHelpText('after', '\nExamples:\n  tenantry doctor\n  tenantry doctor --json')
    .action(async () => {
      const r = await withTenantry(async (tn) => {
        // one database per database-mode tenant is visited: show progress when there are many
        const progress = startProgress(flags().json === true);
        try {
          return await tn.doctor({ onProgress: progress.update });
        } finally {
          progress.stop();
        }
      });
      print(flags(), r, () => r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.message}${c.fix ? `\n      fix: ${c.fix}` : ''}`).join('\n'));
      if (!r.ok) process.exitCode = EXIT.CHECK_FAILED;
    });

  return program;
}

/**
 * Progress for commands that work through many tenants: a bar with counts, rate and time left on a
 * terminal; a plain line every few percent otherwise (logs, CI). Writes to stderr, so --json stays clean.
 */
function startProgress(quiet: boolean): { update: (p: { done: number; total: number; tenant: { slug: string }; error?: string }) => void; stop: () => void } {
  if (quiet) return { update: () => {}, stop: () => {} };
  if (process.stderr.isTTY) {
    let bar: cliProgress.SingleBar | undefined;
    return {
      update: (p) => {
        if (!bar) {
          bar = new cliProgress.SingleBar({ stream: process.stderr, format: 'tenants {bar} {value}/{total} | {rate}/s | eta {eta_formatted} | {slug}', hideCursor: true }, cliProgress.Presets.shades_classic);
          bar.start(p.total, 0, { rate: '0', slug: '' });
        }
        const elapsed = (Date.now() - (bar as unknown as { startTime: number }).startTime) / 1000;
        bar.update(p.done, { slug: p.error ? `${p.tenant.slug} FAILED` : p.tenant.slug, rate: elapsed > 0 ? (p.done / elapsed).toFixed(1) : '0' });
      },
      stop: () => bar?.stop(),
    };
  }
  const started = Date.now();
  let lastPct = -1;
  return {
    update: (p) => {
      const pct = Math.floor((p.done / p.total) * 100);
      if (p.error) process.stderr.write(`failed: ${p.tenant.slug}: ${p.error}\n`);
      if (pct >= lastPct + 10 || p.done === p.total) {
        lastPct = pct;
        const secs = (Date.now() - started) / 1000;
        const rate = secs > 0 ? p.done / secs : 0;
        const eta = rate > 0 ? Math.round((p.total - p.done) / rate) : 0;
        process.stderr.write(`progress: ${p.done}/${p.total} tenants (${pct}%), ${rate.toFixed(1)}/s, ~${eta} s left\n`);
      }
    },
    stop: () => {},
  };
}

function parseDate(value: string, flag: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new TenantryError('INVALID_INPUT', `${flag} must be a date like 2027-01-31, got ${JSON.stringify(value)}.`);
  return d;
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

/** `tenantry worker`: the job runner alone, until SIGTERM or SIGINT. */
async function worker(schedule: boolean): Promise<void> {
  const logger = pino({ level: cliOptions().workerLogLevel });
  // as serve: a fault of PostgreSQL or the network that escapes a handler (graphile-worker reports a
  // failed job's update while PostgreSQL restarts as an unhandled rejection) is logged, never fatal
  const keepRunning = (kind: string) => (err: unknown): void => { logger.error({ err }, `${kind}: the worker keeps running`); };
  process.on('uncaughtException', keepRunning('uncaught exception'));
  process.on('unhandledRejection', keepRunning('unhandled rejection'));
  const tenantry = await Tenantry.open({ logger });
  await tenantry.startJobs({ kind: 'worker', schedule });
  logger.info({ processId: tenantry.jobs.processId }, 'tenantry worker running');
  await new Promise<void>((resolve) => {
    const stop = (): void => { resolve(); };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await tenantry.close();
  process.exit(0);
}

async function serve(): Promise<void> {
  const so = serverOptions();
  const logger = pino({ level: so.logLevel });
  // The last resort: an error that escaped every handler (a driver's timer, a socket event) is logged
  // and the server says unready until PostgreSQL answers a probe, but it keeps serving: a fault of
  // PostgreSQL, the network or Redis never ends the process.
  let markUnready: ((reason: string) => void) | undefined;
  const lastResort = (kind: string) => (err: unknown): void => {
    logger.error({ err }, `${kind}: kept serving, marked unready until PostgreSQL answers`);
    markUnready?.(kind);
  };
  process.on('uncaughtException', lastResort('uncaught exception'));
  process.on('unhandledRejection', lastResort('unhandled rejection'));
  // PostgreSQL not (yet) reachable at start: wait for it rather than exit
  let tenantry: Tenantry;
  for (let attempt = 1; ; attempt++) {
    try {
      tenantry = await Tenantry.open({ logger });
      break;
    } catch (err) {
      if (!isDatabaseUnavailable(err)) throw err;
      const waitMs = Math.min(5_000, 250 * attempt);
      logger.warn({ err, attempt, waitMs }, 'PostgreSQL is unreachable at start; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
  const created = await tenantry.operatorKey.ensure();
  if (created) {
    // shown once: only its hash is kept
    process.stdout.write(`\nOperator token (shown once, store it now; set TENANTRY_ADMIN_KEY to choose your own):\n  ${created}\n\n`);
  }
  const app = await buildServer({ tenantry, logLevel: so.logLevel, baseDomain: so.baseDomain, tenantLabels: so.tenantLabels, requestTimeoutMs: so.requestTimeoutMs });
  markUnready = (reason) => app.health.markUnready(reason);
  // the job runner runs inside serve too (the queue and the schedule: once per period across processes)
  await tenantry.startJobs({ kind: 'serve' });
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

