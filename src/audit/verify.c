/* verify.c — walks every audit chain and recomputes it.
 *
 * For each chain in audit_chains, rows are read in seq order, a page at a
 * time (keyset pagination, never the whole table in memory): seq must run
 * 1, 2, 3... without a gap, each prev_mac must be the previous row's mac,
 * each mac must recompute in the token, and the last row must be the one
 * the head names, whose head_mac must verify too. Rows whose chain has no
 * head are broken. Everything is read in one REPEATABLE READ snapshot, so
 * writers appending meanwhile cause no false alarm. The first failure is
 * reported as one line naming chain, seq and row id, and stops the walk. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"
#include "keyward/log.h"

#define VERIFY_PAGE      "1000"
#define VERIFY_PAGE_ROWS 1000 /* keep equal to VERIFY_PAGE */

/* Output columns are text casts named like the table's columns: ORDER BY
 * qualifies the column so it sorts by number and uuid, not by text. */
#define SQL_ROWS_COLS                                                                                        \
	"SELECT id::text, seq::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "  \
	"tenant_id::text, actor, action, target, status, ip, user_agent, request_id, context::text, "        \
	"key_version::text, encode(prev_mac, 'hex'), encode(mac, 'hex') FROM audit_log "
#define SQL_ROWS_FIRST SQL_ROWS_COLS "WHERE chain_id = $1::uuid ORDER BY audit_log.seq LIMIT " VERIFY_PAGE
#define SQL_ROWS_NEXT                                                                                        \
	SQL_ROWS_COLS                                                                                        \
	"WHERE chain_id = $1::uuid AND seq > $2::bigint ORDER BY audit_log.seq LIMIT " VERIFY_PAGE
#define SQL_HEADS_COLS                                                                                       \
	"SELECT chain_id::text, last_seq::text, encode(last_mac, 'hex'), key_version::text, "                \
	"encode(head_mac, 'hex') FROM audit_chains "
#define SQL_HEADS_FIRST SQL_HEADS_COLS "ORDER BY audit_chains.chain_id LIMIT " VERIFY_PAGE
#define SQL_HEADS_NEXT                                                                                       \
	SQL_HEADS_COLS "WHERE chain_id > $1::uuid ORDER BY audit_chains.chain_id LIMIT " VERIFY_PAGE
#define SQL_ORPHAN                                                                                           \
	"SELECT a.chain_id::text, a.seq::text, a.id::text FROM audit_log a WHERE NOT EXISTS "                \
	"(SELECT 1 FROM audit_chains c WHERE c.chain_id = a.chain_id) ORDER BY a.chain_id, a.seq LIMIT 1"

typedef struct vctx {
	kw_hsm *hsm;
	kw_hsm_session *s;
	kw_db *db;
	FILE *report;
	unsigned long long rows;
	unsigned long long chains;
} vctx;

/* Reports the first broken row and returns KW_ERR_VERIFY. */
__attribute__((format(printf, 5, 6))) static kw_err broken(vctx *v, const char *chain, const char *seq,
                                                           const char *row_id, const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	kw_err_log("audit: chain %s broken at seq %s (row id %s): %s", chain, seq, row_id, reason);
	if (v->report != NULL) {
		fprintf(v->report, "audit chain %s broken at seq %s (row id %s): %s\n", chain, seq, row_id,
		        reason);
		fflush(v->report);
	}
	return KW_ERR_VERIFY;
}

static bool parse_i64(const char *s, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return false;
	*out = v;
	return true;
}

static bool parse_mac(const char *hex, unsigned char out[KW_AUDIT_MAC_LEN])
{
	if (strlen(hex) != 2 * KW_AUDIT_MAC_LEN)
		return false;
	for (int i = 0; i < KW_AUDIT_MAC_LEN; i++) {
		int v = 0;
		for (int j = 0; j < 2; j++) {
			char ch = hex[2 * i + j];
			int d = ch >= '0' && ch <= '9'   ? ch - '0'
			        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			                                 : -1;
			if (d < 0)
				return false;
			v = v * 16 + d;
		}
		out[i] = (unsigned char)v;
	}
	return true;
}

