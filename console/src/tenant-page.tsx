import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { clientFor, must, type Session, type Tenant } from './api.ts';
import { CopyOnce, ErrorNote, StatusBadge } from './ui.tsx';
import { UsageChart } from './usage-chart.tsx';
import { Backups } from './backups.tsx';

type Api = ReturnType<typeof clientFor>;
type Usage = { atRisk: boolean; overQuota: boolean; metrics: { metric: string; kind: string; quota: string; used: number; limit: number | null; utilization: number }[] };
type Key = { id: string; name: string; scopes: string[]; createdAt: string; revokedAt: string | null; lastUsedAt: string | null; expiresAt: string | null };
type Member = { userId: string; email: string; name: string | null; role: string };
type Invitation = { id: string; email: string; role: string; expiresAt: string; acceptedAt: string | null; revokedAt: string | null };
type Feature = { feature: string; enabled: boolean; source: string };
type AuditEntry = { id: string; actor: string; action: string; target: string; details: Record<string, unknown>; createdAt: string };

/** amber past 75%, red past 90% */
export function level(used: number, limit: number | null): 'ok' | 'warn' | 'danger' {
  if (limit === null) return 'ok';
  const ratio = limit === 0 ? (used > 0 ? Infinity : 0) : used / limit;
  return ratio > 0.9 ? 'danger' : ratio > 0.75 ? 'warn' : 'ok';
}

function QuotaBar({ m }: { m: Usage['metrics'][number] }): ReactNode {
  const pct = m.limit === null ? 0 : m.limit === 0 ? 100 : Math.min(100, (m.used / m.limit) * 100);
  const lvl = level(m.used, m.limit);
  const ref = useRef<HTMLDivElement>(null);
  // the width is set through the CSSOM: the CSP allows no inline style attribute
  useEffect(() => { ref.current?.style.setProperty('--pct', `${pct}%`); }, [pct]);
  return (
    <div className="quota" data-metric={m.metric} data-level={lvl}>
      <div className="quota-label"><span>{m.metric}</span><span className="mono">{m.used.toLocaleString()} / {m.limit === null ? 'unlimited' : m.limit.toLocaleString()}</span></div>
      <div className="bar" role="meter" aria-label={`${m.metric} used`} aria-valuemin={0} aria-valuemax={m.limit ?? 0} aria-valuenow={m.used} aria-valuetext={m.limit === null ? `${m.used} used, unlimited` : `${m.used} of ${m.limit} (${Math.round(pct)}%)${lvl === 'danger' ? ', critical' : lvl === 'warn' ? ', high' : ''}`}>
        <div ref={ref} className={`fill fill-${lvl}`} />
      </div>
    </div>
  );
}

/** A confirmation that makes the person type the tenant's slug before the button works. */
function ConfirmButton({ label, slug, danger, onConfirm, children }: { label: string; slug: string; danger?: boolean; onConfirm: (extra: string) => Promise<void>; children?: ReactNode }): ReactNode {
  const dialog = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState('');
  const [extra, setExtra] = useState('');
  const [error, setError] = useState<unknown>(null);
  const id = useId();
  const close = (): void => { dialog.current?.close(); setTyped(''); setExtra(''); setError(null); };
  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    try { await onConfirm(extra); close(); } catch (err) { setError(err); }
  };
  return (
    <>
      <button type="button" className={danger ? 'danger' : ''} onClick={() => dialog.current?.showModal()}>{label}</button>
      <dialog ref={dialog} aria-labelledby={`${id}-t`} onClose={() => { setTyped(''); setExtra(''); }}>
        <form onSubmit={submit}>
          <h2 id={`${id}-t`}>{label} {slug}?</h2>
          {children && <div>{children}</div>}
          {label === 'Suspend' && (<><label htmlFor={`${id}-r`}>Reason</label><input id={`${id}-r`} required value={extra} onChange={(e) => setExtra(e.target.value)} /></>)}
          <label htmlFor={`${id}-s`}>Type <strong className="mono">{slug}</strong> to confirm</label>
          <input id={`${id}-s`} autoComplete="off" value={typed} onChange={(e) => setTyped(e.target.value)} />
          <ErrorNote error={error} />
          <div className="actions">
            <button type="submit" className={danger ? 'danger' : 'primary'} disabled={typed !== slug || (label === 'Suspend' && extra.trim() === '')}>{label}</button>
            <button type="button" onClick={close}>Cancel</button>
          </div>
        </form>
      </dialog>
    </>
  );
}

