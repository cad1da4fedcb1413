import type { Sql } from 'postgres';

/** The bytes a tenant keeps in object storage (tenantry.objects), added to its measured storage. */
export async function tenantObjectBytes(sql: Sql, tenantId: string): Promise<number> {
  const [r] = await sql<{ bytes: string }[]>`select bytes::text from tenantry_catalog.tenant_object_usage where tenant_id = ${tenantId}`;
  return r ? Number(r.bytes) : 0;
}
