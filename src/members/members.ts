import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import { appendAudit, type AuditActor } from '../audit/audit.js';
import type { TenantService } from '../tenants/tenants.js';
import type { QuotaService } from '../quotas/quotas.js';
import type { Tenant } from '../tenants/model.js';
import { MEMBER_ROLES, ROLE_RANK, type KeyAuthority, type MemberRole } from './roles.js';

/** Who acts on members: for a tenant's own API key, the limits of its power (see KeyAuthority). */
export type MemberActor = AuditActor & { authority?: KeyAuthority };

export interface Member {
  userId: string;
  email: string;
  name: string | null;
  role: MemberRole;
  createdAt: Date;
}

export interface Invitation {
  id: string;
  tenantId: string;
  email: string;
  role: MemberRole;
  invitedBy: string;
  expiresAt: Date;
  acceptedAt: Date | null;
  revokedAt: Date | null;
  createdAt: Date;
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,255}\.[^\s@]{1,63}$/;
function validateEmail(email: unknown): string {
  if (typeof email !== 'string' || email.length > 320 || !EMAIL.test(email)) {
    throw new TenantryError('INVALID_INPUT', `Not an email address: ${JSON.stringify(email)}.`, { field: 'email' });
  }
  return email.trim();
}
function validateRole(role: unknown): MemberRole {
  if (typeof role !== 'string' || !(MEMBER_ROLES as readonly string[]).includes(role)) {
    throw new TenantryError('INVALID_INPUT', `Unknown role ${JSON.stringify(role)}; use one of ${MEMBER_ROLES.join(', ')}.`, { field: 'role' });
  }
  return role as MemberRole;
}
function validateUserId(id: unknown): string {
  if (typeof id !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) {
    throw new TenantryError('INVALID_INPUT', `Not a user id: ${JSON.stringify(id)}.`);
  }
  return id;
}
const tokenHash = (token: string): Buffer => createHash('sha256').update(token).digest();

/**
 * Nobody raises a role above their own, and only an owner makes an owner: a key acting as an admin
 * (a tenant-wide key, or one bound to an admin) can neither grant nor take away the owner role. The
 * attack it stops: a member-bound admin key promoting its own member to owner and demoting the owner.
 */
function assertMayHandle(who: MemberActor, role: MemberRole, what: string): void {
  const a = who.authority;
  if (!a || ROLE_RANK[role] <= ROLE_RANK[a.role]) return;
  const as = a.memberUserId ? `a member with role ${a.role}` : 'a tenant-wide admin';
  throw new TenantryError('FORBIDDEN', `This API key acts as ${as} and cannot ${what} ${role}: ${role === 'owner' ? 'only an owner (or the operator) makes, changes or removes an owner' : 'nobody acts on a role above their own'}.`);
}

type Tx = TransactionSql | Sql;

/**
 * Users (email, unique case-insensitively), memberships with roles, and invitations. Adding a member
 * counts against max_users in the same transaction; a tenant never loses its last owner.
 */
export class MemberService {
  constructor(
    private readonly core: Core, private readonly tenants: TenantService, private readonly quotas: QuotaService,
    /** told after a role change or removal, so cached key permissions are dropped at once */
    private readonly onMembersChanged: (tenantId: string) => void = () => {},
  ) {}

  async list(idOrSlug: string): Promise<Member[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<{ user_id: string; email: string; name: string | null; role: MemberRole; created_at: Date }[]>`
      select m.user_id, m.email, m.name, m.role, m.created_at from tenantry_catalog.memberships m
      where m.tenant_id = ${t.id} order by m.created_at, lower(m.email)`;
    return rows.map((r) => ({ userId: r.user_id, email: r.email, name: r.name, role: r.role, createdAt: r.created_at }));
  }

  async add(idOrSlug: string, input: { email: string; name?: string; role: MemberRole | string }, who: MemberActor = {}): Promise<Member> {
    const email = validateEmail(input?.email);
    const role = validateRole(input?.role);
    assertMayHandle(who, role, 'add a member with the role');
    const name = input.name === undefined ? null : String(input.name).slice(0, 200);
    const t = await this.tenants.resolveForWork(idOrSlug);
    return this.core.admin.begin((tx) => this.addIn(tx, t, email, name, role, who, 'member.added'));
  }

