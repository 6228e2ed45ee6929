/* repo_sessions.c — SQL for refresh families, refresh tokens, revocations
 * and wallet nonces (see sessions.h).
 *
 * Rotation is made safe under concurrency by row locks: kw_refresh_lock
 * takes FOR UPDATE on the presented token and its family, so of several
 * transactions presenting one token, exactly one sees it unused. */
#include "keyward/db/sessions.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/core/log.h"
#include "keyward/core/text.h"

void kw_time_rfc3339(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t get_i64(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return 0;
	errno = 0;
	long long v = strtoll(PQgetvalue(res, row, col), NULL, 10);
	return errno ? 0 : (int64_t)v;
}

/* Runs sql, which returns exactly one row, and reads its first n columns
 * as integers into out. */
static kw_err exec_one_row_i64(kw_db *db, const char *sql, int nparams, const char *const *vals,
                               const int *lens, const int *fmts, int64_t *out, int n)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, sql, nparams, vals, lens, fmts, &res);
	if (err == KW_OK && PQntuples(res) != 1)
		err = KW_ERR_DB;
	for (int i = 0; err == KW_OK && i < n; i++)
		out[i] = get_i64(res, 0, i);
	PQclear(res);
	return err;
}

static bool get_bool(const PGresult *res, int row, int col)
{
	return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

static void i64_text(int64_t v, char out[24])
{
	snprintf(out, 24, "%" PRId64, v);
}

#define SQL_FAMILY_CREATE                                                                                    \
	"WITH f AS (INSERT INTO refresh_families (id, tenant_id, subject, role, absolute_expires_at, ip, "   \
	"user_agent, minted_by) VALUES ($1, $2, $3, $4, now() + $5::bigint * interval '1 second', $6, $7, "  \
	"$11::uuid) "                                                                                        \
	"RETURNING id, absolute_expires_at) "                                                                \
	"INSERT INTO refresh_tokens (family_id, tenant_id, token_hmac, pepper_id, sliding_expires_at) "      \
	"SELECT f.id, $2, $8, $9, least(f.absolute_expires_at, now() + $10::bigint * interval '1 second') "  \
	"FROM f RETURNING floor(extract(epoch FROM sliding_expires_at))::bigint, "                           \
	"(SELECT floor(extract(epoch FROM absolute_expires_at))::bigint FROM f)"

/* The request's user agent as a session keeps it (NULL stays NULL). */
static const char *session_ua(const char *ua, char out[KW_SESSION_UA_MAX])
{
	if (ua == NULL)
		return NULL;
	kw_utf8_clean(ua, strlen(ua), KW_SESSION_UA_CHARS, out, KW_SESSION_UA_MAX, NULL);
	return out;
}

kw_err kw_family_create(kw_db *db, const kw_family_new *f, int64_t *absolute_exp, int64_t *sliding_exp)
{
	char abs[24], sl[24], pep[24], ua[KW_SESSION_UA_MAX];
	i64_text(f->absolute_ttl_s, abs);
	i64_text(f->sliding_ttl_s, sl);
	i64_text(f->pepper_id, pep);
	const char *vals[11] = {f->id,
	                        f->tenant_id,
	                        f->subject,
	                        f->role,
	                        abs,
	                        f->ip,
	                        session_ua(f->user_agent, ua),
	                        (const char *)f->token_hmac,
	                        pep,
	                        sl,
	                        f->minted_by};
	int lens[11] = {0, 0, 0, 0, 0, 0, 0, KW_HMAC_LEN, 0, 0, 0};
	int fmts[11] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
	int64_t got[2];
	kw_err err = exec_one_row_i64(db, SQL_FAMILY_CREATE, 11, vals, lens, fmts, got, 2);
	if (err == KW_OK) {
		*sliding_exp = got[0];
		*absolute_exp = got[1];
	}
	return err;
}

#define SQL_FAMILY_INSERT                                                                                    \
	"WITH f AS (INSERT INTO refresh_families (id, tenant_id, subject, role, absolute_expires_at, ip, "   \
	"user_agent, minted_by) VALUES ($1, $2, $3, $4, to_timestamp($5::bigint), $6, $7, $11::uuid) "       \
	"RETURNING id) "                                                                                     \
	"INSERT INTO refresh_tokens (family_id, tenant_id, token_hmac, pepper_id, sliding_expires_at) "      \
	"SELECT f.id, $2, $8, $9, to_timestamp($10::bigint) FROM f"

void kw_family_stmt_build(const kw_family_new *f, int64_t absolute_exp, int64_t sliding_exp,
                          kw_family_stmt *out)
{
	memset(out, 0, sizeof(*out));
	i64_text(absolute_exp, out->abs);
	i64_text(sliding_exp, out->sl);
	i64_text(f->pepper_id, out->pep);
	const char *vals[11] = {f->id,
	                        f->tenant_id,
	                        f->subject,
	                        f->role,
	                        out->abs,
	                        f->ip,
	                        session_ua(f->user_agent, out->ua),
	                        (const char *)f->token_hmac,
	                        out->pep,
	                        out->sl,
	                        f->minted_by};
	memcpy(out->vals, vals, sizeof(vals));
	out->lens[7] = KW_HMAC_LEN;
	out->fmts[7] = 1;
	out->stmt = (kw_db_stmt){SQL_FAMILY_INSERT, 11, out->vals, out->lens, out->fmts};
}

#define SQL_REFRESH_SELECT                                                                                   \
	"SELECT t.id, t.family_id, f.subject, f.role, t.used_at IS NOT NULL, "                               \
	"coalesce(extract(epoch FROM clock_timestamp() - t.used_at), 0), "                                   \
	"EXISTS (SELECT 1 FROM refresh_tokens c WHERE c.parent_id = t.id AND c.used_at IS NOT NULL), "       \
	"f.revoked_at IS NOT NULL, coalesce(f.revoke_reason, ''), "                                          \
	"floor(extract(epoch FROM t.sliding_expires_at))::bigint, "                                          \
	"floor(extract(epoch FROM f.absolute_expires_at))::bigint, "                                         \
	"floor(extract(epoch FROM t.issued_at))::bigint, floor(extract(epoch FROM "                          \
	"clock_timestamp()))::bigint "                                                                       \
	"FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hmac = $1"

static kw_err refresh_select(kw_db *db, const char *sql, const unsigned char hmac[KW_HMAC_LEN],
                             kw_refresh_row *out)
{
	const char *vals[1] = {(const char *)hmac};
	int lens[1] = {KW_HMAC_LEN}, fmts[1] = {1};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, sql, 1, vals, lens, fmts, &res);
	if (err == KW_OK && PQntuples(res) == 0)
		err = KW_ERR_NOT_FOUND;
	kw_refresh_row r;
	memset(&r, 0, sizeof(r));
	if (err == KW_OK && (!kw_db_copy_text(res, 0, 0, r.id, sizeof(r.id)) ||
	                     !kw_db_copy_text(res, 0, 1, r.family_id, sizeof(r.family_id)) ||
	                     !kw_db_copy_text(res, 0, 2, r.subject, sizeof(r.subject)) ||
	                     !kw_db_copy_text(res, 0, 3, r.role, sizeof(r.role)) ||
	                     !kw_db_copy_text(res, 0, 8, r.revoke_reason, sizeof(r.revoke_reason))))
		err = KW_ERR_DB;
	if (err == KW_OK) {
		r.used = get_bool(res, 0, 4);
		r.used_ago_s = strtod(PQgetvalue(res, 0, 5), NULL);
		r.has_used_child = get_bool(res, 0, 6);
		r.family_revoked = get_bool(res, 0, 7);
		r.sliding_exp = get_i64(res, 0, 9);
		r.absolute_exp = get_i64(res, 0, 10);
		r.issued_at = get_i64(res, 0, 11);
		r.now = get_i64(res, 0, 12);
		*out = r;
	}
	PQclear(res);
	return err;
}

