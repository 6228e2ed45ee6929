-- 0007 audit writer: the group-commit writer inserts a whole batch of audit
-- rows (many tenants, many users) with one statement.
-- Idempotent: every statement may run again on a schema that has it.
--
-- A transaction that declares app.audit_writer = 'on' may insert audit rows
-- of any tenant, and vault rows of any user. This is no weaker than before:
-- app.tenant_id and app.user_id are settings the service sets itself, so the
-- per-row insert checks only ever caught the service's own mistakes, never a
-- compromised service. What protects an audit row is its MAC chain (the key
-- is in the token): a row that keyward did not write fails `audit verify`.
-- Reads stay tenant-scoped, and the service still cannot read, change or
-- delete a row.
DROP POLICY IF EXISTS audit_log_writer ON audit_log;
CREATE POLICY audit_log_writer ON audit_log FOR INSERT
	WITH CHECK (current_setting('app.audit_writer', true) = 'on');

DROP POLICY IF EXISTS audit_log_vault_owner ON audit_log;
CREATE POLICY audit_log_vault_owner ON audit_log AS RESTRICTIVE FOR INSERT
	WITH CHECK (action NOT LIKE 'vault.%'
	            OR current_setting('app.audit_writer', true) = 'on'
	            OR (tenant_id::text = current_setting('app.tenant_id', true)
	                AND coalesce(current_setting('app.user_id', true), '') <> ''
	                AND actor = 'user:' || current_setting('app.user_id', true)));
