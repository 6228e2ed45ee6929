-- Reverts 0014.
DROP TRIGGER IF EXISTS api_keys_change ON api_keys;
DROP FUNCTION IF EXISTS changes_api_key();
DROP FUNCTION IF EXISTS changes_announce(text, text);
DELETE FROM changes WHERE kind IN ('api_key', 'token_keys');
ALTER TABLE changes DROP CONSTRAINT IF EXISTS changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN ('transit_key', 'signing_key'));
CREATE OR REPLACE FUNCTION jwt_revocations_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('keyward_revocations',
		coalesce(NEW.jti, '-') || ' ' || coalesce(NEW.sid::text, '-') || ' ' ||
		floor(extract(epoch FROM NEW.token_expires_at))::bigint::text);
	RETURN NULL;
END
$$;
