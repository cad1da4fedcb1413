/** Member roles and the permissions (the same vocabulary as API key scopes) each grants. */
export const MEMBER_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

export const ROLE_PERMISSIONS: Record<MemberRole, readonly ('read' | 'write' | 'admin' | 'sql')[]> = {
  owner: ['read', 'write', 'admin', 'sql'],
  admin: ['read', 'write', 'admin', 'sql'],
  member: ['read', 'write'],
  viewer: ['read'],
};

/** Roles from least to most powerful: a role may grant, change or remove only roles up to its own. */
export const ROLE_RANK: Record<MemberRole, number> = { viewer: 0, member: 1, admin: 2, owner: 3 };

/**
 * The limits of a tenant's own API key acting on its tenant's members and keys. Absent, the caller is
 * the operator (token, CLI) or the library's own code, and is not limited.
 */
export interface KeyAuthority {
  /** the key acting */
  keyId: string;
  /** the member the key is bound to; null for a tenant-wide key */
  memberUserId: string | null;
  /**
   * The role it acts with: its member's current role; a tenant-wide key acts as an admin, so that
   * only an owner (or the operator) makes, demotes or removes an owner.
   */
  role: MemberRole;
  /** what the key may do now: its scopes, within its member's role */
  permissions: readonly ('read' | 'write' | 'admin' | 'sql')[];
}
