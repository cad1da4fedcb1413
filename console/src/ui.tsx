import { useId, useState, type ReactNode } from 'react';
import { ApiError } from './api.ts';

export function ErrorNote({ error }: { error: unknown }): ReactNode {
  if (!error) return null;
  const p = error instanceof ApiError ? error.problem : null;
  return <p className="error" role="alert">{p ? <><strong>{p.title}</strong> ({p.code}){p.detail ? `: ${p.detail}` : ''}</> : String((error as Error).message ?? error)}</p>;
}

export function StatusBadge({ status }: { status: string }): ReactNode {
  return <span className={`badge badge-${status}`}>{status}</span>;
}

export function CopyOnce({ label, secret }: { label: string; secret: string }): ReactNode {
  const [copied, setCopied] = useState(false);
  const id = useId();
  return (
    <div className="secret" role="status">
      <p><strong>{label}</strong> It is shown this once: copy it now.</p>
      <div className="secret-row">
        <input id={id} aria-label={label} readOnly value={secret} className="mono" onFocus={(e) => e.currentTarget.select()} />
        <button type="button" onClick={() => { void navigator.clipboard?.writeText(secret).then(() => setCopied(true), () => {}); }}>{copied ? 'Copied' : 'Copy'}</button>
      </div>
    </div>
  );
}
