/* verify.c — walks every audit chain and recomputes it.
 *
 * For each chain in audit_chains, rows are read in seq order, a page at a
 * time (keyset pagination, never the whole table in memory): seq must run
 * 1, 2, 3... without a gap, each prev_mac must be the previous row's mac,
 * each mac must recompute in the token, and the last row must be the one
 * the head names, whose head_mac must verify too. Rows whose chain has no
 * head are broken. Checkpoints given (kept outside the database) must each
 * find their row, with their mac, in a chain that verifies: a tail cut back
 * or a chain deleted whole is caught. Everything is read in one REPEATABLE
 * READ snapshot, so
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
#include "keyward/core/log.h"

typedef struct vctx {
	kw_hsm *hsm;
	kw_hsm_session *s;
	kw_db *db;
	FILE *report;
	unsigned long long rows;
	unsigned long long chains;
	/* The furthest checkpoint of each chain (sorted by chain id), and
	 * whether the walk met its chain. */
	kw_audit_checkpoint *cps;
	bool *met;
	size_t ncps;
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

static int cp_order(const void *a, const void *b)
{
	const kw_audit_checkpoint *x = a, *y = b;
	int c = strcmp(x->chain_id, y->chain_id);
	if (c != 0)
		return c;
	return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0; /* furthest first */
}

