-- Reverts 0003.
DROP TABLE IF EXISTS wallet_nonces;
DROP TABLE IF EXISTS jwt_revocations;
DROP FUNCTION IF EXISTS jwt_revocations_notify();
DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS refresh_families;
