-- Reverts 0005 (restores the maintenance policy of 0004).
DROP TRIGGER IF EXISTS encryption_vaults_kek_live ON encryption_vaults;
DROP FUNCTION IF EXISTS encryption_vaults_kek_live();
DROP TABLE IF EXISTS kek_retired;
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance_read ON encryption_vaults;
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance_rewrap ON encryption_vaults;
DROP POLICY IF EXISTS encryption_vaults_kek_maintenance ON encryption_vaults;
CREATE POLICY encryption_vaults_kek_maintenance ON encryption_vaults
	USING (current_setting('app.kek_maintenance', true) = 'on'
	       AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'))
	WITH CHECK (current_setting('app.kek_maintenance', true) = 'on'
	            AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER'));
