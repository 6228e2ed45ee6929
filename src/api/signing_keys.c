/* signing_keys.c — signing keys (DESIGN 5.6): create (the secret shown
 * once), list without secrets, delete (revoked at once on every instance),
 * rotate with an overlap. The secret comes from the token's RNG and is
 * stored only wrapped by the KEK (keyward/vault/signing.h). Every change is
 * audited in its own transaction. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/auth/signature.h"
#include "keyward/core/scopes.h"
#include "keyward/core/secret.h"
#include "keyward/core/text.h"
#include "keyward/db/repo_signing.h"
#include "keyward/vault/signing.h"

#define OVERLAP_DEFAULT 300
#define OVERLAP_MAX     86400

static json_t *scopes_json(uint32_t bits)
{
	json_t *a = json_array();
	for (uint32_t b = 1; b != 0; b <<= 1)
		if ((bits & b) && kw_scope_name(b))
			json_array_append_new(a, json_string(kw_scope_name(b)));
	return a;
}

static json_t *row_json(const kw_signing_row *r)
{
	json_t *o = json_pack("{s:s, s:s, s:o, s:s}", "id", r->id, "name", r->name, "scopes",
	                      scopes_json(r->scopes), "created_at", r->created_at);
	json_object_set_new(o, "expires_at", r->expires_at[0] ? json_string(r->expires_at) : json_null());
	json_object_set_new(o, "revoked_at", r->revoked_at[0] ? json_string(r->revoked_at) : json_null());
	json_object_set_new(o, "replaced_by", r->replaced_by[0] ? json_string(r->replaced_by) : json_null());
	return o;
}

/* A new key for the caller's tenant: id, secret from the token, wrapped,
 * inserted in the open transaction. secret is the caller's locked memory. */
static kw_err make_key(kw_call *call, const char *tenant, const char *name, uint32_t scopes,
                       kw_signing_row *row, char *secret)
{
	memset(row, 0, sizeof(*row));
	memcpy(row->tenant_id, tenant, 37);
	snprintf(row->name, sizeof(row->name), "%s", name);
	row->scopes = scopes;
	kw_err err = kw_random_uuid(row->id);
	if (err == KW_OK)
		err = kw_sig_secret_generate(call->res->hsm, secret);
	if (err == KW_OK)
		err = kw_signing_wrap(call->app->hsm, call->res->hsm, (const unsigned char *)secret, row);
	if (err == KW_OK)
		err = kw_signing_insert(call->res->db, row);
	return err;
}

/* The answer that shows a new key's secret, once. */
static kw_outcome created(const kw_signing_row *row, const char *secret, json_t *extra)
{
	json_t *o = row_json(row);
	json_object_set_new(o, "secret", json_string(secret));
	if (extra != NULL)
		json_object_update(o, extra);
	json_decref(extra);
	char *text = json_dumps(o, JSON_COMPACT);
	json_t *s = json_object_get(o, "secret");
	if (json_is_string(s))
		OPENSSL_cleanse((void *)json_string_value(s), json_string_length(s));
	json_decref(o);
	return kw_out_body(201, NULL, text, text ? strlen(text) : 0);
}

kw_outcome kw_api_signing_create(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	json_t *body = kw_api_body_object(call);
	char name[129];
	uint32_t scopes = 0;
	const char *bad = body ? kw_api_name_scopes(body, name, &scopes) : "the body must be a JSON object";
	json_decref(body);
	if (bad != NULL)
		return kw_out_error(400, "invalid_request", bad);
	kw_secret *secret = kw_secret_new(KW_SIG_SECRET_LEN + 1);
	if (secret == NULL)
		return kw_out_failure(KW_ERR_NOMEM);
	kw_signing_row row;
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = make_key(call, p.tenant_id, name, scopes, &row, (char *)kw_secret_data(secret));
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "signing_key.create", row.id, NULL, &err);
		err = kw_api_finish_tx(call, err);
	}
	kw_outcome o =
	    err == KW_OK ? created(&row, (const char *)kw_secret_data(secret), NULL) : kw_out_failure(err);
	kw_secret_free(secret);
	OPENSSL_cleanse(&row, sizeof(row));
	return o;
}

static kw_err list_work(kw_db *db, void *arg)
{
	void **a = arg;
	return kw_signing_list(db, (kw_signing_row **)a[0], (size_t *)a[1]);
}

