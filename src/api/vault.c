/* vault.c — the per-user encryption vault (DESIGN §5.3):
 *   POST /api/v1/me/encryption-vault/init    201 new / 200 existing
 *   GET  /api/v1/me/encryption-vault/key     200, or 404 vault_not_found
 *   POST /api/v1/me/encryption-vault/rotate  200 with a fresh key
 *
 * The user is the access token's `sub`, the tenant its `tid`; nothing in
 * the request can name another. Init and rotate need the `vault:write`
 * permission, key `vault:read`. Every call leaves an audit row (actor
 * "user:<sub>", action vault.*), failures included; a state change commits
 * together with its row, and a key is answered only once the row of its
 * fetch is durable. No master key reaches a log line or an audit row;
 * answers carrying one are wiped when sent. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/log.h"
#include "keyward/vault/vault.h"

/* The refusal for a failure of the token, the database or the stored blob. */
static kw_outcome fail(kw_call *call, const kw_caller *who, kw_err err)
{
	switch (err) {
	case KW_ERR_VERIFY:
		/* Never a 500: the row exists but is not this user's key. */
		kw_err_log("vault: the vault of a user of tenant %s does not unwrap (request %s)",
		           who->claims.tid, call->req.request_id);
		return kw_out_error(
		    409, "vault_corrupt",
		    "the stored vault does not unwrap for this user; the operator has been told");
	case KW_ERR_INVALID:
		/* Before any row is read: ids the vault cannot be keyed by. */
		return kw_out_error(400, "invalid_subject",
		                    "the access token's subject or tenant cannot own a vault");
	case KW_ERR_NOT_FOUND: {
		/* The row's KEK is gone, or the database refused a write under a
		 * retired one: this instance may have missed a rotation. Looking
		 * up the next version re-reads the token (at most every 100 ms). */
		const kw_hsm_key *active, *next;
		if (kw_hsm_key_active(call->app->hsm, KW_KEY_KEK, &active) == KW_OK &&
		    kw_hsm_key_get_fresh(call->app->hsm, KW_KEY_KEK, kw_hsm_key_version(active) + 1, &next) ==
		        KW_OK)
			kw_info("vault: KEK %" PRIu32 " found in the token", kw_hsm_key_version(next));
		return kw_out_error(503, "kek_unavailable",
		                    "the key-encryption key this needs is not in the key store");
	}
	case KW_ERR_HSM_UNAVAILABLE:
	case KW_ERR_HSM:
		return kw_out_error(503, "hsm_unavailable", "the key store is unavailable");
	case KW_ERR_DB_UNAVAILABLE:
		return kw_out_error(503, "db_unavailable", "the database is unavailable");
	default:
		kw_err_log("vault: request %s failed: %s", call->req.request_id, kw_err_str(err));
		return kw_out_error(500, "internal", "internal error");
	}
}

/* Unwraps (kw_vault_unwrap re-reads the token's keys for a KEK version
 * this process has not seen yet: a rotation by keywardctl). */
static kw_err unwrap(kw_call *call, const kw_vault_row *row, unsigned char mk[KW_MK_LEN])
{
	kw_err err = kw_vault_unwrap(call->app->hsm, call->res->hsm, row, mk);
	/* A stored row this build cannot read (format, ids) is as unusable
	 * as one whose tag fails. */
	return err == KW_ERR_INVALID ? KW_ERR_VERIFY : err;
}

/* {"master_key": base64, "format_version": n, "kek_id": n} */
static char *key_body(const unsigned char mk[KW_MK_LEN], const kw_vault_row *row, size_t *len)
{
	unsigned char b64[((KW_MK_LEN + 2) / 3) * 4 + 1];
	EVP_EncodeBlock(b64, mk, KW_MK_LEN);
	size_t cap = sizeof(b64) + 80;
	char *body = malloc(cap);
	if (body != NULL) {
		int n = snprintf(body, cap,
		                 "{\"master_key\":\"%s\",\"format_version\":%d,\"kek_id\":%" PRIu32 "}",
		                 (const char *)b64, row->format_version, row->kek_id);
		*len = (size_t)n;
	}
	OPENSSL_cleanse(b64, sizeof(b64));
	return body;
}

static kw_outcome key_answer(int status, const unsigned char mk[KW_MK_LEN], const kw_vault_row *row)
{
	size_t len = 0;
	char *body = key_body(mk, row, &len);
	return kw_out_body(status, NULL, body, len);
}

