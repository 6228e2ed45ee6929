-- 0008 session minter: which API key started a session (a delegated
-- login), so that revoking the key ends the sessions it minted.
-- Idempotent: every statement may run again on a schema that has it.
ALTER TABLE refresh_families ADD COLUMN IF NOT EXISTS minted_by uuid NULL;
CREATE INDEX IF NOT EXISTS refresh_families_minted_by ON refresh_families (tenant_id, minted_by)
	WHERE minted_by IS NOT NULL;