  private async addIn(tx: Tx, t: Tenant, email: string, name: string | null, role: MemberRole, who: AuditActor, action: string): Promise<Member> {
    // The user row is only the identity (one per email, case-insensitively); what this tenant calls the
    // person (name, the email as typed) lives on its membership, so adding someone who belongs to
    // another tenant neither reveals nor changes what that tenant stored (the no-op update only makes
    // RETURNING give the existing id).
    const [user] = await tx<{ id: string }[]>`
      insert into tenantry_catalog.users (id, email) values (${randomUUID()}, ${email})
      on conflict ((lower(email))) do update set email = tenantry_catalog.users.email
      returning id`;
    const inserted = await tx<{ created_at: Date }[]>`
      insert into tenantry_catalog.memberships (tenant_id, user_id, role, email, name) values (${t.id}, ${user!.id}, ${role}, ${email}, ${name})
      on conflict do nothing returning created_at`;
    if (inserted.length === 0) throw new TenantryError('MEMBER_EXISTS', `${email} is already a member of "${t.slug}"; change their role instead.`);
    // the same atomic debit as increment(): refused when max_users is reached, and the transaction rolls back
    if (this.quotas.meters('users')) await this.quotas.debit(tx, t, 'users', 1);
    await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action, target: `user:${user!.id}`, requestId: who.requestId, details: { email, role } });
    return { userId: user!.id, email, name, role, createdAt: inserted[0]!.created_at };
  }

  async updateRole(idOrSlug: string, userId: string, roleInput: MemberRole | string, who: MemberActor = {}): Promise<Member> {
    const role = validateRole(roleInput);
    const uid = validateUserId(userId);
    assertMayHandle(who, role, 'grant the role');
    const t = await this.tenants.get(idOrSlug);
    return this.core.admin.begin(async (tx) => {
      const before = await this.lockForChange(tx, t, uid);
      assertMayHandle(who, before.role, 'change the role of a member who has the role');
      if (before.role === 'owner' && role !== 'owner') await this.assertNotLastOwner(tx, t);
      await tx`update tenantry_catalog.memberships set role = ${role}, updated_at = now() where tenant_id = ${t.id} and user_id = ${uid}`;
      await this.closeInvitationsOf(tx, t, uid, role);
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'member.role_changed', target: `user:${uid}`, requestId: who.requestId, details: { from: before.role, to: role } });
      return { ...before, role };
    }).finally(() => this.onMembersChanged(t.id));
  }

  async remove(idOrSlug: string, userId: string, who: MemberActor = {}): Promise<void> {
    const uid = validateUserId(userId);
    const t = await this.tenants.get(idOrSlug);
    await this.core.admin.begin(async (tx) => {
      const before = await this.lockForChange(tx, t, uid);
      assertMayHandle(who, before.role, 'remove a member who has the role');
      if (before.role === 'owner') await this.assertNotLastOwner(tx, t);
      await tx`delete from tenantry_catalog.memberships where tenant_id = ${t.id} and user_id = ${uid}`;
      // keys tied to the member stop working with the membership
      await tx`update tenantry_catalog.api_keys set revoked_at = coalesce(revoked_at, now()) where tenant_id = ${t.id} and member_user_id = ${uid}`;
      await this.closeInvitationsOf(tx, t, uid, null);
      if (this.quotas.meters('users')) await this.quotas.credit(tx, t.id, 'users', 1);
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'member.removed', target: `user:${uid}`, requestId: who.requestId, details: { email: before.email, role: before.role } });
    }).finally(() => this.onMembersChanged(t.id));
  }

  /**
   * A member's power does not outlive the member through an invitation either: open invitations made
   * with the member's keys are revoked when it is removed (role null), or, when it is demoted, those
   * for a role above its new one (the attack: an admin about to be removed invites a second address
   * of its own as admin, and accepts after the removal).
   */
  private async closeInvitationsOf(tx: Tx, t: Tenant, uid: string, role: MemberRole | null): Promise<void> {
    const above = MEMBER_ROLES.filter((r) => role === null || ROLE_RANK[r] > ROLE_RANK[role]);
    if (above.length === 0) return;
    await tx`
      update tenantry_catalog.invitations set revoked_at = now()
      where tenant_id = ${t.id} and accepted_at is null and revoked_at is null and role = any(${above as unknown as string[]})
        and invited_by in (select 'key:' || k.id from tenantry_catalog.api_keys k where k.tenant_id = ${t.id} and k.member_user_id = ${uid})`;
  }

  /**
   * Locks every membership of the tenant (in a fixed order) so that two concurrent demotions or
   * removals cannot each see another owner and together remove the last one.
   */
  private async lockForChange(tx: Tx, t: Tenant, uid: string): Promise<Member> {
    const rows = await tx<{ user_id: string; email: string; name: string | null; role: MemberRole; created_at: Date }[]>`
      select m.user_id, m.email, m.name, m.role, m.created_at from tenantry_catalog.memberships m
      where m.tenant_id = ${t.id} order by m.user_id for update`;
    const r = rows.find((x) => x.user_id === uid);
    if (!r) throw new TenantryError('MEMBER_NOT_FOUND', `User ${uid} is not a member of "${t.slug}".`);
    return { userId: r.user_id, email: r.email, name: r.name, role: r.role, createdAt: r.created_at };
  }

  private async assertNotLastOwner(tx: Tx, t: Tenant): Promise<void> {
    const [r] = await tx<{ n: number }[]>`select count(*)::int as n from tenantry_catalog.memberships where tenant_id = ${t.id} and role = 'owner'`;
    if ((r?.n ?? 0) <= 1) throw new TenantryError('LAST_OWNER', `That would leave "${t.slug}" without an owner; make another member owner first.`);
  }

  // ---- invitations ----

  /** Creates an invitation; the token is returned this once and stored only as a hash. */
  async invite(idOrSlug: string, input: { email: string; role: MemberRole | string; expiresInHours?: number }, who: MemberActor = {}): Promise<{ invitation: Invitation; token: string }> {
    const email = validateEmail(input?.email);
    const role = validateRole(input?.role);
    assertMayHandle(who, role, 'invite with the role');
    const hours = input.expiresInHours ?? 72;
    if (!Number.isInteger(hours) || hours < 1 || hours > 24 * 90) throw new TenantryError('INVALID_INPUT', 'expiresInHours must be an integer from 1 to 2160.');
    const t = await this.tenants.resolveForWork(idOrSlug);
    const token = `tnt_inv_${randomBytes(24).toString('base64url')}`;
    const invitedBy = who.actor ?? this.core.opts.actor;
    const invitation = await this.core.admin.begin(async (tx) => {
      const [row] = await tx<InvitationRow[]>`
        insert into tenantry_catalog.invitations (id, tenant_id, email, role, token_hash, invited_by, expires_at)
        values (${randomUUID()}, ${t.id}, ${email}, ${role}, ${tokenHash(token)}, ${invitedBy}, now() + make_interval(hours => ${hours}))
        returning *`;
      await appendAudit(tx, { tenantId: t.id, actor: invitedBy, action: 'invitation.created', target: `invitation:${row!.id}`, requestId: who.requestId, details: { email, role, expiresInHours: hours } });
      return toInvitation(row!);
    });
    return { invitation, token };
  }

  async listInvitations(idOrSlug: string): Promise<Invitation[]> {
    const t = await this.tenants.get(idOrSlug);
    const rows = await this.core.admin<InvitationRow[]>`select * from tenantry_catalog.invitations where tenant_id = ${t.id} order by created_at`;
    return rows.map(toInvitation);
  }

  /** Accepts an invitation: the invitee becomes a member (within max_users); a token works once. */
  async accept(token: string, input: { name?: string } = {}, who: AuditActor = {}): Promise<Member & { tenantId: string }> {
    if (typeof token !== 'string' || !token.startsWith('tnt_inv_') || token.length > 100) throw new TenantryError('INVITATION_NOT_FOUND', 'That invitation token is not valid.');
    return this.core.admin.begin(async (tx) => {
      const [inv] = await tx<(InvitationRow & { expired: boolean })[]>`
        select *, expires_at <= now() as expired from tenantry_catalog.invitations where token_hash = ${tokenHash(token)} for update`;
      if (!inv) throw new TenantryError('INVITATION_NOT_FOUND', 'That invitation token is not valid.');
      if (inv.accepted_at || inv.revoked_at) throw new TenantryError('INVITATION_CLOSED', `This invitation was already ${inv.accepted_at ? 'accepted' : 'revoked'}; ask for a new one.`);
      if (inv.expired) throw new TenantryError('INVITATION_EXPIRED', `This invitation expired at ${inv.expires_at.toISOString()}; ask for a new one.`);
      const t = await this.tenants.resolveForWork(inv.tenant_id);
      const member = await this.addIn(tx, t, inv.email, input.name ?? null, inv.role, { actor: who.actor ?? `invitation:${inv.id}`, ...(who.requestId ? { requestId: who.requestId } : {}) }, 'invitation.accepted');
      await tx`update tenantry_catalog.invitations set accepted_at = now(), accepted_by = ${member.userId} where id = ${inv.id}`;
      return { ...member, tenantId: t.id };
    });
  }

  async revokeInvitation(idOrSlug: string, invitationId: string, who: AuditActor = {}): Promise<Invitation> {
    const id = validateUserId(invitationId);
    const t = await this.tenants.get(idOrSlug);
    return this.core.admin.begin(async (tx) => {
      const [row] = await tx<InvitationRow[]>`
        update tenantry_catalog.invitations set revoked_at = now()
        where id = ${id} and tenant_id = ${t.id} and accepted_at is null and revoked_at is null returning *`;
      if (!row) throw new TenantryError('INVITATION_NOT_FOUND', `Tenant "${t.slug}" has no open invitation ${id}.`);
      await appendAudit(tx, { tenantId: t.id, actor: who.actor ?? this.core.opts.actor, action: 'invitation.revoked', target: `invitation:${id}`, requestId: who.requestId, details: { email: row.email } });
      return toInvitation(row);
    });
  }
}

interface InvitationRow {
  id: string; tenant_id: string; email: string; role: MemberRole; invited_by: string; expires_at: Date;
  accepted_at: Date | null; revoked_at: Date | null; created_at: Date;
}
const toInvitation = (r: InvitationRow): Invitation => ({
  id: r.id, tenantId: r.tenant_id, email: r.email, role: r.role, invitedBy: r.invited_by, expiresAt: r.expires_at,
  acceptedAt: r.accepted_at, revokedAt: r.revoked_at, createdAt: r.created_at,
});
