-- Reverts 0013.
DROP TABLE IF EXISTS signing_nonces;
DELETE FROM changes WHERE kind = 'signing_key';
DROP TABLE IF EXISTS signing_keys;
DROP FUNCTION IF EXISTS changes_signing_key();
DROP FUNCTION IF EXISTS keyward_signing_key_tenant(uuid);
ALTER TABLE changes DROP CONSTRAINT IF EXISTS changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN ('transit_key'));
