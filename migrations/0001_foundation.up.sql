-- 0001 foundation: the service role, tenants, and the append-only audit log.
-- Idempotent: every statement may run again on a schema that has it.

-- The service's group role. Deployments create a LOGIN role IN ROLE
-- keyward_app; it owns nothing, so row-level security always applies to it.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keyward_app') THEN
		CREATE ROLE keyward_app NOLOGIN NOBYPASSRLS;
	END IF;
EXCEPTION
	-- Roles are cluster-wide: another database's migration may win the race.
	WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- keywardd checks the schema version at boot with its own role.
DO $$
BEGIN
	IF to_regclass('schema_migrations') IS NOT NULL THEN
		GRANT SELECT ON schema_migrations TO keyward_app;
	END IF;
END
$$;

CREATE TABLE IF NOT EXISTS tenants (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
	created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenants_isolation ON tenants;
CREATE POLICY tenants_isolation ON tenants
	USING (id::text = current_setting('app.tenant_id', true));
-- Tenants are created by keywardctl as the schema owner.
GRANT SELECT ON tenants TO keyward_app;

-- Audit rows are chained per writer (chain_id, seq); context is json, not
-- jsonb, because json keeps the exact text the MAC was computed over.
CREATE TABLE IF NOT EXISTS audit_log (
	id bigserial PRIMARY KEY,
	chain_id uuid NOT NULL,
	seq bigint NOT NULL,
	at timestamptz NOT NULL,
	tenant_id uuid NULL,
	actor text NOT NULL,
	action text NOT NULL,
	target text,
	status text NOT NULL,
	ip text,
	user_agent text,
	request_id text,
	context json NOT NULL DEFAULT '{}',
	key_version int NOT NULL,
	prev_mac bytea NOT NULL,
	mac bytea NOT NULL,
	UNIQUE (chain_id, seq)
);
CREATE INDEX IF NOT EXISTS audit_log_tenant_at ON audit_log (tenant_id, at);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
		USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER audit_log_no_change
	BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate
	BEFORE TRUNCATE ON audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
-- ALWAYS: session_replication_role = replica does not switch them off.
ALTER TABLE audit_log ENABLE ALWAYS TRIGGER audit_log_no_change;
ALTER TABLE audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS audit_log_insert ON audit_log;
CREATE POLICY audit_log_insert ON audit_log FOR INSERT
	WITH CHECK (tenant_id IS NULL OR tenant_id::text = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS audit_log_select ON audit_log;
CREATE POLICY audit_log_select ON audit_log FOR SELECT
	USING (tenant_id::text = current_setting('app.tenant_id', true));
-- Insert only: no SELECT, UPDATE, DELETE or TRUNCATE for the service.
GRANT INSERT ON audit_log TO keyward_app;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO keyward_app;

-- One row per chain: its head, updated in the transaction of each append.
-- Not tenant-scoped (no tenant data), so no RLS.
CREATE TABLE IF NOT EXISTS audit_chains (
	chain_id uuid PRIMARY KEY,
	writer text NOT NULL,
	started_at timestamptz NOT NULL DEFAULT now(),
	last_seq bigint NOT NULL,
	last_mac bytea NOT NULL,
	key_version int NOT NULL,
	head_mac bytea NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON audit_chains TO keyward_app;
