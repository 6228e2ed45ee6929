/* repo_signing.c — see keyward/db/repo_signing.h. */
#include "keyward/db/repo_signing.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/scopes.h"
#include "keyward/core/text.h"
#include "keyward/db/repo_vaults.h"

#define TS(col) "coalesce(to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
#define COLS                                                                                                 \
	"k.tenant_id::text, k.id::text, k.name, array_to_string(k.scopes, ','), k.format_version::text, "    \
	"k.kek_id::text, k.wrapped_secret, k.secret_iv, " TS("k.created_at") ", " TS(                        \
	    "k.expires_at") ", " TS("k.revoked_at") ", coalesce(floor(extract(epoch FROM "                   \
	                                            "k.expires_at))::bigint, 0)::text, "                     \
	                                            "coalesce(k.replaced_by::text, '')"
#define SQL_MAINTENANCE "SELECT set_config('app.kek_maintenance', 'on', true)"

static kw_err row_read(const kw_db_result *r, int i, void *out)
{
	kw_signing_row *row = out;
	memset(row, 0, sizeof(*row));
	char *end = NULL;
	unsigned long fv = strtoul(PQgetvalue(r, i, 4), NULL, 10),
	              kek = strtoul(PQgetvalue(r, i, 5), NULL, 10);
	if (PQgetlength(r, i, 0) != 36 || PQgetlength(r, i, 1) != 36 ||
	    PQgetlength(r, i, 2) > KW_SIGNING_NAME_MAX || kek == 0 || kek > UINT32_MAX ||
	    !kw_db_bytea_exact(r, i, 6, row->wrapped, sizeof(row->wrapped)) ||
	    !kw_db_bytea_exact(r, i, 7, row->iv, sizeof(row->iv)))
		return KW_ERR_DB;
	memcpy(row->tenant_id, PQgetvalue(r, i, 0), 37);
	memcpy(row->id, PQgetvalue(r, i, 1), 37);
	snprintf(row->name, sizeof(row->name), "%s", PQgetvalue(r, i, 2));
	row->scopes = kw_scopes_from_text(PQgetvalue(r, i, 3));
	row->format_version = (int)fv;
	row->kek_id = (uint32_t)kek;
	snprintf(row->created_at, sizeof(row->created_at), "%s", PQgetvalue(r, i, 8));
	snprintf(row->expires_at, sizeof(row->expires_at), "%s", PQgetvalue(r, i, 9));
	snprintf(row->revoked_at, sizeof(row->revoked_at), "%s", PQgetvalue(r, i, 10));
	row->expires_unix = strtoll(PQgetvalue(r, i, 11), &end, 10);
	row->revoked = row->revoked_at[0] != '\0';
	snprintf(row->replaced_by, sizeof(row->replaced_by), "%s", PQgetvalue(r, i, 12));
	return KW_OK;
}

kw_err kw_signing_insert(kw_db *db, kw_signing_row *row)
{
	char scopes[256], fv[12], kek[12];
	if (!kw_scopes_text(row->scopes, scopes, sizeof(scopes)))
		return KW_ERR_INVALID;
	snprintf(fv, sizeof(fv), "%d", row->format_version);
	snprintf(kek, sizeof(kek), "%" PRIu32, row->kek_id);
	const char *vals[7] = {
	    row->tenant_id, row->id, row->name, scopes, fv, kek, (const char *)row->wrapped};
	const char *vals8[8] = {vals[0], vals[1], vals[2], vals[3],
	                        vals[4], vals[5], vals[6], (const char *)row->iv};
	int lens[8] = {0, 0, 0, 0, 0, 0, KW_SIGNING_WRAPPED_LEN, KW_GCM_IV_LEN},
	    fmts[8] = {0, 0, 0, 0, 0, 0, 1, 1};
	PGresult *res = NULL;
	kw_err err =
	    kw_db_exec(db,
	               "INSERT INTO signing_keys (tenant_id, id, name, scopes, format_version, kek_id, "
	               "wrapped_secret, secret_iv) VALUES ($1::uuid, $2::uuid, $3, string_to_array($4, ','), "
	               "$5::int, $6::int, $7, $8) RETURNING " TS("created_at"),
	               8, vals8, lens, fmts, &res);
	if (err == KW_OK)
		snprintf(row->created_at, sizeof(row->created_at), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return err;
}

kw_err kw_signing_list(kw_db *db, kw_signing_row **rows, size_t *n)
{
	return kw_db_query_rows(db, "SELECT " COLS " FROM signing_keys k ORDER BY k.created_at DESC, k.id", 0,
	                        NULL, sizeof(**rows), row_read, (void **)rows, n);
}

kw_err kw_signing_lock(kw_db *db, const char *id, kw_signing_row *row)
{
	if (!kw_is_uuid(id))
		return KW_ERR_NOT_FOUND;
	const char *vals[1] = {id};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, "SELECT " COLS " FROM signing_keys k WHERE k.id = $1::uuid FOR UPDATE", 1,
	                        vals, NULL, NULL, &res);
	if (err == KW_OK)
		err = PQntuples(res) == 1 ? row_read(res, 0, row) : KW_ERR_NOT_FOUND;
	PQclear(res);
	return err;
}