static char *kek_context(const kw_vault_row *row, const char *extra)
{
	char *s = malloc(96);
	if (s != NULL)
		snprintf(s, 96, "{\"kek_id\":%" PRIu32 "%s}", row->kek_id, extra ? extra : "");
	return s;
}

/* --- init and rotate: a change and its audit row in one transaction ----- */

/* The end of a change (init, rotate) whose work so far ended in err: its
 * audit row in the same transaction (the transaction is scoped to this
 * user, so the row satisfies the vault audit policy), the commit, then the
 * key or the failure. Wipes mk and row. */
static kw_outcome finish_change(kw_call *call, const kw_caller *who, kw_err err, int status,
                                unsigned char mk[KW_MK_LEN], kw_vault_row *row, const char *extra)
{
	kw_err db_err = err;
	char *ctx = err == KW_OK ? kek_context(row, extra) : NULL;
	if (err == KW_OK && ctx == NULL)
		err = KW_ERR_NOMEM;
	kw_api_audit_in_tx(call, who->claims.tid, who->actor, kw_api_action(call), "encryption_vault", ctx,
	                   &err);
	err = kw_api_finish_tx(call, err);
	free(ctx);
	kw_outcome o =
	    err == KW_OK ? key_answer(status, mk, row) : fail(call, who, db_err != KW_OK ? db_err : err);
	OPENSSL_cleanse(mk, KW_MK_LEN);
	OPENSSL_cleanse(row, sizeof(*row));
	return o;
}

kw_outcome kw_api_vault_init(kw_call *call, const kw_caller *who)
{
	const kw_access_claims *c = &who->claims;
	kw_app *app = call->app;
	kw_db *db = call->res->db;
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	memset(&row, 0, sizeof(row));
	snprintf(row.tenant_id, sizeof(row.tenant_id), "%s", c->tid);
	snprintf(row.user_id, sizeof(row.user_id), "%s", c->sub);
	bool created = false;
	kw_err err = kw_db_begin(db, c->tid, c->sub);
	if (err == KW_OK)
		err = kw_vault_get(db, c->tid, c->sub, false, &row);
	if (err == KW_ERR_NOT_FOUND) {
		err = kw_vault_new_mk(call->res->hsm, mk);
		if (err == KW_OK)
			err = kw_vault_wrap(app->hsm, call->res->hsm, mk, &row);
		if (err == KW_OK)
			err = kw_vault_insert(db, &row);
		created = err == KW_OK;
		if (err == KW_ERR_EXISTS) /* a concurrent first call won: answer its key */
			err = kw_vault_get(db, c->tid, c->sub, false, &row);
	}
	if (err == KW_OK && !created)
		err = unwrap(call, &row, mk);
	return finish_change(call, who, err, created ? 201 : 200, mk, &row,
	                     created ? ",\"created\":true" : ",\"created\":false");
}

kw_outcome kw_api_vault_rotate(kw_call *call, const kw_caller *who)
{
	const kw_access_claims *c = &who->claims;
	kw_db *db = call->res->db;
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	memset(&row, 0, sizeof(row));
	kw_err err = kw_db_begin(db, c->tid, c->sub);
	if (err == KW_OK)
		err = kw_vault_get(db, c->tid, c->sub, true, &row);
	if (err == KW_ERR_NOT_FOUND) {
		(void)kw_api_finish_tx(call, err);
		return kw_out_error(404, "vault_not_found",
		                    "this user has no encryption vault; init one first");
	}
	uint32_t old_kek = row.kek_id;
	if (err == KW_OK)
		err = kw_vault_new_mk(call->res->hsm, mk);
	if (err == KW_OK)
		err = kw_vault_wrap(call->app->hsm, call->res->hsm, mk, &row);
	if (err == KW_OK)
		err = kw_vault_replace(db, &row);
	char extra[48];
	snprintf(extra, sizeof(extra), ",\"previous_kek_id\":%" PRIu32, old_kek);
	return finish_change(call, who, err, 200, mk, &row, extra);
}

/* --- key: one read, one unwrap, the audit row through the writer -------- */

typedef struct key_job {
	kw_call *call;
	kw_caller who; /* a copy: the answer may be written after the pipeline returned */
	char *body;
	size_t body_len;
	char ctx[48];
	kw_audit_event ev;
} key_job;

