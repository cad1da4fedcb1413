import { StrictMode, useCallback, useEffect, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { ApiError, clientFor, forgetSession, loadSession, must, saveSession, signIn, type Session, type Tenant } from './api.ts';
import { CopyOnce, ErrorNote, StatusBadge } from './ui.tsx';
import { TenantPage } from './tenant-page.tsx';
import { PlansPage, WebhooksPage } from './other-pages.tsx';
import { MigrationsPage } from './migrations-page.tsx';
import { Overview } from './overview-page.tsx';
import './styles.css';

/** Hash routes (#/tenants/acme): the token never goes in the URL, only the page does. */
function useRoute(): string[] {
  const read = (): string[] => location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = (): void => { setRoute(read()); document.getElementById('main')?.focus(); };
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}



function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }): ReactNode {
  const [token, setToken] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setBusy(true); setError(null);
    try { onSignedIn(await signIn(token.trim())); } catch (err) { setError(err); } finally { setBusy(false); }
  };
  return (
    <main className="signin" id="main" tabIndex={-1}>
      <form className="card" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Tenantry console</h1>
        <p className="muted">Sign in with the operator token (every tenant) or a tenant API key (that tenant only). It is kept in this browser tab until you sign out or close it.</p>
        <label htmlFor="token">Operator token or API key</label>
        <input id="token" name="token" type="password" autoComplete="off" required value={token} onChange={(e) => setToken(e.target.value)} aria-describedby={error ? 'signin-error' : undefined} />
        <div id="signin-error"><ErrorNote error={error} /></div>
        <button type="submit" className="primary" disabled={busy || token.trim() === ''}>{busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </main>
  );
}

const STATUSES = ['provisioning', 'active', 'trial', 'suspended', 'deleted'];
const MODES = ['pooled', 'schema', 'database'];

function useTiers(session: Session): string[] {
  const [tiers, setTiers] = useState<string[]>([]);
  useEffect(() => {
    clientFor(session.token).GET('/v1/plans', {}).then((r) => { if (r.data) setTiers(r.data.plans.tiers.map((t) => t.name)); }, () => {});
  }, [session.token]);
  return tiers;
}

function Tenants({ session }: { session: Session }): ReactNode {
  const tiers = useTiers(session);
  const [filters, setFilters] = useState({ status: '', tier: '', isolation: '' });
  const [search, setSearch] = useState('');
  // what the server is asked for: the search box settles for 250 ms first, so typing is one request
  const [q, setQ] = useState('');
  const [sort, setSort] = useState<{ key: 'slug' | 'name' | 'status' | 'tier' | 'created_at'; dir: 1 | -1 }>({ key: 'created_at', dir: -1 });
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<{ items: Tenant[]; nextCursor: string | null } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    const t = setTimeout(() => { const v = search.trim().slice(0, 100); if (v !== q) { setQ(v); setCursors([undefined]); } }, 250);
    return () => clearTimeout(t);
  }, [search, q]);
  useEffect(() => {
    setError(null);
    let stale = false;
    const query = {
      limit: 50, sort: sort.key, order: sort.dir === 1 ? 'asc' as const : 'desc' as const, ...(q ? { q } : {}), ...(cursor ? { cursor } : {}),
      ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== '')),
    };
    // an answer to an older query (a slower request overtaken by the next keystroke) is dropped
    must(clientFor(session.token).GET('/v1/tenants', { params: { query } })).then((p) => { if (!stale) setPage(p); }, (e) => { if (!stale) setError(e); });
    return () => { stale = true; };
  }, [session.token, filters, cursor, q, sort]);
  const setFilter = (k: keyof typeof filters, v: string): void => { setFilters({ ...filters, [k]: v }); setCursors([undefined]); };
  const rows = page?.items ?? [];
  const header = (key: typeof sort.key, label: string): ReactNode => (
    <th scope="col" aria-sort={sort.key === key ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none'}>
      <button type="button" className="sort" onClick={() => { setSort({ key, dir: sort.key === key ? (sort.dir === 1 ? -1 : 1) : 1 }); setCursors([undefined]); }}>{label}{sort.key === key ? (sort.dir === 1 ? ' ▲' : ' ▼') : ''}</button>
    </th>
  );
  return (
    <>
      <div className="title-row"><h1>Tenants</h1><a className="button primary" href="#/tenants/new">New tenant</a></div>
      <div className="filters" role="search">
        <div><label htmlFor="search">Search (start of slug or name)</label><input id="search" type="search" maxLength={100} value={search} onChange={(e) => setSearch(e.target.value)} /></div>
        <div><label htmlFor="f-status">Status</label><select id="f-status" value={filters.status} onChange={(e) => setFilter('status', e.target.value)}><option value="">Any</option>{STATUSES.map((s) => <option key={s}>{s}</option>)}</select></div>
        <div><label htmlFor="f-tier">Tier</label><select id="f-tier" value={filters.tier} onChange={(e) => setFilter('tier', e.target.value)}><option value="">Any</option>{tiers.map((s) => <option key={s}>{s}</option>)}</select></div>
        <div><label htmlFor="f-mode">Isolation</label><select id="f-mode" value={filters.isolation} onChange={(e) => setFilter('isolation', e.target.value)}><option value="">Any</option>{MODES.map((s) => <option key={s}>{s}</option>)}</select></div>
      </div>
      <ErrorNote error={error} />
      <div className="table-wrap" tabIndex={0} role="region" aria-label="Tenants table">
        <table>
          <caption className="sr-only">Tenants, page {cursors.length}</caption>
          <thead><tr>{header('slug', 'Slug')}{header('name', 'Name')}{header('status', 'Status')}{header('tier', 'Tier')}<th scope="col">Isolation</th>{header('created_at', 'Created')}</tr></thead>
          <tbody>
            {rows.map((t) => (
              <tr key={t.id}>
                <td><a href={`#/tenants/${encodeURIComponent(t.id)}`}>{t.slug}</a></td>
                <td>{t.name}</td><td><StatusBadge status={t.status} /></td><td>{t.tier}</td><td>{t.isolation}</td>
                <td><time dateTime={t.createdAt}>{new Date(t.createdAt).toLocaleDateString()}</time></td>
              </tr>
            ))}
            {page && rows.length === 0 && <tr><td colSpan={6} className="muted">No tenants match.</td></tr>}
          </tbody>
        </table>
      </div>
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>Previous</button>
        <span>Page {cursors.length}</span>
        <button type="button" disabled={!page?.nextCursor} onClick={() => setCursors([...cursors, page!.nextCursor!])}>Next</button>
      </nav>
    </>
  );
}


