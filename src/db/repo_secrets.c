/* repo_secrets.c — see keyward/db/repo_secrets.h. Plain parameterised SQL
 * under row-level security; values and data keys travel as binary
 * parameters and results, never as text. */
#include "keyward/db/repo_secrets.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/text.h"
#include "keyward/db/repo_vaults.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define VERSION_COLS                                                                                         \
	"v.tenant_id::text, v.secret_id::text, v.version::text, v.format_version::text, v.kek_id::text, "    \
	"v.wrapped_dk, v.dk_iv, v.value_iv, v.value_ct"
#define SQL_MAINTENANCE "SELECT set_config('app.kek_maintenance', 'on', true)"

void kw_secret_version_clear(kw_secret_version *v)
{
	if (v->value_ct != NULL) {
		OPENSSL_cleanse(v->value_ct, v->value_len);
		free(v->value_ct);
	}
	OPENSSL_cleanse(v, sizeof(*v));
}

bool kw_secret_name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > KW_SECRET_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!(isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-'))
			return false;
	}
	return true;
}

static bool u32_of(const char *s, uint32_t *out)
{
	char *end = NULL;
	unsigned long long v = s ? strtoull(s, &end, 10) : 0;
	if (s == NULL || end == s || *end != '\0' || v == 0 || v > INT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* A bytea column (text result): exactly len bytes into out, or (dyn) of
 * KW_GCM_TAG_LEN .. KW_SECRET_VALUE_MAX + 16 bytes into a new buffer. */
static bool bin_col(const PGresult *r, int row, int col, unsigned char *out, size_t len, unsigned char **dyn,
                    size_t *dlen)
{
	size_t n = 0;
	unsigned char *b = PQgetisnull(r, row, col)
	                       ? NULL
	                       : PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
	bool ok = b != NULL &&
	          (dyn == NULL ? n == len : n >= KW_GCM_TAG_LEN && n <= KW_SECRET_VALUE_MAX + KW_GCM_TAG_LEN);
	if (ok && dyn == NULL)
		memcpy(out, b, len);
	if (ok && dyn != NULL && (*dyn = malloc(n)) == NULL)
		ok = false;
	if (ok && dyn != NULL) {
		memcpy(*dyn, b, n);
		*dlen = n;
	}
	if (b != NULL) {
		OPENSSL_cleanse(b, n);
		PQfreemem(b);
	}
	return ok;
}

/* Columns off .. off+8 of r (binary results) as a version. */
static kw_err version_read(const PGresult *r, int row, int off, kw_secret_version *v)
{
	memset(v, 0, sizeof(*v));
	uint32_t fv = 0;
	bool ok = PQgetlength(r, row, off) == 36 && PQgetlength(r, row, off + 1) == 36 &&
	          u32_of(PQgetvalue(r, row, off + 2), &v->version) &&
	          u32_of(PQgetvalue(r, row, off + 3), &fv) &&
	          u32_of(PQgetvalue(r, row, off + 4), &v->kek_id) &&
	          bin_col(r, row, off + 5, v->wrapped_dk, sizeof(v->wrapped_dk), NULL, NULL) &&
	          bin_col(r, row, off + 6, v->dk_iv, sizeof(v->dk_iv), NULL, NULL) &&
	          bin_col(r, row, off + 7, v->value_iv, sizeof(v->value_iv), NULL, NULL) &&
	          bin_col(r, row, off + 8, NULL, 0, &v->value_ct, &v->value_len);
	if (!ok) {
		kw_secret_version_clear(v);
		return KW_ERR_DB;
	}
	memcpy(v->tenant_id, PQgetvalue(r, row, off), 37);
	memcpy(v->secret_id, PQgetvalue(r, row, off + 1), 37);
	v->format_version = (int)fv;
	return KW_OK;
}

/* The parameters of version v: $1 tenant .. $9 value_ct. */
typedef struct version_params {
	char version[12], fv[12], kek[12];
	const char *vals[9];
	int lens[9], fmts[9];
} version_params;

static void params_of(const kw_secret_version *v, version_params *p)
{
	snprintf(p->version, sizeof(p->version), "%" PRIu32, v->version);
	snprintf(p->fv, sizeof(p->fv), "%d", v->format_version);
	snprintf(p->kek, sizeof(p->kek), "%" PRIu32, v->kek_id);
	const char *vals[9] = {v->tenant_id,
	                       v->secret_id,
	                       p->version,
	                       p->fv,
	                       p->kek,
	                       (const char *)v->wrapped_dk,
	                       (const char *)v->dk_iv,
	                       (const char *)v->value_iv,
	                       (const char *)v->value_ct};
	int lens[9] = {0, 0, 0, 0, 0, KW_SECRET_WRAPPED_LEN, KW_GCM_IV_LEN, KW_GCM_IV_LEN, (int)v->value_len};
	for (int i = 0; i < 9; i++) {
		p->vals[i] = vals[i];
		p->lens[i] = lens[i];
		p->fmts[i] = i >= 5;
	}
}

#define SQL_INSERT_VERSION                                                                                   \
	"INSERT INTO secret_versions (tenant_id, secret_id, version, format_version, kek_id, wrapped_dk, "   \
	"dk_iv, value_iv, value_ct, name, content_type) SELECT $1::uuid, $2::uuid, $3::int, $4::int, "       \
	"$5::int, $6, $7, $8, $9, s.name, s.content_type FROM secrets s WHERE s.tenant_id = $1::uuid AND "   \
	"s.id = $2::uuid RETURNING " TS("created_at")

static kw_err insert_version(kw_db *db, const kw_secret_version *v, char created_at[32])
{
	version_params p;
	memset(&p, 0, sizeof(p));
	params_of(v, &p);
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, SQL_INSERT_VERSION, 9, p.vals, p.lens, p.fmts, &res);
	if (err == KW_OK && PQntuples(res) != 1)
		err = KW_ERR_NOT_FOUND;
	if (err == KW_OK)
		snprintf(created_at, 32, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return err;
}

kw_err kw_secrets_create(kw_db *db, kw_secret_meta *meta, const kw_secret_version *v)
{
	const char *vals[4] = {v->tenant_id, meta->id, meta->name, meta->content_type};
	if (strcmp(meta->id, v->secret_id) != 0 || v->version != 1)
		kw_misuse("kw_secrets_create: the version is not this secret's first");
	kw_err err = kw_db_exec(db,
	                        "INSERT INTO secrets (tenant_id, id, name, content_type) "
	                        "VALUES ($1::uuid, $2::uuid, $3, $4)",
	                        4, vals, NULL, NULL, NULL);
	if (err == KW_OK)
		err = insert_version(db, v, meta->created_at);
	meta->version = 1;
	return err;
}

static void meta_read(const PGresult *r, int row, kw_secret_meta *m)
{
	snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(r, row, 0));
	snprintf(m->name, sizeof(m->name), "%s", PQgetvalue(r, row, 1));
	snprintf(m->content_type, sizeof(m->content_type), "%s", PQgetvalue(r, row, 2));
	m->version = (uint32_t)strtoul(PQgetvalue(r, row, 3), NULL, 10);
	snprintf(m->created_at, sizeof(m->created_at), "%s", PQgetvalue(r, row, 4));
}

#define META_COLS "s.id::text, s.name, s.content_type, s.latest_version::text, "

kw_err kw_secrets_lock(kw_db *db, const char *tenant_id, const char *id, kw_secret_meta *meta)
{
	if (!kw_is_uuid(id))
		return KW_ERR_NOT_FOUND;
	const char *vals[2] = {tenant_id, id};
	PGresult *res = NULL;
	kw_err err =
	    kw_db_exec(db,
	               "SELECT " META_COLS TS("s.created_at") " FROM secrets s "
	                                                      "WHERE s.tenant_id = $1::uuid AND s.id = "
	                                                      "$2::uuid FOR UPDATE",
	               2, vals, NULL, NULL, &res);
	if (err == KW_OK && PQntuples(res) != 1)
		err = KW_ERR_NOT_FOUND;
	if (err == KW_OK)
		meta_read(res, 0, meta);
	PQclear(res);
	return err;
}

kw_err kw_secrets_add_version(kw_db *db, const kw_secret_version *v, kw_secret_meta *meta)
{
	char ver[12];
	snprintf(ver, sizeof(ver), "%" PRIu32, v->version);
	const char *vals[3] = {v->tenant_id, v->secret_id, ver};
	kw_err err = insert_version(db, v, meta->created_at);
	PGresult *res = NULL;
	if (err == KW_OK)
		err = kw_db_exec(
		    db,
		    "UPDATE secrets SET latest_version = $3::int WHERE tenant_id = $1::uuid AND id = "
		    "$2::uuid AND latest_version = $3::int - 1",
		    3, vals, NULL, NULL, &res);
	if (err == KW_OK && kw_db_affected(res) != 1)
		err = KW_ERR_CONFLICT;
	PQclear(res);
	if (err == KW_OK)
		meta->version = v->version;
	return err;
}

static kw_err read_meta(const kw_db_result *r, int row, void *out)
{
	meta_read(r, row, out);
	return KW_OK;
}

kw_err kw_secrets_list(kw_db *db, const char *tenant_id, size_t limit, const char *after,
                       kw_secret_meta **items, size_t *n, bool *more)
{
	char lim[24];
	snprintf(lim, sizeof(lim), "%zu", limit + 1);
	const char *vals[3] = {tenant_id, after, lim};
	kw_err err =
	    kw_db_query_rows(db,
	                     "SELECT " META_COLS TS("s.created_at") " FROM secrets s "
	                                                            "WHERE s.tenant_id = $1::uuid AND "
	                                                            "s.name > $2 ORDER BY s.name "
	                                                            "COLLATE \"C\" LIMIT $3::int",
	                     3, vals, sizeof(**items), read_meta, (void **)items, n);
	*more = err == KW_OK && *n > limit;
	if (*more)
		*n = limit;
	return err;
}

kw_err kw_secrets_delete(kw_db *db, const char *tenant_id, const char *id, char name[KW_SECRET_NAME_MAX + 1])
{
	if (!kw_is_uuid(id))
		return KW_ERR_NOT_FOUND;
	const char *vals[2] = {tenant_id, id};
	PGresult *res = NULL;
	kw_err err =
	    kw_db_exec(db, "DELETE FROM secrets WHERE tenant_id = $1::uuid AND id = $2::uuid RETURNING name",
	               2, vals, NULL, NULL, &res);
	if (err == KW_OK && PQntuples(res) != 1)
		err = KW_ERR_NOT_FOUND;
	if (err == KW_OK)
		snprintf(name, KW_SECRET_NAME_MAX + 1, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return err;
}

/* One version (0: the latest, the highest) of one secret: one table. */
#define V_CREATED TS("v.created_at")
#define SQL_FETCH                                                                                            \
	"SELECT v.name, v.content_type, " V_CREATED ", " VERSION_COLS " FROM secret_versions v "             \
	"WHERE v.tenant_id = $1::uuid AND v.secret_id = $2::uuid AND ($3::int = 0 OR v.version = $3::int) "  \
	"ORDER BY v.version DESC LIMIT 1"

/* The statements of one fetch (BEGIN, scope, SELECT, COMMIT) into st;
 * its parameters in p. False for ids that cannot name a secret. */
typedef struct fetch_params {
	char tenant[37], id[37], ver[12];
	const char *scope[1], *vals[3];
} fetch_params;

static bool fetch_stmts(const char *tenant_id, const char *id, uint32_t version, fetch_params *p,
                        kw_db_stmt st[4])
{
	if (!kw_is_uuid(tenant_id) || !kw_is_uuid(id))
		return false;
	for (size_t i = 0; i <= 36; i++) {
		p->tenant[i] = (char)tolower((unsigned char)tenant_id[i]);
		p->id[i] = (char)tolower((unsigned char)id[i]);
	}
	snprintf(p->ver, sizeof(p->ver), "%" PRIu32, version);
	p->scope[0] = p->tenant;
	p->vals[0] = p->tenant, p->vals[1] = p->id, p->vals[2] = p->ver;
	st[0] = (kw_db_stmt){"BEGIN READ ONLY", 0, NULL, NULL, NULL};
	st[1] = (kw_db_stmt){"SELECT set_config('app.tenant_id', $1, true)", 1, p->scope, NULL, NULL};
	st[2] = (kw_db_stmt){SQL_FETCH, 3, p->vals, NULL, NULL};
	st[3] = (kw_db_stmt){"COMMIT", 0, NULL, NULL, NULL};
	return true;
}

/* The SELECT's result as meta and v (and frees it). */
static kw_err fetch_result(PGresult *res, kw_secret_meta *meta, kw_secret_version *v)
{
	kw_err err = PQntuples(res) == 1 ? version_read(res, 0, 3, v) : KW_ERR_NOT_FOUND;
	if (err == KW_OK) {
		snprintf(meta->id, sizeof(meta->id), "%s", v->secret_id);
		snprintf(meta->name, sizeof(meta->name), "%s", PQgetvalue(res, 0, 0));
		snprintf(meta->content_type, sizeof(meta->content_type), "%s", PQgetvalue(res, 0, 1));
		snprintf(meta->created_at, sizeof(meta->created_at), "%s", PQgetvalue(res, 0, 2));
		meta->version = v->version;
	}
	PQclear(res);
	return err;
}

kw_err kw_secrets_fetch(kw_db *db, const char *tenant_id, const char *id, uint32_t version,
                        kw_secret_meta *meta, kw_secret_version *v)
{
	fetch_params p;
	kw_db_stmt st[4];
	if (!fetch_stmts(tenant_id, id, version, &p, st))
		return KW_ERR_NOT_FOUND;
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
	return fetch_result(res[2], meta, v);
}

void kw_secrets_fetch_many(kw_db *db, size_t n, const kw_secret_ask *ask, kw_secret_meta *metas,
                           kw_secret_version *vs, kw_err *errs)
{
	fetch_params *p = calloc(n, sizeof(*p));
	kw_db_stmt *st = calloc(4 * n, sizeof(*st));
	PGresult **res = calloc(4 * n, sizeof(*res));
	size_t *which = calloc(n, sizeof(*which)), m = 0;
	if (p == NULL || st == NULL || res == NULL || which == NULL) {
		for (size_t i = 0; i < n; i++)
			errs[i] = KW_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		errs[i] = KW_ERR_NOT_FOUND;
		if (fetch_stmts(ask[i].tenant_id, ask[i].id, ask[i].version, &p[m], &st[4 * m]))
			which[m++] = i;
	}
	kw_err err = m > 0 ? kw_db_exec_pipeline(db, st, 4 * m, res) : KW_OK;
	if (err != KW_OK) {
		if (kw_db_in_tx(db))
			kw_db_rollback(db);
		/* One refused read aborts the rest of the pipeline: read each on
		 * its own, so only that one fails. Not when the database is gone. */
		for (size_t k = 0; k < m; k++) {
			size_t i = which[k];
			errs[i] = err == KW_ERR_DB_UNAVAILABLE
			              ? err
			              : kw_secrets_fetch(db, ask[i].tenant_id, ask[i].id, ask[i].version,
			                                 &metas[i], &vs[i]);
		}
		goto done;
	}
	for (size_t k = 0; k < m; k++) {
		PQclear(res[4 * k]);
		PQclear(res[4 * k + 1]);
		PQclear(res[4 * k + 3]);
		errs[which[k]] = fetch_result(res[4 * k + 2], &metas[which[k]], &vs[which[k]]);
	}
done:
	free(p);
	free(st);
	free(res);
	free(which);
}

/* --- KEK maintenance ------------------------------------------------------ */

kw_err kw_secrets_rewrap_start(kw_db *db)
{
	kw_err err = kw_db_exec(db,
	                        "CREATE TEMPORARY TABLE IF NOT EXISTS kek_rewrap_skip_secrets "
	                        "(tenant_id uuid, secret_id uuid, version int, "
	                        "PRIMARY KEY (tenant_id, secret_id, version))",
	                        0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, "TRUNCATE pg_temp.kek_rewrap_skip_secrets", 0, NULL, NULL, NULL, NULL);
	return err;
}

kw_err kw_secrets_set_aside(kw_db *db, const kw_secret_version *v)
{
	char ver[12];
	snprintf(ver, sizeof(ver), "%" PRIu32, v->version);
	const char *vals[3] = {v->tenant_id, v->secret_id, ver};
	return kw_db_exec(db,
	                  "INSERT INTO pg_temp.kek_rewrap_skip_secrets VALUES ($1::uuid, $2::uuid, $3::int) "
	                  "ON CONFLICT DO NOTHING",
	                  3, vals, NULL, NULL, NULL);
}

static kw_err read_version_row(const kw_db_result *r, int row, void *out)
{
	return version_read(r, row, 0, out);
}

kw_err kw_secrets_rewrap_lock(kw_db *db, uint32_t active, size_t batch, kw_secret_version **rows, size_t *n)
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
		err = kw_db_query_rows(
		    db,
		    "SELECT " VERSION_COLS " FROM secret_versions v WHERE kek_id <> $1::int "
		    "AND NOT EXISTS (SELECT 1 FROM pg_temp.kek_rewrap_skip_secrets k "
		    "WHERE k.tenant_id = v.tenant_id AND k.secret_id = v.secret_id "
		    "AND k.version = v.version) "
		    "ORDER BY tenant_id, secret_id, version LIMIT $2::int FOR UPDATE OF v SKIP LOCKED",
		    2, vals, sizeof(**rows), read_version_row, (void **)rows, n);
	return err;
}

kw_err kw_secrets_rewrap_update(kw_db *db, const kw_secret_version *fresh, uint32_t old_kek)
{
	char ver[12], kek[12], old[12];
	snprintf(ver, sizeof(ver), "%" PRIu32, fresh->version);
	snprintf(kek, sizeof(kek), "%" PRIu32, fresh->kek_id);
	snprintf(old, sizeof(old), "%" PRIu32, old_kek);
	const char *vals[7] = {fresh->tenant_id,
	                       fresh->secret_id,
	                       ver,
	                       kek,
	                       (const char *)fresh->wrapped_dk,
	                       (const char *)fresh->dk_iv,
	                       old};
	int lens[7] = {0, 0, 0, 0, KW_SECRET_WRAPPED_LEN, KW_GCM_IV_LEN, 0}, fmts[7] = {0, 0, 0, 0, 1, 1, 0};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db,
	                        "UPDATE secret_versions SET kek_id = $4::int, wrapped_dk = $5, dk_iv = $6 "
	                        "WHERE tenant_id = $1::uuid AND secret_id = $2::uuid AND version = $3::int "
	                        "AND kek_id = $7::int",
	                        7, vals, lens, fmts, &res);
	if (err == KW_OK && kw_db_affected(res) != 1)
		err = KW_ERR_CONFLICT;
	PQclear(res);
	return err;
}

kw_err kw_secrets_rewrap_left(kw_db *db, uint32_t active, long long *left)
{
	char a[12];
	snprintf(a, sizeof(a), "%" PRIu32, active);
	const char *vals[1] = {a};
	return kw_db_maint_count(
	    db,
	    "SELECT count(*) FROM secret_versions v WHERE kek_id <> $1::int "
	    "AND NOT EXISTS (SELECT 1 FROM pg_temp.kek_rewrap_skip_secrets k WHERE k.tenant_id "
	    "= v.tenant_id AND k.secret_id = v.secret_id AND k.version = v.version)",
	    1, vals, left);
}
