-- Reverts 0004.
DROP POLICY IF EXISTS audit_log_vault_owner ON audit_log;
DROP TABLE IF EXISTS encryption_vaults;