kw_err kw_refresh_lock(kw_db *db, const unsigned char hmac[KW_HMAC_LEN], kw_refresh_row *out)
{
	return refresh_select(db, SQL_REFRESH_SELECT " FOR UPDATE OF t, f", hmac, out);
}

kw_err kw_refresh_find(kw_db *db, const unsigned char hmac[KW_HMAC_LEN], kw_refresh_row *out)
{
	return refresh_select(db, SQL_REFRESH_SELECT, hmac, out);
}

#define SQL_ROTATE                                                                                           \
	"WITH u AS (UPDATE refresh_tokens SET used_at = coalesce(used_at, now()) WHERE id = $1 RETURNING "   \
	"id), "                                                                                              \
	"f AS (UPDATE refresh_families SET last_used_at = now() WHERE id = $2 RETURNING "                    \
	"absolute_expires_at) "                                                                              \
	"INSERT INTO refresh_tokens (family_id, parent_id, tenant_id, token_hmac, pepper_id, "               \
	"sliding_expires_at) SELECT $2, u.id, $3, $4, $5, "                                                  \
	"least(f.absolute_expires_at, now() + $6::bigint * interval '1 second') FROM u, f "                  \
	"RETURNING floor(extract(epoch FROM sliding_expires_at))::bigint"

kw_err kw_refresh_rotate(kw_db *db, const char *tenant_id, const kw_refresh_row *parent,
                         const unsigned char child_hmac[KW_HMAC_LEN], uint32_t pepper_id,
                         int64_t sliding_ttl_s, int64_t *sliding_exp)
{
	char pep[24], sl[24];
	i64_text(pepper_id, pep);
	i64_text(sliding_ttl_s, sl);
	const char *vals[6] = {parent->id, parent->family_id, tenant_id, (const char *)child_hmac, pep, sl};
	int lens[6] = {0, 0, 0, KW_HMAC_LEN, 0, 0}, fmts[6] = {0, 0, 0, 1, 0, 0};
	return exec_one_row_i64(db, SQL_ROTATE, 6, vals, lens, fmts, sliding_exp, 1);
}

