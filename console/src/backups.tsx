import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { must, type clientFor, type Tenant } from './api.ts';
import { ErrorNote } from './ui.tsx';

type Api = ReturnType<typeof clientFor>;
type Backup = { id: string; kind: string; isolation: string; rows: number; bytes: number; createdAt: string; migrationVersion: number };
type Operation = { id: string; kind: string; status: 'queued' | 'running' | 'succeeded' | 'failed'; progress: { step: string; done: number; total: number } | null; error: { code: string; message: string } | null };

const size = (n: number): string => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);

/**
 * A tenant's backups (operator): the list, "Back up now", and a restore behind a dialog that wants the
 * tenant's slug typed (it replaces every row of the tenant). Both are operations the job runner does;
 * this polls GET /v1/operations/{opId} until it is over.
 */
export function Backups({ api, tenant }: { api: Api; tenant: Tenant }): ReactNode {
  const [items, setItems] = useState<Backup[] | null>(null);
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [restoring, setRestoring] = useState<Backup | null>(null);
  const [typed, setTyped] = useState('');
  const dialog = useRef<HTMLDialogElement>(null);
  const id = useId();
  const path = { params: { path: { id: tenant.id } } };
  const load = useCallback(() => { must(api.GET('/v1/tenants/{id}/backups', { params: { path: { id: tenant.id } } })).then((r) => setItems((r as { items: Backup[] }).items), setError); }, [api, tenant.id]);
  useEffect(load, [load]);
  const follow = async (started: Operation): Promise<void> => {
    let cur = started;
    setOp(cur);
    while (cur.status === 'queued' || cur.status === 'running') {
      await new Promise((r) => setTimeout(r, 700));
      cur = (await must(api.GET('/v1/operations/{opId}', { params: { path: { opId: cur.id } } }))) as Operation;
      setOp(cur);
    }
    load();
  };
  const backUp = (): void => { setError(null); must(api.POST('/v1/tenants/{id}/backups', path)).then((o) => follow(o as Operation)).catch(setError); };
  const confirmRestore = (e: FormEvent): void => {
    e.preventDefault();
    if (!restoring || typed !== tenant.slug) return;
    dialog.current?.close();
    setError(null);
    must(api.POST('/v1/tenants/{id}/backups/{backupId}/restore', { params: { path: { id: tenant.id, backupId: restoring.id } }, body: { confirm: true } }))
      .then((o) => follow(o as Operation)).catch(setError);
  };
  const busy = op !== null && (op.status === 'queued' || op.status === 'running');
  return (
    <section className="card wide" aria-labelledby={`${id}-h`}>
      <div className="title-row"><h2 id={`${id}-h`}>Backups</h2><button type="button" disabled={busy} onClick={backUp}>Back up now</button></div>
      <p role="status" className={op ? (op.status === 'failed' ? 'error' : op.status === 'succeeded' ? 'notice' : 'muted') : 'sr-only'}>
        {op ? `${op.kind === 'restore' ? 'Restore' : 'Backup'} ${op.status}${op.progress && op.status === 'running' ? ` (${op.progress.step} ${op.progress.done}/${op.progress.total})` : ''}${op.error ? `: ${op.error.message}` : ''}` : ''}
      </p>
      <ErrorNote error={error} />
      {items === null ? <p aria-busy="true">Loading…</p> : items.length === 0 ? <p className="muted">No backups yet.</p> : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label={`Backups of ${tenant.slug}`}>
          <table>
            <thead><tr><th scope="col">Taken</th><th scope="col">Kind</th><th scope="col">Rows</th><th scope="col">Size</th><th scope="col">Version</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
            <tbody>
              {items.map((b) => (
                <tr key={b.id} data-backup={b.id}>
                  <td><time dateTime={b.createdAt}>{new Date(b.createdAt).toLocaleString()}</time></td><td>{b.kind}</td><td>{b.rows.toLocaleString()}</td><td>{size(b.bytes)}</td><td className="mono">{b.migrationVersion}</td>
                  <td><button type="button" disabled={busy} aria-label={`Restore the backup of ${new Date(b.createdAt).toLocaleString()}`} onClick={() => { setRestoring(b); setTyped(''); dialog.current?.showModal(); }}>Restore</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <dialog ref={dialog} aria-labelledby={`${id}-t`}>
        <form onSubmit={confirmRestore}>
          <h2 id={`${id}-t`}>Restore {tenant.slug}?</h2>
          <p>Every row of the tenant is replaced by the backup of {restoring ? new Date(restoring.createdAt).toLocaleString() : ''}. Writes made since are lost.</p>
          <label htmlFor={`${id}-s`}>Type <strong className="mono">{tenant.slug}</strong> to confirm</label>
          <input id={`${id}-s`} autoComplete="off" value={typed} onChange={(e) => setTyped(e.target.value)} />
          <div className="actions">
            <button type="submit" className="danger" disabled={typed !== tenant.slug}>Restore</button>
            <button type="button" onClick={() => dialog.current?.close()}>Cancel</button>
          </div>
        </form>
      </dialog>
    </section>
  );
}
