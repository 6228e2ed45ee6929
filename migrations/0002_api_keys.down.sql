-- Reverts 0002.
DROP TABLE IF EXISTS api_key_prefixes;
DROP TABLE IF EXISTS api_keys;
