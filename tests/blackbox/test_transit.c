/* Black-box: transit keys and encrypt / decrypt over HTTP against the
 * real keywardd, token and database. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;
static char enc_a[200], dec_a[200], both_b[200];

static void bearer_of(const kwt_tenant *t, const char *name, const char *scopes, char *out, size_t cap)
{
	char key[128], id[64];
	kwt_api_key_create(&d, t, name, scopes, 100000, key, id);
	snprintf(out, cap, "Authorization: Bearer %s\r\n", key);
}

static void start(void)
{
	/* Re-reads the token's keys every second (a rotated derivation root). */
	static const char *const env[] = {"KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s", NULL};
	kwt_daemon_start(&d, env);
	kwt_tenant_create(&d, "transit-a", &ta);
	kwt_tenant_create(&d, "transit-b", &tb);
	bearer_of(&ta, "enc", "[\"transit:encrypt\"]", enc_a, sizeof(enc_a));
	bearer_of(&ta, "dec", "[\"transit:decrypt\"]", dec_a, sizeof(dec_a));
	bearer_of(&tb, "both", "[\"transit:encrypt\",\"transit:decrypt\"]", both_b, sizeof(both_b));
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(transit, .init = start, .fini = stop, .timeout = 120);

/* A request; the answer's body as JSON (NULL if not JSON) in *o. */
static int call(const char *method, const char *path, const char *auth, const char *body, json_t **o)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, method, path, auth, body, &r), 0);
	int st = r.status;
	if (st >= 500)
		cr_log_warn("%s %s answered %d: %.*s", method, path, st, (int)r.body_len, r.body);
	*o = json_loadb(r.body, r.body_len, 0, NULL);
	kwt_resp_free(&r);
	return st;
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	cr_assert_not_null(s, "no %s", k);
	return s;
}

static void make_key(const kwt_tenant *t, const char *name, const char *type)
{
	char body[200];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"type\":\"%s\"}", name, type);
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys", t->auth, body, &o), 201);
	cr_assert_str_eq(str(o, "type"), type);
	cr_assert_eq(json_integer_value(json_object_get(o, "latest_version")), 1);
	json_decref(o);
}

/* Encrypts base64 pt (and context) under key name; the ciphertext, malloc'd. */
static char *encrypt(const char *auth, const char *name, const char *pt_b64, const char *ctx_b64)
{
	char path[200], body[512];
	snprintf(path, sizeof(path), "/api/v1/transit/keys/%s/encrypt", name);
	snprintf(body, sizeof(body), "{\"plaintext\":\"%s\"%s%s%s}", pt_b64, ctx_b64 ? ",\"context\":\"" : "",
	         ctx_b64 ? ctx_b64 : "", ctx_b64 ? "\"" : "");
	json_t *o = NULL;
	cr_assert_eq(call("POST", path, auth, body, &o), 200);
	char *ct = strdup(str(o, "ciphertext"));
	json_decref(o);
	return ct;
}

/* Decrypts; the status, and the plaintext (base64) or error code in out. */
static int decrypt(const char *auth, const char *name, const char *ct, const char *ctx_b64, char *out,
                   size_t cap)
{
	char path[200], body[2048];
	snprintf(path, sizeof(path), "/api/v1/transit/keys/%s/decrypt", name);
	snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"%s%s%s}", ct, ctx_b64 ? ",\"context\":\"" : "",
	         ctx_b64 ? ctx_b64 : "", ctx_b64 ? "\"" : "");
	json_t *o = NULL;
	int st = call("POST", path, auth, body, &o);
	const char *v = json_string_value(json_object_get(o, st == 200 ? "plaintext" : "error"));
	snprintf(out, cap, "%s", v ? v : "");
	json_decref(o);
	return st;
}

