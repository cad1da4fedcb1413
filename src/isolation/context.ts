import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';

/**
 * The signed, transaction-local tenant context. The library sets
 * `tenantry.ctx = '<tenant id>.<mode>.<hex HMAC-SHA-256(context key, "<tenant id>.<mode>")>'`; the policies call
 * `tenantry.current_tenant()`, which recomputes the MAC from a key only its owner role can read.
 * SQL injected into a tenant's transaction can read its own context but cannot forge another's.
 */
export class ContextSigner {
  private readonly contextKey: Buffer;

  constructor(private readonly secret: Buffer) {
    this.contextKey = derive(secret, 'context-hmac-key');
  }

  /** The context for a tenant of an isolation mode; the mode is signed with the id. */
  sign(tenantId: string, isolation: 'pooled' | 'schema' | 'database'): string {
    const claim = `${tenantId}.${isolation[0]}`;
    return `${claim}.${createHmac('sha256', this.contextKey).update(claim, 'utf8').digest('hex')}`;
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

  /**
   * The SCRAM-SHA-256 verifier of a role's password, computed here so the server does not spend its
   * own PBKDF2 rounds on every CREATE ROLE (the bulk of a pooled signup's time otherwise). One round:
   * iterations slow down guessing of human passwords; these are 256-bit random secrets, which no
   * iteration count makes any harder to guess.
   */
  roleVerifier(roleName: string): string {
    const password = this.rolePassword(roleName);
    const salt = derive(this.secret, `role-salt:${roleName}`).subarray(0, 16);
    const iterations = 1;
    const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
    const clientKey = createHmac('sha256', salted).update('Client Key').digest();
    const storedKey = createHash('sha256').update(clientKey).digest();
    const serverKey = createHmac('sha256', salted).update('Server Key').digest();
    return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
  }

  /** A key for one purpose (e.g. signing backup manifests), derived from the installation secret. */
  purposeKey(purpose: string): Buffer {
    return derive(this.secret, `purpose:${purpose}`);
  }

  /** Password of a Tenantry login role, derived so that no per-role secret needs storing. */
  rolePassword(roleName: string): string {
    return derive(this.secret, `role-password:${roleName}`).toString('base64url');
  }
}

function derive(secret: Buffer, label: string): Buffer {
  return createHmac('sha256', secret).update(label, 'utf8').digest();
}
