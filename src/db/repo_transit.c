/* repo_transit.c — see keyward/db/repo_transit.h. */
#include "keyward/db/repo_transit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define KEY_COLS                                                                                             \
	"k.name, k.type, k.latest_version::text, k.min_decryption_version::text, " TS(                       \
	    "k.created_at") ", " TS("k.updated_at")

#define SQL_CREATE                                                                                           \
	"WITH k AS (INSERT INTO transit_keys (tenant_id, name, type) VALUES ($1::uuid, $2, $3) RETURNING "   \
	"*), "                                                                                               \
	"v AS (INSERT INTO transit_key_versions (tenant_id, name, version, derive_version) "                 \
	"SELECT tenant_id, name, 1, $4::int FROM k) "                                                        \
	"SELECT " KEY_COLS ", 1::text, $4::text FROM k"
#define SQL_VERSION                                                                                          \
	"SELECT " KEY_COLS ", v.version::text, v.derive_version::text FROM transit_keys k "                  \
	"JOIN transit_key_versions v ON v.tenant_id = k.tenant_id AND v.name = k.name "                      \
	"WHERE k.tenant_id = $1::uuid AND k.name = $2 AND v.version = coalesce(nullif($3::int, 0), "         \
	"k.latest_version)"
#define SQL_LIST                                                                                             \
	"SELECT " KEY_COLS ", k.latest_version::text, '0' FROM transit_keys k WHERE k.tenant_id = $1::uuid " \
	"ORDER BY k.name"
#define SQL_ROTATE                                                                                           \
	"WITH k AS (UPDATE transit_keys SET latest_version = latest_version + 1, updated_at = now() "        \
	"WHERE tenant_id = $1::uuid AND name = $2 RETURNING *), "                                            \
	"v AS (INSERT INTO transit_key_versions (tenant_id, name, version, derive_version) "                 \
	"SELECT tenant_id, name, latest_version, $3::int FROM k) "                                           \
	"SELECT " KEY_COLS ", k.latest_version::text, $3::text FROM k"
#define SQL_CONFIG                                                                                           \
	"UPDATE transit_keys k SET min_decryption_version = $3::int, updated_at = now() "                    \
	"WHERE k.tenant_id = $1::uuid AND k.name = $2 AND $3::int BETWEEN 1 AND k.latest_version "           \
	"RETURNING " KEY_COLS ", k.latest_version::text, '0'"

bool kw_transit_name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > KW_TRANSIT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

static bool u32(const char *s, uint32_t *out)
{
	char *end = NULL;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || *end != '\0' || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static kw_err read_row(const kw_db_result *r, int row, void *out)
{
	kw_transit_key_row *k = out;
	memset(k, 0, sizeof(*k));
	bool ok = kw_db_copy_text(r, row, 0, k->name, sizeof(k->name)) &&
	          kw_db_copy_text(r, row, 1, k->type, sizeof(k->type)) &&
	          u32(kw_db_text(r, row, 2), &k->latest_version) &&
	          u32(kw_db_text(r, row, 3), &k->min_decryption_version) &&
	          kw_db_copy_text(r, row, 4, k->created_at, sizeof(k->created_at)) &&
	          kw_db_copy_text(r, row, 5, k->updated_at, sizeof(k->updated_at)) &&
	          u32(kw_db_text(r, row, 6), &k->version) && u32(kw_db_text(r, row, 7), &k->derive_version);
	return ok ? KW_OK : KW_ERR_DB;
}

/* One row of sql into *row; none is none. */
static kw_err one(kw_db *db, const char *sql, int nparams, const char *const *vals, kw_err none,
                  kw_transit_key_row *row)
{
	kw_db_result *res = NULL;
	kw_err err = kw_db_exec(db, sql, nparams, vals, NULL, NULL, &res);
	if (err == KW_OK)
		err = kw_db_nrows(res) == 1 ? read_row(res, 0, row) : none;
	kw_db_result_free(res);
	return err;
}

kw_err kw_transit_key_create(kw_db *db, const char *tenant_id, const char *name, const char *type,
                             uint32_t derive_version, kw_transit_key_row *row)
{
	char dv[12];
	snprintf(dv, sizeof(dv), "%" PRIu32, derive_version);
	const char *vals[4] = {tenant_id, name, type, dv};
	return one(db, SQL_CREATE, 4, vals, KW_ERR_DB, row);
}

/* sql with (tenant, name, u) as $1..$3. */
static kw_err one_u32(kw_db *db, const char *sql, const char *tenant_id, const char *name, uint32_t u,
                      kw_transit_key_row *row)
{
	char v[12];
	snprintf(v, sizeof(v), "%" PRIu32, u);
	const char *vals[3] = {tenant_id, name, v};
	return one(db, sql, 3, vals, KW_ERR_NOT_FOUND, row);
}

kw_err kw_transit_key_version(kw_db *db, const char *tenant_id, const char *name, uint32_t version,
                              kw_transit_key_row *row)
{
	return one_u32(db, SQL_VERSION, tenant_id, name, version, row);
}

kw_err kw_transit_key_list(kw_db *db, const char *tenant_id, kw_transit_key_row **rows, size_t *n)
{
	const char *vals[1] = {tenant_id};
	return kw_db_query_rows(db, SQL_LIST, 1, vals, sizeof(**rows), read_row, (void **)rows, n);
}

kw_err kw_transit_key_rotate(kw_db *db, const char *tenant_id, const char *name, uint32_t derive_version,
                             kw_transit_key_row *row)
{
	return one_u32(db, SQL_ROTATE, tenant_id, name, derive_version, row);
}

kw_err kw_transit_key_config(kw_db *db, const char *tenant_id, const char *name, uint32_t min,
                             kw_transit_key_row *row)
{
	kw_err err = one_u32(db, SQL_CONFIG, tenant_id, name, min, row);
	if (err != KW_ERR_NOT_FOUND)
		return err;
	/* No row: no such key, or a version out of range. */
	kw_transit_key_row k;
	err = kw_transit_key_version(db, tenant_id, name, 0, &k);
	return err == KW_OK ? KW_ERR_INVALID : err;
}

kw_err kw_transit_versions_using(kw_db *db, uint32_t derive_version, long long *n)
{
	char dv[12];
	snprintf(dv, sizeof(dv), "%" PRIu32, derive_version);
	const char *vals[1] = {dv};
	kw_db_result *res = NULL;
	kw_err err = kw_db_exec(
	    db,
	    "SELECT count(*)::text FROM transit_key_versions v JOIN transit_keys k ON k.tenant_id = "
	    "v.tenant_id AND k.name = v.name WHERE v.derive_version = $1::int AND v.version >= "
	    "k.min_decryption_version",
	    1, vals, NULL, NULL, &res);
	if (err == KW_OK)
		*n = kw_db_nrows(res) == 1 ? strtoll(kw_db_text(res, 0, 0), NULL, 10) : -1;
	kw_db_result_free(res);
	return err == KW_OK && *n < 0 ? KW_ERR_DB : err;
}
