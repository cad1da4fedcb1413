import { useEffect, useId, useRef, useState, type ReactNode } from 'react';
import { must, type clientFor } from './api.ts';
import { ErrorNote } from './ui.tsx';

type Api = ReturnType<typeof clientFor>;
type History = { tenantId: string; period: string; from: string; to: string; points: { period: string; metric: string; amount: number }[] };

const DAYS = 30;
const H = 180; const PAD_L = 44; const PAD_R = 20; const PAD_B = 22; const PAD_T = 10;

/** Every UTC day from `from` to `to` (inclusive), so a day without usage shows as zero, not as a gap. */
function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += 86_400_000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

/** The smallest 1, 2 or 5 times a power of ten at or above n: gridlines at round numbers. */
function niceCeiling(n: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(1, n)));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= n) ?? 10 * p;
}

function compact(n: number): string {
  return new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

/**
 * The tenant's usage of one metric per day over the last 30 days (GET /v1/tenants/{id}/usage/history):
 * a hand-drawn SVG bar chart (no third-party code or origin), described for screen readers by its
 * title and summary and backed by a data table they can read instead.
 */
export function UsageChart({ api, tenantId }: { api: Api; tenantId: string }): ReactNode {
  const [history, setHistory] = useState<History | null>(null);
  const [metric, setMetric] = useState('');
  const [error, setError] = useState<unknown>(null);
  const id = useId();
  // drawn at the width it is shown at (not scaled), so its text stays the page's size on a phone and a wide screen
  const box = useRef<HTMLDivElement>(null);
  const [W, setW] = useState(640);
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const ro = new ResizeObserver(() => { if (el.clientWidth > 0) setW(Math.round(el.clientWidth)); });
    ro.observe(el);
    return () => ro.disconnect();
  }, [history]);
  useEffect(() => {
    must(api.GET('/v1/tenants/{id}/usage/history', { params: { path: { id: tenantId }, query: { from: new Date(Date.now() - (DAYS - 1) * 86_400_000).toISOString().slice(0, 10) } } }))
      .then((h) => setHistory(h as History), setError);
  }, [api, tenantId]);
  if (error) return <section className="card" aria-labelledby={`${id}-h`}><h2 id={`${id}-h`}>Usage over time</h2><ErrorNote error={error} /></section>;
  if (!history) return <section className="card" aria-busy="true"><h2>Usage over time</h2><p>Loading…</p></section>;
  const metrics = [...new Set(history.points.map((p) => p.metric))].sort();
  const shown = metrics.includes(metric) ? metric : metrics[0] ?? '';
  const days = daysBetween(history.from, history.to);
  const byDay = new Map(history.points.filter((p) => p.metric === shown).map((p) => [p.period, p.amount]));
  const values = days.map((d) => byDay.get(d) ?? 0);
  const max = niceCeiling(Math.max(1, ...values));
  const total = values.reduce((a, b) => a + b, 0);
  const peak = values.indexOf(Math.max(...values));
  const slot = (W - PAD_L - PAD_R) / days.length;
  const plotH = H - PAD_B - PAD_T;
  const y = (v: number): number => PAD_T + plotH - (v / max) * plotH;
  const summary = shown === '' ? 'No usage recorded in the last 30 days.'
    : `${shown}: ${total.toLocaleString()} in ${days.length} days from ${history.from} to ${history.to}; highest ${values[peak]!.toLocaleString()} on ${days[peak]}.`;
  return (
    <section className="card usage-chart" aria-labelledby={`${id}-h`}>
      <div className="title-row">
        <h2 id={`${id}-h`}>Usage over time</h2>
        {metrics.length > 0 && (
          <div className="inline-select">
            <label htmlFor={`${id}-m`}>Metric</label>
            <select id={`${id}-m`} value={shown} onChange={(e) => setMetric(e.target.value)}>{metrics.map((m) => <option key={m}>{m}</option>)}</select>
          </div>
        )}
      </div>
      {shown === '' ? <p className="muted">{summary}</p> : (
        <>
          <div ref={box} className="chart-box">
          <svg width={W} height={H} viewBox={`0 0 ${W} ${H}`} className="chart" role="img" aria-labelledby={`${id}-t ${id}-d`} data-metric={shown}>
            <title id={`${id}-t`}>{`Daily ${shown}, last ${days.length} days`}</title>
            <desc id={`${id}-d`}>{summary}</desc>
            {[0, 0.5, 1].map((f) => (
              <g key={f} className="tick">
                <line x1={PAD_L} x2={W - PAD_R} y1={y(max * f)} y2={y(max * f)} />
                <text x={PAD_L - 6} y={y(max * f) + 4} textAnchor="end">{compact(Math.round(max * f))}</text>
              </g>
            ))}
            {values.map((v, i) => (
              <rect key={days[i]} className="col" data-day={days[i]} x={PAD_L + i * slot + slot * 0.15} width={slot * 0.7} y={y(v)} height={Math.max(0, PAD_T + plotH - y(v))} rx={1.5}>
                <title>{`${days[i]}: ${v.toLocaleString()}`}</title>
              </rect>
            ))}
            {[0, Math.floor(days.length / 2), days.length - 1].map((i) => (
              <text key={i} className="axis" x={i === 0 ? PAD_L + slot * 0.15 : i === days.length - 1 ? PAD_L + (i + 1) * slot - slot * 0.15 : PAD_L + i * slot + slot / 2} y={H - 6} textAnchor={i === 0 ? 'start' : i === days.length - 1 ? 'end' : 'middle'}>{days[i]!.slice(5)}</text>
            ))}
          </svg>
          </div>
          <p className="muted chart-summary">{summary}</p>
          <table className="sr-only">
            <caption>{`Daily ${shown}`}</caption>
            <thead><tr><th scope="col">Day</th><th scope="col">{shown}</th></tr></thead>
            <tbody>{days.map((d, i) => values[i] ? <tr key={d}><td>{d}</td><td>{values[i]!.toLocaleString()}</td></tr> : null)}</tbody>
          </table>
        </>
      )}
    </section>
  );
}
