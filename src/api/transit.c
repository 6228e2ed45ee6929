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

/* --- one request's keys -------------------------------------------------- */

#define KW_TRANSIT_BATCH_MAX 1000
#define RING_SLOTS           8 /* versions one request may touch */

/* The key a request names, and the material of the versions it used,
 * derived once per request (locked memory, wiped by ring_close). */
typedef struct keyring {
	kw_call *call;
	const char *tenant, *name;
	kw_transit_key_row latest;
	kw_transit_type type;
	struct {
		kw_transit_key_row row;
		kw_secret *key;
	} slot[RING_SLOTS];
	size_t n;
} keyring;

/* KW_ERR_NOT_FOUND for no such key. */
static kw_err ring_open(keyring *r, kw_call *call, const char *tenant, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->call = call, r->tenant = tenant, r->name = name;
	if (!kw_transit_name_ok(name))
		return KW_ERR_NOT_FOUND;
	version_read v = {.tenant = tenant, .name = name};
	kw_err err = kw_api_in_tx(call, tenant, read_version, &v);
	if (err == KW_OK && !kw_transit_type_parse(v.row.type, &r->type))
		err = KW_ERR_DB;
	r->latest = v.row;
	return err;
}

static void ring_close(keyring *r)
{
	for (size_t i = 0; i < r->n; i++)
		kw_secret_free(r->slot[i].key);
	memset(r, 0, sizeof(*r));
}

/* The row and material of version (0: the latest): KW_ERR_NOT_FOUND for a
 * version the key does not have. */
static kw_err ring_key(keyring *r, uint32_t version, const kw_transit_key_row **row,
                       const unsigned char **key)
{
	if (version == 0)
		version = r->latest.version;
	for (size_t i = 0; i < r->n; i++)
		if (r->slot[i].row.version == version) {
			*row = &r->slot[i].row;
			*key = kw_secret_data(r->slot[i].key);
			return KW_OK;
		}
	if (r->n == RING_SLOTS)
		return KW_ERR_BUSY; /* more versions in one batch than it may derive */
	version_read v = {.tenant = r->tenant, .name = r->name, .version = version, .row = r->latest};
	kw_err err =
	    version == r->latest.version ? KW_OK : kw_api_in_tx(r->call, r->tenant, read_version, &v);
	kw_secret *k = NULL;
	if (err == KW_OK)
		err = derive(r->call, r->tenant, &v.row, r->type, &k);
	if (err != KW_OK)
		return err;
	r->slot[r->n].row = v.row;
	r->slot[r->n].key = k;
	*row = &r->slot[r->n].row;
	*key = kw_secret_data(k);
	r->n++;
	return KW_OK;
}

/* --- items ---------------------------------------------------------------- */

/* The literals of this thread's last item error: a request of one item
 * answers with them (an outcome keeps literals, not the JSON's copies). */
static _Thread_local const char *last_code, *last_msg;

/* An item's error: {error, message} (both literals); a request of one item
 * answers it with the status of its code (item_status). */
static json_t *item_error(const char *code, const char *msg)
{
	last_code = code;
	last_msg = msg;
	return json_pack("{s:s, s:s}", "error", code, "message", msg);
}

static int item_status(const char *code)
{
	if (strcmp(code, "payload_too_large") == 0)
		return 413;
	if (strcmp(code, "internal") == 0)
		return 500;
	if (strcmp(code, "hsm_unavailable") == 0 || strcmp(code, "db_unavailable") == 0 ||
	    strcmp(code, "busy") == 0)
		return 503;
	return 400;
}

static json_t *item_failure(kw_err err)
{
	if (err == KW_ERR_HSM_UNAVAILABLE || err == KW_ERR_HSM)
		return item_error("hsm_unavailable", "the key store is unavailable");
	if (err == KW_ERR_DB_UNAVAILABLE)
		return item_error("db_unavailable", "the database is unavailable");
	if (err == KW_ERR_BUSY)
		return item_error("busy", "too many key versions in one batch");
	return item_error("internal", "internal error");
}

#define DECRYPTION_FAILED item_error("decryption_failed", "the ciphertext does not decrypt with this key")

/* The optional context of an item; false (and *err set) if malformed. */
static bool item_context(json_t *item, unsigned char **ctx, size_t *n, json_t **err)
{
	if (b64_member(item, "context", 4096, ctx, n))
		return true;
	*err = item_error("invalid_request", "context must be standard base64 of at most 4096 bytes");
	return false;
}

/* Seals pt under the latest version: {ciphertext, key_version}. */
static json_t *seal(keyring *r, const unsigned char *ctx, size_t ctxn, const unsigned char *pt, size_t ptn)
{
	const kw_transit_key_row *row;
	const unsigned char *key;
	unsigned char iv[KW_TRANSIT_GCM_IV];
	char *s = NULL;
	if (r->type == KW_TRANSIT_AES256_SIV && ptn == 0)
		return item_error("invalid_request", "aes256-siv cannot encrypt an empty plaintext");
	kw_err err = ring_key(r, 0, &row, &key);
	if (err == KW_OK)
		err = kw_hsm_random(r->call->res->hsm, iv, sizeof(iv));
	if (err == KW_OK)
		err = kw_transit_seal(r->type, row->version, key, iv, ctx, ctxn, pt, ptn, &s);
	if (err != KW_OK)
		return item_failure(err);
	json_t *o = json_pack("{s:s, s:I}", "ciphertext", s, "key_version", (json_int_t)row->version);
	free(s);
	return o;
}

