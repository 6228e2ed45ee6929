-- 0004 vault: per-user master keys wrapped by the token's KEK (DESIGN §5.3).
-- Idempotent: every statement may run again on a schema that has it.

-- One row per user: the master key wrapped with AES-256-GCM under KEK
-- version kek_id, with AAD "keyward:v1:encryption-vault:<tenant>:<user>:<kek_id>".
-- Nothing else about the key is stored. No foreign key to tenants (see 0003).
CREATE TABLE IF NOT EXISTS encryption_vaults (
	tenant_id uuid NOT NULL,
	user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
	wrapped_mk bytea NOT NULL CHECK (length(wrapped_mk) = 48),
	wrap_iv bytea NOT NULL CHECK (length(wrap_iv) = 12),
	format_version int NOT NULL CHECK (format_version = 1),
	kek_id int NOT NULL CHECK (kek_id > 0),
	created_at timestamptz NOT NULL DEFAULT now(),
	rotated_at timestamptz NULL,
	PRIMARY KEY (tenant_id, user_id)
);
-- kek rewrap and kek retire look rows up by KEK version.
CREATE INDEX IF NOT EXISTS encryption_vaults_kek ON encryption_vaults (kek_id);

-- A row is visible and writable only in a transaction that names both its
-- tenant and its user. The service may not delete (rotation overwrites).
ALTER TABLE encryption_vaults ENABLE ROW LEVEL SECURITY;
ALTER TABLE encryption_vaults FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS encryption_vaults_owner ON encryption_vaults;
CREATE POLICY encryption_vaults_owner ON encryption_vaults
	USING (tenant_id::text = current_setting('app.tenant_id', true)
	       AND user_id = current_setting('app.user_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true)
	            AND user_id = current_setting('app.user_id', true));
-- `keywardctl kek rewrap` and `kek retire` (the schema owner, never the
-- service's role) declare app.kek_maintenance = 'on' to reach every row.
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance ON encryption_vaults;
CREATE POLICY encryption_vaults_kek_maintenance ON encryption_vaults
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'))
	WITH CHECK (current_setting('app.kek_maintenance', true) = 'on'
	            AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
GRANT SELECT, INSERT, UPDATE ON encryption_vaults TO keyward_app;

-- The vault's audit rows: a row whose action is vault.* must name, as its
-- actor, the user the transaction is scoped to (on top of the tenant check
-- of 0001). So the service cannot write one user's vault events as
-- another's. The service cannot read audit rows at all.
DROP POLICY IF EXISTS audit_log_vault_owner ON audit_log;
CREATE POLICY audit_log_vault_owner ON audit_log AS RESTRICTIVE FOR INSERT
	WITH CHECK (action NOT LIKE 'vault.%'
	            OR (tenant_id::text = current_setting('app.tenant_id', true)
	                AND coalesce(current_setting('app.user_id', true), '') <> ''
	                AND actor = 'user:' || current_setting('app.user_id', true)));
