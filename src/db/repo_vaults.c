/* repo_vaults.c — the encryption_vaults table (DESIGN §4, §5.3).
 *
 * Plain parameterised SQL under row-level security: the service's reads
 * and writes run in the caller's transaction scoped to the row's tenant
 * and user; KEK maintenance (keywardctl, as the schema owner) sets
 * app.kek_maintenance in its own transactions. Wrapping and unwrapping
 * are src/vault's. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"
#include "keyward/core/text.h"
#include "keyward/db/repo_vaults.h"

#define VAULT_COLS "tenant_id, user_id, wrapped_mk, wrap_iv, format_version, kek_id"

static kw_err row_read(const PGresult *res, int r, kw_vault_row *row)
{
	const char *t = PQgetvalue(res, r, 0), *u = PQgetvalue(res, r, 1);
	unsigned long fv = strtoul(PQgetvalue(res, r, 4), NULL, 10),
	              kek = strtoul(PQgetvalue(res, r, 5), NULL, 10);
	if (strlen(t) != 36 || strlen(u) > KW_VAULT_USER_MAX ||
	    !kw_db_bytea_exact(res, r, 2, row->wrapped, sizeof(row->wrapped)) ||
	    !kw_db_bytea_exact(res, r, 3, row->iv, sizeof(row->iv)) || kek == 0 || kek > UINT32_MAX)
		return KW_ERR_DB;
	memcpy(row->tenant_id, t, 37);
	snprintf(row->user_id, sizeof(row->user_id), "%s", u);
	row->format_version = (int)fv;
	row->kek_id = (uint32_t)kek;
	return KW_OK;
}

static kw_err one_row(PGresult *res, kw_vault_row *row)
{
	kw_err err = PQntuples(res) == 0 ? KW_ERR_NOT_FOUND : row_read(res, 0, row);
	PQclear(res);
	return err;
}

kw_err kw_vault_get(kw_db *db, const char *tenant_id, const char *user_id, bool for_update, kw_vault_row *row)
{
	const char *vals[2] = {tenant_id, user_id};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db,
	                        for_update ? "SELECT " VAULT_COLS " FROM encryption_vaults "
	                                     "WHERE tenant_id = $1::uuid AND user_id = $2 FOR UPDATE"
	                                   : "SELECT " VAULT_COLS " FROM encryption_vaults "
	                                     "WHERE tenant_id = $1::uuid AND user_id = $2",
	                        2, vals, NULL, NULL, &res);
	return err != KW_OK ? err : one_row(res, row);
}

/* The four statements of one scoped read: BEGIN, scope, SELECT, COMMIT.
 * scope[] holds the lower-cased tenant and the user; false if they cannot
 * key a vault. */
static bool fetch_stmts(const char *tenant_id, const char *user_id, char tenant[37], const char *scope[2],
                        kw_db_stmt st[4])
{
	if (!kw_is_uuid(tenant_id) || user_id[0] == '\0' || strlen(user_id) > KW_VAULT_USER_MAX)
		return false;
	for (size_t i = 0; i <= 36; i++)
		tenant[i] = (char)tolower((unsigned char)tenant_id[i]);
	scope[0] = tenant;
	scope[1] = user_id;
	st[0] = (kw_db_stmt){"BEGIN READ ONLY", 0, NULL, NULL, NULL};
	st[1] =
	    (kw_db_stmt){"SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true)",
	                 2, scope, NULL, NULL};
	st[2] = (kw_db_stmt){"SELECT " VAULT_COLS
	                     " FROM encryption_vaults WHERE tenant_id = $1::uuid AND user_id = $2",
	                     2, scope, NULL, NULL};
	st[3] = (kw_db_stmt){"COMMIT", 0, NULL, NULL, NULL};
	return true;
}

kw_err kw_vault_fetch(kw_db *db, const char *tenant_id, const char *user_id, kw_vault_row *row)
{
	char tenant[37];
	const char *scope[2];
	kw_db_stmt st[4];
	if (!fetch_stmts(tenant_id, user_id, tenant, scope, st))
		return KW_ERR_INVALID;
	PGresult *res[4] = {0};
	kw_err err = kw_db_exec_pipeline(db, st, 4, res);
	if (err != KW_OK) {
		if (kw_db_in_tx(db))
			kw_db_rollback(db);
		return err;
	}
	PQclear(res[0]);
	PQclear(res[1]);
	PQclear(res[3]);
	return one_row(res[2], row);
}

