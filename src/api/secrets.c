/* secrets.c — the secrets store's routes (DESIGN §5.7): create, new
 * version, list, fetch, delete. Values travel as base64; each version is
 * sealed under its own data key, which the token's KEK wraps
 * (keyward/vault/secrets.h). A fetch answers only once its audit row is
 * durable; changes are audited in their own transaction. No value or data
 * key reaches a log line, an audit row or an error. */
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/core/log.h"
#include "keyward/core/secret.h"
#include "keyward/core/text.h"
#include "keyward/db/repo_secrets.h"
#include "keyward/vault/secrets.h"

static kw_outcome failure(kw_err err)
{
	if (err == KW_ERR_NOT_FOUND)
		return kw_out_error(404, "not_found", "no such secret");
	if (err == KW_ERR_EXISTS)
		return kw_out_error(409, "secret_exists", "a secret of that name exists");
	return kw_out_failure(err);
}

/* The value of body (standard base64, canonical) into a new locked
 * secret; NULL with the refusal in *o. */
static kw_secret *value_of(json_t *body, kw_outcome *o)
{
	json_t *v = json_object_get(body, "value");
	const char *s = json_string_value(v);
	size_t n = json_string_length(v), len = 0;
	if (s != NULL && n > 4 * ((KW_SECRET_VALUE_MAX + 2) / 3)) {
		*o = kw_out_error(413, "payload_too_large", "a value is at most 64 KiB");
		return NULL;
	}
	kw_secret *out = s != NULL ? kw_secret_new(kw_b64_decoded_max(n)) : NULL;
	if (out == NULL || kw_b64_decode(s, n, kw_secret_data(out), kw_b64_decoded_max(n), &len) != KW_OK) {
		kw_secret_free(out);
		*o = kw_out_error(400, "invalid_request", "value must be standard base64 (padded)");
		return NULL;
	}
	if (len > KW_SECRET_VALUE_MAX) {
		kw_secret_free(out);
		*o = kw_out_error(413, "payload_too_large", "a value is at most 64 KiB");
		return NULL;
	}
	kw_secret_truncate(out, len);
	return out;
}

static bool ctype_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > KW_SECRET_CTYPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static json_t *meta_json(const kw_secret_meta *m, bool with_ctype)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "id", m->id, "name", m->name, "version",
	                      (json_int_t)m->version, "created_at", m->created_at);
	if (with_ctype)
		json_object_set_new(o, "content_type", json_string(m->content_type));
	return o;
}

/* Seals value as version of secret id for the caller's tenant (the token's
 * work, before the transaction). */
static kw_err seal(kw_call *call, const char *tenant, const char *id, uint32_t version, kw_secret *value,
                   kw_secret_version *v)
{
	return kw_secrets_seal(call->app->hsm, call->res->hsm, tenant, id, version, kw_secret_data(value),
	                       kw_secret_len(value), v);
}

static void audit_change(kw_call *call, const kw_caller *who, const char *id, uint32_t version, kw_err *err)
{
	char ctx[48];
	snprintf(ctx, sizeof(ctx), "{\"version\":%" PRIu32 "}", version);
	kw_api_audit_in_tx(call, who->key.tenant_id, who->key.actor, kw_api_action(call), id, ctx, err);
}

