-- Reverts 0001. The keyward_app role is kept: roles are cluster-wide and
-- other databases may use it.
DROP TABLE IF EXISTS audit_chains;
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS audit_log_append_only();
DROP TABLE IF EXISTS tenants;
DO $$
BEGIN
	IF to_regclass('schema_migrations') IS NOT NULL
	   AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keyward_app') THEN
		REVOKE SELECT ON schema_migrations FROM keyward_app;
	END IF;
END
$$;