void kw_vault_fetch_many(kw_db *db, size_t n, const char *const *tenant_ids, const char *const *user_ids,
                         kw_vault_row *rows, kw_err *errs)
{
	char(*tenants)[37] = calloc(n, sizeof(*tenants));
	const char **scopes = calloc(2 * n, sizeof(*scopes));
	kw_db_stmt *st = calloc(4 * n, sizeof(*st));
	PGresult **res = calloc(4 * n, sizeof(*res));
	size_t *which = calloc(n, sizeof(*which));
	size_t m = 0;
	if (tenants == NULL || scopes == NULL || st == NULL || res == NULL || which == NULL) {
		for (size_t i = 0; i < n; i++)
			errs[i] = KW_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		errs[i] = KW_ERR_INVALID;
		if (fetch_stmts(tenant_ids[i], user_ids[i], tenants[m], &scopes[2 * m], &st[4 * m]))
			which[m++] = i;
	}
	kw_err err = kw_db_exec_pipeline(db, st, 4 * m, res);
	if (err != KW_OK) {
		if (kw_db_in_tx(db))
			kw_db_rollback(db);
		/* One refused read aborts the rest of the pipeline: read each on
		 * its own, so only that one fails. Not when the database is gone. */
		for (size_t k = 0; k < m; k++) {
			size_t i = which[k];
			errs[i] = err == KW_ERR_DB_UNAVAILABLE
			              ? err
			              : kw_vault_fetch(db, tenant_ids[i], user_ids[i], &rows[i]);
		}
		goto done;
	}
	for (size_t k = 0; k < m; k++) {
		PQclear(res[4 * k]);
		PQclear(res[4 * k + 1]);
		PQclear(res[4 * k + 3]);
		errs[which[k]] = one_row(res[4 * k + 2], &rows[which[k]]);
	}
done:
	free(tenants);
	free(scopes);
	free(st);
	free(res);
	free(which);
}

/* Runs sql with the row's columns as $1..$6 (tenant, user, blob, IV,
 * format, KEK version) and, when old_kek is set, that version as $7;
 * none when it touched no row. */
static kw_err write_row(kw_db *db, const char *sql, const kw_vault_row *row, const uint32_t *old_kek,
                        kw_err none)
{
	char fv[12], kek[12], old[12];
	const char *vals[7] = {
	    row->tenant_id, row->user_id, (const char *)row->wrapped, (const char *)row->iv, fv, kek, old};
	int lens[7] = {0, 0, KW_VAULT_WRAPPED_LEN, KW_GCM_IV_LEN, 0, 0, 0}, fmts[7] = {0, 0, 1, 1, 0, 0, 0};
	snprintf(fv, sizeof(fv), "%d", row->format_version);
	snprintf(kek, sizeof(kek), "%" PRIu32, row->kek_id);
	snprintf(old, sizeof(old), "%" PRIu32, old_kek != NULL ? *old_kek : 0);
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, sql, old_kek != NULL ? 7 : 6, vals, lens, fmts, &res);
	if (err == KW_OK && strcmp(PQcmdTuples(res), "1") != 0)
		err = none;
	PQclear(res);
	return err;
}

kw_err kw_vault_insert(kw_db *db, const kw_vault_row *row)
{
	/* ON CONFLICT waits for a concurrent insert of the same key to finish
	 * and then does nothing: the caller reads the winner's row. */
	return write_row(db,
	                 "INSERT INTO encryption_vaults (" VAULT_COLS ") "
	                 "VALUES ($1::uuid, $2, $3, $4, $5::int, $6::int) "
	                 "ON CONFLICT (tenant_id, user_id) DO NOTHING",
	                 row, NULL, KW_ERR_EXISTS);
}

kw_err kw_vault_replace(kw_db *db, const kw_vault_row *row)
{
	return write_row(db,
	                 "UPDATE encryption_vaults SET wrapped_mk = $3, wrap_iv = $4, "
	                 "format_version = $5::int, kek_id = $6::int, rotated_at = now() "
	                 "WHERE tenant_id = $1::uuid AND user_id = $2",
	                 row, NULL, KW_ERR_NOT_FOUND);
}

/* --- KEK maintenance ---------------------------------------------------- */

