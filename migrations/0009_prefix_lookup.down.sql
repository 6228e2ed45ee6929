-- Reverts 0009.
GRANT SELECT ON api_key_prefixes TO keyward_app;
DROP FUNCTION IF EXISTS keyward_api_key_tenant(text);