kw_err kw_signing_revoke(kw_db *db, const char *id)
{
	const char *vals[1] = {id};
	return kw_db_exec(
	    db, "UPDATE signing_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1::uuid", 1,
	    vals, NULL, NULL, NULL);
}

kw_err kw_signing_expire(kw_db *db, const char *id, int overlap_s, const char *successor, char expires_at[32])
{
	char o[16];
	snprintf(o, sizeof(o), "%d", overlap_s);
	const char *vals[3] = {id, o, successor};
	PGresult *res = NULL;
	kw_err err =
	    kw_db_exec(db,
	               "UPDATE signing_keys SET expires_at = least(coalesce(expires_at, 'infinity'), now() + "
	               "make_interval(secs => $2::int)), replaced_by = $3::uuid WHERE id = $1::uuid "
	               "RETURNING " TS("expires_at"),
	               3, vals, NULL, NULL, &res);
	if (err == KW_OK && PQntuples(res) != 1)
		err = KW_ERR_NOT_FOUND;
	if (err == KW_OK)
		snprintf(expires_at, 32, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return err;
}

kw_err kw_signing_lookup(kw_db *db, const char *kid, kw_signing_row *row)
{
	if (!kw_is_uuid(kid))
		return KW_ERR_NOT_FOUND;
	const char *vals[1] = {kid};
	/* The tenant (a definer function: the service cannot list keys across
	 * tenants), then the row in a read-only transaction scoped to it, in
	 * one round trip: the scope is set from the function's answer. */
	kw_db_stmt st[4] = {
	    {"BEGIN READ ONLY", 0, NULL, NULL, NULL},
	    {"SELECT set_config('app.tenant_id', coalesce(keyward_signing_key_tenant($1::uuid)::text, ''), "
	     "true)",
	     1, vals, NULL, NULL},
	    {"SELECT " COLS " FROM signing_keys k WHERE k.id = $1::uuid", 1, vals, NULL, NULL},
	    {"COMMIT", 0, NULL, NULL, NULL},
	};
	PGresult *res[4] = {0};
	kw_err err = kw_db_exec_pipeline(db, st, 4, res);
	if (err != KW_OK) {
		if (kw_db_in_tx(db))
			kw_db_rollback(db);
		return err;
	}
	err = PQntuples(res[2]) == 1 ? row_read(res[2], 0, row) : KW_ERR_NOT_FOUND;
	for (int i = 0; i < 4; i++)
		PQclear(res[i]);
	return err;
}

kw_err kw_signing_spend_nonce(kw_db *db, const char *kid, const char *nonce, int64_t expires_unix)
{
	char exp[24];
	snprintf(exp, sizeof(exp), "%" PRId64, expires_unix);
	const char *vals[3] = {kid, nonce, exp};
	/* Durable within the WAL writer's delay, not at commit: a crash of
	 * PostgreSQL in that window forgets the last nonces (docs). */
	kw_db_stmt st[4] = {
	    {"BEGIN", 0, NULL, NULL, NULL},
	    {"SET LOCAL synchronous_commit = off", 0, NULL, NULL, NULL},
	    {"INSERT INTO signing_nonces (key_id, nonce, expires_at) VALUES ($1::uuid, $2, "
	     "to_timestamp($3::bigint)) "
	     "ON CONFLICT DO NOTHING",
	     3, vals, NULL, NULL},
	    {"COMMIT", 0, NULL, NULL, NULL},
	};
	PGresult *res[4] = {0};
	kw_err err = kw_db_exec_pipeline(db, st, 4, res);
	if (err != KW_OK && kw_db_in_tx(db))
		kw_db_rollback(db);
	if (err == KW_OK && kw_db_affected(res[2]) != 1)
		err = KW_ERR_EXISTS;
	for (int i = 0; i < 4; i++)
		PQclear(res[i]);
	return err;
}

/* --- KEK maintenance --------------------------------------------------------- */

kw_err kw_signing_rewrap_start(kw_db *db)
{
	kw_err err = kw_db_exec(
	    db, "CREATE TEMPORARY TABLE IF NOT EXISTS kek_rewrap_skip_signing (id uuid PRIMARY KEY)", 0, NULL,
	    NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, "TRUNCATE pg_temp.kek_rewrap_skip_signing", 0, NULL, NULL, NULL, NULL);
	return err;
}

kw_err kw_signing_set_aside(kw_db *db, const kw_signing_row *row)
{
	const char *vals[1] = {row->id};
	return kw_db_exec(
	    db, "INSERT INTO pg_temp.kek_rewrap_skip_signing VALUES ($1::uuid) ON CONFLICT DO NOTHING", 1,
	    vals, NULL, NULL, NULL);
}

kw_err kw_signing_rewrap_lock(kw_db *db, uint32_t active, size_t batch, kw_signing_row **rows, size_t *n)
{
	char vs[12], lim[24];
	snprintf(vs, sizeof(vs), "%" PRIu32, active);
	snprintf(lim, sizeof(lim), "%zu", batch);
	const char *vals[2] = {vs, lim};
	*rows = NULL;
	*n = 0;
	kw_err err = kw_db_begin(db, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, SQL_MAINTENANCE, 0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_query_rows(db,
		                       "SELECT " COLS
		                       " FROM signing_keys k WHERE k.kek_id <> $1::int AND NOT EXISTS "
		                       "(SELECT 1 FROM pg_temp.kek_rewrap_skip_signing s WHERE s.id = k.id) "
		                       "ORDER BY k.id LIMIT $2::int FOR UPDATE OF k SKIP LOCKED",
		                       2, vals, sizeof(**rows), row_read, (void **)rows, n);
	return err;
}

kw_err kw_signing_rewrap_update(kw_db *db, const kw_signing_row *fresh, uint32_t old_kek)
{
	char kek[12], old[12];
	snprintf(kek, sizeof(kek), "%" PRIu32, fresh->kek_id);
	snprintf(old, sizeof(old), "%" PRIu32, old_kek);
	const char *vals[5] = {fresh->id, kek, (const char *)fresh->wrapped, (const char *)fresh->iv, old};
	int lens[5] = {0, 0, KW_SIGNING_WRAPPED_LEN, KW_GCM_IV_LEN, 0}, fmts[5] = {0, 0, 1, 1, 0};
	PGresult *res = NULL;
	kw_err err =
	    kw_db_exec(db,
	               "UPDATE signing_keys SET kek_id = $2::int, wrapped_secret = $3, secret_iv = $4 "
	               "WHERE id = $1::uuid AND kek_id = $5::int",
	               5, vals, lens, fmts, &res);
	if (err == KW_OK && kw_db_affected(res) != 1)
		err = KW_ERR_CONFLICT;
	PQclear(res);
	return err;
}

kw_err kw_signing_rewrap_left(kw_db *db, uint32_t active, long long *left)
{
	char a[12];
	snprintf(a, sizeof(a), "%" PRIu32, active);
	const char *vals[1] = {a};
	return kw_db_maint_count(
	    db,
	    "SELECT count(*) FROM signing_keys k WHERE k.kek_id <> $1::int AND NOT EXISTS "
	    "(SELECT 1 FROM pg_temp.kek_rewrap_skip_signing s WHERE s.id = k.id)",
	    1, vals, left);
}
