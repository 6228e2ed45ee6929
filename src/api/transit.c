/* transit.c — transit encryption (DESIGN §5.5): named keys per tenant and
 * encrypt / decrypt with them.
 *
 * A key version's material is derived in the token for each request (HKDF
 * from keyward/derive/<m>, info keyward:v1:transit:<tenant>:<name>:<n>:
 * <type>), held in locked memory for the request and wiped: nothing of it
 * is stored or cached, so a rotation or a config change holds at once on
 * every instance. Plaintexts and contexts travel as base64. A decrypt's
 * answer leaves only once its audit row is durable. No plaintext,
 * ciphertext or key reaches a log line, an audit row or an error. */
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/core/secret.h"
#include "keyward/db/repo_transit.h"
#include "keyward/vault/transit.h"

static json_t *key_json(const kw_transit_key_row *k)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "name", k->name, "type", k->type, "latest_version",
	                 (json_int_t)k->latest_version, "min_decryption_version",
	                 (json_int_t)k->min_decryption_version, "created_at", k->created_at, "updated_at",
	                 k->updated_at);
}

/* The active derivation root's version (new key versions are derived
 * from it), then the tenant's transaction for the change. */
static kw_err begin_change(kw_call *call, const char *tenant, uint32_t *derive_version)
{
	const kw_hsm_key *k;
	kw_err err = kw_hsm_key_active(call->app->hsm, KW_KEY_DERIVE, &k);
	if (err == KW_OK)
		*derive_version = kw_hsm_key_version(k);
	return err == KW_OK ? kw_db_begin(call->res->db, tenant, NULL) : err;
}

static kw_outcome failure(kw_err err)
{
	if (err == KW_ERR_NOT_FOUND)
		return kw_out_error(404, "not_found", "no such transit key");
	if (err == KW_ERR_EXISTS)
		return kw_out_error(409, "key_exists", "a transit key of that name exists");
	return kw_out_failure(err);
}

/* --- key management ------------------------------------------------------ */

kw_outcome kw_api_transit_create(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	json_t *body = kw_api_body_object(call);
	const char *name = json_string_value(json_object_get(body, "name"));
	json_t *jt = json_object_get(body, "type");
	kw_transit_type t = KW_TRANSIT_AES256_GCM;
	bool ok = body != NULL && kw_transit_name_ok(name) &&
	          (jt == NULL || (json_is_string(jt) && kw_transit_type_parse(json_string_value(jt), &t)));
	if (!ok) {
		json_decref(body);
		return kw_out_error(
		    400, "invalid_request",
		    "the body must be {\"name\": [A-Za-z0-9_.-]{1,64}, \"type\"?: \"aes256-gcm\" | "
		    "\"aes256-siv\"}");
	}
	kw_transit_key_row row;
	uint32_t dv = 0;
	kw_err err = begin_change(call, p.tenant_id, &dv);
	if (err == KW_OK) {
		err = kw_transit_key_create(call->res->db, p.tenant_id, name, kw_transit_type_name(t), dv,
		                            &row);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "transit.key.create", name, NULL, &err);
		err = kw_api_finish_tx(call, err);
	}
	json_decref(body);
	return err == KW_OK ? kw_out_json(201, key_json(&row)) : failure(err);
}

typedef struct one_key {
	const char *tenant, *name;
	kw_transit_key_row row;
	kw_transit_key_row *rows;
	size_t n;
} one_key;

static kw_err read_key(kw_db *db, void *arg)
{
	one_key *k = arg;
	return kw_transit_key_version(db, k->tenant, k->name, 0, &k->row);
}

static kw_err read_keys(kw_db *db, void *arg)
{
	one_key *k = arg;
	return kw_transit_key_list(db, k->tenant, &k->rows, &k->n);
}

kw_outcome kw_api_transit_list(kw_call *call, const kw_caller *who)
{
	one_key k = {.tenant = who->key.tenant_id};
	kw_err err = kw_api_in_tx(call, k.tenant, read_keys, &k);
	if (err != KW_OK)
		return failure(err);
	json_t *items = json_array();
	for (size_t i = 0; i < k.n; i++)
		json_array_append_new(items, key_json(&k.rows[i]));
	free(k.rows);
	return kw_out_json(200, json_pack("{s:o}", "items", items));
}