/* Opens an item's ciphertext: the plaintext (malloc'd) or *fail. */
static unsigned char *unseal(keyring *r, json_t *item, const unsigned char *ctx, size_t ctxn, size_t *ptn,
                             uint32_t *version, json_t **fail)
{
	json_t *jc = json_object_get(item, "ciphertext");
	kw_transit_ct c;
	if (!json_is_string(jc) ||
	    kw_transit_parse(json_string_value(jc), json_string_length(jc), &c) != KW_OK) {
		*fail = item_error("invalid_ciphertext", "not a transit ciphertext");
		return NULL;
	}
	const kw_transit_key_row *row;
	const unsigned char *key;
	unsigned char *pt = NULL;
	kw_err err = c.type == r->type ? ring_key(r, c.version, &row, &key) : KW_ERR_VERIFY;
	if (err == KW_OK && c.version < r->latest.min_decryption_version)
		*fail = item_error("key_version_retired", "this key version is below the key's minimum");
	else if (err == KW_OK && (err = kw_transit_open(&c, key, ctx, ctxn, &pt, ptn)) == KW_OK)
		*version = c.version;
	else if (err == KW_ERR_VERIFY || err == KW_ERR_NOT_FOUND)
		*fail = DECRYPTION_FAILED; /* another key, version, tenant or context; tampering */
	else if (err != KW_OK)
		*fail = item_failure(err);
	kw_transit_ct_free(&c);
	return pt;
}

static json_t *encrypt_item(keyring *r, json_t *item)
{
	json_t *fail = NULL, *jp = json_object_get(item, "plaintext");
	unsigned char *ctx = NULL, *pt = NULL;
	size_t ctxn = 0, ptn = 0;
	if (json_is_string(jp) && json_string_length(jp) > 4 * ((KW_TRANSIT_MAX_PLAINTEXT + 2) / 3))
		return item_error("payload_too_large", "the plaintext is over 64 KiB");
	if (!json_is_object(item) || jp == NULL ||
	    !b64_member(item, "plaintext", KW_TRANSIT_MAX_PLAINTEXT, &pt, &ptn))
		return item_error("invalid_request", "plaintext must be standard base64");
	json_t *o = item_context(item, &ctx, &ctxn, &fail) ? seal(r, ctx, ctxn, pt, ptn) : fail;
	drop(pt, ptn);
	drop(ctx, ctxn);
	return o;
}

/* Base64 of b as a JSON string value (wiped copy freed here). */
static json_t *b64_value(const unsigned char *b, size_t n)
{
	char *s = malloc(4 * ((n + 2) / 3) + 1);
	if (s == NULL)
		return NULL;
	int w = EVP_EncodeBlock((unsigned char *)s, b, (int)n);
	json_t *v = json_stringn(s, (size_t)w);
	OPENSSL_cleanse(s, (size_t)w);
	free(s);
	return v;
}

/* An item's context and plaintext (both malloc'd; the caller drops them),
 * or NULL with *fail. */
static unsigned char *item_open(keyring *r, json_t *item, unsigned char **ctx, size_t *ctxn, size_t *ptn,
                                json_t **fail)
{
	uint32_t v = 0;
	*fail = NULL;
	if (!json_is_object(item) || !item_context(item, ctx, ctxn, fail)) {
		if (*fail == NULL)
			*fail = item_error("invalid_request", "an item must be an object");
		return NULL;
	}
	return unseal(r, item, *ctx, *ctxn, ptn, &v, fail);
}

static json_t *decrypt_item(keyring *r, json_t *item)
{
	json_t *fail = NULL, *o = NULL;
	unsigned char *ctx = NULL;
	size_t ctxn = 0, ptn = 0;
	unsigned char *pt = item_open(r, item, &ctx, &ctxn, &ptn, &fail);
	if (pt != NULL) {
		o = json_object();
		json_object_set_new(o, "plaintext", b64_value(pt, ptn));
	}
	drop(pt, ptn);
	drop(ctx, ctxn);
	return o != NULL ? o : fail;
}

/* The same plaintext under the latest version, never leaving here. */
static json_t *rewrap_item(keyring *r, json_t *item)
{
	json_t *fail = NULL;
	unsigned char *ctx = NULL;
	size_t ctxn = 0, ptn = 0;
	unsigned char *pt = item_open(r, item, &ctx, &ctxn, &ptn, &fail);
	json_t *o = pt != NULL ? seal(r, ctx, ctxn, pt, ptn) : fail;
	drop(pt, ptn);
	drop(ctx, ctxn);
	return o;
}

/* A fresh 256-bit data key from the token, sealed under the key (envelope
 * encryption); its plaintext too unless {"plaintext": false}. */
