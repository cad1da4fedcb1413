import type { Sql, TransactionSql } from 'postgres';

export interface AuditActor {
  /** who acted: `operator`, `key:<id>`, `user:<id>`, `system` ... */
  actor?: string;
  /** the request this change belongs to, for correlating with logs */
  requestId?: string;
}

export interface AuditEntryInput {
  tenantId: string | null;
  actor: string;
  action: string;
  target: string;
  details?: Record<string, unknown>;
  requestId?: string | undefined;
}

export interface AuditEntry {
  id: string;
  tenantId: string | null;
  actor: string;
  action: string;
  target: string;
  details: Record<string, unknown>;
  requestId: string | null;
  createdAt: Date;
}

const SECRET_KEY = /secret|password|passwd|token|api[-_]?key|authorization|credential|private/i;

/** Replaces the values of secret-looking keys, at any depth, so no secret reaches the audit log. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, SECRET_KEY.test(k) ? '[redacted]' : redact(v)]),
    );
  }
  return value;
}

/** Appends one entry; callers pass the transaction of the change so both commit or neither does. */
export async function appendAudit(tx: TransactionSql | Sql, e: AuditEntryInput): Promise<void> {
  const details = redact(e.details ?? {}) as Record<string, unknown>;
  await tx`
    insert into tenantry_catalog.audit_log (tenant_id, actor, action, target, details, request_id)
    values (${e.tenantId}, ${e.actor}, ${e.action}, ${e.target}, ${tx.json(details as never)}, ${e.requestId ?? null})`;
}

export async function listAudit(sql: Sql, tenantId: string, opts: { limit: number; before?: string }): Promise<AuditEntry[]> {
  const rows = await sql<{ id: string; tenant_id: string | null; actor: string; action: string; target: string; details: Record<string, unknown>; request_id: string | null; created_at: Date }[]>`
    select id, tenant_id, actor, action, target, details, request_id, created_at
    from tenantry_catalog.audit_log
    where tenant_id = ${tenantId} ${opts.before ? sql`and id < ${opts.before}` : sql``}
    order by id desc limit ${opts.limit}`;
  return rows.map((r) => ({
    id: String(r.id), tenantId: r.tenant_id, actor: r.actor, action: r.action, target: r.target,
    details: r.details, requestId: r.request_id, createdAt: r.created_at,
  }));
}
