-- 0012 secrets: the secrets store (DESIGN §5.7). Idempotent.
--
-- A secret is a name per tenant with versions; each version's value is
-- AES-256-GCM under its own random data key (AAD
-- "keyward:v1:secret-value:<tenant>:<secret>:<version>"), and the data key
-- is wrapped by the token's KEK (AAD
-- "keyward:v1:secret:<tenant>:<secret>:<version>:<kek_id>"). Nothing here
-- is readable without the token. Per-tenant rows under forced RLS; KEK
-- maintenance (keywardctl, the schema owner) reaches every version as for
-- the vaults (0005).
CREATE TABLE IF NOT EXISTS secrets (
	tenant_id uuid NOT NULL,
	id uuid NOT NULL,
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 256 AND name ~ '^[A-Za-z0-9_./-]+$'),
	content_type text NOT NULL CHECK (length(content_type) BETWEEN 1 AND 255),
	latest_version int NOT NULL DEFAULT 1 CHECK (latest_version >= 1),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS secret_versions (
	tenant_id uuid NOT NULL,
	secret_id uuid NOT NULL,
	version int NOT NULL CHECK (version >= 1),
	-- The secret's name and content type, copied (both never change): a
	-- fetch reads one table. The latest version is the highest.
	name text NOT NULL,
	content_type text NOT NULL,
	format_version int NOT NULL CHECK (format_version = 1),
	kek_id int NOT NULL CHECK (kek_id > 0),
	wrapped_dk bytea NOT NULL CHECK (length(wrapped_dk) = 48),
	dk_iv bytea NOT NULL CHECK (length(dk_iv) = 12),
	value_iv bytea NOT NULL CHECK (length(value_iv) = 12),
	value_ct bytea NOT NULL CHECK (length(value_ct) BETWEEN 16 AND 65536 + 16),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, secret_id, version),
	FOREIGN KEY (tenant_id, secret_id) REFERENCES secrets (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS secret_versions_kek ON secret_versions (kek_id);

ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS secrets_isolation ON secrets;
CREATE POLICY secrets_isolation ON secrets
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
ALTER TABLE secret_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE secret_versions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS secret_versions_isolation ON secret_versions;
CREATE POLICY secret_versions_isolation ON secret_versions
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
-- KEK maintenance: as encryption_vaults_kek_maintenance_* (0005).
DROP POLICY IF EXISTS secret_versions_kek_maintenance_read ON secret_versions;
CREATE POLICY secret_versions_kek_maintenance_read ON secret_versions FOR SELECT
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user,
	                       (SELECT relowner FROM pg_class WHERE oid = 'secret_versions'::regclass), 'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
DROP POLICY IF EXISTS secret_versions_kek_maintenance_rewrap ON secret_versions;
CREATE POLICY secret_versions_kek_maintenance_rewrap ON secret_versions FOR UPDATE
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user,
	                       (SELECT relowner FROM pg_class WHERE oid = 'secret_versions'::regclass), 'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'))
	WITH CHECK (current_setting('app.kek_maintenance', true) = 'on'
	            AND pg_has_role(current_user,
	                            (SELECT relowner FROM pg_class WHERE oid = 'secret_versions'::regclass), 'USAGE')
	            AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
-- The service creates, adds versions, reads and deletes; a version's
-- ciphertext is never rewritten by it (only KEK maintenance re-wraps).
GRANT SELECT, INSERT, DELETE ON secrets TO keyward_app;
GRANT UPDATE (latest_version) ON secrets TO keyward_app;
GRANT SELECT, INSERT, DELETE ON secret_versions TO keyward_app;

-- No version may be written under a retired KEK (as the vaults, 0005).
CREATE OR REPLACE FUNCTION secret_versions_kek_live() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM kek_retired WHERE kek_id = NEW.kek_id) THEN
		RAISE EXCEPTION 'KEK version % is retired', NEW.kek_id USING ERRCODE = 'KWKEK';
	END IF;
	RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS secret_versions_kek_live ON secret_versions;
CREATE TRIGGER secret_versions_kek_live BEFORE INSERT OR UPDATE ON secret_versions
	FOR EACH ROW EXECUTE FUNCTION secret_versions_kek_live();
