/* repo_apikeys.c — the api_keys table and the api_key_prefixes directory.
 *
 * Every statement is parameterised. Reads and writes of api_keys run in
 * the caller's transaction scoped to one tenant (kw_db_begin), so row-level
 * security decides what is visible: another tenant's key is simply absent.
 * The directory (prefix -> tenant) has no RLS and is read first, before
 * the tenant is known. Only HMAC(pepper, key) is ever stored, never the
 * key. Scopes travel as a comma-separated list of names from the fixed
 * scope table, never user text. Outputs are written only on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/text.h"
#include "keyward/db/repo_apikeys.h"

#define KW_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

#define SQL_TIMES KW_TS("created_at") ", " KW_TS("last_used_at") ", " KW_TS("revoked_at")
#define SQL_COLS                                                                                             \
	"id::text, tenant_id::text, name, prefix, encode(key_hmac, 'hex'), pepper_id::text, "                \
	"array_to_string(scopes, ','), coalesce(rate_limit_per_minute, 0)::text, " SQL_TIMES
enum {
	C_ID,
	C_TENANT,
	C_NAME,
	C_PREFIX,
	C_HMAC,
	C_PEPPER,
	C_SCOPES,
	C_RATE,
	C_CREATED,
	C_USED,
	C_REVOKED,
	C_N
};

/* One statement: the key and its directory entry, or neither. */
#define SQL_INSERT                                                                                           \
	"WITH k AS (INSERT INTO api_keys (tenant_id, name, prefix, key_hmac, pepper_id, scopes, "            \
	"rate_limit_per_minute) VALUES ($1::uuid, $2, $3, $4::bytea, $5::int, string_to_array($6, ','), "    \
	"$7::int) RETURNING id, tenant_id, prefix, created_at), "                                            \
	"d AS (INSERT INTO api_key_prefixes (prefix, tenant_id) SELECT prefix, tenant_id FROM k) "           \
	"SELECT id::text, " KW_TS("created_at") " FROM k"
/* One prefix at a time (migration 0009): the directory itself is not the
 * service's to read. */
#define SQL_TENANT_OF "SELECT t::text FROM keyward_api_key_tenant($1) t WHERE t IS NOT NULL"
#define SQL_BY_PREFIX "SELECT " SQL_COLS " FROM api_keys WHERE prefix = $1"
#define SQL_LIST      "SELECT " SQL_COLS " FROM api_keys ORDER BY api_keys.created_at DESC, api_keys.id DESC"
#define SQL_REVOKE                                                                                           \
	"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1::uuid "                  \
	"RETURNING " SQL_COLS
#define SQL_TOUCH "UPDATE api_keys SET last_used_at = now() WHERE id = $1::uuid"

static bool is_b62(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool prefix_ok(const char *p)
{
	if (p == NULL || strnlen(p, KW_APIKEY_PREFIX_LEN + 1) != KW_APIKEY_PREFIX_LEN)
		return false;
	if (strncmp(p, "kw_", 3) != 0)
		return false;
	for (size_t i = 3; i < KW_APIKEY_PREFIX_LEN; i++)
		if (!is_b62(p[i]))
			return false;
	return true;
}

static bool name_ok(const char *n)
{
	size_t len = n != NULL ? strnlen(n, KW_APIKEY_MAX_NAME + 1) : 0;
	if (len == 0 || len > KW_APIKEY_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)n[i] < 0x20 || n[i] == 0x7f)
			return false;
	return true;
}

/* Copies a result field into a buffer of cap bytes; false if it is longer. */
static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	if (s[0] < '0' || s[0] > '9')
		return false;
	unsigned long v = strtoul(s, &end, 10);
	if (*end != '\0' || v > max)
		return false;
	*out = v;
	return true;
}

/* One row of SQL_COLS into *out. KW_ERR_INTERNAL if it does not fit. */
static kw_err row_from_result(const PGresult *res, int i, kw_apikey_row *out)
{
	kw_apikey_row r;
	unsigned long pepper = 0, rate = 0;

	memset(&r, 0, sizeof(r));
	if (PQnfields(res) != C_N || !kw_db_copy_text(res, i, C_ID, r.id, sizeof(r.id)) ||
	    !kw_db_copy_text(res, i, C_TENANT, r.tenant_id, sizeof(r.tenant_id)) ||
	    !kw_db_copy_text(res, i, C_NAME, r.name, sizeof(r.name)) ||
	    !kw_db_copy_text(res, i, C_PREFIX, r.prefix, sizeof(r.prefix)) ||
	    !kw_db_copy_text(res, i, C_CREATED, r.created_at, sizeof(r.created_at)) ||
	    !kw_db_copy_text(res, i, C_USED, r.last_used_at, sizeof(r.last_used_at)) ||
	    !kw_db_copy_text(res, i, C_REVOKED, r.revoked_at, sizeof(r.revoked_at)))
		return KW_ERR_INTERNAL;
	const char *hex = PQgetvalue(res, i, C_HMAC);
	if (PQgetlength(res, i, C_HMAC) != 2 * KW_HMAC_LEN)
		return KW_ERR_INTERNAL;
	for (size_t b = 0; b < KW_HMAC_LEN; b++) {
		int hi = kw_hex_value(hex[2 * b]), lo = kw_hex_value(hex[2 * b + 1]);
		if (hi < 0 || lo < 0)
			return KW_ERR_INTERNAL;
		r.key_hmac[b] = (unsigned char)(hi << 4 | lo);
	}
	if (!parse_uint(PQgetvalue(res, i, C_PEPPER), UINT32_MAX, &pepper) ||
	    !parse_uint(PQgetvalue(res, i, C_RATE), INT32_MAX, &rate))
		return KW_ERR_INTERNAL;
	r.pepper_version = (uint32_t)pepper;
	r.rate_limit_per_minute = (int)rate;
	r.scopes = kw_scopes_from_text(PQgetvalue(res, i, C_SCOPES));
	*out = r;
	return KW_OK;
}

