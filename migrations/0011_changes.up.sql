-- 0011 changes: the feed every instance follows to see what another
-- instance changed (DESIGN §5.9). Idempotent.
--
-- A row is written only by triggers on the tables whose changes an
-- instance must see (SECURITY DEFINER functions owned by the schema
-- owner): the service role may read the feed and purge old rows, never
-- insert one. Each row is announced by NOTIFY keyward_changes carrying its
-- id alone; an instance reads the row it names and trusts nothing else of
-- a notification, so a forged one (any role may NOTIFY) names nothing or
-- repeats a real change, and applying a change twice is harmless.
CREATE TABLE IF NOT EXISTS changes (
	id bigserial PRIMARY KEY,
	kind text NOT NULL CHECK (kind IN ('transit_key')),
	tenant_id uuid NULL,
	subject text NOT NULL DEFAULT '',
	at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS changes_at ON changes (at);
ALTER TABLE changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS changes_read ON changes;
CREATE POLICY changes_read ON changes FOR SELECT USING (true);
DROP POLICY IF EXISTS changes_purge ON changes;
CREATE POLICY changes_purge ON changes FOR DELETE
	USING (current_setting('app.purge', true) = 'on' AND at < now() - interval '1 day');
-- The schema owner's triggers insert (RLS does not apply to the owner
-- unless forced: give it an explicit insert policy).
DROP POLICY IF EXISTS changes_insert ON changes;
CREATE POLICY changes_insert ON changes FOR INSERT
	WITH CHECK (NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
GRANT SELECT, DELETE ON changes TO keyward_app;

-- A transit key's rotate or config change: every instance drops what it
-- holds of the key (its versions' material, its minimum version).
CREATE OR REPLACE FUNCTION changes_transit_key() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	cue bigint;
BEGIN
	INSERT INTO changes (kind, tenant_id, subject) VALUES ('transit_key', NEW.tenant_id, NEW.name)
		RETURNING id INTO cue;
	PERFORM pg_notify('keyward_changes', cue::text);
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION changes_transit_key() FROM PUBLIC;
DROP TRIGGER IF EXISTS transit_keys_change ON transit_keys;
CREATE TRIGGER transit_keys_change AFTER UPDATE ON transit_keys
	FOR EACH ROW EXECUTE FUNCTION changes_transit_key();
