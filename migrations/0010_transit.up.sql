-- 0010 transit: named keys per tenant for transit encryption (DESIGN §5.5).
-- Idempotent: every statement may run again on a schema that has it.
--
-- A key's versions are derived in the token (HKDF from keyward/derive/<m>)
-- and never stored: a version row records only which derivation root it
-- used. Per-tenant rows, isolated by app.tenant_id (forced RLS).
CREATE TABLE IF NOT EXISTS transit_keys (
	tenant_id uuid NOT NULL,
	name text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
	type text NOT NULL CHECK (type IN ('aes256-gcm', 'aes256-siv')),
	latest_version int NOT NULL DEFAULT 1 CHECK (latest_version >= 1),
	min_decryption_version int NOT NULL DEFAULT 1,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, name),
	CHECK (min_decryption_version BETWEEN 1 AND latest_version)
);
CREATE TABLE IF NOT EXISTS transit_key_versions (
	tenant_id uuid NOT NULL,
	name text NOT NULL,
	version int NOT NULL CHECK (version >= 1),
	derive_version int NOT NULL CHECK (derive_version >= 1),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, name, version),
	FOREIGN KEY (tenant_id, name) REFERENCES transit_keys (tenant_id, name)
);
CREATE INDEX IF NOT EXISTS transit_key_versions_derive ON transit_key_versions (derive_version);

ALTER TABLE transit_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE transit_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS transit_keys_isolation ON transit_keys;
CREATE POLICY transit_keys_isolation ON transit_keys
	USING (tenant_id::text = current_setting('app.tenant_id', true));
ALTER TABLE transit_key_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE transit_key_versions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS transit_key_versions_isolation ON transit_key_versions;
CREATE POLICY transit_key_versions_isolation ON transit_key_versions
	USING (tenant_id::text = current_setting('app.tenant_id', true));
-- Keys are never deleted by the service; versions never change.
GRANT SELECT, INSERT ON transit_keys TO keyward_app;
GRANT UPDATE (latest_version, min_decryption_version, updated_at) ON transit_keys TO keyward_app;
GRANT SELECT, INSERT ON transit_key_versions TO keyward_app;