#define SQL_MAINTENANCE "SELECT set_config('app.kek_maintenance', 'on', true)"

kw_err kw_vault_maintenance_check(kw_db *db)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db,
	                        "SELECT r.rolsuper OR ((r.rolbypassrls "
	                        "OR pg_has_role(current_user, c.relowner, 'USAGE')) "
	                        "AND NOT pg_has_role(current_user, 'keyward_app', 'MEMBER') "
	                        "AND has_table_privilege(c.oid, 'SELECT') "
	                        "AND has_table_privilege(c.oid, 'UPDATE')) "
	                        "FROM pg_roles r, pg_class c "
	                        "WHERE r.rolname = current_user AND c.oid = 'encryption_vaults'::regclass",
	                        0, NULL, NULL, NULL, &res);
	if (err == KW_OK && (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)) {
		kw_err_log("kek maintenance: this database role cannot see every vault row; connect as the "
		           "schema owner (db.admin_conninfo), not as the service's role");
		err = KW_ERR_CONFIG;
	}
	PQclear(res);
	return err;
}

kw_err kw_db_maint_count(kw_db *db, const char *sql, int n, const char *const *vals, long long *count)
{
	PGresult *res[4] = {0};
	kw_db_stmt st[4] = {
	    {"BEGIN READ ONLY", 0, NULL, NULL, NULL},
	    {SQL_MAINTENANCE, 0, NULL, NULL, NULL},
	    {sql, n, vals, NULL, NULL},
	    {"COMMIT", 0, NULL, NULL, NULL},
	};
	kw_err err = kw_db_exec_pipeline(db, st, 4, res);
	if (err == KW_OK)
		*count = strtoll(PQgetvalue(res[2], 0, 0), NULL, 10);
	else if (kw_db_in_tx(db))
		kw_db_rollback(db);
	for (size_t i = 0; i < 4; i++)
		PQclear(res[i]);
	return err;
}

kw_err kw_vault_count_kek(kw_db *db, uint32_t kek_id, uint32_t except, long long *count)
{
	char k[12], e[12];
	snprintf(k, sizeof(k), "%" PRIu32, kek_id);
	snprintf(e, sizeof(e), "%" PRIu32, except);
	const char *vals[2] = {k, e};
	/* Vaults, secret versions and signing keys: everything the KEK wraps. */
	return kw_db_maint_count(db,
	                         "SELECT (SELECT count(*) FROM encryption_vaults "
	                         "WHERE ($1::int = 0 AND kek_id <> $2::int) OR kek_id = $1::int) + "
	                         "(SELECT count(*) FROM secret_versions "
	                         "WHERE ($1::int = 0 AND kek_id <> $2::int) OR kek_id = $1::int) + "
	                         "(SELECT count(*) FROM signing_keys "
	                         "WHERE ($1::int = 0 AND kek_id <> $2::int) OR kek_id = $1::int)",
	                         2, vals, count);
}

kw_err kw_vault_rewrap_start(kw_db *db)
{
	kw_err err = kw_db_exec(db,
	                        "CREATE TEMPORARY TABLE IF NOT EXISTS kek_rewrap_skip "
	                        "(tenant_id uuid, user_id text, PRIMARY KEY (tenant_id, user_id))",
	                        0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, "TRUNCATE pg_temp.kek_rewrap_skip", 0, NULL, NULL, NULL, NULL);
	return err;
}

kw_err kw_vault_set_aside(kw_db *db, const kw_vault_row *row)
{
	const char *vals[2] = {row->tenant_id, row->user_id};
	return kw_db_exec(db,
	                  "INSERT INTO pg_temp.kek_rewrap_skip VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING",
	                  2, vals, NULL, NULL, NULL);
}

static kw_err read_vault_row(const kw_db_result *r, int row, void *out)
{
	return row_read(r, row, out);
}

