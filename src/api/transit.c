/* transit.c — transit encryption (DESIGN §5.5): named keys per tenant and
 * encrypt / decrypt with them.
 *
 * A key version's material is derived in the token (HKDF from
 * keyward/derive/<m>, info keyward:v1:transit:<tenant>:<name>:<n>:<type>)
 * into locked memory, and held between requests only by the transit cache
 * (keyward/vault/transit_cache.h), which a rotate or config change empties
 * here at once and on every other instance through the change feed; the
 * cache is used only while the feed is fresh. Plaintexts and contexts travel as base64. A decrypt's
 * answer leaves only once its audit row is durable. No plaintext,
 * ciphertext or key reaches a log line, an audit row or an error. */
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/core/secret.h"
#include "keyward/core/strbuf.h"
#include "keyward/core/text.h"
#include "keyward/db/changes.h"
#include "keyward/db/repo_transit.h"
#include "keyward/vault/transit.h"
#include "keyward/vault/transit_cache.h"

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
	kw_transit_cache_drop(call->app->transit_keys, p.tenant_id, name); /* others: the change feed */
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
	kw_transit_cache_drop(call->app->transit_keys, p.tenant_id, name);
	if (err == KW_ERR_INVALID)
		return kw_out_error(400, "invalid_request",
		                    "min_decryption_version must be 1 .. latest_version");
	return err == KW_OK ? kw_out_json(200, key_json(&row)) : failure(err);
}

/* --- encrypt and decrypt ------------------------------------------------- */

static void drop(unsigned char *b, size_t n)
{
	if (b != NULL)
		OPENSSL_cleanse(b, n);
	free(b);
}

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
	size_t n = json_string_length(v), cap = kw_b64_decoded_max(n);
	if (s == NULL || n / 4 * 3 > max + 2)
		return false;
	unsigned char *b = malloc(cap);
	if (b == NULL || kw_b64_decode(s, n, b, cap, len) != KW_OK || *len > max) {
		drop(b, b ? cap : 0);
		*len = 0;
		return false;
	}
	*out = b;
	return true;
}

