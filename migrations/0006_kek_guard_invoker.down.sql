-- Reverts 0006: 0005's trigger function again (its owner's rights, under
-- the search_path 0005 ran with). The rotation history is dropped.
DROP TABLE IF EXISTS key_rotations;
ALTER TABLE encryption_vaults ENABLE TRIGGER encryption_vaults_kek_live;
REVOKE SELECT ON kek_retired FROM PUBLIC;
CREATE OR REPLACE FUNCTION encryption_vaults_kek_live() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = "$user", public AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM kek_retired WHERE kek_id = NEW.kek_id) THEN
		RAISE EXCEPTION 'KEK version % is retired', NEW.kek_id USING ERRCODE = 'KWKEK';
	END IF;
	RETURN NEW;
END
$$;
