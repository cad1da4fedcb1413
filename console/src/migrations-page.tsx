import { useEffect, useState, type ReactNode } from 'react';
import { clientFor, must, type Session } from './api.ts';
import { ErrorNote } from './ui.tsx';

type Overview = {
  latestVersion: number; behind: number;
  versions: { version: number; isolation: string; tenants: number }[];
  lastRun: null | { finishedAt: string; latestVersion: number; planned: number; migrated: number; durationMs: number; failed: { id: string; slug: string; isolation: string; error: string }[] };
};

/** Tenants per migration version and the last run's failures (GET /v1/migrations, operator). */
export function MigrationsPage({ session }: { session: Session }): ReactNode {
  const [data, setData] = useState<Overview | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => { must(clientFor(session.token).GET('/v1/migrations', {})).then((d) => setData(d as Overview), setError); }, [session.token]);
  if (error) return <><h1>Migrations</h1><ErrorNote error={error} /></>;
  if (!data) return <p aria-busy="true">Loading…</p>;
  const run = data.lastRun;
  return (
    <>
      <h1>Migrations</h1>
      <p className="muted">Tenant migrations: the latest version is <strong className="mono">{data.latestVersion}</strong>. {data.behind === 0 ? 'Every tenant is up to date.' : `${data.behind.toLocaleString()} tenants are behind; run tenantry migrate.`}</p>
      <div className="grid">
        <section className="card" aria-labelledby="mig-versions">
          <h2 id="mig-versions">Tenants per version</h2>
          <div className="table-wrap" tabIndex={0} role="region" aria-label="Tenants per migration version">
            <table>
              <thead><tr><th scope="col">Version</th><th scope="col">Isolation</th><th scope="col">Tenants</th></tr></thead>
              <tbody>
                {data.versions.map((v) => (
                  <tr key={`${v.version}-${v.isolation}`} data-behind={v.version < data.latestVersion}>
                    <td className="mono">{v.version}{v.version < data.latestVersion ? <span className="badge badge-trial">behind</span> : null}</td>
                    <td>{v.isolation}</td><td>{v.tenants.toLocaleString()}</td>
                  </tr>
                ))}
                {data.versions.length === 0 && <tr><td colSpan={3} className="muted">No tenants yet.</td></tr>}
              </tbody>
            </table>
          </div>
        </section>
        <section className="card" aria-labelledby="mig-run">
          <h2 id="mig-run">Last run</h2>
          {!run ? <p className="muted">No run recorded yet.</p> : (
            <>
              <p>Finished <time dateTime={run.finishedAt}>{new Date(run.finishedAt).toLocaleString()}</time>: {run.planned === 0 ? `nothing to migrate, every tenant was at version ${run.latestVersion}.` : `${run.migrated.toLocaleString()} of ${run.planned.toLocaleString()} tenants migrated to version ${run.latestVersion} in ${(run.durationMs / 1000).toFixed(1)} s.`}</p>
              {run.failed.length === 0 ? <p className="badge badge-active">No failures</p> : (
                <>
                  <h3>{run.failed.length} failed</h3>
                  <ul className="rows" aria-label="Failed tenants">
                    {run.failed.map((f) => <li key={f.id} className="stack"><a href={`#/tenants/${encodeURIComponent(f.id)}`}>{f.slug}</a> <span className="muted">({f.isolation})</span><p className="error">{f.error}</p></li>)}
                  </ul>
                </>
              )}
            </>
          )}
        </section>
      </div>
    </>
  );
}
