-- Reverts 0012.
DROP TABLE IF EXISTS secret_versions;
DROP TABLE IF EXISTS secrets;
DROP FUNCTION IF EXISTS secret_versions_kek_live();