#define SQL_FAMILY_REVOKE                                                                                    \
	"WITH old AS (SELECT id, revoked_at IS NULL AS live FROM refresh_families WHERE id = $1 FOR "        \
	"UPDATE), "                                                                                          \
	"f AS (UPDATE refresh_families SET revoked_at = coalesce(revoked_at, now()), "                       \
	"revoke_reason = coalesce(revoke_reason, $2) WHERE id = $1 RETURNING id, tenant_id, subject), "      \
	"r AS (INSERT INTO jwt_revocations (sid, tenant_id, subject, token_expires_at, reason) "             \
	"SELECT f.id, f.tenant_id, f.subject, now() + $3::bigint * interval '1 second', $2 FROM f "          \
	"ON CONFLICT (sid) WHERE sid IS NOT NULL DO NOTHING) "                                               \
	"SELECT old.live, floor(extract(epoch FROM now() + $3::bigint * interval '1 second'))::bigint FROM " \
	"old"

kw_err kw_family_revoke(kw_db *db, const char *family_id, const char *reason, int64_t access_ttl_max_s,
                        bool *newly, int64_t *revocation_exp)
{
	*newly = false;
	if (!kw_is_uuid(family_id))
		return KW_OK;
	char ttl[24];
	i64_text(access_ttl_max_s, ttl);
	const char *vals[3] = {family_id, reason, ttl};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, SQL_FAMILY_REVOKE, 3, vals, NULL, NULL, &res);
	if (err == KW_OK && PQntuples(res) == 1) {
		*newly = get_bool(res, 0, 0);
		*revocation_exp = get_i64(res, 0, 1);
	}
	PQclear(res);
	return err;
}

