-- 0002 api keys: a tenant's API keys, and the public prefix directory.
-- Idempotent: every statement may run again on a schema that has it.

-- Only HMAC(pepper, key) is stored, with the pepper's version; never the
-- key. The prefix ("kw_" + public id) is public and finds the row.
CREATE TABLE IF NOT EXISTS api_keys (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	tenant_id uuid NOT NULL REFERENCES tenants (id),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
	prefix text NOT NULL UNIQUE,
	key_hmac bytea NOT NULL CHECK (length(key_hmac) = 32),
	pepper_id int NOT NULL,
	scopes text[] NOT NULL,
	rate_limit_per_minute int NULL CHECK (rate_limit_per_minute > 0),
	created_at timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz NULL,
	revoked_at timestamptz NULL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS api_keys_isolation ON api_keys;
CREATE POLICY api_keys_isolation ON api_keys
	USING (tenant_id::text = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
-- The service creates, reads, marks used and revokes; it never deletes a
-- key nor changes what identifies or authorises one.
GRANT SELECT, INSERT ON api_keys TO keyward_app;
GRANT UPDATE (last_used_at, revoked_at) ON api_keys TO keyward_app;

-- Which tenant a prefix belongs to, read before the tenant is known. No
-- RLS: a prefix is public and this table holds nothing secret.
CREATE TABLE IF NOT EXISTS api_key_prefixes (
	prefix text PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenants (id)
);
GRANT SELECT, INSERT ON api_key_prefixes TO keyward_app;
