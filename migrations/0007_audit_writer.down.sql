-- Reverts 0007: the writer's policy goes, the vault rule of 0004 returns.
DROP POLICY IF EXISTS audit_log_writer ON audit_log;
DROP POLICY IF EXISTS audit_log_vault_owner ON audit_log;
CREATE POLICY audit_log_vault_owner ON audit_log AS RESTRICTIVE FOR INSERT
	WITH CHECK (action NOT LIKE 'vault.%'
	            OR (tenant_id::text = current_setting('app.tenant_id', true)
	                AND coalesce(current_setting('app.user_id', true), '') <> ''
	                AND actor = 'user:' || current_setting('app.user_id', true)));