/* Revokes the live families the WHERE clause (about $1 tenant, $2) picks,
 * and lists their sids for the revocation list ($3 reason, $4 TTL). */
#define SQL_FAMILIES_REVOKE(where)                                                                           \
	"WITH f AS (UPDATE refresh_families SET revoked_at = now(), revoke_reason = $3 "                     \
	"WHERE tenant_id = $1 AND " where " AND revoked_at IS NULL AND absolute_expires_at > now() "         \
	"RETURNING id, tenant_id, subject), "                                                                \
	"r AS (INSERT INTO jwt_revocations (sid, tenant_id, subject, token_expires_at, reason) "             \
	"SELECT f.id, f.tenant_id, f.subject, now() + $4::bigint * interval '1 second', $3 FROM f "          \
	"ON CONFLICT (sid) WHERE sid IS NOT NULL DO NOTHING) "                                               \
	"SELECT f.id, floor(extract(epoch FROM now() + $4::bigint * interval '1 second'))::bigint FROM f"

static kw_err read_sid(const kw_db_result *res, int row, void *out)
{
	return kw_db_copy_text(res, row, 0, out, 37) ? KW_OK : KW_ERR_DB;
}

static kw_err revoke_families(kw_db *db, const char *sql, const char *tenant_id, const char *which,
                              const char *reason, int64_t access_ttl_max_s, char (**sids)[37], size_t *n,
                              int64_t *revocation_exp)
{
	char ttl[24];
	i64_text(access_ttl_max_s, ttl);
	const char *vals[4] = {tenant_id, which, reason, ttl};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, sql, 4, vals, NULL, NULL, &res);
	if (err == KW_OK)
		err = kw_db_rows_read(res, sizeof(**sids), read_sid, (void **)sids, n);
	if (err == KW_OK)
		*revocation_exp = *n > 0 ? get_i64(res, 0, 1) : 0;
	PQclear(res);
	return err;
}

kw_err kw_family_revoke_subject(kw_db *db, const char *tenant_id, const char *subject, const char *reason,
                                int64_t access_ttl_max_s, char (**sids)[37], size_t *n,
                                int64_t *revocation_exp)
{
	return revoke_families(db, SQL_FAMILIES_REVOKE("subject = $2"), tenant_id, subject, reason,
	                       access_ttl_max_s, sids, n, revocation_exp);
}

kw_err kw_family_revoke_minted_by(kw_db *db, const char *tenant_id, const char *key_id, const char *reason,
                                  int64_t access_ttl_max_s, char (**sids)[37], size_t *n,
                                  int64_t *revocation_exp)
{
	return revoke_families(db, SQL_FAMILIES_REVOKE("minted_by = $2::uuid"), tenant_id, key_id, reason,
	                       access_ttl_max_s, sids, n, revocation_exp);
}

#define SQL_JTI_REVOKE                                                                                       \
	"INSERT INTO jwt_revocations (jti, tenant_id, subject, token_expires_at, reason) "                   \
	"VALUES ($1, $2, $3, to_timestamp($4::bigint), $5) ON CONFLICT (jti) WHERE jti IS NOT NULL DO "      \
	"NOTHING"

kw_err kw_jti_revoke(kw_db *db, const char *tenant_id, const char *subject, const char *jti, int64_t exp,
                     const char *reason)
{
	char e[24];
	i64_text(exp, e);
	const char *vals[5] = {jti, tenant_id, subject, e, reason};
	return kw_db_exec(db, SQL_JTI_REVOKE, 5, vals, NULL, NULL, NULL);
}

#define SQL_SESSIONS                                                                                         \
	"SELECT f.id, to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "          \
	"to_char(f.last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "                     \
	"to_char(f.absolute_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), f.ip, "        \
	"f.user_agent FROM refresh_families f WHERE f.subject = $1 AND f.revoked_at IS NULL "                \
	"AND f.absolute_expires_at > now() AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE "                \
	"t.family_id = f.id AND t.used_at IS NULL AND t.sliding_expires_at > now()) "                        \
	"ORDER BY f.created_at DESC LIMIT 1000"