kw_outcome kw_api_transit_get(kw_call *call, const kw_caller *who)
{
	one_key k = {.tenant = who->key.tenant_id, .name = call->req.path_param};
	if (!kw_transit_name_ok(k.name))
		return failure(KW_ERR_NOT_FOUND);
	kw_err err = kw_api_in_tx(call, k.tenant, read_key, &k);
	return err == KW_OK ? kw_out_json(200, key_json(&k.row)) : failure(err);
}

kw_outcome kw_api_transit_rotate(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	const char *name = call->req.path_param;
	if (!kw_transit_name_ok(name))
		return failure(KW_ERR_NOT_FOUND);
	kw_transit_key_row row;
	uint32_t dv = 0;
	kw_err err = begin_change(call, p.tenant_id, &dv);
	if (err == KW_OK) {
		err = kw_transit_key_rotate(call->res->db, p.tenant_id, name, dv, &row);
		char ctx[48];
		snprintf(ctx, sizeof(ctx), "{\"version\":%" PRIu32 "}",
		         err == KW_OK ? row.latest_version : 0);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "transit.key.rotate", name, ctx, &err);
		err = kw_api_finish_tx(call, err);
	}
	return err == KW_OK ? kw_out_json(200, key_json(&row)) : failure(err);
}

kw_outcome kw_api_transit_config(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	const char *name = call->req.path_param;
	json_t *body = kw_api_body_object(call);
	json_t *m = json_object_get(body, "min_decryption_version");
	bool ok = body != NULL && json_is_integer(m) && json_integer_value(m) >= 1 &&
	          json_integer_value(m) <= INT32_MAX;
	uint32_t min = ok ? (uint32_t)json_integer_value(m) : 0;
	json_decref(body);
	if (!kw_transit_name_ok(name))
		return failure(KW_ERR_NOT_FOUND);
	if (!ok)
		return kw_out_error(400, "invalid_request",
		                    "the body must be {\"min_decryption_version\": integer >= 1}");
	kw_transit_key_row row;
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = kw_transit_key_config(call->res->db, p.tenant_id, name, min, &row);
		char ctx[48];
		snprintf(ctx, sizeof(ctx), "{\"min_decryption_version\":%" PRIu32 "}", min);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "transit.key.config", name, ctx, &err);
		err = kw_api_finish_tx(call, err);
	}
	if (err == KW_ERR_INVALID)
		return kw_out_error(400, "invalid_request",
		                    "min_decryption_version must be 1 .. latest_version");
	return err == KW_OK ? kw_out_json(200, key_json(&row)) : failure(err);
}

/* --- encrypt and decrypt ------------------------------------------------- */

/* Decodes optional standard base64 member m of o into a new buffer (NULL
 * and 0 when absent); false when present but not canonical base64. */
static bool b64_member(json_t *o, const char *m, size_t max, unsigned char **out, size_t *len)
{
	json_t *v = json_object_get(o, m);
	*out = NULL;
	*len = 0;
	if (v == NULL)
		return true;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (s == NULL || n % 4 != 0 || n / 4 * 3 > max + 2)
		return false;
	unsigned char *b = malloc(n / 4 * 3 + 1);
	char *check = malloc(n + 1);
	int got = b && check ? EVP_DecodeBlock(b, (const unsigned char *)s, (int)n) : -1;
	size_t pad = n > 0 ? (size_t)(s[n - 1] == '=') + (size_t)(n > 1 && s[n - 2] == '=') : 0;
	bool ok = got >= 0 && (size_t)got >= pad && (size_t)got - pad <= max &&
	          EVP_EncodeBlock((unsigned char *)check, b, got - (int)pad) == (int)n &&
	          memcmp(check, s, n) == 0;
	free(check);
	if (!ok) {
		if (b)
			OPENSSL_cleanse(b, n / 4 * 3 + 1);
		free(b);
		return false;
	}
	*out = b;
	*len = (size_t)got - pad;
	return true;
}

