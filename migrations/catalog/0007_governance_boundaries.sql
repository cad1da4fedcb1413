-- Governance boundaries between tenants (issue 8, findings 5 and 6).

-- 1. What a tenant knows about a person is its own. The users table is one row per email across
-- every tenant, so a name or an email's casing stored there was shown to (and overwritten by) every
-- tenant the person belongs to: tenant A adding B's member learnt B's stored name and casing, and A's
-- `name` changed what B's member list showed. Profile fields move to the membership; a user row keeps
-- only the identity (the lower-cased email that makes one person one user).
alter table tenantry_catalog.memberships add column email text, add column name text;

-- Each membership keeps what its tenant sees today: the email as that tenant typed it (recorded in
-- its own audit entry when the member was added or accepted an invitation), else the stored one; the
-- name every tenant of the user was already shown.
update tenantry_catalog.memberships m
set email = coalesce((
      select a.details->>'email' from tenantry_catalog.audit_log a
      where a.tenant_id = m.tenant_id and a.target = 'user:' || m.user_id::text
        and a.action in ('member.added', 'invitation.accepted') and a.details ? 'email'
      order by a.chain_seq desc limit 1), u.email),
    name = u.name
from tenantry_catalog.users u
where u.id = m.user_id;

alter table tenantry_catalog.memberships alter column email set not null;
alter table tenantry_catalog.users drop column name;

-- 2. A member's power does not outlive the member. Keys made with a member-bound key (or rotated
-- from such a key) were unbound, so they kept working after the member was removed or demoted: bind
-- each to the member of the key it came from, transitively.
with recursive derived as (
  select k.id, c.member_user_id
  from tenantry_catalog.api_keys k
  join tenantry_catalog.api_keys c on c.tenant_id = k.tenant_id and (k.created_by = 'key:' || c.id or k.rotated_from = c.id)
  where k.member_user_id is null and c.member_user_id is not null
  union
  select k.id, d.member_user_id
  from tenantry_catalog.api_keys k
  join tenantry_catalog.api_keys c on c.tenant_id = k.tenant_id and (k.created_by = 'key:' || c.id or k.rotated_from = c.id)
  join derived d on d.id = c.id
  where k.member_user_id is null
)
update tenantry_catalog.api_keys k set member_user_id = d.member_user_id
from (select distinct on (id) id, member_user_id from derived order by id) d
where k.id = d.id;

-- and a key bound to someone who is no longer a member stops working, as removal does today
update tenantry_catalog.api_keys k set revoked_at = now()
where k.member_user_id is not null and k.revoked_at is null
  and not exists (select 1 from tenantry_catalog.memberships m where m.tenant_id = k.tenant_id and m.user_id = k.member_user_id);

-- 3. Key creation is announced too: every process keeps the set of key ids (and their hashes) in
-- memory, so a forged key id is refused without a catalog query, and must learn new keys at once.
drop trigger api_keys_notify on tenantry_catalog.api_keys;
create trigger api_keys_notify after insert or update or delete on tenantry_catalog.api_keys
  for each row execute function tenantry_catalog.notify_key_change();
