-- 0003 tokens: refresh-token families, refresh tokens, the access-token
-- revocation list, and wallet sign-in nonces (DESIGN §5.4).
-- Idempotent: every statement may run again on a schema that has it.

-- One family per login; its id is the `sid` claim of the family's access
-- tokens. Revoking the family revokes every token in it.
-- The hot tables below have no foreign key to tenants on purpose: each
-- insert would take a KEY SHARE lock on its tenant's row, so concurrent
-- sign-ins of one tenant would contend on it (multixacts). Tenants are
-- never deleted, and tenant_id always comes from a verified credential.
CREATE TABLE IF NOT EXISTS refresh_families (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	tenant_id uuid NOT NULL,
	subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 256),
	role text NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
	created_at timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz NOT NULL DEFAULT now(),
	absolute_expires_at timestamptz NOT NULL,
	ip text NULL,
	user_agent text NULL,
	revoked_at timestamptz NULL,
	revoke_reason text NULL
);
CREATE INDEX IF NOT EXISTS refresh_families_subject ON refresh_families (tenant_id, subject);
CREATE INDEX IF NOT EXISTS refresh_families_expiry ON refresh_families (absolute_expires_at);

-- Only HMAC(pepper, token) is stored, with the pepper's version.
CREATE TABLE IF NOT EXISTS refresh_tokens (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	family_id uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
	parent_id uuid NULL,
	tenant_id uuid NOT NULL,
	token_hmac bytea NOT NULL UNIQUE CHECK (length(token_hmac) = 32),
	pepper_id int NOT NULL,
	issued_at timestamptz NOT NULL DEFAULT now(),
	used_at timestamptz NULL,
	sliding_expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
-- Only used children are ever looked up by parent (reuse detection): a
-- partial index costs nothing when a token is issued.
CREATE INDEX IF NOT EXISTS refresh_tokens_used_child ON refresh_tokens (parent_id) WHERE used_at IS NOT NULL;

-- Per-tenant rows, isolated by app.tenant_id. Housekeeping runs in a
-- transaction that declares app.purge = 'on' and may then see and delete
-- dead rows only (expired, or revoked a day ago), of any tenant.
ALTER TABLE refresh_families ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_families FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS refresh_families_isolation ON refresh_families;
CREATE POLICY refresh_families_isolation ON refresh_families
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS refresh_families_purge_read ON refresh_families;
CREATE POLICY refresh_families_purge_read ON refresh_families FOR SELECT
	USING (current_setting('app.purge', true) = 'on'
	       AND (absolute_expires_at < now() OR revoked_at < now() - interval '1 day'));
DROP POLICY IF EXISTS refresh_families_purge ON refresh_families;
CREATE POLICY refresh_families_purge ON refresh_families FOR DELETE
	USING (current_setting('app.purge', true) = 'on'
	       AND (absolute_expires_at < now() OR revoked_at < now() - interval '1 day'));
GRANT SELECT, INSERT, DELETE ON refresh_families TO keyward_app;
GRANT UPDATE (last_used_at, revoked_at, revoke_reason) ON refresh_families TO keyward_app;

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS refresh_tokens_isolation ON refresh_tokens;
CREATE POLICY refresh_tokens_isolation ON refresh_tokens
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
-- A token past its sliding expiry is dead; the family's rows go with it
-- (ON DELETE CASCADE acts as the owner, after the family's purge policy).
DROP POLICY IF EXISTS refresh_tokens_purge_read ON refresh_tokens;
CREATE POLICY refresh_tokens_purge_read ON refresh_tokens FOR SELECT
	USING (current_setting('app.purge', true) = 'on' AND sliding_expires_at < now());
DROP POLICY IF EXISTS refresh_tokens_purge ON refresh_tokens;
CREATE POLICY refresh_tokens_purge ON refresh_tokens FOR DELETE
	USING (current_setting('app.purge', true) = 'on' AND sliding_expires_at < now());
GRANT SELECT, INSERT, DELETE ON refresh_tokens TO keyward_app;
GRANT UPDATE (used_at) ON refresh_tokens TO keyward_app;

-- Revoked access tokens: by jti (one token) or by sid (a whole family).
-- Every instance must know every revocation, so the list is read
-- service-wide; the service role may read only the ids and the expiry
-- (column grants), insert for its tenant, and delete expired rows.
CREATE TABLE IF NOT EXISTS jwt_revocations (
	id bigserial PRIMARY KEY,
	jti text NULL CHECK (jti ~ '^[0-9a-f]{32}$'),
	sid uuid NULL,
	tenant_id uuid NOT NULL,
	subject text NOT NULL,
	token_expires_at timestamptz NOT NULL,
	revoked_at timestamptz NOT NULL DEFAULT now(),
	reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 64),
	CHECK ((jti IS NULL) <> (sid IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS jwt_revocations_jti ON jwt_revocations (jti) WHERE jti IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS jwt_revocations_sid ON jwt_revocations (sid) WHERE sid IS NOT NULL;
CREATE INDEX IF NOT EXISTS jwt_revocations_expiry ON jwt_revocations (token_expires_at);
ALTER TABLE jwt_revocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE jwt_revocations FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS jwt_revocations_read ON jwt_revocations;
CREATE POLICY jwt_revocations_read ON jwt_revocations FOR SELECT USING (true);
DROP POLICY IF EXISTS jwt_revocations_insert ON jwt_revocations;
CREATE POLICY jwt_revocations_insert ON jwt_revocations FOR INSERT
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS jwt_revocations_purge ON jwt_revocations;
CREATE POLICY jwt_revocations_purge ON jwt_revocations FOR DELETE
	USING (current_setting('app.purge', true) = 'on' AND token_expires_at < now());
GRANT SELECT (id, jti, sid, token_expires_at) ON jwt_revocations TO keyward_app;
GRANT INSERT, DELETE ON jwt_revocations TO keyward_app;
GRANT USAGE ON SEQUENCE jwt_revocations_id_seq TO keyward_app;

-- Every committed revocation is announced to every instance (NOTIFY is
-- delivered at commit): "<jti or -> <sid or -> <expiry, unix seconds>".
CREATE OR REPLACE FUNCTION jwt_revocations_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('keyward_revocations',
		coalesce(NEW.jti, '-') || ' ' || coalesce(NEW.sid::text, '-') || ' ' ||
		floor(extract(epoch FROM NEW.token_expires_at))::bigint::text);
	RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS jwt_revocations_notify ON jwt_revocations;
CREATE TRIGGER jwt_revocations_notify AFTER INSERT ON jwt_revocations
	FOR EACH ROW EXECUTE FUNCTION jwt_revocations_notify();

-- Wallet sign-in: one outstanding nonce per (tenant, address); a new
-- request replaces it. used_at marks it consumed (reuse is told apart
-- from an unknown nonce).
CREATE TABLE IF NOT EXISTS wallet_nonces (
	tenant_id uuid NOT NULL REFERENCES tenants (id),
	address text NOT NULL CHECK (address ~ '^0x[0-9A-Fa-f]{40}$'),
	nonce text NOT NULL CHECK (nonce ~ '^[0-9a-f]{32}$'),
	issued_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL,
	used_at timestamptz NULL,
	PRIMARY KEY (tenant_id, address)
);
CREATE INDEX IF NOT EXISTS wallet_nonces_expiry ON wallet_nonces (expires_at);
ALTER TABLE wallet_nonces ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallet_nonces FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS wallet_nonces_isolation ON wallet_nonces;
CREATE POLICY wallet_nonces_isolation ON wallet_nonces
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS wallet_nonces_purge_read ON wallet_nonces;
CREATE POLICY wallet_nonces_purge_read ON wallet_nonces FOR SELECT
	USING (current_setting('app.purge', true) = 'on' AND expires_at < now());
DROP POLICY IF EXISTS wallet_nonces_purge ON wallet_nonces;
CREATE POLICY wallet_nonces_purge ON wallet_nonces FOR DELETE
	USING (current_setting('app.purge', true) = 'on' AND expires_at < now());
GRANT SELECT, INSERT, UPDATE, DELETE ON wallet_nonces TO keyward_app;
