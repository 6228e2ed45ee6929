-- Reverts 0011.
DROP TRIGGER IF EXISTS transit_keys_change ON transit_keys;
DROP FUNCTION IF EXISTS changes_transit_key();
DROP TABLE IF EXISTS changes;