Test(transit, keys_are_managed_per_tenant)
{
	make_key(&ta, "emails", "aes256-siv");
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys", ta.auth, "{\"name\":\"emails\"}", &o), 409);
	json_decref(o);
	cr_assert_eq(call("POST", "/api/v1/transit/keys", ta.auth, "{\"name\":\"bad name\"}", &o), 400);
	json_decref(o);
	cr_assert_eq(call("POST", "/api/v1/transit/keys", ta.auth, "{\"name\":\"x\",\"type\":\"des\"}", &o),
	             400);
	json_decref(o);
	cr_assert_eq(call("POST", "/api/v1/transit/keys", enc_a, "{\"name\":\"y\"}", &o), 403,
	             "create needs admin");
	json_decref(o);
	cr_assert_eq(call("GET", "/api/v1/transit/keys/emails", enc_a, NULL, &o), 200,
	             "a transit scope may read");
	cr_assert_str_eq(str(o, "name"), "emails");
	json_decref(o);
	cr_assert_eq(call("GET", "/api/v1/transit/keys/emails", tb.auth, NULL, &o), 404,
	             "another tenant's key");
	json_decref(o);
	cr_assert_eq(call("GET", "/api/v1/transit/keys", ta.auth, NULL, &o), 200);
	cr_assert_eq(json_array_size(json_object_get(o, "items")), 1);
	json_decref(o);
}

Test(transit, encrypt_decrypt_contexts_tampering_and_tenants)
{
	make_key(&ta, "addr", "aes256-gcm");
	make_key(&tb, "addr", "aes256-gcm"); /* same name, another tenant */
	char out[256];
	char *ct = encrypt(enc_a, "addr", "MHhhYmM=", "dXNlcnM="); /* "0xabc", context "users" */
	cr_assert(strncmp(ct, "$enc1$v1$", 9) == 0, "%s", ct);
	cr_assert_eq(decrypt(dec_a, "addr", ct, "dXNlcnM=", out, sizeof(out)), 200);
	cr_assert_str_eq(out, "MHhhYmM=");
	cr_assert_eq(decrypt(dec_a, "addr", ct, NULL, out, sizeof(out)), 400, "context missing");
	cr_assert_str_eq(out, "decryption_failed");
	cr_assert_eq(decrypt(dec_a, "addr", ct, "b3RoZXI=", out, sizeof(out)), 400, "another context");
	cr_assert_str_eq(out, "decryption_failed");
	cr_assert_eq(decrypt(both_b, "addr", ct, "dXNlcnM=", out, sizeof(out)), 400,
	             "tenant B's key of that name");
	cr_assert_str_eq(out, "decryption_failed");
	cr_assert_eq(decrypt(enc_a, "addr", ct, "dXNlcnM=", out, sizeof(out)), 403,
	             "decrypt needs transit:decrypt");
	/* Randomized: the same input twice gives two strings. */
	char *ct2 = encrypt(enc_a, "addr", "MHhhYmM=", "dXNlcnM=");
	cr_assert_str_neq(ct, ct2);
	/* A flipped character of the ciphertext part. */
	char *tampered = strdup(ct);
	char *last = strrchr(tampered, '$');
	char *mid = strchr(tampered + 9, '$') + 1; /* the ciphertext part */
	cr_assert(mid < last);
	mid[0] = mid[0] == 'A' ? 'B' : 'A';
	cr_assert_eq(decrypt(dec_a, "addr", tampered, "dXNlcnM=", out, sizeof(out)), 400);
	cr_assert(strcmp(out, "decryption_failed") == 0 || strcmp(out, "invalid_ciphertext") == 0, "%s", out);
	cr_assert_eq(decrypt(dec_a, "addr", "$enc1$vX$", NULL, out, sizeof(out)), 400);
	cr_assert_str_eq(out, "invalid_ciphertext");
	cr_assert_eq(decrypt(dec_a, "nokey", ct, "dXNlcnM=", out, sizeof(out)), 404);
	/* Every decrypt request left its row; none names a plaintext, a
	 * ciphertext or a context. */
	kwt_audit_settle(&d);
	char *v = kwt_db_admin_sql(
	    &d.db, "SELECT count(*) FROM audit_log WHERE action = 'transit.decrypt' AND status = 'ok'");
	cr_assert_str_eq(v, "1");
	free(v);
	v = kwt_db_admin_sql(
	    &d.db, "SELECT count(*) FROM audit_log WHERE action = 'transit.decrypt' AND status LIKE '400 %'");
	cr_assert_geq(atoi(v), 5);
	free(v);
	char sql[600];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log a WHERE strpos(a::text, 'MHhhYmM') > 0 OR strpos(a::text, "
	         "'%.20s') > 0 "
	         "OR strpos(a::text, 'dXNlcnM') > 0",
	         ct + 9);
	v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, "0");
	free(v);
	free(ct), free(ct2), free(tampered);
}

