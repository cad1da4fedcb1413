import { useEffect, useState, type ReactNode } from 'react';
import { clientFor, must, type Session } from './api.ts';
import { ErrorNote } from './ui.tsx';

type Plans = { plans: { features: { name: string; description: string }[]; tiers: { name: string; default?: boolean; trialOf?: string; limits: Record<string, number | 'unlimited'>; features: string[]; rateLimit: number; retentionDays: number }[] } };

export function PlansPage({ session }: { session: Session }): ReactNode {
  const [plans, setPlans] = useState<Plans | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => { must(clientFor(session.token).GET('/v1/plans', {})).then((p) => setPlans(p as Plans), setError); }, [session.token]);
  if (error) return <ErrorNote error={error} />;
  if (!plans) return <p aria-busy="true">Loading…</p>;
  const quotas = [...new Set(plans.plans.tiers.flatMap((t) => Object.keys(t.limits)))];
  return (
    <>
      <h1>Plans</h1>
      <p className="muted">Read-only: the plan file in force. Change it with <code>tenantry plans apply</code> or PUT /v1/plans.</p>
      <div className="table-wrap card" tabIndex={0} role="region" aria-label="Tiers and limits">
        <table>
          <caption className="sr-only">Tiers and their limits</caption>
          <thead><tr><th scope="col">Limit</th>{plans.plans.tiers.map((t) => <th scope="col" key={t.name}>{t.name}{t.default ? ' (default)' : ''}</th>)}</tr></thead>
          <tbody>
            {quotas.map((q) => <tr key={q}><th scope="row" className="mono">{q}</th>{plans.plans.tiers.map((t) => <td key={t.name}>{typeof t.limits[q] === 'number' ? (t.limits[q] as number).toLocaleString() : t.limits[q] ?? '—'}</td>)}</tr>)}
            <tr><th scope="row">requests/s</th>{plans.plans.tiers.map((t) => <td key={t.name}>{t.rateLimit}</td>)}</tr>
            <tr><th scope="row">retention (days)</th>{plans.plans.tiers.map((t) => <td key={t.name}>{t.retentionDays}</td>)}</tr>
            {plans.plans.features.map((f) => <tr key={f.name}><th scope="row" title={f.description}>{f.name}</th>{plans.plans.tiers.map((t) => <td key={t.name}>{t.features.includes(f.name) ? 'yes' : 'no'}</td>)}</tr>)}
          </tbody>
        </table>
      </div>
    </>
  );
}

type Delivery = { id: string; eventId: string; type: string; status: 'pending' | 'succeeded' | 'failed'; createdAt: string; attempts: { attempt: number; statusCode: number | null; error: string | null }[] };
type Webhook = { id: string; url: string; tenantId: string | null; events: string[]; createdAt: string; disabledAt?: string | null };

export function WebhooksPage({ session }: { session: Session }): ReactNode {
  const [hooks, setHooks] = useState<Webhook[] | null>(null);
  const [deliveries, setDeliveries] = useState<Record<string, Record<string, unknown>[]>>({});
  const [error, setError] = useState<unknown>(null);
  const api = clientFor(session.token);
  useEffect(() => { must(api.GET('/v1/webhooks', { params: { query: {} } })).then((h) => setHooks(h as unknown as Webhook[]), setError); }, [session.token]);
  const [notice, setNotice] = useState('');
  // a redelivery is a new pending delivery of the same event; the list is read again to show it
  const redeliver = (hook: string, delivery: string): void => {
    setError(null); setNotice('');
    must(api.POST('/v1/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver', { params: { path: { webhookId: hook, deliveryId: delivery } } }))
      .then((d) => { setNotice(`Delivery ${delivery} queued again as delivery ${(d as { id: string }).id}.`); show(hook); }, setError);
  };
  const show = (id: string): void => { must(api.GET('/v1/webhooks/{webhookId}/deliveries', { params: { path: { webhookId: id } } })).then((d) => setDeliveries({ ...deliveries, [id]: d as Record<string, unknown>[] }), setError); };
  return (
    <>
      <h1>Webhooks</h1>
      <ErrorNote error={error} />
      <p role="status" className={notice ? 'notice' : 'sr-only'}>{notice}</p>
      {hooks?.length === 0 && <p className="muted">No endpoint is registered.</p>}
      <ul className="rows card">
        {(hooks ?? []).map((h) => (
          <li key={h.id} className="stack">
            <div className="title-row"><span className="mono">{h.url}</span><button type="button" onClick={() => show(h.id)}>Deliveries</button></div>
            <span className="muted">{h.tenantId ? `tenant ${h.tenantId}` : 'every tenant'} · {(h.events ?? []).join(', ') || 'all events'}</span>
            {deliveries[h.id] && (deliveries[h.id]!.length === 0 ? <p className="muted">No deliveries yet.</p> : (
              <ul className="rows deliveries" aria-label={`Deliveries to ${h.url}`}>{(deliveries[h.id] as unknown as Delivery[]).map((d) => (
                <li key={d.id} data-delivery={d.id}>
                  <span><span className={`badge ${d.status === 'succeeded' ? 'badge-active' : d.status === 'failed' ? 'badge-suspended' : 'badge-trial'}`}>{d.status}</span> <span className="mono">{d.type}</span> <span className="muted">#{d.id} · {new Date(d.createdAt).toLocaleString()} · {d.attempts.length} {d.attempts.length === 1 ? 'attempt' : 'attempts'}{d.attempts.length ? `, last ${d.attempts[d.attempts.length - 1]!.statusCode ?? d.attempts[d.attempts.length - 1]!.error ?? ''}` : ''}</span></span>
                  {d.status !== 'pending' && <button type="button" aria-label={`Redeliver delivery ${d.id} (${d.type})`} onClick={() => redeliver(h.id, d.id)}>Redeliver</button>}
                </li>
              ))}</ul>
            ))}
          </li>
        ))}
      </ul>
    </>
  );
}