/* The furthest checkpoint of chain, marking the chain as met. */
static const kw_audit_checkpoint *checkpoint_of(vctx *v, const char *chain)
{
	kw_audit_checkpoint key;
	snprintf(key.chain_id, sizeof(key.chain_id), "%s", chain);
	for (size_t lo = 0, hi = v->ncps; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(chain, v->cps[mid].chain_id);
		if (c == 0) {
			v->met[mid] = true;
			return &v->cps[mid];
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Checks each checkpoint's own MAC, and keeps the furthest of each chain
 * in v (sorted by chain id). */
static kw_err load_checkpoints(vctx *v, const kw_audit_checkpoint *cps, size_t n)
{
	if (n == 0)
		return KW_OK;
	v->cps = malloc(n * sizeof(*v->cps));
	v->met = calloc(n, sizeof(*v->met));
	if (v->cps == NULL || v->met == NULL)
		return KW_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const kw_hsm_key *k = NULL;
		unsigned char want[KW_AUDIT_MAC_LEN];
		kw_err err = kw_hsm_key_get(v->hsm, KW_KEY_AUDIT, cps[i].key_version, &k);
		if (err == KW_OK)
			err = kw_audit_head_mac(v->s, k, cps[i].chain_id, cps[i].seq, cps[i].mac, want);
		if (err == KW_ERR_NOT_FOUND || err == KW_ERR_INVALID ||
		    (err == KW_OK && CRYPTO_memcmp(want, cps[i].head_mac, KW_AUDIT_MAC_LEN) != 0)) {
			if (v->report != NULL)
				fprintf(v->report,
				        "audit checkpoint %zu (chain %s seq %" PRIu64
				        ") is not keyward's: its MAC "
				        "does not verify\n",
				        i + 1, cps[i].chain_id, cps[i].seq);
			return KW_ERR_INVALID;
		}
		if (err != KW_OK)
			return err;
	}
	memcpy(v->cps, cps, n * sizeof(*cps));
	qsort(v->cps, n, sizeof(*v->cps), cp_order);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (m == 0 || strcmp(v->cps[m - 1].chain_id, v->cps[i].chain_id) != 0)
			v->cps[m++] = v->cps[i];
	v->ncps = m;
	return KW_OK;
}

/* One chain, given its head row (columns of kw_audit_heads_page). */
static kw_err verify_chain(vctx *v, const kw_db_result *heads, int h)
{
	kw_err err = KW_OK;
	kw_db_result *res = NULL;
	const char *chain = kw_db_text(heads, h, 0);
	int64_t head_seq = 0, expected = 1;
	unsigned char prev[KW_AUDIT_MAC_LEN] = {0}, mac[KW_AUDIT_MAC_LEN], want[KW_AUDIT_MAC_LEN];
	char cursor[24] = "", expected_txt[24];
	unsigned long long rows = 0;

	if (!parse_i64(kw_db_text(heads, h, 1), &head_seq) || head_seq < 1)
		return broken(v, chain, kw_db_text(heads, h, 1), "-", "chain head has an invalid last_seq");
	const kw_audit_checkpoint *cp = checkpoint_of(v, chain);
	for (;;) {
		err = kw_audit_rows_page(v->db, chain, cursor, &res);
		if (err != KW_OK)
			goto done;
		int n = kw_db_nrows(res);
		for (int i = 0; i < n; i++) {
			const char *id = kw_db_text(res, i, 0), *seq_txt = kw_db_text(res, i, 1);
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
			if (!parse_mac(kw_db_text(res, i, 13), row_prev) ||
			    !parse_mac(kw_db_text(res, i, 14), mac)) {
				err = broken(v, chain, seq_txt, id, "malformed mac");
				goto done;
			}
			if (CRYPTO_memcmp(row_prev, prev, KW_AUDIT_MAC_LEN) != 0) {
				err = broken(v, chain, seq_txt, id, "prev_mac is not the previous row's mac");
				goto done;
			}
			const kw_hsm_key *k = key_for(v, kw_db_text(res, i, 12));
			if (k == NULL) {
				err =
				    broken(v, chain, seq_txt, id, "audit key version %s is not in the token",
				           kw_db_text(res, i, 12));
				goto done;
			}
			f[KW_AF_CHAIN_ID] = chain;
			f[KW_AF_SEQ] = seq_txt;
			f[KW_AF_AT] = kw_db_text(res, i, 2);
			f[KW_AF_TENANT_ID] = kw_db_value(res, i, 3);
			f[KW_AF_ACTOR] = kw_db_value(res, i, 4);
			f[KW_AF_ACTION] = kw_db_value(res, i, 5);
			f[KW_AF_TARGET] = kw_db_value(res, i, 6);
			f[KW_AF_STATUS] = kw_db_value(res, i, 7);
			f[KW_AF_IP] = kw_db_value(res, i, 8);
			f[KW_AF_USER_AGENT] = kw_db_value(res, i, 9);
			f[KW_AF_REQUEST_ID] = kw_db_value(res, i, 10);
			f[KW_AF_CONTEXT] = kw_db_value(res, i, 11);
			f[KW_AF_KEY_VERSION] = kw_db_text(res, i, 12);
			err = kw_audit_row_mac(v->s, k, prev, f, want);
			if (err != KW_OK)
				goto done;
			if (CRYPTO_memcmp(want, mac, KW_AUDIT_MAC_LEN) != 0) {
				err = broken(v, chain, seq_txt, id,
				             "mac does not verify (row edited or forged)");
				goto done;
			}
			if (cp != NULL && (uint64_t)seq == cp->seq &&
			    CRYPTO_memcmp(cp->mac, mac, KW_AUDIT_MAC_LEN) != 0) {
				err = broken(v, chain, seq_txt, id,
				             "row is not the one checkpointed at this seq");
				goto done;
			}
			memcpy(prev, mac, KW_AUDIT_MAC_LEN);
			expected++;
			rows++;
			snprintf(cursor, sizeof(cursor), "%s", seq_txt);
		}
		kw_db_result_free(res);
		res = NULL;
		if (n < KW_AUDIT_PAGE)
			break;
	}
	snprintf(expected_txt, sizeof(expected_txt), "%" PRId64, expected);
	if (cp != NULL && cp->seq > (uint64_t)(expected - 1)) {
		err = broken(v, chain, expected_txt, "-",
		             "the chain ends at seq %" PRId64 " but a checkpoint saw seq %" PRIu64
		             " (rows deleted at the tail)",
		             expected - 1, cp->seq);
		goto done;
	}
	if (expected - 1 != head_seq) {
		err = broken(v, chain, expected_txt, "-",
		             "chain head says last_seq %" PRId64 " but the last row is seq %" PRId64
		             " (rows deleted at the tail)",
		             head_seq, expected - 1);
		goto done;
	}
	unsigned char head_last[KW_AUDIT_MAC_LEN], head_mac[KW_AUDIT_MAC_LEN];
	const char *head_seq_txt = kw_db_text(heads, h, 1);
	if (!parse_mac(kw_db_text(heads, h, 2), head_last) || !parse_mac(kw_db_text(heads, h, 4), head_mac)) {
		err = broken(v, chain, head_seq_txt, "-", "chain head has a malformed mac");
		goto done;
	}
	if (CRYPTO_memcmp(head_last, prev, KW_AUDIT_MAC_LEN) != 0) {
		err = broken(v, chain, head_seq_txt, "-", "chain head's last_mac is not the last row's mac");
		goto done;
	}
	const kw_hsm_key *k = key_for(v, kw_db_text(heads, h, 3));
	if (k == NULL) {
		err = broken(v, chain, head_seq_txt, "-", "audit key version %s is not in the token",
		             kw_db_text(heads, h, 3));
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
	kw_db_result_free(res);
	return err;
}

kw_err kw_audit_verify(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, FILE *report,
                       unsigned long long *rows_checked, const kw_audit_checkpoint *cps, size_t ncps)
{
	kw_err err = KW_OK;
	kw_db_result *heads = NULL;
	vctx v = {.hsm = hsm, .s = s, .db = db, .report = report};
	char cursor[KW_AUDIT_UUID_LEN + 1] = "";

	if (hsm == NULL || s == NULL || db == NULL || (ncps > 0 && cps == NULL))
		kw_misuse("kw_audit_verify: NULL argument");
	err = load_checkpoints(&v, cps, ncps);
	if (err != KW_OK)
		goto done;
	err = kw_audit_read_begin(db);
	if (err != KW_OK)
		goto done;
	for (;;) {
		err = kw_audit_heads_page(db, cursor, &heads);
		if (err != KW_OK)
			goto done;
		int n = kw_db_nrows(heads);
		for (int i = 0; i < n; i++) {
			err = verify_chain(&v, heads, i);
			if (err != KW_OK)
				goto done;
			snprintf(cursor, sizeof(cursor), "%s", kw_db_text(heads, i, 0));
		}
		kw_db_result_free(heads);
		heads = NULL;
		if (n < KW_AUDIT_PAGE)
			break;
	}
	err = kw_audit_orphan(db, &heads);
	if (err != KW_OK)
		goto done;
	if (kw_db_nrows(heads) > 0) {
		err = broken(&v, kw_db_text(heads, 0, 0), kw_db_text(heads, 0, 1), kw_db_text(heads, 0, 2),
		             "chain has no head in audit_chains");
		goto done;
	}
	for (size_t i = 0; i < v.ncps; i++) {
		if (v.met[i])
			continue;
		char seq[24];
		snprintf(seq, sizeof(seq), "%" PRIu64, v.cps[i].seq);
		err = broken(&v, v.cps[i].chain_id, seq, "-",
		             "the chain is gone, but a checkpoint saw it (chain deleted)");
		goto done;
	}
	if (report != NULL) {
		fprintf(report, "audit verify: %llu chains, %llu rows: ok\n", v.chains, v.rows);
		fflush(report);
	}
	if (rows_checked != NULL)
		*rows_checked = v.rows;
done:
	if (kw_db_in_tx(db))
		kw_db_rollback(db);
	kw_db_result_free(heads);
	free(v.cps);
	free(v.met);
	return err;
}