static json_t *datakey_item(keyring *r, json_t *item)
{
	json_t *fail = NULL, *want = json_object_get(item, "plaintext");
	unsigned char *ctx = NULL, dk[32];
	size_t ctxn = 0;
	if (!json_is_object(item) || (want != NULL && !json_is_boolean(want)) ||
	    !item_context(item, &ctx, &ctxn, &fail))
		return fail ? fail : item_error("invalid_request", "plaintext must be a boolean");
	kw_err err = kw_hsm_random(r->call->res->hsm, dk, sizeof(dk));
	json_t *o = err == KW_OK ? seal(r, ctx, ctxn, dk, sizeof(dk)) : item_failure(err);
	if (json_object_get(o, "error") == NULL && !json_is_false(want))
		json_object_set_new(o, "plaintext", b64_value(dk, sizeof(dk)));
	OPENSSL_cleanse(dk, sizeof(dk));
	drop(ctx, ctxn);
	return o;
}

typedef json_t *(*item_fn)(keyring *r, json_t *item);

/* One request: a single item, or {"batch": [...]} (at most 1000, answered
 * in order, each item its result or its error). *items says how many. */
static kw_outcome run_items(kw_call *call, const kw_caller *who, item_fn fn, json_t **answer, size_t *items)
{
	*answer = NULL;
	*items = 0;
	json_t *body = kw_api_body_object(call);
	if (body == NULL)
		return kw_out_error(400, "invalid_request", "the body must be a JSON object");
	json_t *batch = json_object_get(body, "batch");
	if (batch != NULL && (!json_is_array(batch) || json_array_size(batch) == 0)) {
		json_decref(body);
		return kw_out_error(400, "invalid_request", "batch must be a non-empty array");
	}
	if (batch != NULL && json_array_size(batch) > KW_TRANSIT_BATCH_MAX) {
		json_decref(body);
		return kw_out_error(400, "batch_too_large", "a batch has at most 1000 items");
	}
	keyring r;
	kw_err err = ring_open(&r, call, who->key.tenant_id, call->req.path_param);
	if (err != KW_OK) {
		json_decref(body);
		ring_close(&r);
		return failure(err);
	}
	json_t *out = NULL;
	if (batch != NULL) {
		json_t *results = json_array();
		for (size_t i = 0; i < json_array_size(batch); i++)
			json_array_append_new(results, fn(&r, json_array_get(batch, i)));
		out = json_pack("{s:o}", "batch", results);
		*items = json_array_size(batch);
	} else {
		out = fn(&r, body);
		*items = 1;
	}
	ring_close(&r);
	json_decref(body);
	if (batch == NULL && json_object_get(out, "error") != NULL) {
		json_decref(out);
		return kw_out_error(item_status(last_code), last_code, last_msg);
	}
	*answer = out;
	return (kw_outcome){.status = 200};
}

static kw_outcome answer_items(kw_call *call, const kw_caller *who, item_fn fn)
{
	json_t *answer = NULL;
	size_t n = 0;
	kw_outcome o = run_items(call, who, fn, &answer, &n);
	return answer != NULL ? kw_out_json(200, answer) : o;
}

kw_outcome kw_api_transit_encrypt(kw_call *call, const kw_caller *who)
{
	return answer_items(call, who, encrypt_item);
}

kw_outcome kw_api_transit_rewrap(kw_call *call, const kw_caller *who)
{
	return answer_items(call, who, rewrap_item);
}

kw_outcome kw_api_transit_datakey(kw_call *call, const kw_caller *who)
{
	return answer_items(call, who, datakey_item);
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

/* A decrypt request (one item or a batch) answers only once its one audit
 * row, naming the item count, is durable. */
kw_outcome kw_api_transit_decrypt(kw_call *call, const kw_caller *who)
{
	json_t *answer = NULL;
	size_t n = 0;
	kw_outcome o = run_items(call, who, decrypt_item, &answer, &n);
	if (answer == NULL)
		return o;
	char *text = json_dumps(answer, JSON_COMPACT);
	/* The answer's plaintexts are wiped in the tree before it is freed. */
	json_t *batch = json_object_get(answer, "batch");
	for (size_t i = 0; i < (batch ? json_array_size(batch) : 1); i++) {
		json_t *p = json_object_get(batch ? json_array_get(batch, i) : answer, "plaintext");
		if (json_is_string(p))
			OPENSSL_cleanse((void *)json_string_value(p), json_string_length(p));
	}
	json_decref(answer);
	decrypt_job *j = calloc(1, sizeof(*j));
	if (text == NULL || j == NULL) {
		drop((unsigned char *)text, text ? strlen(text) : 0);
		free(j);
		return kw_out_failure(KW_ERR_NOMEM);
	}
	j->who = *who;
	snprintf(j->ctx, sizeof(j->ctx), "{\"items\":%zu}", n);
	j->ev = kw_api_call_event(call, &j->who, "ok", j->ctx);
	j->ev.target = call->req.path_param; /* the key's name (the call outlives the row) */
	return kw_out_after_audit(200, text, strlen(text), &j->ev, NULL, 0, decrypt_job_free, j);
}
