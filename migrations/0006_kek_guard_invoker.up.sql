-- 0006 KEK guard, second pass. Idempotent: every statement may run again.
--
-- 0005's trigger function ran with its owner's rights under the search_path
-- of the migration ("$user", public). In a SECURITY DEFINER function
-- PostgreSQL still searches pg_temp first for tables, so a service session
-- could shadow kek_retired with an empty temporary table and write under a
-- retired KEK. The function now runs with the caller's rights, names its
-- table by schema and searches only pg_catalog (pg_temp last); the writer
-- reads the list of retired versions itself.
--
-- It also refuses to run in any transaction but READ COMMITTED: only there
-- does its look-up see a retirement committed while the statement waited
-- for `kek retire`'s table lock. (keyward begins every transaction that
-- writes at READ COMMITTED, whatever default_transaction_isolation says.)
--
-- (0005 says maintenance gets "no INSERT, no DELETE": that holds for the
-- maintenance policies; the service role keeps its own per-user ones.)
DO $do$
DECLARE
	-- The schema of the function the trigger calls (0005 created it next to
	-- its tables), whatever this session's search_path is.
	s name := (SELECT p.pronamespace::regnamespace::name
	           FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
	           WHERE t.tgname = 'encryption_vaults_kek_live'
	             AND t.tgrelid = 'encryption_vaults'::regclass);
BEGIN
	IF s IS NULL THEN
		RAISE EXCEPTION 'trigger encryption_vaults_kek_live (migration 0005) is missing';
	END IF;
	EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.encryption_vaults_kek_live() RETURNS trigger
	LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'vault rows are written at READ COMMITTED only, not %%',
			current_setting('transaction_isolation') USING ERRCODE = 'KWISO';
	END IF;
	IF EXISTS (SELECT 1 FROM %1$I.kek_retired r WHERE r.kek_id = NEW.kek_id) THEN
		RAISE EXCEPTION 'KEK version %% is retired', NEW.kek_id USING ERRCODE = 'KWKEK';
	END IF;
	RETURN NEW;
END
$body$$f$, s);
	-- Version numbers, nothing secret: every role that may write a vault
	-- row (the service, the table's owner running a rewrap) reads the list.
	EXECUTE format('GRANT SELECT ON %I.kek_retired TO PUBLIC', s);
	-- Fires in every session_replication_role, replicas' apply included.
	EXECUTE format('ALTER TABLE %I.encryption_vaults ENABLE ALWAYS TRIGGER encryption_vaults_kek_live', s);
	IF (SELECT p.prosecdef FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
	    WHERE t.tgname = 'encryption_vaults_kek_live'
	      AND t.tgrelid = 'encryption_vaults'::regclass) THEN
		RAISE EXCEPTION 'encryption_vaults_kek_live still runs with its owner''s rights';
	END IF;
END
$do$;

-- Rotations as keywardctl records them, for `jwt retire` and `kek retire`
-- to wait out. The audit trail records them too, but the service's roles
-- may append audit rows; they cannot write here (no grant at all).
CREATE TABLE IF NOT EXISTS key_rotations (
	family text NOT NULL CHECK (family IN ('jwt', 'kek')),
	version int NOT NULL CHECK (version > 1),
	previous int NOT NULL CHECK (previous > 0 AND previous < version),
	rotated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (family, version)
);
REVOKE ALL ON key_rotations FROM PUBLIC;