/* Runs a statement expected to return at most one SQL_COLS row. */
static kw_err one_row(kw_db *db, const char *sql, const char *param, kw_apikey_row *out)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	const char *vals[1] = {param};

	err = kw_db_exec(db, sql, 1, vals, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	if (PQntuples(res) != 1) {
		err = PQntuples(res) == 0 ? KW_ERR_NOT_FOUND : KW_ERR_INTERNAL;
		goto done;
	}
	err = row_from_result(res, 0, out);
done:
	PQclear(res);
	return err;
}

kw_err kw_apikey_insert(kw_db *db, kw_apikey_row *row)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	char scopes[256], pepper[16], rate[16];
	char id[37], created[40];

	if (db == NULL || row == NULL)
		kw_misuse("kw_apikey_insert: NULL argument");
	if (!kw_is_uuid(row->tenant_id) || !name_ok(row->name) || !prefix_ok(row->prefix) ||
	    row->pepper_version == 0 || row->pepper_version > INT32_MAX || row->rate_limit_per_minute < 0 ||
	    !kw_scopes_text(row->scopes, scopes, sizeof(scopes)))
		return KW_ERR_INVALID;
	snprintf(pepper, sizeof(pepper), "%u", (unsigned)row->pepper_version);
	snprintf(rate, sizeof(rate), "%d", row->rate_limit_per_minute);

	const char *vals[7] = {row->tenant_id,
	                       row->name,
	                       row->prefix,
	                       (const char *)row->key_hmac,
	                       pepper,
	                       scopes,
	                       row->rate_limit_per_minute > 0 ? rate : NULL};
	const int lens[7] = {0, 0, 0, KW_HMAC_LEN, 0, 0, 0};
	const int fmts[7] = {0, 0, 0, 1, 0, 0, 0};
	err = kw_db_exec(db, SQL_INSERT, 7, vals, lens, fmts, &res);
	if (err != KW_OK)
		goto done;
	if (PQntuples(res) != 1 || !kw_db_copy_text(res, 0, 0, id, sizeof(id)) ||
	    !kw_db_copy_text(res, 0, 1, created, sizeof(created))) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	memcpy(row->id, id, sizeof(id));
	memcpy(row->created_at, created, sizeof(created));
	row->last_used_at[0] = '\0';
	row->revoked_at[0] = '\0';
done:
	PQclear(res);
	return err;
}

kw_err kw_apikey_tenant_of(kw_db *db, const char *prefix, char tenant_id[37])
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	char t[37];

	if (db == NULL || tenant_id == NULL)
		kw_misuse("kw_apikey_tenant_of: NULL argument");
	/* No key can have a malformed prefix: nothing to ask the database. */
	if (!prefix_ok(prefix))
		return KW_ERR_NOT_FOUND;
	const char *vals[1] = {prefix};
	err = kw_db_exec(db, SQL_TENANT_OF, 1, vals, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	if (PQntuples(res) != 1) {
		err = PQntuples(res) == 0 ? KW_ERR_NOT_FOUND : KW_ERR_INTERNAL;
		goto done;
	}
	if (!kw_db_copy_text(res, 0, 0, t, sizeof(t)) || !kw_is_uuid(t)) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	memcpy(tenant_id, t, sizeof(t));
done:
	PQclear(res);
	return err;
}

kw_err kw_apikey_get_by_prefix(kw_db *db, const char *prefix, kw_apikey_row *out)
{
	if (db == NULL || out == NULL)
		kw_misuse("kw_apikey_get_by_prefix: NULL argument");
	if (!prefix_ok(prefix))
		return KW_ERR_NOT_FOUND;
	return one_row(db, SQL_BY_PREFIX, prefix, out);
}

static kw_err read_key(const kw_db_result *r, int row, void *out)
{
	return row_from_result(r, row, out);
}

kw_err kw_apikey_list(kw_db *db, kw_apikey_row **rows, size_t *n)
{
	if (db == NULL || rows == NULL || n == NULL)
		kw_misuse("kw_apikey_list: NULL argument");
	return kw_db_query_rows(db, SQL_LIST, 0, NULL, sizeof(**rows), read_key, (void **)rows, n);
}

kw_err kw_apikey_revoke(kw_db *db, const char *id, kw_apikey_row *out)
{
	if (db == NULL || out == NULL)
		kw_misuse("kw_apikey_revoke: NULL argument");
	/* An id that is no uuid names no key; the database is not asked. */
	if (!kw_is_uuid(id))
		return KW_ERR_NOT_FOUND;
	return one_row(db, SQL_REVOKE, id, out);
}

kw_err kw_apikey_touch(kw_db *db, const char *id)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;

	if (db == NULL)
		kw_misuse("kw_apikey_touch: NULL db");
	if (!kw_is_uuid(id))
		return KW_ERR_NOT_FOUND;
	const char *vals[1] = {id};
	err = kw_db_exec(db, SQL_TOUCH, 1, vals, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	if (strcmp(PQcmdTuples(res), "1") != 0)
		err = KW_ERR_NOT_FOUND;
done:
	PQclear(res);
	return err;
}
