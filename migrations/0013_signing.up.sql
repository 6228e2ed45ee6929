-- 0013 signing: HMAC request signing (DESIGN §5.6). Idempotent.
--
-- A signing key's secret ("kws_…", shown once) is stored only wrapped by
-- the token's KEK: AES-256-GCM, AAD "keyward:v1:signing-key:<tenant>:<kid>:
-- <kek_id>". A key stops verifying when revoked (DELETE) or, after a
-- rotation, at expires_at. Per-tenant rows under forced RLS; the service
-- finds a key id's tenant through keyward_signing_key_tenant (as API-key
-- prefixes, 0009). Changes reach every instance through the change feed.
CREATE TABLE IF NOT EXISTS signing_keys (
	tenant_id uuid NOT NULL,
	id uuid NOT NULL,
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
	scopes text[] NOT NULL,
	format_version int NOT NULL CHECK (format_version = 1),
	kek_id int NOT NULL CHECK (kek_id > 0),
	wrapped_secret bytea NOT NULL CHECK (length(wrapped_secret) = 53 + 16),
	secret_iv bytea NOT NULL CHECK (length(secret_iv) = 12),
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NULL,
	revoked_at timestamptz NULL,
	replaced_by uuid NULL,
	PRIMARY KEY (tenant_id, id),
	UNIQUE (id)
);
CREATE INDEX IF NOT EXISTS signing_keys_kek ON signing_keys (kek_id);
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS signing_keys_isolation ON signing_keys;
CREATE POLICY signing_keys_isolation ON signing_keys
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS signing_keys_kek_maintenance_read ON signing_keys;
CREATE POLICY signing_keys_kek_maintenance_read ON signing_keys FOR SELECT
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'signing_keys'::regclass), 'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
DROP POLICY IF EXISTS signing_keys_kek_maintenance_rewrap ON signing_keys;
CREATE POLICY signing_keys_kek_maintenance_rewrap ON signing_keys FOR UPDATE
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'signing_keys'::regclass), 'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'))
	WITH CHECK (current_setting('app.kek_maintenance', true) = 'on'
	            AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'signing_keys'::regclass), 'USAGE')
	            AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
GRANT SELECT, INSERT ON signing_keys TO keyward_app;
GRANT UPDATE (expires_at, revoked_at, replaced_by) ON signing_keys TO keyward_app;

-- No key may be written under a retired KEK (as the vaults, 0005).
DROP TRIGGER IF EXISTS signing_keys_kek_live ON signing_keys;
CREATE TRIGGER signing_keys_kek_live BEFORE INSERT OR UPDATE OF kek_id, wrapped_secret ON signing_keys
	FOR EACH ROW EXECUTE FUNCTION encryption_vaults_kek_live();

DO $do$
DECLARE
	s name := (SELECT c.relnamespace::regnamespace::name FROM pg_class c WHERE c.oid = 'signing_keys'::regclass);
BEGIN
	EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.keyward_signing_key_tenant(p_kid uuid) RETURNS uuid
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
	SELECT k.tenant_id FROM %1$I.signing_keys k WHERE k.id = p_kid
$body$$f$, s);
	EXECUTE format('REVOKE ALL ON FUNCTION %I.keyward_signing_key_tenant(uuid) FROM PUBLIC', s);
	EXECUTE format('GRANT EXECUTE ON FUNCTION %I.keyward_signing_key_tenant(uuid) TO keyward_app', s);
END
$do$;

-- Every instance drops what it holds of a key that was revoked or given an
-- expiry (a rotation) within a second.
ALTER TABLE changes DROP CONSTRAINT IF EXISTS changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN ('transit_key', 'signing_key'));
CREATE OR REPLACE FUNCTION changes_signing_key() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	cue bigint;
BEGIN
	INSERT INTO changes (kind, tenant_id, subject) VALUES ('signing_key', NEW.tenant_id, NEW.id::text)
		RETURNING id INTO cue;
	PERFORM pg_notify('keyward_changes', cue::text);
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION changes_signing_key() FROM PUBLIC;
DROP TRIGGER IF EXISTS signing_keys_change ON signing_keys;
CREATE TRIGGER signing_keys_change AFTER UPDATE ON signing_keys
	FOR EACH ROW EXECUTE FUNCTION changes_signing_key();

-- Nonces a verified signature spent, per key, until the request's
-- timestamp + 5 min: shared by every instance. The insert is the check
-- (a second one conflicts). Not tenant data; the service inserts and,
-- in housekeeping, deletes expired rows only. Written with
-- synchronous_commit off (docs/operations.md: the durability trade-off).
CREATE TABLE IF NOT EXISTS signing_nonces (
	key_id uuid NOT NULL,
	nonce text NOT NULL CHECK (nonce ~ '^[A-Za-z0-9_-]+$' AND length(nonce) BETWEEN 22 AND 128),
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (key_id, nonce)
);
CREATE INDEX IF NOT EXISTS signing_nonces_expiry ON signing_nonces (expires_at);
ALTER TABLE signing_nonces ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_nonces FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS signing_nonces_insert ON signing_nonces;
CREATE POLICY signing_nonces_insert ON signing_nonces FOR INSERT WITH CHECK (true);
DROP POLICY IF EXISTS signing_nonces_purge ON signing_nonces;
CREATE POLICY signing_nonces_purge ON signing_nonces FOR DELETE
	USING (current_setting('app.purge', true) = 'on' AND expires_at < now());
DROP POLICY IF EXISTS signing_nonces_read_expired ON signing_nonces;
CREATE POLICY signing_nonces_read_expired ON signing_nonces FOR SELECT
	USING (current_setting('app.purge', true) = 'on' AND expires_at < now());
GRANT INSERT, DELETE ON signing_nonces TO keyward_app;
GRANT SELECT (key_id, nonce, expires_at) ON signing_nonces TO keyward_app;
