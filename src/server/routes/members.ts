import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as S from '../schemas.js';
import { bearer, plain, problemResponses, routeAccess, type RouteDeps } from './shared.js';

/** A tenant's members and invitations, and accepting an invitation (its token is the credential). */
export async function memberRoutes(app: FastifyInstance, deps: RouteDeps): Promise<void> {
  const { tenantry } = deps;
  const { access, actor } = routeAccess(deps);
  app.post('/v1/tenants/:id/members', { schema: { tags: ['members'], summary: 'Add a member (counts against max_users)', security: bearer, params: S.IdParams, body: S.AddMemberBody, response: { 201: { $ref: 'Member#' }, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return reply.status(201).send(plain(await tenantry.members.add(t.id, req.body as Static<typeof S.AddMemberBody>, actor(req))));
  });
  app.get('/v1/tenants/:id/members', { schema: { tags: ['members'], summary: 'List members', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'Member#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'read');
    return plain(await tenantry.members.list(t.id));
  });
  app.patch('/v1/tenants/:id/members/:userId', { schema: { tags: ['members'], summary: 'Change a member\'s role', security: bearer, params: S.MemberParams, body: S.UpdateMemberBody, response: { 200: { $ref: 'Member#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.MemberParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.members.updateRole(t.id, p.userId, (req.body as Static<typeof S.UpdateMemberBody>).role, actor(req)));
  });
  app.delete('/v1/tenants/:id/members/:userId', { schema: { tags: ['members'], summary: 'Remove a member (never the last owner)', security: bearer, params: S.MemberParams, response: { 204: { type: 'null' }, ...problemResponses } } }, async (req, reply) => {
    const p = req.params as Static<typeof S.MemberParams>;
    const t = await access(req, p.id, 'admin');
    await tenantry.members.remove(t.id, p.userId, actor(req));
    return reply.status(204).send();
  });
  app.post('/v1/tenants/:id/invitations', { schema: { tags: ['members'], summary: 'Invite by email (token shown once)', security: bearer, params: S.IdParams, body: S.InviteBody, response: { 201: { type: 'object', properties: { invitation: { $ref: 'Invitation#' }, token: { type: 'string' } } }, ...problemResponses } } }, async (req, reply) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return reply.status(201).send(plain(await tenantry.members.invite(t.id, req.body as Static<typeof S.InviteBody>, actor(req))));
  });
  app.get('/v1/tenants/:id/invitations', { schema: { tags: ['members'], summary: 'List invitations', security: bearer, params: S.IdParams, response: { 200: { type: 'array', items: { $ref: 'Invitation#' } }, ...problemResponses } } }, async (req) => {
    const t = await access(req, (req.params as { id: string }).id, 'admin');
    return plain(await tenantry.members.listInvitations(t.id));
  });
  app.delete('/v1/tenants/:id/invitations/:invitationId', { schema: { tags: ['members'], summary: 'Revoke an invitation', security: bearer, params: S.InvitationParams, response: { 200: { $ref: 'Invitation#' }, ...problemResponses } } }, async (req) => {
    const p = req.params as Static<typeof S.InvitationParams>;
    const t = await access(req, p.id, 'admin');
    return plain(await tenantry.members.revokeInvitation(t.id, p.invitationId, actor(req)));
  });
  app.post('/v1/invitations/accept', { schema: { tags: ['members'], summary: 'Accept an invitation (the token is the credential)', body: S.AcceptInvitationBody, response: { 200: { type: 'object', properties: { tenantId: { type: 'string' }, userId: { type: 'string' }, email: { type: 'string' }, role: { type: 'string' } } }, ...problemResponses } } }, async (req) => {
    const b = req.body as Static<typeof S.AcceptInvitationBody>;
    return plain(await tenantry.members.accept(b.token, b.name !== undefined ? { name: b.name } : {}, { requestId: String(req.id) }));
  });
}
