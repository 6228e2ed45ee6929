-- 0009 prefix lookup: the service asks which tenant one API-key prefix
-- belongs to, and can no longer list the directory (every tenant's id and
-- its keys' prefixes). Idempotent: every statement may run again.
DO $do$
DECLARE
	s name := (SELECT c.relnamespace::regnamespace::name FROM pg_class c
	           WHERE c.oid = 'api_key_prefixes'::regclass);
BEGIN
	-- With its owner's rights (the table is not the service's to read),
	-- naming its table by schema and searching only pg_catalog (pg_temp
	-- last), so no session can shadow what it reads.
	EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.keyward_api_key_tenant(p_prefix text) RETURNS uuid
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
	SELECT d.tenant_id FROM %1$I.api_key_prefixes d WHERE d.prefix = p_prefix
$body$$f$, s);
	EXECUTE format('REVOKE ALL ON FUNCTION %I.keyward_api_key_tenant(text) FROM PUBLIC', s);
	EXECUTE format('GRANT EXECUTE ON FUNCTION %I.keyward_api_key_tenant(text) TO keyward_app', s);
	-- Inserting a key's entry stays the service's (with the key, in one
	-- statement); reading the table is not.
	EXECUTE format('REVOKE SELECT ON %I.api_key_prefixes FROM keyward_app', s);
END
$do$;
