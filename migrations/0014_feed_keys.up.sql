-- 0014 feed keys: API-key revocations and the token's key changes reach
-- every instance through the change feed (0011) within a second.
-- Idempotent.
ALTER TABLE changes DROP CONSTRAINT IF EXISTS changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check
	CHECK (kind IN ('transit_key', 'signing_key', 'api_key', 'token_keys'));

-- A revoked API key: every instance forgets what it verified of it.
CREATE OR REPLACE FUNCTION changes_api_key() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	cue bigint;
BEGIN
	INSERT INTO changes (kind, tenant_id, subject) VALUES ('api_key', NEW.tenant_id, NEW.prefix)
		RETURNING id INTO cue;
	PERFORM pg_notify('keyward_changes', cue::text);
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION changes_api_key() FROM PUBLIC;
DROP TRIGGER IF EXISTS api_keys_change ON api_keys;
CREATE TRIGGER api_keys_change AFTER UPDATE OF revoked_at ON api_keys
	FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at) EXECUTE FUNCTION changes_api_key();

-- keywardctl announces a change of the token's keys (a JWT, KEK,
-- derivation-root or audit key rotated or retired): every instance re-reads
-- the token. Only the schema owner (and superusers) may call it.
CREATE OR REPLACE FUNCTION changes_announce(p_kind text, p_subject text) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	cue bigint;
BEGIN
	INSERT INTO changes (kind, subject) VALUES (p_kind, coalesce(p_subject, '')) RETURNING id INTO cue;
	PERFORM pg_notify('keyward_changes', cue::text);
	RETURN cue;
END
$$;
REVOKE ALL ON FUNCTION changes_announce(text, text) FROM PUBLIC;

-- A revocation's notification carries only its row id (a cue): every
-- instance reads the row it names, so a notification sent by any other
-- role (garbage, or a well-formed fake) revokes nothing and costs no
-- reload (0003 sent the ids and expiry themselves, which were trusted).
CREATE OR REPLACE FUNCTION jwt_revocations_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('keyward_revocations', NEW.id::text);
	RETURN NULL;
END
$$;