Test(transit, deterministic_keys_are_searchable)
{
	make_key(&ta, "emails2", "aes256-siv");
	char *a = encrypt(enc_a, "emails2", "YWxpY2VAZXhhbXBsZS5jb20=", NULL);
	char *b = encrypt(enc_a, "emails2", "YWxpY2VAZXhhbXBsZS5jb20=", NULL);
	cr_assert(strncmp(a, "$det1$v1$", 9) == 0, "%s", a);
	cr_assert_str_eq(a, b, "the same value gives the same string");
	char *c = encrypt(enc_a, "emails2", "YWxpY2VAZXhhbXBsZS5jb20=", "Y3R4");
	cr_assert_str_neq(a, c, "another context, another string");
	char out[256];
	cr_assert_eq(decrypt(dec_a, "emails2", c, "Y3R4", out, sizeof(out)), 200);
	cr_assert_str_eq(out, "YWxpY2VAZXhhbXBsZS5jb20=");
	free(a), free(b), free(c);
}

Test(transit, rotation_and_minimum_version)
{
	make_key(&ta, "rot", "aes256-gcm");
	char *v1 = encrypt(enc_a, "rot", "b2xk", NULL);
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/rot/rotate", ta.auth, NULL, &o), 200);
	cr_assert_eq(json_integer_value(json_object_get(o, "latest_version")), 2);
	json_decref(o);
	char *v2 = encrypt(enc_a, "rot", "bmV3", NULL);
	cr_assert(strncmp(v2, "$enc1$v2$", 9) == 0, "%s", v2);
	char out[256];
	cr_assert_eq(decrypt(dec_a, "rot", v1, NULL, out, sizeof(out)), 200, "old versions still decrypt");
	cr_assert_str_eq(out, "b2xk");
	cr_assert_eq(
	    call("POST", "/api/v1/transit/keys/rot/config", ta.auth, "{\"min_decryption_version\":3}", &o),
	    400);
	json_decref(o);
	cr_assert_eq(
	    call("POST", "/api/v1/transit/keys/rot/config", ta.auth, "{\"min_decryption_version\":2}", &o),
	    200);
	json_decref(o);
	int st = decrypt(dec_a, "rot", v1, NULL, out, sizeof(out));
	cr_assert_eq(st, 400, "%d %s", st, out);
	cr_assert_str_eq(out, "key_version_retired");
	cr_assert_eq(decrypt(dec_a, "rot", v2, NULL, out, sizeof(out)), 200);
	cr_assert_str_eq(out, "bmV3");
	free(v1), free(v2);
}