kw_outcome kw_api_secrets_create(kw_call *call, const kw_caller *who)
{
	const char *tenant = who->key.tenant_id;
	json_t *body = kw_api_body_object(call);
	const char *name = json_string_value(json_object_get(body, "name"));
	json_t *jct = json_object_get(body, "content_type");
	const char *ctype = jct ? json_string_value(jct) : "application/octet-stream";
	kw_outcome o = kw_out_error(400, "invalid_request",
	                            "the body must be {\"name\": [A-Za-z0-9_./-]{1,256}, \"value\": base64, "
	                            "\"content_type\"?: 1-255 printable ASCII}");
	kw_secret *value = NULL;
	kw_secret_meta m;
	memset(&m, 0, sizeof(m));
	if (body == NULL || !kw_secret_name_ok(name) || !ctype_ok(ctype) ||
	    (value = value_of(body, &o)) == NULL) {
		json_decref(body);
		return o;
	}
	snprintf(m.name, sizeof(m.name), "%s", name);
	snprintf(m.content_type, sizeof(m.content_type), "%s", ctype);
	json_decref(body);
	kw_secret_version v;
	memset(&v, 0, sizeof(v));
	kw_err err = kw_random_uuid(m.id);
	if (err == KW_OK)
		err = seal(call, tenant, m.id, 1, value, &v);
	kw_secret_free(value);
	if (err == KW_OK && (err = kw_db_begin(call->res->db, tenant, NULL)) == KW_OK) {
		err = kw_secrets_create(call->res->db, &m, &v);
		audit_change(call, who, m.id, 1, &err);
		err = kw_api_finish_tx(call, err);
	}
	kw_secret_version_clear(&v);
	return err == KW_OK ? kw_out_json(201, meta_json(&m, false)) : failure(err);
}

kw_outcome kw_api_secrets_put(kw_call *call, const kw_caller *who)
{
	const char *tenant = who->key.tenant_id, *id = call->req.path_param;
	json_t *body = kw_api_body_object(call);
	kw_outcome o = kw_out_error(400, "invalid_request", "the body must be {\"value\": base64}");
	kw_secret *value = body ? value_of(body, &o) : NULL;
	json_decref(body);
	if (value == NULL)
		return o;
	if (!kw_is_uuid(id)) {
		kw_secret_free(value);
		return failure(KW_ERR_NOT_FOUND);
	}
	kw_secret_meta m;
	kw_secret_version v;
	memset(&m, 0, sizeof(m));
	memset(&v, 0, sizeof(v));
	kw_err err = kw_db_begin(call->res->db, tenant, NULL);
	if (err == KW_OK) {
		err = kw_secrets_lock(call->res->db, tenant, id, &m);
		if (err == KW_OK)
			err = seal(call, tenant, m.id, m.version + 1, value, &v);
		if (err == KW_OK)
			err = kw_secrets_add_version(call->res->db, &v, &m);
		audit_change(call, who, id, m.version, &err);
		err = kw_api_finish_tx(call, err);
	}
	kw_secret_free(value);
	kw_secret_version_clear(&v);
	return err == KW_OK ? kw_out_json(200, meta_json(&m, false)) : failure(err);
}

typedef struct list_job {
	const char *tenant, *after;
	size_t limit;
	kw_secret_meta *items;
	size_t n;
	bool more;
} list_job;

static kw_err list_work(kw_db *db, void *arg)
{
	list_job *j = arg;
	return kw_secrets_list(db, j->tenant, j->limit, j->after, &j->items, &j->n, &j->more);
}

kw_outcome kw_api_secrets_list(kw_call *call, const kw_caller *who)
{
	char lim[16] = "100", after[KW_SECRET_NAME_MAX + 1] = "";
	int hl = kw_request_query(&call->req, "limit", lim, sizeof(lim)),
	    ha = kw_request_query(&call->req, "after", after, sizeof(after));
	char *end = NULL;
	long limit = strtol(lim, &end, 10);
	if (hl < 0 || ha < 0 || end == lim || *end != '\0' || limit < 1 || limit > 1000 ||
	    (ha == 1 && !kw_secret_name_ok(after)))
		return kw_out_error(400, "invalid_request",
		                    "limit must be 1 .. 1000 and after a cursor from an earlier page");
	list_job j = {.tenant = who->key.tenant_id, .after = after, .limit = (size_t)limit};
	kw_err err = kw_api_in_tx(call, j.tenant, list_work, &j);
	if (err != KW_OK)
		return failure(err);
	json_t *items = json_array();
	for (size_t i = 0; i < j.n; i++)
		json_array_append_new(items, meta_json(&j.items[i], true));
	json_t *next = j.more && j.n > 0 ? json_string(j.items[j.n - 1].name) : json_null();
	free(j.items);
	return kw_out_json(200, json_pack("{s:o, s:o}", "items", items, "next", next));
}

