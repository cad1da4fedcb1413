/**
 * The fast path of `tenantry migrate` (see main.ts): only the plain form (`migrate`, optionally with
 * `--json`, `--wait` or `--concurrency <n>`, none of which changes what "nothing pending" means) and
 * only when the catalog alone shows nothing to do. Anything else, or any doubt, returns false and the
 * full command runs, with its own flag checks, messages and exit codes.
 */
export async function quickMigrate(args: string[]): Promise<boolean> {
  if (args[0] !== 'migrate') return false;
  const rest = args.slice(1);
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--json') json = true;
    else if (a === '--wait') continue;
    else if (a === '--concurrency' && /^[1-9][0-9]{0,2}$/.test(rest[i + 1] ?? '') && Number(rest[i + 1]) <= 256) i++;
    else return false;
  }
  let report;
  try {
    const { migrateNothingPending } = await import('../migrations/up-to-date.js');
    report = await migrateNothingPending();
  } catch {
    // the full command reports the error with its exit code
    return false;
  }
  if (!report) return false;
  process.stdout.write(json
    ? `${JSON.stringify(report, null, 2)}\n`
    : `nothing to do: every tenant is at version ${report.latestVersion} (decided from the catalog in ${report.durationMs} ms)\n`);
  return true;
}