kw_outcome kw_api_signing_list(kw_call *call, const kw_caller *who)
{
	kw_signing_row *rows = NULL;
	size_t n = 0;
	void *args[2] = {&rows, &n};
	kw_err err = kw_api_in_tx(call, who->key.tenant_id, list_work, args);
	if (err != KW_OK)
		return kw_out_failure(err);
	json_t *items = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(items, row_json(&rows[i]));
	OPENSSL_cleanse(rows, n * sizeof(*rows));
	free(rows);
	return kw_out_json(200, json_pack("{s:o, s:n}", "items", items, "next"));
}

kw_outcome kw_api_signing_delete(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	const char *id = call->req.path_param;
	kw_signing_row row;
	memset(&row, 0, sizeof(row));
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = kw_signing_lock(call->res->db, id, &row);
		if (err == KW_OK)
			err = kw_signing_revoke(call->res->db, row.id);
		if (err == KW_OK)
			err = kw_signing_lock(call->res->db, id, &row);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "signing_key.delete",
		                   kw_is_uuid(id) ? id : NULL, NULL, &err);
		err = kw_api_finish_tx(call, err);
	}
	if (err == KW_OK)
		kw_sigcache_drop(call->app->sigkeys, row.id); /* others: the change feed */
	if (err == KW_ERR_NOT_FOUND)
		return kw_out_deny(404, "not_found", "no such signing key", p.tenant_id, p.actor,
		                   "signing_key.delete");
	return err == KW_OK ? kw_out_json(200, row_json(&row)) : kw_out_failure(err);
}

kw_outcome kw_api_signing_rotate(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	const char *id = call->req.path_param;
	json_t *body = kw_api_body_object(call), *jo = json_object_get(body, "overlap_seconds");
	bool ok = body != NULL && (jo == NULL || (json_is_integer(jo) && json_integer_value(jo) >= 0 &&
	                                          json_integer_value(jo) <= OVERLAP_MAX));
	int overlap = ok && jo ? (int)json_integer_value(jo) : OVERLAP_DEFAULT;
	json_decref(body);
	if (!ok)
		return kw_out_error(400, "invalid_request",
		                    "the body must be {\"overlap_seconds\"?: 0 .. 86400}");
	kw_secret *secret = kw_secret_new(KW_SIG_SECRET_LEN + 1);
	if (secret == NULL)
		return kw_out_failure(KW_ERR_NOMEM);
	kw_signing_row old, row;
	memset(&old, 0, sizeof(old));
	memset(&row, 0, sizeof(row));
	char expires[32] = "";
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = kw_signing_lock(call->res->db, id, &old);
		if (err == KW_OK && (old.revoked || old.replaced_by[0]))
			err = KW_ERR_CONFLICT; /* only a live key that was not rotated yet */
		if (err == KW_OK)
			err = make_key(call, p.tenant_id, old.name, old.scopes, &row,
			               (char *)kw_secret_data(secret));
		if (err == KW_OK)
			err = kw_signing_expire(call->res->db, old.id, overlap, row.id, expires);
		char ctx[96];
		snprintf(ctx, sizeof(ctx), "{\"replaced_by\":\"%s\",\"overlap_seconds\":%d}", row.id,
		         overlap);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "signing_key.rotate",
		                   kw_is_uuid(id) ? id : NULL, ctx, &err);
		err = kw_api_finish_tx(call, err);
	}
	if (err == KW_OK)
		kw_sigcache_drop(call->app->sigkeys, old.id);
	kw_outcome o;
	if (err == KW_OK)
		o = created(&row, (const char *)kw_secret_data(secret),
		            json_pack("{s:s, s:s}", "replaces", old.id, "replaced_expires_at", expires));
	else if (err == KW_ERR_NOT_FOUND)
		o = kw_out_deny(404, "not_found", "no such signing key", p.tenant_id, p.actor,
		                "signing_key.rotate");
	else if (err == KW_ERR_CONFLICT)
		o = kw_out_error(409, "key_not_live", "the key is revoked or was rotated already");
	else
		o = kw_out_failure(err);
	kw_secret_free(secret);
	OPENSSL_cleanse(&old, sizeof(old));
	OPENSSL_cleanse(&row, sizeof(row));
	return o;
}