/** A plain confirmation (keys: revoke, rotate). */
function Confirm({ label, question, onConfirm }: { label: string; question: string; onConfirm: () => Promise<void> }): ReactNode {
  const dialog = useRef<HTMLDialogElement>(null);
  const [error, setError] = useState<unknown>(null);
  const id = useId();
  return (
    <>
      <button type="button" onClick={() => dialog.current?.showModal()}>{label}</button>
      <dialog ref={dialog} aria-labelledby={`${id}-t`}>
        <h2 id={`${id}-t`}>{question}</h2>
        <ErrorNote error={error} />
        <div className="actions">
          <button type="button" className="danger" onClick={() => { onConfirm().then(() => dialog.current?.close(), setError); }}>{label}</button>
          <button type="button" onClick={() => dialog.current?.close()}>Cancel</button>
        </div>
      </dialog>
    </>
  );
}

function Keys({ api, tenant }: { api: Api; tenant: Tenant }): ReactNode {
  const [keys, setKeys] = useState<Key[] | null>(null);
  const [shown, setShown] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState<unknown>(null);
  const path = { params: { path: { id: tenant.id } } };
  const load = useCallback(() => { must(api.GET('/v1/tenants/{id}/api-keys', path)).then((k) => setKeys(k as Key[]), setError); }, [api, tenant.id]);
  useEffect(load, [load]);
  const create = async (e: FormEvent): Promise<void> => {
    e.preventDefault(); setError(null);
    try {
      const k = await must(api.POST('/v1/tenants/{id}/api-keys', { ...path, body: { name: name.trim() || 'console key' } }));
      setShown((k as { key: string }).key); setName(''); load();
    } catch (err) { setError(err); }
  };
  return (
    <section className="card" aria-labelledby="keys-title">
      <h2 id="keys-title">API keys</h2>
      {shown && <CopyOnce label="The new API key." secret={shown} />}
      <form className="inline" onSubmit={create}>
        <label htmlFor="key-name">New key's name</label>
        <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit">Create key</button>
      </form>
      <ErrorNote error={error} />
      <ul className="rows">
        {(keys ?? []).map((k) => (
          <li key={k.id} data-key-id={k.id}>
            <span><strong>{k.name}</strong> <span className="muted">{k.scopes.join(', ')}</span>{k.revokedAt && <span className="badge badge-deleted">revoked</span>}</span>
            {!k.revokedAt && (
              <span className="buttons">
                <Confirm label="Rotate" question={`Rotate the key ${k.name}? The new key is shown once; the old one keeps working for its grace period.`} onConfirm={async () => { const r = await must(api.POST('/v1/tenants/{id}/api-keys/{keyId}/rotate', { params: { path: { id: tenant.id, keyId: k.id } }, body: {} })); setShown((r as { key: string }).key); load(); }} />
                <Confirm label="Revoke" question={`Revoke the key ${k.name}? Requests with it are refused from now on.`} onConfirm={async () => { await must(api.DELETE('/v1/tenants/{id}/api-keys/{keyId}', { params: { path: { id: tenant.id, keyId: k.id } } })); load(); }} />
              </span>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function People({ api, tenant }: { api: Api; tenant: Tenant }): ReactNode {
  const [members, setMembers] = useState<Member[] | null>(null);
  const [invites, setInvites] = useState<Invitation[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const path = { params: { path: { id: tenant.id } } };
    must(api.GET('/v1/tenants/{id}/members', path)).then((m) => setMembers(m as Member[]), setError);
    must(api.GET('/v1/tenants/{id}/invitations', path)).then((i) => setInvites(i as Invitation[]), setError);
  }, [api, tenant.id]);
  return (
    <section className="card" aria-labelledby="people-title">
      <h2 id="people-title">Members and invitations</h2>
      <ErrorNote error={error} />
      <h3>Members</h3>
      {members?.length === 0 ? <p className="muted">No members yet.</p> : <ul className="rows">{(members ?? []).map((m) => <li key={m.userId}><span>{m.name ?? m.email} <span className="muted">{m.email}</span></span><span className="badge">{m.role}</span></li>)}</ul>}
      <h3>Invitations</h3>
      {invites?.length === 0 ? <p className="muted">No invitations.</p> : <ul className="rows">{(invites ?? []).map((i) => <li key={i.id}><span>{i.email} <span className="muted">{i.role}</span></span><span className="muted">{i.acceptedAt ? 'accepted' : i.revokedAt ? 'revoked' : `expires ${new Date(i.expiresAt).toLocaleDateString()}`}</span></li>)}</ul>}
    </section>
  );
}

function Features({ api, tenant, canChange }: { api: Api; tenant: Tenant; canChange: boolean }): ReactNode {
  const [features, setFeatures] = useState<Feature[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => { must(api.GET('/v1/tenants/{id}/features', { params: { path: { id: tenant.id } } })).then((f) => setFeatures(f as Feature[]), setError); }, [api, tenant.id]);
  const toggle = (f: Feature): void => {
    setError(null);
    must(api.PUT('/v1/tenants/{id}/features/{feature}', { params: { path: { id: tenant.id, feature: f.feature } }, body: { enabled: !f.enabled } })).then((r) => setFeatures(r as Feature[]), setError);
  };
  return (
    <section className="card" aria-labelledby="features-title">
      <h2 id="features-title">Feature flags</h2>
      <ErrorNote error={error} />
      {features?.length === 0 && <p className="muted">The plans define no features.</p>}
      <ul className="rows">
        {(features ?? []).map((f) => (
          <li key={f.feature}>
            <label className="switch">
              <input type="checkbox" role="switch" checked={f.enabled} disabled={!canChange} onChange={() => toggle(f)} />
              <span>{f.feature}</span>
            </label>
            <span className="muted">{f.source === 'override' ? 'set for this tenant' : 'from the tier'}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Audit({ api, tenant, version }: { api: Api; tenant: Tenant; version: number }): ReactNode {
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<{ items: AuditEntry[]; nextCursor: string | null } | null>(null);
  const [verified, setVerified] = useState<{ ok: boolean; entries: number } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    const path = { id: tenant.id };
    must(api.GET('/v1/tenants/{id}/audit', { params: { path, query: { limit: 10, ...(cursor ? { cursor } : {}) } } })).then((p) => setPage(p as typeof page), setError);
    must(api.GET('/v1/tenants/{id}/audit/verify', { params: { path } })).then((v) => setVerified(v as typeof verified), setError);
  }, [api, tenant.id, cursor, version]);
  return (
    <section className="card wide" aria-labelledby="audit-title">
      <div className="title-row">
        <h2 id="audit-title">Audit trail</h2>
        {verified && <span className={`badge ${verified.ok ? 'badge-active' : 'badge-suspended'}`} data-testid="chain">{verified.ok ? `chain verified (${verified.entries} entries)` : 'chain broken'}</span>}
      </div>
      <ErrorNote error={error} />
      <div className="table-wrap" tabIndex={0} role="region" aria-label="Audit entries">
        <table>
          <thead><tr><th scope="col">When</th><th scope="col">Action</th><th scope="col">Actor</th><th scope="col">Details</th></tr></thead>
          <tbody>
            {(page?.items ?? []).map((e) => (
              <tr key={e.id}><td><time dateTime={e.createdAt}>{new Date(e.createdAt).toLocaleString()}</time></td><td className="mono">{e.action}</td><td>{e.actor}</td><td className="details mono">{JSON.stringify(e.details)}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav className="pager" aria-label="Audit pages">
        <button type="button" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
        <span>Page {cursors.length}</span>
        <button type="button" disabled={!page?.nextCursor} onClick={() => setCursors([...cursors, page!.nextCursor!])}>Older</button>
      </nav>
    </section>
  );
}

export function TenantPage({ session, id }: { session: Session; id: string }): ReactNode {
  const api = clientFor(session.token);
  const [tenant, setTenant] = useState<Tenant | null>(null);
  const [usage, setUsage] = useState<Usage | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [version, setVersion] = useState(0);
  const [apiMemo] = useState(() => api);
  useEffect(() => {
    const path = { params: { path: { id } } };
    must(apiMemo.GET('/v1/tenants/{id}', path)).then((t) => setTenant(t as Tenant), setError);
    must(apiMemo.GET('/v1/tenants/{id}/usage', path)).then((u) => setUsage(u as Usage), () => setUsage(null));
  }, [apiMemo, id, version]);
  if (error) return <><h1>Tenant not found</h1><ErrorNote error={error} /></>;
  if (!tenant) return <p aria-busy="true">Loading…</p>;
  const operator = session.kind === 'operator';
  const act = async (p: Promise<{ data?: unknown; error?: unknown; response: Response }>): Promise<void> => { await must(p); setVersion((v) => v + 1); };
  const path = { params: { path: { id: tenant.id } } };
  return (
    <>
      <div className="title-row">
        <h1>{tenant.name} <span className="muted mono">{tenant.slug}</span></h1>
        <StatusBadge status={tenant.status} />
      </div>
      <section className="card" aria-labelledby="facts-title">
        <h2 id="facts-title" className="sr-only">Facts</h2>
        <dl className="facts">
          <div><dt>Status</dt><dd>{tenant.status}{tenant.suspendedReason ? `: ${tenant.suspendedReason}` : ''}</dd></div>
          <div><dt>Tier</dt><dd>{tenant.tier}</dd></div>
          <div><dt>Isolation mode</dt><dd>{tenant.isolation}</dd></div>
          <div><dt>Placement</dt><dd className="mono">{String(tenant.metadata.placement ?? (tenant.isolation === 'database' ? 'its own database' : tenant.isolation === 'schema' ? 'its own schema' : 'the shared tables'))}</dd></div>
          <div><dt>Created</dt><dd>{new Date(tenant.createdAt).toLocaleString()}</dd></div>
          {tenant.trialEndsAt && <div><dt>Trial ends</dt><dd>{new Date(tenant.trialEndsAt).toLocaleDateString()}</dd></div>}
          <div className="span"><dt>Metadata</dt><dd className="mono details">{JSON.stringify(tenant.metadata)}</dd></div>
        </dl>
        {operator && (
          <div className="actions">
            {tenant.status === 'suspended'
              ? <ConfirmButton label="Activate" slug={tenant.slug} onConfirm={() => act(api.POST('/v1/tenants/{id}/activate', path))} />
              : tenant.status !== 'deleted' && <ConfirmButton label="Suspend" slug={tenant.slug} onConfirm={(reason) => act(api.POST('/v1/tenants/{id}/suspend', { ...path, body: { reason } }))} />}
            {tenant.status === 'deleted'
              ? <ConfirmButton label="Restore" slug={tenant.slug} onConfirm={() => act(api.POST('/v1/tenants/{id}/restore', path))} />
              : <ConfirmButton label="Delete" danger slug={tenant.slug} onConfirm={() => act(api.DELETE('/v1/tenants/{id}', path))}><p>A soft delete: the tenant can be restored during the retention period.</p></ConfirmButton>}
          </div>
        )}
      </section>
      <section className="card" aria-labelledby="quotas-title">
        <div className="title-row"><h2 id="quotas-title">Quotas</h2>{usage?.overQuota ? <span className="badge badge-suspended">over quota</span> : usage?.atRisk ? <span className="badge badge-trial">at risk</span> : null}</div>
        {usage ? usage.metrics.map((m) => <QuotaBar key={m.metric} m={m} />) : <p className="muted">No usage visible with this credential.</p>}
      </section>
      <UsageChart api={apiMemo} tenantId={tenant.id} />
      <div className="grid">
        <Keys api={apiMemo} tenant={tenant} />
        <Features api={apiMemo} tenant={tenant} canChange={operator} />
        <People api={apiMemo} tenant={tenant} />
      </div>
      {operator && <Backups api={apiMemo} tenant={tenant} />}
      <Audit api={apiMemo} tenant={tenant} version={version} />
    </>
  );
}