const FIELD_OF: Record<string, string> = { INVALID_SLUG: 'slug', SLUG_TAKEN: 'slug', RESERVED_SLUG: 'slug', INVALID_TIER: 'tier', INVALID_ISOLATION: 'isolation', INVALID_NAME: 'name', INVALID_METADATA: 'metadata' };

function CreateTenant({ session }: { session: Session }): ReactNode {
  const tiers = useTiers(session);
  const [form, setForm] = useState({ slug: '', name: '', tier: '', isolation: '' });
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<{ tenant: Tenant; key: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setBusy(true); setError(null); setFieldErrors({});
    try {
      const body = { slug: form.slug.trim(), ...(form.name ? { name: form.name } : {}), ...(form.tier ? { tier: form.tier } : {}), ...(form.isolation ? { isolation: form.isolation } : {}) };
      const t = await must(clientFor(session.token).POST('/v1/tenants', { body }));
      setCreated({ tenant: t as Tenant, key: (t as { apiKey: string }).apiKey });
    } catch (err) {
      const field = err instanceof ApiError ? (FIELD_OF[err.problem.code] ?? Object.keys(form).find((f) => err.problem.code.includes(f.toUpperCase()) || err.problem.detail.includes(`/${f}`))) : undefined;
      if (field && err instanceof ApiError) setFieldErrors({ [field]: `${err.problem.title}${err.problem.detail ? `: ${err.problem.detail}` : ''}` });
      else setError(err);
    } finally { setBusy(false); }
  };
  if (created) {
    return (
      <>
        <h1>Tenant created</h1>
        <p><a href={`#/tenants/${encodeURIComponent(created.tenant.id)}`}>{created.tenant.slug}</a> is {created.tenant.status}.</p>
        <CopyOnce label="The tenant's first API key." secret={created.key} />
        <p><a href={`#/tenants/${encodeURIComponent(created.tenant.id)}`}>Open the tenant</a> · <a href="#/tenants">Back to the list</a></p>
      </>
    );
  }
  const field = (name: keyof typeof form, label: string, input: ReactNode, hint?: string): ReactNode => (
    <div className="field">
      <label htmlFor={`new-${name}`}>{label}</label>
      {input}
      {hint && <p className="hint" id={`new-${name}-hint`}>{hint}</p>}
      {fieldErrors[name] && <p className="field-error" id={`new-${name}-error`} role="alert">{fieldErrors[name]}</p>}
    </div>
  );
  const describedBy = (name: string): string | undefined => [fieldErrors[name] ? `new-${name}-error` : '', name === 'slug' ? 'new-slug-hint' : ''].filter(Boolean).join(' ') || undefined;
  return (
    <>
      <h1>New tenant</h1>
      <form className="card form" onSubmit={submit} noValidate>
        {field('slug', 'Slug', <input id="new-slug" required value={form.slug} aria-invalid={Boolean(fieldErrors.slug)} aria-describedby={describedBy('slug')} onChange={(e) => setForm({ ...form, slug: e.target.value })} />, 'Lower-case letters, digits and hyphens, e.g. acme-corp.')}
        {field('name', 'Name', <input id="new-name" value={form.name} aria-invalid={Boolean(fieldErrors.name)} aria-describedby={describedBy('name')} onChange={(e) => setForm({ ...form, name: e.target.value })} />)}
        {field('tier', 'Tier', <select id="new-tier" value={form.tier} aria-describedby={describedBy('tier')} onChange={(e) => setForm({ ...form, tier: e.target.value })}><option value="">The default tier</option>{tiers.map((t) => <option key={t}>{t}</option>)}</select>)}
        {field('isolation', 'Isolation mode', <select id="new-isolation" value={form.isolation} aria-describedby={describedBy('isolation')} onChange={(e) => setForm({ ...form, isolation: e.target.value })}><option value="">The installation's default</option>{MODES.map((m) => <option key={m}>{m}</option>)}</select>)}
        <ErrorNote error={error} />
        <div className="actions"><button type="submit" className="primary" disabled={busy}>{busy ? 'Creating…' : 'Create tenant'}</button><a href="#/tenants">Cancel</a></div>
      </form>
    </>
  );
}

function App(): ReactNode {
  const [session, setSession] = useState<Session | null>(loadSession);
  const route = useRoute();
  const mainRef = useRef<HTMLElement>(null);
  const signOut = useCallback(() => { forgetSession(); setSession(null); location.hash = ''; }, []);
  if (!session) return <SignIn onSignedIn={(s) => { saveSession(s); setSession(s); location.hash = s.kind === 'tenant' ? `#/tenants/${s.tenantId}` : '#/'; }} />;
  const links: [string, string][] = session.kind === 'operator'
    ? [['#/', 'Overview'], ['#/tenants', 'Tenants'], ['#/plans', 'Plans'], ['#/migrations', 'Migrations'], ['#/webhooks', 'Webhooks']]
    : [[`#/tenants/${session.tenantId}`, 'My tenant'], ['#/plans', 'Plans']];
  const [page, arg] = route;
  let body: ReactNode;
  if (session.kind === 'tenant' && (page === undefined || (page === 'tenants' && arg === undefined))) body = <TenantPage session={session} id={session.tenantId} />;
  else if (page === undefined) body = <Overview session={session} />;
  else if (page === 'tenants' && arg === 'new') body = <CreateTenant session={session} />;
  else if (page === 'tenants' && arg) body = <TenantPage key={arg} session={session} id={arg} />;
  else if (page === 'tenants') body = <Tenants session={session} />;
  else if (page === 'plans') body = <PlansPage session={session} />;
  else if (page === 'webhooks' && session.kind === 'operator') body = <WebhooksPage session={session} />;
  else if (page === 'migrations' && session.kind === 'operator') body = <MigrationsPage session={session} />;
  else body = <><h1>Not found</h1><p>There is no such page.</p></>;
  const current = `#/${route.join('/')}`;
  return (
    <>
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); mainRef.current?.focus(); }}>Skip to content</a>
      <header className="top">
        <span className="brand">Tenantry</span>
        <nav aria-label="Main"><ul>{links.map(([href, label]) => <li key={href}><a href={href} aria-current={current === href || (href !== '#/' && current.startsWith(href)) ? 'page' : undefined}>{label}</a></li>)}</ul></nav>
        <span className="who">{session.kind === 'operator' ? 'Operator' : `Key of ${session.slug}`}</span>
        <button type="button" onClick={signOut}>Sign out</button>
      </header>
      <main id="main" ref={mainRef} tabIndex={-1}>{body}</main>
    </>
  );
}

createRoot(document.getElementById('root')!).render(<StrictMode><App /></StrictMode>);