/* The material of a key version, derived in the token into locked memory. */
static kw_err derive(kw_call *call, const char *tenant, const kw_transit_key_row *k, kw_transit_type t,
                     kw_secret **out)
{
	const kw_hsm_key *root;
	kw_err err = kw_hsm_key_get_fresh(call->app->hsm, KW_KEY_DERIVE, k->derive_version, &root);
	if (err != KW_OK)
		return err;
	char info[160];
	int n = snprintf(info, sizeof(info), "keyward:v1:transit:%s:%s:%" PRIu32 ":%s", tenant, k->name,
	                 k->version, kw_transit_type_name(t));
	kw_secret *s = kw_secret_new(kw_transit_key_len(t));
	if (s == NULL)
		return KW_ERR_NOMEM;
	err = kw_hsm_hkdf_expand(call->res->hsm, root, (const unsigned char *)info, (size_t)n,
	                         kw_secret_data(s), kw_transit_key_len(t));
	if (err != KW_OK) {
		kw_secret_free(s);
		return err;
	}
	*out = s;
	return KW_OK;
}

typedef struct version_read {
	const char *tenant, *name;
	uint32_t version;
	kw_transit_key_row row;
} version_read;

static kw_err read_version(kw_db *db, void *arg)
{
	version_read *v = arg;
	return kw_transit_key_version(db, v->tenant, v->name, v->version, &v->row);
}

static void drop(unsigned char *b, size_t n)
{
	if (b != NULL)
		OPENSSL_cleanse(b, n);
	free(b);
}

kw_outcome kw_api_transit_encrypt(kw_call *call, const kw_caller *who)
{
	const char *tenant = who->key.tenant_id;
	json_t *body = kw_api_body_object(call);
	unsigned char *pt = NULL, *ctx = NULL;
	size_t ptn = 0, ctxn = 0;
	json_t *jp = json_object_get(body, "plaintext");
	if (json_is_string(jp) && json_string_length(jp) > 4 * ((KW_TRANSIT_MAX_PLAINTEXT + 2) / 3)) {
		json_decref(body);
		return kw_out_error(413, "payload_too_large", "the plaintext is over 64 KiB");
	}
	bool ok = body != NULL && jp != NULL && b64_member(body, "context", 4096, &ctx, &ctxn) &&
	          b64_member(body, "plaintext", KW_TRANSIT_MAX_PLAINTEXT, &pt, &ptn);
	json_decref(body);
	if (!ok) {
		drop(ctx, ctxn);
		return kw_out_error(400, "invalid_request",
		                    "the body must be {\"plaintext\": base64, \"context\"?: base64}");
	}
	version_read v = {.tenant = tenant, .name = call->req.path_param};
	kw_secret *key = NULL;
	char *s = NULL;
	unsigned char iv[KW_TRANSIT_GCM_IV];
	kw_transit_type t = KW_TRANSIT_AES256_GCM;
	kw_err err =
	    kw_transit_name_ok(v.name) ? kw_api_in_tx(call, tenant, read_version, &v) : KW_ERR_NOT_FOUND;
	if (err == KW_OK && !kw_transit_type_parse(v.row.type, &t))
		err = KW_ERR_DB;
	if (err == KW_OK && t == KW_TRANSIT_AES256_SIV && ptn == 0)
		err = KW_ERR_INVALID;
	if (err == KW_OK)
		err = derive(call, tenant, &v.row, t, &key);
	if (err == KW_OK)
		err = kw_hsm_random(call->res->hsm, iv, sizeof(iv));
	if (err == KW_OK)
		err = kw_transit_seal(t, v.row.version, kw_secret_data(key), iv, ctx, ctxn, pt, ptn, &s);
	kw_secret_free(key);
	drop(pt, ptn);
	drop(ctx, ctxn);
	if (err == KW_ERR_INVALID)
		return kw_out_error(400, "invalid_request", "aes256-siv cannot encrypt an empty plaintext");
	if (err != KW_OK)
		return failure(err);
	kw_outcome o = kw_out_json(
	    200, json_pack("{s:s, s:I}", "ciphertext", s, "key_version", (json_int_t)v.row.version));
	free(s);
	return o;
}

/* What a decrypt's answer holds until its audit row is durable. */
typedef struct decrypt_job {
	kw_caller who; /* a copy: the answer may be written after the pipeline returned */
	char ctx[64];
	kw_audit_event ev;
} decrypt_job;