Test(transit, bad_bodies_are_4xx)
{
	make_key(&ta, "bad", "aes256-gcm");
	const char *bodies[] = {"",
	                        "{",
	                        "[]",
	                        "{\"plaintext\":1}",
	                        "{\"plaintext\":\"not base64!\"}",
	                        "{\"plaintext\":\"QQ\"}",
	                        "{\"plaintext\":\"QQ==\",\"context\":\"@@\"}",
	                        "{}"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		json_t *o = NULL;
		int st = call("POST", "/api/v1/transit/keys/bad/encrypt", enc_a, bodies[i], &o);
		cr_assert_eq(st, 400, "%s answered %d", bodies[i], st);
		json_decref(o);
	}
	/* Over 64 KiB of plaintext. */
	size_t n = 4 * (65 * 1024 / 3) + 64;
	char *big = malloc(n + 64);
	strcpy(big, "{\"plaintext\":\"");
	memset(big + 14, 'A', n - 16);
	strcpy(big + n - 2, "\"}");
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/bad/encrypt", enc_a, big, &o), 413);
	json_decref(o);
	free(big);
	cr_assert_eq(call("GET", "/healthz", NULL, NULL, &o), 200, "the service keeps serving");
	json_decref(o);
}

Test(transit, batches_keep_order_and_per_item_errors)
{
	make_key(&ta, "bat", "aes256-gcm");
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/bat/encrypt", enc_a,
	                  "{\"batch\":[{\"plaintext\":\"YQ==\"},{\"plaintext\":\"@@\"},{\"plaintext\":\"Yg=="
	                  "\",\"context\":"
	                  "\"Yw==\"}]}",
	                  &o),
	             200);
	json_t *b = json_object_get(o, "batch");
	cr_assert_eq(json_array_size(b), 3);
	const char *c0 = json_string_value(json_object_get(json_array_get(b, 0), "ciphertext"));
	const char *c2 = json_string_value(json_object_get(json_array_get(b, 2), "ciphertext"));
	cr_assert_not_null(c0);
	cr_assert_not_null(c2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(b, 1), "error")),
	                 "invalid_request");
	char body[1024];
	snprintf(body, sizeof(body),
	         "{\"batch\":[{\"ciphertext\":\"%s\",\"context\":\"Yw==\"},{\"ciphertext\":\"%s\"},{"
	         "\"ciphertext\":\"%s\","
	         "\"context\":\"Yw==\"}]}",
	         c2, c0, c0);
	json_t *dres = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/bat/decrypt", dec_a, body, &dres), 200);
	json_t *db = json_object_get(dres, "batch");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(db, 0), "plaintext")), "Yg==");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(db, 1), "plaintext")), "YQ==");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(db, 2), "error")),
	                 "decryption_failed");
	json_decref(dres);
	json_decref(o);
	/* One audit row for the batch, naming its size. */
	kwt_audit_settle(&d);
	char *v = kwt_db_admin_sql(
	    &d.db, "SELECT count(*) FROM audit_log WHERE action = 'transit.decrypt' AND target = "
	           "'bat' AND context->>'items' = '3'");
	cr_assert_str_eq(v, "1");
	free(v);
	/* 1001 items: refused whole. */
	size_t cap = 1001 * 20 + 32;
	char *big = malloc(cap);
	size_t n = (size_t)snprintf(big, cap, "{\"batch\":[");
	for (int i = 0; i < 1001; i++)
		n += (size_t)snprintf(big + n, cap - n, "%s{\"plaintext\":\"\"}", i ? "," : "");
	snprintf(big + n, cap - n, "]}");
	cr_assert_eq(call("POST", "/api/v1/transit/keys/bat/encrypt", enc_a, big, &o), 400);
	cr_assert_str_eq(str(o, "error"), "batch_too_large");
	json_decref(o);
	free(big);
}