static const char *value_or_null(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* Key version text -> the token's key, or NULL. */
static const kw_hsm_key *key_for(vctx *v, const char *ver)
{
	int64_t n = 0;
	const kw_hsm_key *k = NULL;
	if (!parse_i64(ver, &n) || n < 0 || n > UINT32_MAX)
		return NULL;
	if (kw_hsm_key_get(v->hsm, KW_KEY_AUDIT, (uint32_t)n, &k) != KW_OK)
		return NULL;
	return k;
}

/* One chain, given its head row (columns of SQL_HEADS_COLS). */
static kw_err verify_chain(vctx *v, const PGresult *heads, int h)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	const char *chain = PQgetvalue(heads, h, 0);
	int64_t head_seq = 0, expected = 1;
	unsigned char prev[KW_AUDIT_MAC_LEN] = {0}, mac[KW_AUDIT_MAC_LEN], want[KW_AUDIT_MAC_LEN];
	char cursor[24] = "", expected_txt[24];
	unsigned long long rows = 0;

	if (!parse_i64(PQgetvalue(heads, h, 1), &head_seq) || head_seq < 1)
		return broken(v, chain, PQgetvalue(heads, h, 1), "-", "chain head has an invalid last_seq");
	for (;;) {
		const char *params[2] = {chain, cursor};
		err = kw_db_exec(v->db, cursor[0] == '\0' ? SQL_ROWS_FIRST : SQL_ROWS_NEXT,
		                 cursor[0] == '\0' ? 1 : 2, params, NULL, NULL, &res);
		if (err != KW_OK)
			goto done;
		int n = PQntuples(res);
		for (int i = 0; i < n; i++) {
			const char *id = PQgetvalue(res, i, 0), *seq_txt = PQgetvalue(res, i, 1);
			const char *f[KW_AF_COUNT];
			int64_t seq = 0;
			unsigned char row_prev[KW_AUDIT_MAC_LEN];

			snprintf(expected_txt, sizeof(expected_txt), "%" PRId64, expected);
			if (!parse_i64(seq_txt, &seq) || seq < expected) {
				err = broken(v, chain, seq_txt, id, "unexpected seq (expected %s)",
				             expected_txt);
				goto done;
			}
			if (seq > expected) {
				err = broken(v, chain, expected_txt, id,
				             "row missing (next row found is seq %s)", seq_txt);
				goto done;
			}
			if (seq > head_seq) {
				err = broken(v, chain, seq_txt, id,
				             "row beyond the chain head (last_seq %" PRId64 ")", head_seq);
				goto done;
			}
			if (!parse_mac(PQgetvalue(res, i, 13), row_prev) ||
			    !parse_mac(PQgetvalue(res, i, 14), mac)) {
				err = broken(v, chain, seq_txt, id, "malformed mac");
				goto done;
			}
			if (CRYPTO_memcmp(row_prev, prev, KW_AUDIT_MAC_LEN) != 0) {
				err = broken(v, chain, seq_txt, id, "prev_mac is not the previous row's mac");
				goto done;
			}
			const kw_hsm_key *k = key_for(v, PQgetvalue(res, i, 12));
			if (k == NULL) {
				err =
				    broken(v, chain, seq_txt, id, "audit key version %s is not in the token",
				           PQgetvalue(res, i, 12));
				goto done;
			}
			f[KW_AF_CHAIN_ID] = chain;
			f[KW_AF_SEQ] = seq_txt;
			f[KW_AF_AT] = PQgetvalue(res, i, 2);
			f[KW_AF_TENANT_ID] = value_or_null(res, i, 3);
			f[KW_AF_ACTOR] = value_or_null(res, i, 4);
			f[KW_AF_ACTION] = value_or_null(res, i, 5);
			f[KW_AF_TARGET] = value_or_null(res, i, 6);
			f[KW_AF_STATUS] = value_or_null(res, i, 7);
			f[KW_AF_IP] = value_or_null(res, i, 8);
			f[KW_AF_USER_AGENT] = value_or_null(res, i, 9);
			f[KW_AF_REQUEST_ID] = value_or_null(res, i, 10);
			f[KW_AF_CONTEXT] = value_or_null(res, i, 11);
			f[KW_AF_KEY_VERSION] = PQgetvalue(res, i, 12);
			err = kw_audit_row_mac(v->s, k, prev, f, want);
			if (err != KW_OK)
				goto done;
			if (CRYPTO_memcmp(want, mac, KW_AUDIT_MAC_LEN) != 0) {
				err = broken(v, chain, seq_txt, id,
				             "mac does not verify (row edited or forged)");
				goto done;
			}
			memcpy(prev, mac, KW_AUDIT_MAC_LEN);
			expected++;
			rows++;
			snprintf(cursor, sizeof(cursor), "%s", seq_txt);
		}
		PQclear(res);
		res = NULL;
		if (n < VERIFY_PAGE_ROWS)
			break;
	}
	snprintf(expected_txt, sizeof(expected_txt), "%" PRId64, expected);
	if (expected - 1 != head_seq) {
		err = broken(v, chain, expected_txt, "-",
		             "chain head says last_seq %" PRId64 " but the last row is seq %" PRId64
		             " (rows deleted at the tail)",
		             head_seq, expected - 1);
		goto done;
	}
	unsigned char head_last[KW_AUDIT_MAC_LEN], head_mac[KW_AUDIT_MAC_LEN];
	const char *head_seq_txt = PQgetvalue(heads, h, 1);
	if (!parse_mac(PQgetvalue(heads, h, 2), head_last) || !parse_mac(PQgetvalue(heads, h, 4), head_mac)) {
		err = broken(v, chain, head_seq_txt, "-", "chain head has a malformed mac");
		goto done;
	}
	if (CRYPTO_memcmp(head_last, prev, KW_AUDIT_MAC_LEN) != 0) {
		err = broken(v, chain, head_seq_txt, "-", "chain head's last_mac is not the last row's mac");
		goto done;
	}
	const kw_hsm_key *k = key_for(v, PQgetvalue(heads, h, 3));
	if (k == NULL) {
		err = broken(v, chain, head_seq_txt, "-", "audit key version %s is not in the token",
		             PQgetvalue(heads, h, 3));
		goto done;
	}
	err = kw_audit_head_mac(v->s, k, chain, (uint64_t)head_seq, prev, want);
	if (err != KW_OK)
		goto done;
	if (CRYPTO_memcmp(want, head_mac, KW_AUDIT_MAC_LEN) != 0) {
		err = broken(v, chain, head_seq_txt, "-", "chain head mac does not verify (head edited)");
		goto done;
	}
	v->rows += rows;
	v->chains++;
done:
	PQclear(res);
	return err;
}

