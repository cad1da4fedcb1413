import { createHmac } from 'node:crypto';

/**
 * The signed, transaction-local tenant context. The library sets
 * `tenantry.ctx = '<tenant id>.<hex HMAC-SHA-256(context key, tenant id)>'`; the policies call
 * `tenantry.current_tenant()`, which recomputes the MAC from a key only its owner role can read.
 * SQL injected into a tenant's transaction can read its own context but cannot forge another's.
 */
export class ContextSigner {
  private readonly contextKey: Buffer;

  constructor(private readonly secret: Buffer) {
    this.contextKey = derive(secret, 'context-hmac-key');
  }

  sign(tenantId: string): string {
    return `${tenantId}.${createHmac('sha256', this.contextKey).update(tenantId, 'utf8').digest('hex')}`;
  }

  /** HMAC's two padded keys, so PostgreSQL's built-in sha256() can compute the MAC without pgcrypto. */
  paddedKeys(): { inner: Buffer; outer: Buffer } {
    const block = Buffer.alloc(64);
    this.contextKey.copy(block);
    const inner = Buffer.alloc(64);
    const outer = Buffer.alloc(64);
    for (let i = 0; i < 64; i++) {
      inner[i] = block[i]! ^ 0x36;
      outer[i] = block[i]! ^ 0x5c;
    }
    return { inner, outer };
  }

  /** Password of a Tenantry login role, derived so that no per-role secret needs storing. */
  rolePassword(roleName: string): string {
    return derive(this.secret, `role-password:${roleName}`).toString('base64url');
  }
}

function derive(secret: Buffer, label: string): Buffer {
  return createHmac('sha256', secret).update(label, 'utf8').digest();
}