kw_err kw_vault_rewrap_lock(kw_db *db, uint32_t active, size_t batch, kw_vault_row **rows, size_t *n)
{
	char vs[12], lim[24];
	snprintf(vs, sizeof(vs), "%" PRIu32, active);
	snprintf(lim, sizeof(lim), "%zu", batch);
	const char *vals[2] = {vs, lim};
	PGresult *sel = NULL;
	*rows = NULL;
	*n = 0;
	kw_err err = kw_db_begin(db, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, SQL_MAINTENANCE, 0, NULL, NULL, NULL, NULL);
	/* Rows a request holds (a rotation in flight) are left for the next
	 * batch rather than waited for. */
	if (err == KW_OK)
		err = kw_db_exec(db,
		                 "SELECT " VAULT_COLS " FROM encryption_vaults v WHERE kek_id <> $1::int "
		                 "AND NOT EXISTS (SELECT 1 FROM pg_temp.kek_rewrap_skip k "
		                 "WHERE k.tenant_id = v.tenant_id AND k.user_id = v.user_id) "
		                 "ORDER BY tenant_id, user_id LIMIT $2::int FOR UPDATE OF v SKIP LOCKED",
		                 2, vals, NULL, NULL, &sel);
	if (err == KW_OK)
		err = kw_db_rows_read(sel, sizeof(**rows), read_vault_row, (void **)rows, n);
	PQclear(sel);
	return err;
}

kw_err kw_vault_rewrap_update(kw_db *db, const kw_vault_row *fresh, uint32_t old_kek)
{
	/* The row is locked, so the old KEK version still names it; the check
	 * is a belt to the lock's braces. rotated_at is left: the MK did not
	 * change. */
	return write_row(db,
	                 "UPDATE encryption_vaults SET wrapped_mk = $3, wrap_iv = $4, "
	                 "format_version = $5::int, kek_id = $6::int "
	                 "WHERE tenant_id = $1::uuid AND user_id = $2 AND kek_id = $7::int",
	                 fresh, &old_kek, KW_ERR_CONFLICT);
}

kw_err kw_vault_rewrap_left(kw_db *db, uint32_t active, long long *left)
{
	char a[12];
	snprintf(a, sizeof(a), "%" PRIu32, active);
	const char *vals[1] = {a};
	return kw_db_maint_count(db,
	                         "SELECT count(*) FROM encryption_vaults v WHERE kek_id <> $1::int "
	                         "AND NOT EXISTS (SELECT 1 FROM pg_temp.kek_rewrap_skip k "
	                         "WHERE k.tenant_id = v.tenant_id AND k.user_id = v.user_id)",
	                         1, vals, left);
}

kw_err kw_vault_kek_retire(kw_db *db, uint32_t kek_id, long long *rows)
{
	char k[12];
	snprintf(k, sizeof(k), "%" PRIu32, kek_id);
	const char *vals[1] = {k};
	PGresult *res = NULL;
	/* Rows still under it: refused without taking the lock below, which
	 * holds every vault write while it waits and while it is held. */
	kw_err err = kw_vault_count_kek(db, kek_id, 0, rows);
	if (err == KW_OK && *rows > 0)
		return KW_ERR_EXISTS;
	if (err == KW_OK)
		err = kw_db_begin(db, NULL, NULL); /* READ COMMITTED, as the trigger wants */
	if (err == KW_OK)
		err = kw_db_exec(db, SQL_MAINTENANCE, 0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, "SET LOCAL lock_timeout = '3s'", 0, NULL, NULL, NULL, NULL);
	/* Writers (init, rotate, rewrap) wait until the mark is committed;
	 * readers do not. Every write that committed before is counted, and
	 * every write after it sees the mark (its trigger's query runs after
	 * the lock is granted, at READ COMMITTED). */
	if (err == KW_OK)
		err = kw_db_exec(
		    db,
		    "LOCK TABLE encryption_vaults, secret_versions, signing_keys IN SHARE ROW EXCLUSIVE MODE",
		    0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db,
		                 "SELECT (SELECT count(*) FROM encryption_vaults WHERE kek_id = $1::int) + "
		                 "(SELECT count(*) FROM secret_versions WHERE kek_id = $1::int) + "
		                 "(SELECT count(*) FROM signing_keys WHERE kek_id = $1::int)",
		                 1, vals, NULL, NULL, &res);
	if (err == KW_OK) {
		*rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		if (*rows > 0)
			err = KW_ERR_EXISTS;
	}
	PQclear(res);
	if (err == KW_OK)
		err =
		    kw_db_exec(db, "INSERT INTO kek_retired (kek_id) VALUES ($1::int) ON CONFLICT DO NOTHING",
		               1, vals, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_commit(db);
	else if (kw_db_in_tx(db))
		kw_db_rollback(db);
	return err;
}
