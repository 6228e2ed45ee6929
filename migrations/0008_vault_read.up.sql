-- 0008 vault read: one statement for a key fetch's scoped read.
-- Idempotent: every statement may run again on a schema that has it.
--
-- A fetch used to send BEGIN, the scope (set_config), the SELECT and COMMIT:
-- four statements, most of PostgreSQL's work per fetch. keyward_vault_read
-- sets the scope of its own read (app.tenant_id and app.user_id, local to
-- the transaction) and reads, as one statement: a batch of fetches is one
-- statement each, in one implicit transaction, every read still under its
-- own user's row-level security (it runs with the caller's rights). It
-- names its table by schema and searches only pg_catalog (pg_temp last).
DO $do$
DECLARE
	s name := (SELECT c.relnamespace::regnamespace::name FROM pg_class c
	           WHERE c.oid = 'encryption_vaults'::regclass);
BEGIN
	EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.keyward_vault_read(p_tenant uuid, p_user text)
	RETURNS TABLE (tenant_id uuid, user_id text, wrapped_mk bytea, wrap_iv bytea, format_version int,
	               kek_id int)
	LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
	PERFORM set_config('app.tenant_id', p_tenant::text, true), set_config('app.user_id', p_user, true);
	RETURN QUERY SELECT v.tenant_id, v.user_id, v.wrapped_mk, v.wrap_iv, v.format_version, v.kek_id
		FROM %1$I.encryption_vaults v WHERE v.tenant_id = p_tenant AND v.user_id = p_user;
END
$body$$f$, s);
	EXECUTE format('REVOKE ALL ON FUNCTION %I.keyward_vault_read(uuid, text) FROM PUBLIC', s);
	EXECUTE format('GRANT EXECUTE ON FUNCTION %I.keyward_vault_read(uuid, text) TO keyward_app', s);
END
$do$;
