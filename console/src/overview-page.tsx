import { useEffect, useState, type ReactNode } from 'react';
import { clientFor, must, type Session, type Tenant } from './api.ts';
import { ErrorNote, StatusBadge } from './ui.tsx';

type Risk = { tenantId: string; slug: string; metric: string; used: number; limit: number; utilization: number };
type Stats = {
  tenants: { total: number; byStatus: Record<string, number> };
  atRisk: { count: number; tenants: Risk[] };
  overQuota: { count: number; tenants: Risk[] };
  provisioning: { succeeded: number; failed: number; p50Ms: number | null; p95Ms: number | null; maxMs: number | null; recentFailures: { slug: string | null; reason: string; at: string }[] };
  jobs: null | { queued: number; running: number; failed: number; recentFailures: { task: string; error: string; at: string }[] };
  webhooks: { failedLastDay: number; pending: number };
};

const ms = (v: number | null): string => (v === null ? '—' : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`);

function RiskList({ id, title, empty, data }: { id: string; title: string; empty: string; data: Stats['atRisk'] }): ReactNode {
  return (
    <section className="card" aria-labelledby={id} data-panel={id}>
      <div className="title-row"><h2 id={id}>{title}</h2><span className={`badge ${data.count ? (id === 'over-quota' ? 'badge-suspended' : 'badge-trial') : 'badge-active'}`}>{data.count.toLocaleString()}</span></div>
      {data.tenants.length === 0 ? <p className="muted">{empty}</p> : (
        <ul className="rows">
          {data.tenants.map((t) => (
            <li key={t.tenantId}><a href={`#/tenants/${encodeURIComponent(t.tenantId)}`}>{t.slug}</a><span className="mono">{t.metric} {t.used.toLocaleString()} / {t.limit.toLocaleString()} ({t.utilization}%)</span></li>
          ))}
        </ul>
      )}
      {data.count > data.tenants.length && <p className="muted">Showing the {data.tenants.length} closest to their limits.</p>}
    </section>
  );
}

/** The operator's overview, from GET /v1/stats/overview: computed by the server, not by listing tenants here. */
export function Overview({ session }: { session: Session }): ReactNode {
  const [stats, setStats] = useState<Stats | null>(null);
  const [suspended, setSuspended] = useState<Tenant[]>([]);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const api = clientFor(session.token);
    must(api.GET('/v1/stats/overview', {})).then((s) => setStats(s as Stats), setError);
    must(api.GET('/v1/tenants', { params: { query: { status: 'suspended', limit: 20 } } })).then((p) => setSuspended(p.items), () => {});
  }, [session.token]);
  if (error) return <><h1>Overview</h1><ErrorNote error={error} /></>;
  if (!stats) return <p aria-busy="true">Loading…</p>;
  const p = stats.provisioning;
  return (
    <>
      <h1>Overview</h1>
      <p className="muted">{stats.tenants.total.toLocaleString()} tenants.</p>
      <div className="grid">
        <RiskList id="over-quota" title="Over quota" empty="No tenant is over a limit." data={stats.overQuota} />
        <RiskList id="at-risk" title="At risk (over 90%)" empty="No tenant is near a limit." data={stats.atRisk} />
        <section className="card" aria-labelledby="by-status">
          <h2 id="by-status">By status</h2>
          <dl className="counts">
            {Object.entries(stats.tenants.byStatus).sort((a, b) => b[1] - a[1]).map(([name, n]) => <div key={name}><dt><StatusBadge status={name} /></dt><dd>{n.toLocaleString()}</dd></div>)}
          </dl>
        </section>
      </div>
      <div className="grid">
        <section className="card" aria-labelledby="prov-title" data-panel="provisioning">
          <h2 id="prov-title">Provisioning, last 24 hours</h2>
          <dl className="counts">
            <div><dt>Succeeded</dt><dd>{p.succeeded.toLocaleString()}</dd></div>
            <div><dt>Failed</dt><dd>{p.failed.toLocaleString()}</dd></div>
            <div><dt>Median time</dt><dd>{ms(p.p50Ms)}</dd></div>
            <div><dt>95th percentile</dt><dd>{ms(p.p95Ms)}</dd></div>
            <div><dt>Slowest</dt><dd>{ms(p.maxMs)}</dd></div>
          </dl>
          {p.recentFailures.length > 0 && <ul className="plain">{p.recentFailures.map((f, i) => <li key={i}><span className="mono">{f.slug ?? '?'}</span>: {f.reason}</li>)}</ul>}
        </section>
        <section className="card" aria-labelledby="jobs-title" data-panel="jobs">
          <h2 id="jobs-title">Job queue</h2>
          {stats.jobs === null ? <p className="muted">The job runner has not been started on this installation.</p> : (
            <>
              <dl className="counts">
                <div><dt>Queued</dt><dd>{stats.jobs.queued.toLocaleString()}</dd></div>
                <div><dt>Running</dt><dd>{stats.jobs.running.toLocaleString()}</dd></div>
                <div><dt>Failed (out of attempts)</dt><dd>{stats.jobs.failed.toLocaleString()}</dd></div>
              </dl>
              {stats.jobs.recentFailures.length > 0 && <><h3>Recent errors</h3><ul className="plain">{stats.jobs.recentFailures.map((f, i) => <li key={i}><span className="mono">{f.task}</span>: <span className="details">{f.error}</span></li>)}</ul></>}
            </>
          )}
        </section>
        <section className="card" aria-labelledby="hooks-title" data-panel="webhooks">
          <h2 id="hooks-title">Webhook deliveries</h2>
          <dl className="counts">
            <div><dt>Failed, last 24 hours</dt><dd>{stats.webhooks.failedLastDay.toLocaleString()}</dd></div>
            <div><dt>Being retried or queued</dt><dd>{stats.webhooks.pending.toLocaleString()}</dd></div>
          </dl>
          <p><a href="#/webhooks">Webhooks and their deliveries</a></p>
        </section>
      </div>
      <section className="card" aria-labelledby="suspended-title">
        <h2 id="suspended-title">Suspended, and why</h2>
        {suspended.length === 0 ? <p className="muted">No tenant is suspended.</p> : (
          <ul className="plain">{suspended.map((t) => <li key={t.id}><a href={`#/tenants/${encodeURIComponent(t.id)}`}>{t.slug}</a>: {t.suspendedReason ?? 'no reason given'}</li>)}</ul>
        )}
      </section>
    </>
  );
}