kw_err kw_audit_verify(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, FILE *report,
                       unsigned long long *rows_checked)
{
	kw_err err = KW_OK;
	PGresult *heads = NULL;
	vctx v = {.hsm = hsm, .s = s, .db = db, .report = report};
	char cursor[KW_AUDIT_UUID_LEN + 1] = "";

	if (hsm == NULL || s == NULL || db == NULL)
		kw_misuse("kw_audit_verify: NULL argument");
	err = kw_db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL, NULL, NULL);
	if (err != KW_OK)
		goto done;
	for (;;) {
		const char *params[1] = {cursor};
		err = kw_db_exec(db, cursor[0] == '\0' ? SQL_HEADS_FIRST : SQL_HEADS_NEXT,
		                 cursor[0] == '\0' ? 0 : 1, params, NULL, NULL, &heads);
		if (err != KW_OK)
			goto done;
		int n = PQntuples(heads);
		for (int i = 0; i < n; i++) {
			err = verify_chain(&v, heads, i);
			if (err != KW_OK)
				goto done;
			snprintf(cursor, sizeof(cursor), "%s", PQgetvalue(heads, i, 0));
		}
		PQclear(heads);
		heads = NULL;
		if (n < VERIFY_PAGE_ROWS)
			break;
	}
	err = kw_db_exec(db, SQL_ORPHAN, 0, NULL, NULL, NULL, &heads);
	if (err != KW_OK)
		goto done;
	if (PQntuples(heads) > 0) {
		err = broken(&v, PQgetvalue(heads, 0, 0), PQgetvalue(heads, 0, 1), PQgetvalue(heads, 0, 2),
		             "chain has no head in audit_chains");
		goto done;
	}
	if (report != NULL) {
		fprintf(report, "audit verify: %llu chains, %llu rows: ok\n", v.chains, v.rows);
		fflush(report);
	}
	if (rows_checked != NULL)
		*rows_checked = v.rows;
done:
	kw_db_rollback(db);
	PQclear(heads);
	return err;
}
