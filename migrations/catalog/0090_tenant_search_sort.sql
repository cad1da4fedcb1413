-- The console's tenants list searches and sorts on the server (issue #17), so it stays fast with
-- 10,000 tenants. Search is a case-insensitive prefix match on slug or name: `lower(x) like 'q%'`
-- can use a text_pattern_ops btree whatever the database's collation, and the two are ORed in a
-- bitmap scan. Each sort is keyset-paginated on (column, seq), seq breaking ties, so every sort has
-- the index its `where (col, seq) > (...) order by col, seq` walks.
create index tenants_slug_prefix_idx on tenantry_catalog.tenants (lower(slug) text_pattern_ops);
create index tenants_name_prefix_idx on tenantry_catalog.tenants (lower(name) text_pattern_ops);
create index tenants_slug_seq_idx on tenantry_catalog.tenants (slug, seq);
create index tenants_name_seq_idx on tenantry_catalog.tenants (name, seq);
create index tenants_created_seq_idx on tenantry_catalog.tenants (created_at, seq);
create index tenants_status_seq_idx on tenantry_catalog.tenants (status, seq);
create index tenants_tier_seq_idx on tenantry_catalog.tenants (tier, seq);