static kw_err read_session(const kw_db_result *res, int row, void *out)
{
	kw_session_row *r = out;
	bool ok = kw_db_copy_text(res, row, 0, r->id, sizeof(r->id)) &&
	          kw_db_copy_text(res, row, 1, r->created_at, sizeof(r->created_at)) &&
	          kw_db_copy_text(res, row, 2, r->last_used_at, sizeof(r->last_used_at)) &&
	          kw_db_copy_text(res, row, 3, r->absolute_expires_at, sizeof(r->absolute_expires_at)) &&
	          kw_db_copy_text(res, row, 4, r->ip, sizeof(r->ip)) &&
	          kw_db_copy_text(res, row, 5, r->user_agent, sizeof(r->user_agent));
	return ok ? KW_OK : KW_ERR_DB;
}

kw_err kw_sessions_list(kw_db *db, const char *subject, kw_session_row **rows, size_t *n)
{
	const char *vals[1] = {subject};
	return kw_db_query_rows(db, SQL_SESSIONS, 1, vals, sizeof(**rows), read_session, (void **)rows, n);
}

#define SQL_NONCE_PUT                                                                                        \
	"INSERT INTO wallet_nonces (tenant_id, address, nonce, expires_at) VALUES ($1, $2, $3, "             \
	"date_trunc('second', now()) + $4::bigint * interval '1 second') ON CONFLICT (tenant_id, address) "  \
	"DO UPDATE SET nonce = EXCLUDED.nonce, issued_at = now(), expires_at = EXCLUDED.expires_at, "        \
	"used_at = NULL RETURNING floor(extract(epoch FROM expires_at))::bigint"

kw_err kw_nonce_put(kw_db *db, const char *tenant_id, const char *address, const char *nonce, int64_t ttl_s,
                    int64_t *expires_at)
{
	char ttl[24];
	i64_text(ttl_s, ttl);
	const char *vals[4] = {tenant_id, address, nonce, ttl};
	return exec_one_row_i64(db, SQL_NONCE_PUT, 4, vals, NULL, NULL, expires_at, 1);
}

#define SQL_NONCE_LOCK                                                                                       \
	"SELECT nonce, used_at IS NOT NULL, expires_at <= now(), "                                           \
	"floor(extract(epoch FROM expires_at))::bigint FROM wallet_nonces "                                  \
	"WHERE tenant_id = $1 AND address = $2 FOR UPDATE"
#define SQL_NONCE_USE                                                                                        \
	"UPDATE wallet_nonces SET used_at = now() WHERE tenant_id = $1 AND address = $2 AND used_at IS NULL"

kw_err kw_nonce_take(kw_db *db, const char *tenant_id, const char *address, const char *nonce,
                     kw_nonce_state *state, int64_t *expires_at)
{
	const char *vals[2] = {tenant_id, address};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, SQL_NONCE_LOCK, 2, vals, NULL, NULL, &res);
	if (err != KW_OK)
		return err;
	kw_nonce_state st = KW_NONCE_UNKNOWN;
	const char *stored = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : NULL;
	if (stored != NULL && strlen(stored) == strlen(nonce) &&
	    CRYPTO_memcmp(stored, nonce, strlen(nonce)) == 0) {
		*expires_at = get_i64(res, 0, 3);
		if (get_bool(res, 0, 1))
			st = KW_NONCE_REUSED;
		else
			st = get_bool(res, 0, 2) ? KW_NONCE_EXPIRED : KW_NONCE_OK;
	}
	PQclear(res);
	if (st == KW_NONCE_OK || st == KW_NONCE_EXPIRED)
		err = kw_db_exec(db, SQL_NONCE_USE, 2, vals, NULL, NULL, NULL);
	if (err == KW_OK)
		*state = st;
	return err;
}

