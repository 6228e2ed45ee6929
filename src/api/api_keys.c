/* api_keys.c — POST/GET/DELETE /api/v1/api-keys (scope admin).
 *
 * The tenant is the caller's (from its key). A key's secret appears in
 * exactly one response: the 201 that creates it. Creation and revocation
 * write their audit row in the same transaction as the change. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/apikey.h"
#include "keyward/auth/revocation.h"
#include "keyward/core/log.h"
#include "keyward/db/sessions.h"

#define KW_MAX_RATE_LIMIT 1000000

static json_t *row_json(const kw_apikey_row *r)
{
	json_t *scopes = json_array();
	for (uint32_t bit = 1; bit != 0 && bit <= KW_SCOPE_SECRETS_WRITE; bit <<= 1)
		if (r->scopes & bit)
			json_array_append_new(scopes, json_string(kw_scope_name(bit)));
	json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:s}", "id", r->id, "name", r->name, "scopes", scopes,
	                      "prefix", r->prefix, "created_at", r->created_at);
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "rate_limit_per_minute",
	                    r->rate_limit_per_minute > 0 ? json_integer(r->rate_limit_per_minute)
	                                                 : json_null());
	json_object_set_new(o, "last_used_at",
	                    r->last_used_at[0] ? json_string(r->last_used_at) : json_null());
	json_object_set_new(o, "revoked_at", r->revoked_at[0] ? json_string(r->revoked_at) : json_null());
	return o;
}

/* Parses {name, scopes[], rate_limit_per_minute?}; NULL, or what is wrong
 * with the body. */
static const char *parse_create(kw_call *call, kw_apikey_row *row)
{
	json_error_t jerr;
	json_t *body = call->req.body_len ? json_loadb((const char *)call->req.body, call->req.body_len,
	                                               JSON_REJECT_DUPLICATES, &jerr)
	                                  : NULL;
	const char *msg = NULL;
	if (!json_is_object(body)) {
		msg = "the body must be a JSON object";
		goto done;
	}
	json_t *rl = json_object_get(body, "rate_limit_per_minute");
	char n[KW_APIKEY_MAX_NAME + 1];
	uint32_t bits = 0;
	if ((msg = kw_api_name_scopes(body, n, &bits)) != NULL)
		goto done;
	size_t nlen = strlen(n);
	int limit = 0;
	if (rl != NULL && !json_is_null(rl)) {
		if (!json_is_integer(rl) || json_integer_value(rl) < 1 ||
		    json_integer_value(rl) > KW_MAX_RATE_LIMIT) {
			msg = "rate_limit_per_minute must be an integer from 1 to 1000000";
			goto done;
		}
		limit = (int)json_integer_value(rl);
	}
	memset(row, 0, sizeof(*row));
	memcpy(row->name, n, nlen);
	row->scopes = bits;
	row->rate_limit_per_minute = limit;
done:
	json_decref(body);
	return msg;
}

kw_outcome kw_api_keys_create(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	kw_apikey_row row;
	const char *bad = parse_create(call, &row);
	if (bad != NULL)
		return kw_out_error(400, "invalid_request", bad);
	kw_worker_res *res = call->res;
	char key[KW_APIKEY_LEN + 1] = "";
	const kw_hsm_key *pepper;
	snprintf(row.tenant_id, sizeof(row.tenant_id), "%s", p.tenant_id);
	kw_err err = kw_hsm_key_active(call->app->hsm, KW_KEY_PEPPER, &pepper);
	if (err == KW_OK)
		err = kw_apikey_generate(res->hsm, key, row.prefix);
	if (err == KW_OK)
		err = kw_apikey_hmac(res->hsm, pepper, key, KW_APIKEY_LEN, row.key_hmac);
	row.pepper_version = err == KW_OK ? kw_hsm_key_version(pepper) : 0;
	if (err == KW_OK && (err = kw_db_begin(res->db, p.tenant_id, NULL)) == KW_OK) {
		err = kw_apikey_insert(res->db, &row);
		json_t *c = json_pack("{s:s, s:s}", "name", row.name, "prefix", row.prefix);
		char *ctx = c ? json_dumps(c, JSON_COMPACT) : NULL;
		json_decref(c);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "api_key.create", row.id, ctx, &err);
		free(ctx);
		err = kw_api_finish_tx(call, err);
	}
	if (err != KW_OK) {
		OPENSSL_cleanse(key, sizeof(key));
		return kw_out_failure(err);
	}
	json_t *o = row_json(&row);
	if (o)
		json_object_set_new(o, "key", json_string(key));
	OPENSSL_cleanse(key, sizeof(key));
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (o) { /* the key's only copy outside the response buffer */
		json_t *k = json_object_get(o, "key");
		if (k && json_string_value(k))
			OPENSSL_cleanse((void *)json_string_value(k), KW_APIKEY_LEN);
	}
	json_decref(o);
	return kw_out_body(201, NULL, text, text ? strlen(text) : 0);
}

typedef struct key_list {
	kw_apikey_row *rows;
	size_t n;
} key_list;

static kw_err list_keys(kw_db *db, void *arg)
{
	key_list *l = arg;
	return kw_apikey_list(db, &l->rows, &l->n);
}

kw_outcome kw_api_keys_list(kw_call *call, const kw_caller *who)
{
	key_list l = {0};
	kw_err err = kw_api_in_tx(call, who->key.tenant_id, list_keys, &l);
	if (err != KW_OK)
		return kw_out_failure(err);
	json_t *items = json_array();
	for (size_t i = 0; i < l.n; i++)
		json_array_append_new(items, row_json(&l.rows[i]));
	free(l.rows);
	return kw_out_json(200, json_pack("{s:o}", "items", items));
}

kw_outcome kw_api_keys_revoke(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	kw_apikey_row row;
	const char *id = call->req.path_param;
	char(*sids)[37] = NULL;
	size_t nsids = 0;
	int64_t rexp = 0;
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = kw_apikey_revoke(call->res->db, id, &row);
		/* The sessions it started (delegated logins) end with it: a
		 * stolen auth:issue key must not leave 30-day sessions behind. */
		if (err == KW_OK)
			err =
			    kw_family_revoke_minted_by(call->res->db, p.tenant_id, row.id, "api_key_revoked",
			                               call->app->access_ttl_max_s, &sids, &nsids, &rexp);
		char ctx[48];
		snprintf(ctx, sizeof(ctx), "{\"sessions_revoked\":%zu}", nsids);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "api_key.revoke", row.id, ctx, &err);
		err = kw_api_finish_tx(call, err);
	}
	for (size_t i = 0; err == KW_OK && i < nsids; i++)
		kw_revcache_add(call->app->revs, NULL, sids[i], rexp);
	free(sids);
	if (err == KW_ERR_NOT_FOUND)
		return kw_out_deny(404, "not_found", "no such API key", p.tenant_id, p.actor,
		                   "api_key.revoke");
	if (err != KW_OK)
		return kw_out_failure(err);
	kw_keycache_forget(call->app->keycache, row.prefix);
	return kw_out_json(200, row_json(&row));
}