kw_outcome kw_api_secrets_delete(kw_call *call, const kw_caller *who)
{
	const char *tenant = who->key.tenant_id, *id = call->req.path_param;
	char name[KW_SECRET_NAME_MAX + 1];
	if (!kw_is_uuid(id))
		return failure(KW_ERR_NOT_FOUND);
	kw_err err = kw_db_begin(call->res->db, tenant, NULL);
	if (err == KW_OK) {
		err = kw_secrets_delete(call->res->db, tenant, id, name);
		kw_api_audit_in_tx(call, tenant, who->key.actor, kw_api_action(call), id, NULL, &err);
		err = kw_api_finish_tx(call, err);
	}
	return err == KW_OK ? kw_out_body(204, NULL, strdup(""), 0) : failure(err);
}

/* What a fetch's answer holds until its audit row is durable. */
typedef struct fetch_job {
	kw_caller who;
	char id[37];
	char ctx[64];
	kw_audit_event ev;
} fetch_job;

static void fetch_job_free(void *hold)
{
	OPENSSL_cleanse(hold, sizeof(fetch_job));
	free(hold);
}

/* {id, name, version, value, content_type, created_at}, the value in
 * base64 (malloc'd; wiped by whoever frees it). */
static char *value_body(const kw_secret_meta *m, kw_secret *value, size_t *len)
{
	size_t n = kw_secret_len(value), b64 = 4 * ((n + 2) / 3);
	size_t cap = b64 + sizeof(*m) + 128;
	char *body = malloc(cap);
	if (body == NULL)
		return NULL;
	int head = snprintf(body, cap, "{\"id\":\"%s\",\"name\":\"%s\",\"version\":%" PRIu32 ",\"value\":\"",
	                    m->id, m->name, m->version);
	size_t at = (size_t)head +
	            (size_t)EVP_EncodeBlock((unsigned char *)body + head, kw_secret_data(value), (int)n);
	json_t *ct = json_string(m->content_type);
	char *ct_text = ct ? json_dumps(ct, JSON_ENCODE_ANY) : NULL; /* quoted and escaped by jansson */
	json_decref(ct);
	if (ct_text == NULL) {
		OPENSSL_cleanse(body, cap);
		free(body);
		return NULL;
	}
	at += (size_t)snprintf(body + at, cap - at, "\",\"content_type\":%s,\"created_at\":\"%s\"}", ct_text,
	                       m->created_at);
	free(ct_text);
	*len = at;
	return body;
}

/* A fetch's id and version (0: the latest) from the request; false with
 * the refusal in *o. */
static bool fetch_ask(kw_call *call, const kw_caller *who, kw_secret_ask *ask, kw_outcome *o)
{
	char vtext[16] = "0";
	int hv = kw_request_query(&call->req, "version", vtext, sizeof(vtext));
	char *end = NULL;
	long version = strtol(vtext, &end, 10);
	if (hv < 0 || end == vtext || *end != '\0' || version < 0 || version > INT32_MAX ||
	    (hv == 1 && version == 0)) {
		*o = kw_out_error(400, "invalid_request", "version must be an integer from 1");
		return false;
	}
	*ask = (kw_secret_ask){
	    .tenant_id = who->key.tenant_id, .id = call->req.path_param, .version = (uint32_t)version};
	return true;
}

/* The rest of a fetch, once its row is read (err is the read's outcome):
 * open, then the answer waits for its audit row. Wipes v. */