static void decrypt_job_free(void *hold)
{
	OPENSSL_cleanse(hold, sizeof(decrypt_job));
	free(hold);
}

kw_outcome kw_api_transit_decrypt(kw_call *call, const kw_caller *who)
{
	const char *tenant = who->key.tenant_id;
	json_t *body = kw_api_body_object(call);
	json_t *jc = json_object_get(body, "ciphertext");
	unsigned char *ctx = NULL;
	size_t ctxn = 0;
	bool ok = body != NULL && json_is_string(jc) && b64_member(body, "context", 4096, &ctx, &ctxn);
	if (!ok) {
		json_decref(body);
		return kw_out_error(400, "invalid_request",
		                    "the body must be {\"ciphertext\": string, \"context\"?: base64}");
	}
	kw_transit_ct c;
	kw_err perr = kw_transit_parse(json_string_value(jc), json_string_length(jc), &c);
	json_decref(body);
	if (perr != KW_OK) {
		drop(ctx, ctxn);
		return kw_out_error(400, "invalid_ciphertext", "not a transit ciphertext");
	}
	version_read v = {.tenant = tenant, .name = call->req.path_param, .version = c.version};
	kw_secret *key = NULL;
	unsigned char *pt = NULL;
	size_t ptn = 0;
	kw_transit_type t = KW_TRANSIT_AES256_GCM;
	kw_err err =
	    kw_transit_name_ok(v.name) ? kw_api_in_tx(call, tenant, read_version, &v) : KW_ERR_NOT_FOUND;
	kw_outcome refusal = {0};
	bool refused = false;
	if (err == KW_ERR_NOT_FOUND && kw_transit_name_ok(v.name)) {
		/* The key exists but not this version: as good as tampered. */
		one_key k = {.tenant = tenant, .name = v.name};
		if (kw_api_in_tx(call, tenant, read_key, &k) == KW_OK)
			refusal = kw_out_error(400, "decryption_failed",
			                       "the ciphertext does not decrypt with this key"),
			refused = true;
	}
	if (!refused && err == KW_OK && (!kw_transit_type_parse(v.row.type, &t) || t != c.type))
		refusal =
		    kw_out_error(400, "decryption_failed", "the ciphertext does not decrypt with this key"),
		refused = true;
	if (!refused && err == KW_OK && c.version < v.row.min_decryption_version)
		refusal =
		    kw_out_error(400, "key_version_retired", "this key version is below the key's minimum"),
		refused = true;
	if (!refused && err == KW_OK)
		err = derive(call, tenant, &v.row, t, &key);
	if (!refused && err == KW_OK) {
		err = kw_transit_open(&c, kw_secret_data(key), ctx, ctxn, &pt, &ptn);
		if (err == KW_ERR_VERIFY)
			refusal = kw_out_error(400, "decryption_failed",
			                       "the ciphertext does not decrypt with this key"),
			refused = true;
	}
	kw_secret_free(key);
	kw_transit_ct_free(&c);
	drop(ctx, ctxn);
	if (refused)
		return refusal;
	if (err != KW_OK)
		return failure(err);
	/* The answer: the plaintext in base64, sent once its row is durable. */
	size_t cap = 4 * ((ptn + 2) / 3) + 32;
	char *answer = malloc(cap);
	decrypt_job *j = calloc(1, sizeof(*j));
	if (answer == NULL || j == NULL) {
		drop(pt, ptn);
		free(answer);
		free(j);
		return kw_out_failure(KW_ERR_NOMEM);
	}
	int n = snprintf(answer, cap, "{\"plaintext\":\"");
	n += EVP_EncodeBlock((unsigned char *)answer + n, pt, (int)ptn);
	n += snprintf(answer + n, cap - (size_t)n, "\"}");
	drop(pt, ptn);
	j->who = *who;
	snprintf(j->ctx, sizeof(j->ctx), "{\"version\":%" PRIu32 "}", v.row.version);
	j->ev = kw_api_call_event(call, &j->who, "ok", j->ctx);
	j->ev.target = call->req.path_param; /* the key's name (the call outlives the row) */
	return kw_out_after_audit(200, answer, (size_t)n, &j->ev, NULL, 0, decrypt_job_free, j);
}