static void key_job_free(key_job *j)
{
	if (j->body != NULL) {
		OPENSSL_cleanse(j->body, j->body_len);
		free(j->body);
	}
	OPENSSL_cleanse(j, sizeof(*j));
	free(j);
}

static void key_job_release(void *hold)
{
	key_job_free(hold);
}

static key_job *key_begin(kw_call *call, const kw_caller *who)
{
	key_job *j = calloc(1, sizeof(*j));
	if (j != NULL) {
		j->call = call;
		j->who = *who;
	}
	return j;
}

/* The rest of a fetch, once its row is read (err is the read's outcome):
 * unwrap, then the answer waits for its audit row. Frees j, or hands it
 * to the outcome. */
static kw_outcome key_finish(key_job *j, kw_err err, kw_vault_row *row)
{
	kw_call *call = j->call;
	const kw_access_claims *c = &j->who.claims;
	unsigned char mk[KW_MK_LEN];
	if (err == KW_ERR_NOT_FOUND) {
		key_job_free(j);
		return kw_out_error(404, "vault_not_found", "this user has no encryption vault");
	}
	/* The row read for this call names this call's owner, or nothing of
	 * it is used (the unwrap alone would not notice: its AAD comes from
	 * the row). */
	if (err == KW_OK && (strcasecmp(row->tenant_id, c->tid) != 0 || strcmp(row->user_id, c->sub) != 0)) {
		kw_err_log("vault: request %s was handed a row of another user; refused",
		           call->req.request_id);
		err = KW_ERR_INTERNAL;
	}
	if (err == KW_OK)
		err = unwrap(call, row, mk);
	if (err == KW_OK && (j->body = key_body(mk, row, &j->body_len)) == NULL)
		err = KW_ERR_NOMEM;
	OPENSSL_cleanse(mk, sizeof(mk));
	if (err != KW_OK) {
		kw_outcome o = fail(call, &j->who, err);
		key_job_free(j);
		return o;
	}
	snprintf(j->ctx, sizeof(j->ctx), "{\"kek_id\":%" PRIu32 "}", row->kek_id);
	j->ev = kw_api_call_event(call, &j->who, "ok", j->ctx);
	char *body = j->body;
	j->body = NULL;
	return kw_out_after_audit(200, body, j->body_len, &j->ev, NULL, 0, key_job_release, j);
}

kw_outcome kw_api_vault_key(kw_call *call, const kw_caller *who)
{
	key_job *j = key_begin(call, who);
	if (j == NULL)
		return kw_out_failure(KW_ERR_NOMEM);
	kw_vault_row row;
	kw_err err = kw_vault_fetch(call->res->db, who->claims.tid, who->claims.sub, &row);
	kw_outcome o = key_finish(j, err, &row);
	OPENSSL_cleanse(&row, sizeof(row));
	return o;
}

/* Fetches queued together on one worker, past the pipeline: their reads
 * share one round trip to the database (each still its own transaction,
 * scoped to its own user); everything else happens per call, in order,
 * and each call is settled as soon as its outcome is known. */
void kw_api_vault_key_batch(kw_call **calls, const kw_caller *const *who, size_t n, kw_api_batch *b)
{
	kw_db *db = calls[0]->res->db; /* the worker's: calls[0] may be gone early */
	key_job *jobs[KW_POOL_BATCH_MAX] = {0};
	const char *tids[KW_POOL_BATCH_MAX], *subs[KW_POOL_BATCH_MAX];
	kw_vault_row rows[KW_POOL_BATCH_MAX];
	kw_err errs[KW_POOL_BATCH_MAX];
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		key_job *j = key_begin(calls[i], who[i]);
		if (j == NULL) {
			kw_api_batch_settle(b, i, kw_out_failure(KW_ERR_NOMEM));
			continue;
		}
		jobs[i] = j;
		tids[m] = j->who.claims.tid;
		subs[m] = j->who.claims.sub;
		m++;
	}
	if (m > 0)
		kw_vault_fetch_many(db, m, tids, subs, rows, errs);
	for (size_t i = 0, k = 0; i < n; i++) {
		if (jobs[i] == NULL)
			continue;
		kw_api_batch_settle(b, i, key_finish(jobs[i], errs[k], &rows[k]));
		k++;
	}
	OPENSSL_cleanse(rows, sizeof(rows));
}
