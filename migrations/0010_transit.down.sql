-- Reverts 0010.
DROP TABLE IF EXISTS transit_key_versions;
DROP TABLE IF EXISTS transit_keys;
