-- 0005 KEK guard: who may run KEK maintenance, and KEK versions that are
-- gone for good. Idempotent: every statement may run again.

-- KEK maintenance (keywardctl kek rewrap / retire) reaches every vault row
-- only for the table's owner and the roles that hold its privileges — who
-- could switch row-level security off anyway — never for the service's
-- roles, and only to read and re-wrap: no INSERT, no DELETE. Replaces the
-- policy of 0004, which admitted any role outside keyward_app.
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance ON encryption_vaults;
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance_read ON encryption_vaults;
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance_rewrap ON encryption_vaults;
CREATE POLICY encryption_vaults_kek_maintenance_read ON encryption_vaults FOR SELECT
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user,
	                       (SELECT relowner FROM pg_class WHERE oid = 'encryption_vaults'::regclass),
	                       'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
CREATE POLICY encryption_vaults_kek_maintenance_rewrap ON encryption_vaults FOR UPDATE
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND pg_has_role(current_user,
	                       (SELECT relowner FROM pg_class WHERE oid = 'encryption_vaults'::regclass),
	                       'USAGE')
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'))
	WITH CHECK (current_setting('app.kek_maintenance', true) = 'on'
	            AND pg_has_role(current_user,
	                            (SELECT relowner FROM pg_class WHERE oid = 'encryption_vaults'::regclass),
	                            'USAGE')
	            AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));

-- KEK versions `keywardctl kek retire` has destroyed (or is about to). No
-- row may be written under one: an instance that has not yet seen the
-- rotation fails its wrap instead of storing a key nobody can unwrap.
CREATE TABLE IF NOT EXISTS kek_retired (
	kek_id int PRIMARY KEY CHECK (kek_id > 0),
	retired_at timestamptz NOT NULL DEFAULT now()
);
-- Read only by the trigger below, which runs with its owner's rights (and
-- a pinned search_path): no other role needs to see the table.
CREATE OR REPLACE FUNCTION encryption_vaults_kek_live() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM kek_retired WHERE kek_id = NEW.kek_id) THEN
		RAISE EXCEPTION 'KEK version % is retired', NEW.kek_id USING ERRCODE = 'KWKEK';
	END IF;
	RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS encryption_vaults_kek_live ON encryption_vaults;
CREATE TRIGGER encryption_vaults_kek_live BEFORE INSERT OR UPDATE ON encryption_vaults
	FOR EACH ROW EXECUTE FUNCTION encryption_vaults_kek_live();