/* The material of a key version, derived in the token into out. */
static kw_err derive(kw_call *call, const char *tenant, const kw_transit_key_row *k, kw_transit_type t,
                     unsigned char *out)
{
	const kw_hsm_key *root;
	kw_err err = kw_hsm_key_get_fresh(call->app->hsm, KW_KEY_DERIVE, k->derive_version, &root);
	if (err != KW_OK)
		return err;
	char info[160];
	int n = snprintf(info, sizeof(info), "keyward:v1:transit:%s:%s:%" PRIu32 ":%s", tenant, k->name,
	                 k->version, kw_transit_type_name(t));
	return kw_hsm_hkdf_expand(call->res->hsm, root, (const unsigned char *)info, (size_t)n, out,
	                          kw_transit_key_len(t));
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

/* --- one request's keys -------------------------------------------------- */

#define KW_TRANSIT_BATCH_MAX 1000
#define RING_SLOTS           8 /* versions one request may touch */

/* The key a request names, and the material of the versions it used
 * (RING_SLOTS × 64 bytes of locked memory, wiped by ring_close). Rows and
 * material come from the transit cache while the change feed is fresh;
 * otherwise, and on a miss, from the database and the token. */
typedef struct keyring {
	kw_call *call;
	bool io;                 /* on an I/O thread: the cache or nothing */
	bool need_worker;        /* ... and it did not hold what the request needs */
	kw_transit_cache *cache; /* NULL: not usable for this request */
	uint64_t gen;            /* the cache's generation before the reads */
	const char *tenant, *name;
	kw_transit_key_row latest;
	kw_transit_type type;
	kw_secret *keys;
	uint32_t version[RING_SLOTS];
	kw_transit_sealer *sealer[RING_SLOTS]; /* made on a slot's first seal */
	size_t n;
	unsigned char ivs[KW_TRANSIT_GCM_IV * 64]; /* drawn 64 at a time */
	size_t ivs_left;
} keyring;

/* KW_ERR_NOT_FOUND for no such key. */
static kw_err ring_open(keyring *r, kw_call *call, const char *tenant, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->call = call, r->tenant = tenant, r->name = name;
	r->io = call->res == NULL;
	if (!kw_transit_name_ok(name))
		return KW_ERR_NOT_FOUND;
	if (kw_changes_fresh(call->app->changes))
		r->cache = call->app->transit_keys;
	version_read v = {.tenant = tenant, .name = name};
	kw_err err = KW_OK;
	if (r->cache == NULL || !kw_transit_cache_head(r->cache, tenant, name, &v.row)) {
		if (r->io) {
			r->need_worker = true;
			return KW_ERR_BUSY;
		}
		r->gen = r->cache ? kw_transit_cache_generation(r->cache) : 0;
		err = kw_api_in_tx(call, tenant, read_version, &v);
		if (err == KW_OK && r->cache)
			kw_transit_cache_put_head(r->cache, r->gen, tenant, &v.row);
	}
	if (err == KW_OK && !kw_transit_type_parse(v.row.type, &r->type))
		err = KW_ERR_DB;
	r->latest = v.row;
	return err;
}

static void ring_close(keyring *r)
{
	for (size_t i = 0; i < r->n; i++)
		kw_transit_sealer_free(r->sealer[i]);
	kw_secret_free(r->keys);
	memset(r, 0, sizeof(*r));
}

/* The derive version of version, the latest's row known: the database's
 * answer for an older one. */
static kw_err version_row(keyring *r, uint32_t version, kw_transit_key_row *row)
{
	version_read v = {.tenant = r->tenant, .name = r->name, .version = version, .row = r->latest};
	kw_err err =
	    version == r->latest.version ? KW_OK : kw_api_in_tx(r->call, r->tenant, read_version, &v);
	*row = v.row;
	return err;
}

/* The slot of version (0: the latest), its material derived or taken
 * from the cache on first use: KW_ERR_NOT_FOUND for a version the key does
 * not have. *version_out names it. */
static kw_err ring_slot(keyring *r, uint32_t version, uint32_t *version_out, size_t *slot_out)
{
	if (version == 0)
		version = r->latest.version;
	*version_out = version;
	size_t len = kw_transit_key_len(r->type);
	for (size_t i = 0; i < r->n; i++)
		if (r->version[i] == version) {
			*slot_out = i;
			return KW_OK;
		}
	if (r->n == RING_SLOTS)
		return KW_ERR_BUSY; /* more versions in one batch than it may derive */
	if (version > r->latest.version || r->call == NULL) /* no call: kw_api_transit_fuzz's fixed key */
		return KW_ERR_NOT_FOUND;
	if (r->keys == NULL && (r->keys = kw_secret_new(RING_SLOTS * KW_TRANSIT_SIV_KEY)) == NULL)
		return KW_ERR_NOMEM;
	unsigned char *slot = kw_secret_data(r->keys) + r->n * KW_TRANSIT_SIV_KEY;
	if (r->cache == NULL ||
	    !kw_transit_cache_material(r->cache, r->tenant, r->name, version, slot, len)) {
		if (r->io) {
			r->need_worker = true;
			return KW_ERR_BUSY;
		}
		uint64_t gen = r->cache ? kw_transit_cache_generation(r->cache) : 0;
		kw_transit_key_row row;
		kw_err err = version_row(r, version, &row);
		if (err == KW_OK)
			err = derive(r->call, r->tenant, &row, r->type, slot);
		if (err != KW_OK) {
			OPENSSL_cleanse(slot, KW_TRANSIT_SIV_KEY);
			return err;
		}
		if (r->cache)
			kw_transit_cache_put_material(r->cache, gen, r->tenant, r->name, version, slot, len);
	}
	r->version[r->n] = version;
	*slot_out = r->n++;
	return KW_OK;
}

static kw_err ring_key(keyring *r, uint32_t version, uint32_t *version_out, const unsigned char **key)
{
	size_t i = 0;
	kw_err err = ring_slot(r, version, version_out, &i);
	if (err == KW_OK)
		*key = kw_secret_data(r->keys) + i * KW_TRANSIT_SIV_KEY;
	return err;
}

/* The latest version's sealer. */
static kw_err ring_sealer(keyring *r, uint32_t *version_out, kw_transit_sealer **out)
{
	size_t i = 0;
	kw_err err = ring_slot(r, 0, version_out, &i);
	if (err == KW_OK && r->sealer[i] == NULL &&
	    (r->sealer[i] =
	         kw_transit_sealer_new(r->type, kw_secret_data(r->keys) + i * KW_TRANSIT_SIV_KEY)) == NULL)
		err = KW_ERR_NOMEM;
	if (err == KW_OK)
		*out = r->sealer[i];
	return err;
}

/* A fresh GCM IV from OpenSSL's DRBG (DESIGN §1: random bytes come from
 * OpenSSL; an IV is no secret, and the token would cost a call per
 * item), drawn 64 IVs at a time. */
static kw_err ring_iv(keyring *r, unsigned char iv[KW_TRANSIT_GCM_IV])
{
	if (r->ivs_left == 0) {
		if (RAND_bytes(r->ivs, sizeof(r->ivs)) != 1)
			return KW_ERR_INTERNAL;
		r->ivs_left = sizeof(r->ivs) / KW_TRANSIT_GCM_IV;
	}
	r->ivs_left--;
	memcpy(iv, r->ivs + r->ivs_left * KW_TRANSIT_GCM_IV, KW_TRANSIT_GCM_IV);
	OPENSSL_cleanse(r->ivs + r->ivs_left * KW_TRANSIT_GCM_IV, KW_TRANSIT_GCM_IV); /* used once */
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
	uint32_t version = 0;
	kw_transit_sealer *sealer = NULL;
	unsigned char iv[KW_TRANSIT_GCM_IV] = {0};
	char *s = NULL;
	if (r->type == KW_TRANSIT_AES256_SIV && ptn == 0)
		return item_error("invalid_request", "aes256-siv cannot encrypt an empty plaintext");
	kw_err err = ring_sealer(r, &version, &sealer);
	if (err == KW_OK && r->type == KW_TRANSIT_AES256_GCM)
		err = ring_iv(r, iv);
	if (err == KW_OK)
		err = kw_transit_seal_with(sealer, version, iv, ctx, ctxn, pt, ptn, &s);
	if (err != KW_OK)
		return item_failure(err);
	json_t *o = json_pack("{s:s, s:I}", "ciphertext", s, "key_version", (json_int_t)version);
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
	uint32_t used = 0;
	const unsigned char *key;
	unsigned char *pt = NULL;
	kw_err err = c.type == r->type ? ring_key(r, c.version, &used, &key) : KW_ERR_VERIFY;
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

/* --- metrics -------------------------------------------------------------- */

enum { OP_ENCRYPT, OP_DECRYPT, OP_REWRAP, OP_DATAKEY, OP_COUNT };
static const char *const op_name[OP_COUNT] = {"encrypt", "decrypt", "rewrap", "datakey"};
static atomic_ullong op_requests[OP_COUNT], op_items[OP_COUNT], op_item_errors[OP_COUNT];

void kw_api_transit_metrics(kw_strbuf *b, kw_app *app)
{
	static const char *const help[3][2] = {
	    {"keyward_transit_requests_total", "Transit requests answered 200, by operation."},
	    {"keyward_transit_items_total", "Transit items (a batch counts each), by operation."},
	    {"keyward_transit_item_errors_total", "Transit items that failed, by operation."}};
	atomic_ullong *const v[3] = {op_requests, op_items, op_item_errors};
	for (int m = 0; m < 3; m++) {
		kw_strbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", help[m][0], help[m][1], help[m][0]);
		for (int op = 0; op < OP_COUNT; op++)
			kw_strbuf_printf(b, "%s{op=\"%s\"} %llu\n", help[m][0], op_name[op],
			                 (unsigned long long)atomic_load(&v[m][op]));
	}
	kw_transit_cache_stats cs = {0};
	if (app->transit_keys)
		kw_transit_cache_stats_get(app->transit_keys, &cs);
	kw_changes_stats fs;
	kw_changes_stats_get(app->changes, &fs);
	kw_strbuf_printf(
	    b,
	    "# HELP keyward_transit_cache_lookups_total Transit key lookups in the cache, by result.\n"
	    "# TYPE keyward_transit_cache_lookups_total counter\n"
	    "keyward_transit_cache_lookups_total{result=\"hit\"} %llu\n"
	    "keyward_transit_cache_lookups_total{result=\"miss\"} %llu\n"
	    "# HELP keyward_transit_cache_keys Transit keys held in the cache.\n"
	    "# TYPE keyward_transit_cache_keys gauge\nkeyward_transit_cache_keys %llu\n"
	    "# HELP keyward_transit_cache_drops_total Keys dropped on a change (rotate, config, feed "
	    "restart).\n# TYPE keyward_transit_cache_drops_total counter\nkeyward_transit_cache_drops_total "
	    "%llu\n"
	    "# HELP keyward_transit_cache_evictions_total Keys wiped idle or to make room.\n"
	    "# TYPE keyward_transit_cache_evictions_total counter\n"
	    "keyward_transit_cache_evictions_total %llu\n"
	    "# HELP keyward_changes_total Change-feed notifications, by result (applied; ignored: names "
	    "no change).\n# TYPE keyward_changes_total counter\n"
	    "keyward_changes_total{result=\"applied\"} %llu\nkeyward_changes_total{result=\"ignored\"} "
	    "%llu\n"
	    "# HELP keyward_changes_reconnects_total Times the change feed was lost and followed again.\n"
	    "# TYPE keyward_changes_reconnects_total counter\nkeyward_changes_reconnects_total %llu\n"
	    "# HELP keyward_changes_fresh 1 while the change feed is fresh (caches in use).\n"
	    "# TYPE keyward_changes_fresh gauge\nkeyward_changes_fresh %d\n",
	    (unsigned long long)cs.hits, (unsigned long long)cs.misses, (unsigned long long)cs.entries,
	    (unsigned long long)cs.drops, (unsigned long long)cs.evictions, (unsigned long long)fs.applied,
	    (unsigned long long)fs.ignored, (unsigned long long)fs.reconnects,
	    kw_changes_fresh(app->changes) ? 1 : 0);
}

/* Counts a request of op that ran: its items and the items that failed. */
static void count(int op, json_t *answer, size_t items)
{
	json_t *batch = json_object_get(answer, "batch");
	size_t failed = 0;
	for (size_t i = 0; i < json_array_size(batch); i++)
		failed += json_object_get(json_array_get(batch, i), "error") != NULL;
	atomic_fetch_add(&op_requests[op], 1);
	atomic_fetch_add(&op_items[op], items);
	atomic_fetch_add(&op_item_errors[op], failed);
}

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
		bool defer = r.need_worker;
		json_decref(body);
		ring_close(&r);
		return defer ? kw_out_defer() : failure(err);
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
	bool defer = r.need_worker;
	ring_close(&r);
	json_decref(body);
	if (defer) { /* on an I/O thread, the cache missed: all of it on a worker */
		json_decref(out);
		*items = 0;
		return kw_out_defer();
	}
	if (batch == NULL && json_object_get(out, "error") != NULL) {
		json_decref(out);
		return kw_out_error(item_status(last_code), last_code, last_msg);
	}
	*answer = out;
	return (kw_outcome){.status = 200};
}

static kw_outcome answer_items(kw_call *call, const kw_caller *who, item_fn fn, int op)
{
	json_t *answer = NULL;
	size_t n = 0;
	kw_outcome o = run_items(call, who, fn, &answer, &n);
	if (answer != NULL)
		count(op, answer, n);
	return answer != NULL ? kw_out_json(200, answer) : o;
}

/* Bodies larger than this (batches, big values) are not parsed on an I/O
 * thread: its loop serves other connections meanwhile. */
#define IO_BODY_MAX 16384

kw_outcome kw_api_transit_encrypt(kw_call *call, const kw_caller *who)
{
	if (call->res == NULL && call->req.body_len > IO_BODY_MAX)
		return kw_out_defer();
	return answer_items(call, who, encrypt_item, OP_ENCRYPT);
}

kw_outcome kw_api_transit_rewrap(kw_call *call, const kw_caller *who)
{
	return answer_items(call, who, rewrap_item, OP_REWRAP);
}

kw_outcome kw_api_transit_datakey(kw_call *call, const kw_caller *who)
{
	return answer_items(call, who, datakey_item, OP_DATAKEY);
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
	count(OP_DECRYPT, answer, n);
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

/* --- the fuzz target's entry ---------------------------------------------- */

void kw_api_transit_fuzz(const unsigned char *body, size_t len, bool siv)
{
	json_t *o = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
	json_t *batch = json_object_get(o, "batch");
	keyring r;
	memset(&r, 0, sizeof(r));
	r.type = siv ? KW_TRANSIT_AES256_SIV : KW_TRANSIT_AES256_GCM;
	r.latest.version = r.latest.min_decryption_version = 1;
	r.keys = kw_secret_new(RING_SLOTS * KW_TRANSIT_SIV_KEY);
	if (!json_is_object(o) || r.keys == NULL || (batch != NULL && !json_is_array(batch)) ||
	    json_array_size(batch) > KW_TRANSIT_BATCH_MAX) {
		json_decref(o);
		ring_close(&r);
		return;
	}
	memset(kw_secret_data(r.keys), 7, KW_TRANSIT_SIV_KEY);
	r.version[0] = 1;
	r.n = 1;
	for (size_t i = 0; i < (batch ? json_array_size(batch) : 1); i++) {
		json_t *item = batch ? json_array_get(batch, i) : o;
		for (int f = 0; f < 3; f++) {
			json_t *out = f == 0   ? encrypt_item(&r, item)
			              : f == 1 ? decrypt_item(&r, item)
			                       : rewrap_item(&r, item);
			if (out == NULL ||
			    (json_object_get(out, "error") == NULL &&
			     json_object_get(out, f == 1 ? "plaintext" : "ciphertext") == NULL))
				abort(); /* every item answers its result or its error */
			json_decref(out);
		}
	}
	json_decref(o);
	ring_close(&r);
}
