import type { Sql } from 'postgres';

export interface AuditVerification {
  ok: boolean;
  /** entries checked */
  entries: number;
  /** the first entry that does not fit the chain, and why */
  firstBroken?: { id: string; chainSeq: number; reason: 'sequence gap' | 'previous hash mismatch' | 'content does not match its hash' };
}

/**
 * Recomputes one tenant's audit chain in the database, with the same function that computed it on
 * insert, and names the first entry that was changed, removed or spliced in.
 */
export async function verifyAuditChain(sql: Sql, tenantId: string | null): Promise<AuditVerification> {
  const rows = await sql<{ id: string; chain_seq: string; pred_seq: string | null; prev_ok: boolean; hash_ok: boolean }[]>`
    select a.id, a.chain_seq, lag(a.chain_seq) over w as pred_seq,
           a.prev_hash is not distinct from lag(a.hash) over w as prev_ok,
           a.hash = tenantry_catalog.audit_entry_hash(a.prev_hash, a) as hash_ok
    from tenantry_catalog.audit_log a
    where a.tenant_id is not distinct from ${tenantId}::uuid
    window w as (order by a.chain_seq)
    order by a.chain_seq`;
  // Retention removes the oldest entries of a chain only through audit_purge(), which records the
  // last removed entry's position and hash: the chain is anchored there instead of at entry 1.
  const [anchor] = await sql<{ chain_seq: string; hash: Buffer }[]>`
    select chain_seq, hash from tenantry_catalog.audit_anchors
    where chain = coalesce(${tenantId}::uuid, '00000000-0000-0000-0000-000000000000'::uuid)`;
  const anchorOk = async (id: string): Promise<boolean> => {
    if (!anchor) return true;
    const [f] = await sql<{ ok: boolean }[]>`select prev_hash = ${anchor.hash} as ok from tenantry_catalog.audit_log where id = ${id}`;
    return Boolean(f?.ok);
  };
  for (const r of rows) {
    const seq = Number(r.chain_seq);
    const first = r.pred_seq === null;
    const reason = seq !== (first ? (anchor ? Number(anchor.chain_seq) + 1 : 1) : Number(r.pred_seq) + 1) ? 'sequence gap'
      : first && anchor ? (await anchorOk(r.id) ? (!r.hash_ok ? 'content does not match its hash' : undefined) : 'previous hash mismatch')
      : !r.prev_ok ? 'previous hash mismatch'
      : !r.hash_ok ? 'content does not match its hash'
      : undefined;
    if (reason) return { ok: false, entries: rows.length, firstBroken: { id: String(r.id), chainSeq: seq, reason } };
  }
  return { ok: true, entries: rows.length };
}
