-- Reverts 0008.
DROP FUNCTION IF EXISTS keyward_vault_read(uuid, text);