Test(transit, rewrap_moves_to_the_latest_version_and_datakeys_round_trip)
{
	make_key(&ta, "wrap", "aes256-gcm");
	char *v1 = encrypt(enc_a, "wrap", "c2VjcmV0", "Y3R4");
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/wrap/rotate", ta.auth, NULL, &o), 200);
	json_decref(o);
	char body[512];
	snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\",\"context\":\"Y3R4\"}", v1);
	cr_assert_eq(call("POST", "/api/v1/transit/keys/wrap/rewrap", enc_a, body, &o), 200);
	cr_assert_eq(json_integer_value(json_object_get(o, "key_version")), 2);
	char *v2 = strdup(str(o, "ciphertext"));
	json_decref(o);
	cr_assert(strncmp(v2, "$enc1$v2$", 9) == 0, "%s", v2);
	char out[256];
	cr_assert_eq(decrypt(dec_a, "wrap", v2, "Y3R4", out, sizeof(out)), 200);
	cr_assert_str_eq(out, "c2VjcmV0");
	/* A data key: its plaintext, and its ciphertext that decrypts to it. */
	cr_assert_eq(call("POST", "/api/v1/transit/keys/wrap/datakey", enc_a, "{}", &o), 200);
	char dk[128];
	snprintf(dk, sizeof(dk), "%s", str(o, "plaintext"));
	cr_assert_eq(strlen(dk), 44, "32 bytes in base64");
	cr_assert_eq(decrypt(dec_a, "wrap", str(o, "ciphertext"), NULL, out, sizeof(out)), 200);
	cr_assert_str_eq(out, dk);
	json_decref(o);
	cr_assert_eq(call("POST", "/api/v1/transit/keys/wrap/datakey", enc_a, "{\"plaintext\":false}", &o),
	             200);
	cr_assert_null(json_object_get(o, "plaintext"));
	json_decref(o);
	free(v1), free(v2);
}

static int ctl(const char *args, char *out, size_t cap)
{
	return kwt_ctl(&d, args, out, cap);
}

static long derive_of(const char *name, int version)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT derive_version FROM transit_key_versions WHERE tenant_id = '%s' AND name = '%s' AND "
	         "version = %d",
	         ta.id, name, version);
	char *v = kwt_db_admin_sql(&d.db, sql);
	long n = v ? strtol(v, NULL, 10) : -1;
	free(v);
	return n;
}

/* A new derivation root serves new key versions; the old one is retired
 * only once no decryptable version uses it. */
Test(transit, derivation_roots_rotate_and_retire)
{
	make_key(&ta, "roots", "aes256-gcm");
	long m = derive_of("roots", 1);
	cr_assert_gt(m, 0);
	char *v1 = encrypt(enc_a, "roots", "b25l", NULL);
	char out[4096];
	cr_assert_eq(ctl("derive rotate", out, sizeof(out)), 0, "%s", out);
	usleep(2500 * 1000); /* the daemon re-reads the token's keys */
	json_t *o = NULL;
	cr_assert_eq(call("POST", "/api/v1/transit/keys/roots/rotate", ta.auth, NULL, &o), 200);
	json_decref(o);
	cr_assert_eq(derive_of("roots", 2), m + 1, "version 2 derives from the new root");
	char *v2 = encrypt(enc_a, "roots", "dHdv", NULL);
	char pt[256];
	cr_assert_eq(decrypt(dec_a, "roots", v1, NULL, pt, sizeof(pt)), 200);
	cr_assert_str_eq(pt, "b25l");
	char args[64];
	snprintf(args, sizeof(args), "derive retire %ld", m);
	cr_assert_eq(ctl(args, out, sizeof(out)), 1, "retired while version 1 uses it: %s", out);
	cr_assert_not_null(strstr(out, "still decryptable"), "%s", out);
	/* Past version 1 (this test's database holds no other key): then it may go. */
	cr_assert_eq(
	    call("POST", "/api/v1/transit/keys/roots/config", ta.auth, "{\"min_decryption_version\":2}", &o),
	    200);
	json_decref(o);
	cr_assert_eq(ctl(args, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "retired: keyward/derive/"), "%s", out);
	cr_assert_eq(decrypt(dec_a, "roots", v2, NULL, pt, sizeof(pt)), 200);
	cr_assert_str_eq(pt, "dHdv");
	free(v1), free(v2);
}