static kw_outcome fetch_finish(kw_call *call, const kw_caller *who, const kw_secret_ask *ask, kw_err err,
                               kw_secret_meta *m, kw_secret_version *v)
{
	kw_secret *value = NULL;
	/* The row read names this caller's tenant and the secret asked for,
	 * or nothing of it is used; the AADs would refuse it anyway. */
	if (err == KW_OK &&
	    (strcasecmp(v->tenant_id, ask->tenant_id) != 0 || strcasecmp(v->secret_id, ask->id) != 0))
		err = KW_ERR_INTERNAL;
	if (err == KW_OK)
		err = kw_secrets_open(call->app->hsm, call->res->hsm, v, &value);
	kw_secret_version_clear(v);
	if (err == KW_ERR_VERIFY || err == KW_ERR_INVALID) {
		kw_err_log("secrets: version %" PRIu32
		           " of secret %s in tenant %s does not open (moved or altered); "
		           "request %s",
		           ask->version, ask->id, ask->tenant_id, call->req.request_id);
		return kw_out_error(
		    409, "secret_corrupt",
		    "the stored secret does not open where it is; the operator has been told");
	}
	if (err != KW_OK)
		return failure(err);
	size_t len = 0;
	char *body = value_body(m, value, &len);
	kw_secret_free(value);
	fetch_job *j = calloc(1, sizeof(*j));
	if (body == NULL || j == NULL) {
		if (body != NULL) {
			OPENSSL_cleanse(body, len);
			free(body);
		}
		free(j);
		return kw_out_failure(KW_ERR_NOMEM);
	}
	j->who = *who;
	snprintf(j->id, sizeof(j->id), "%s", m->id);
	snprintf(j->ctx, sizeof(j->ctx), "{\"version\":%" PRIu32 "}", m->version);
	j->ev = kw_api_call_event(call, &j->who, "ok", j->ctx);
	j->ev.target = j->id;
	return kw_out_after_audit(200, body, len, &j->ev, NULL, 0, fetch_job_free, j);
}

kw_outcome kw_api_secrets_get(kw_call *call, const kw_caller *who)
{
	kw_secret_ask ask;
	kw_outcome o;
	if (!fetch_ask(call, who, &ask, &o))
		return o;
	kw_secret_meta m;
	kw_secret_version v;
	memset(&v, 0, sizeof(v));
	kw_err err = kw_secrets_fetch(call->res->db, ask.tenant_id, ask.id, ask.version, &m, &v);
	return fetch_finish(call, who, &ask, err, &m, &v);
}

/* Fetches queued together on one worker: their reads share one round trip
 * (each its own transaction, scoped to its own tenant); everything else
 * happens per call, in order, each settled as soon as its outcome is
 * known. */
void kw_api_secrets_get_batch(kw_call **calls, const kw_caller *const *who, size_t n, kw_api_batch *b)
{
	kw_db *db = calls[0]->res->db; /* the worker's: calls[0] may be gone early */
	kw_secret_ask ask[KW_POOL_BATCH_MAX];
	kw_secret_meta metas[KW_POOL_BATCH_MAX];
	kw_secret_version vs[KW_POOL_BATCH_MAX];
	kw_err errs[KW_POOL_BATCH_MAX];
	size_t idx[KW_POOL_BATCH_MAX], m = 0;
	memset(vs, 0, sizeof(vs));
	for (size_t i = 0; i < n; i++) {
		kw_outcome o;
		if (!fetch_ask(calls[i], who[i], &ask[m], &o)) {
			kw_api_batch_settle(b, i, o);
			continue;
		}
		idx[m++] = i;
	}
	if (m > 0)
		kw_secrets_fetch_many(db, m, ask, metas, vs, errs);
	for (size_t k = 0; k < m; k++)
		kw_api_batch_settle(
		    b, idx[k], fetch_finish(calls[idx[k]], who[idx[k]], &ask[k], errs[k], &metas[k], &vs[k]));
}
