/** Member roles and the permissions (the same vocabulary as API key scopes) each grants. */
export const MEMBER_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

export const ROLE_PERMISSIONS: Record<MemberRole, readonly ('read' | 'write' | 'admin' | 'sql')[]> = {
  owner: ['read', 'write', 'admin', 'sql'],
  admin: ['read', 'write', 'admin', 'sql'],
  member: ['read', 'write'],
  viewer: ['read'],
};