kw_err kw_tenant_exists(kw_db *db, const char *tenant_id, bool *exists)
{
	const char *vals[1] = {tenant_id};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, "SELECT 1 FROM tenants WHERE id = $1", 1, vals, NULL, NULL, &res);
	if (err == KW_OK)
		*exists = PQntuples(res) == 1;
	PQclear(res);
	return err;
}

static const char *const purge_sql[6] = {
    "DELETE FROM jwt_revocations WHERE id IN (SELECT id FROM jwt_revocations "
    "WHERE token_expires_at < now() LIMIT $1)",
    "DELETE FROM wallet_nonces WHERE (tenant_id, address) IN (SELECT tenant_id, address "
    "FROM wallet_nonces WHERE expires_at < now() LIMIT $1)",
    "DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM refresh_tokens "
    "WHERE sliding_expires_at < now() LIMIT $1)",
    "DELETE FROM refresh_families WHERE id IN (SELECT id FROM refresh_families "
    "WHERE absolute_expires_at < now() OR revoked_at < now() - interval '1 day' LIMIT $1)",
    "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE at < now() - interval '1 day' "
    "LIMIT $1)",
    "DELETE FROM signing_nonces WHERE (key_id, nonce) IN (SELECT key_id, nonce FROM signing_nonces "
    "WHERE expires_at < now() LIMIT $1)",
};

kw_err kw_sessions_purge(kw_db *db, int batch, int max_rounds, kw_purge_counts *out)
{
	uint64_t counts[6] = {0, 0, 0, 0, 0, 0};
	char b[24];
	i64_text(batch, b);
	const char *vals[1] = {b};
	kw_err err = KW_OK;
	for (int t = 0; t < 6 && err == KW_OK; t++) {
		for (int round = 0; round < max_rounds && err == KW_OK; round++) {
			if ((err = kw_db_begin(db, NULL, NULL)) != KW_OK)
				break;
			PGresult *res = NULL;
			err = kw_db_exec(db, "SELECT set_config('app.purge', 'on', true)", 0, NULL, NULL,
			                 NULL, NULL);
			if (err == KW_OK)
				err = kw_db_exec(db, purge_sql[t], 1, vals, NULL, NULL, &res);
			uint64_t n = err == KW_OK ? strtoull(PQcmdTuples(res), NULL, 10) : 0;
			PQclear(res);
			if (err == KW_OK)
				err = kw_db_commit(db);
			else
				kw_db_rollback(db);
			if (err == KW_OK)
				counts[t] += n;
			if (n < (uint64_t)batch)
				break;
		}
	}
	if (err == KW_OK && out != NULL) {
		out->revocations = counts[0];
		out->nonces = counts[1];
		out->tokens = counts[2];
		out->families = counts[3];
		out->changes = counts[4];
		out->signing_nonces = counts[5];
	}
	return err;
}

kw_err kw_refresh_recent(kw_db *db, const char *tenant_id, const char *subject, int *count, int *oldest_age_s)
{
	const char *vals[2] = {tenant_id, subject};
	PGresult *res = NULL;
	/* One subject's refreshes are counted and made one at a time (the lock
	 * ends with the transaction), on every instance alike. */
	kw_err err = kw_db_exec(db, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))", 2,
	                        vals, NULL, NULL, NULL);
	if (err == KW_OK)
		err =
		    kw_db_exec(db,
		               "SELECT count(*)::text, coalesce(floor(extract(epoch FROM now() - "
		               "min(t.issued_at)))::int, "
		               "0)::text FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id "
		               "WHERE f.tenant_id = $1::uuid AND f.subject = $2 AND t.parent_id IS NOT NULL "
		               "AND t.issued_at > now() - interval '1 minute'",
		               2, vals, NULL, NULL, &res);
	if (err == KW_OK) {
		*count = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
		*oldest_age_s = (int)strtol(PQgetvalue(res, 0, 1), NULL, 10);
	}
	PQclear(res);
	return err;
}
