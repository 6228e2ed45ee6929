-- Reverts 0008.
DROP INDEX IF EXISTS refresh_families_minted_by;
ALTER TABLE refresh_families DROP COLUMN IF EXISTS minted_by;
