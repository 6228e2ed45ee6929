/* Black-box: transit keys and encrypt / decrypt over HTTP against the
 * real keywardd, token and database. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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
	static const char *const env[] = {"KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s",
	                                  "KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000", NULL};
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

/* A request to instance dd; the answer's body as JSON (NULL if not JSON)
 * in *o. */
static int call_on(const kwt_daemon *dd, const char *method, const char *path, const char *auth,
                   const char *body, json_t **o)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, method, path, auth, body, &r), 0);
	int st = r.status;
	if (st >= 500)
		cr_log_warn("%s %s answered %d: %.*s", method, path, st, (int)r.body_len, r.body);
	*o = json_loadb(r.body, r.body_len, 0, NULL);
	kwt_resp_free(&r);
	return st;
}

static int call(const char *method, const char *path, const char *auth, const char *body, json_t **o)
{
	return call_on(&d, method, path, auth, body, o);
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

/* decrypt on instance dd with the decrypt key, no context. */
static int decrypt_on(const kwt_daemon *dd, const char *ct, char *out, size_t cap)
{
	char body[2048];
	snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", ct);
	json_t *o = NULL;
	int st = call_on(dd, "POST", "/api/v1/transit/keys/multi/decrypt", dec_a, body, &o);
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

/* The data key of an application doing envelope encryption with an
 * independent implementation (tests/support/kwt_envelope.py, Python's
 * cryptography): it seals a value under the data key's plaintext, keeps
 * only keyward's $enc1$ of the data key, later has keyward decrypt that and
 * opens its value with what comes back. */
static int envelope(const char *args, char *out, size_t cap)
{
	char cmd[4096], script[512], word[600];
	snprintf(script, sizeof(script), "%s/tests/support/kwt_envelope.py", kwt_env("KW_SOURCE_DIR"));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s", kwt_shq(script, word, sizeof(word)), args);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	if (fgets(out, (int)cap, p) == NULL)
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return WEXITSTATUS(pclose(p));
}

Test(transit, datakeys_interoperate_with_an_independent_implementation)
{
	make_key(&ta, "env", "aes256-gcm");
	json_t *o = NULL;
	cr_assert_eq(
	    call("POST", "/api/v1/transit/keys/env/datakey", enc_a, "{\"context\":\"cm93LTQy\"}", &o), 200);
	char dk[64], wrapped[256], sealed[512], args[1024], out[512];
	snprintf(dk, sizeof(dk), "%s", str(o, "plaintext"));
	snprintf(wrapped, sizeof(wrapped), "%s", str(o, "ciphertext"));
	json_decref(o);
	/* keyward's $enc1$ layout, as the independent parser reads it. */
	snprintf(args, sizeof(args), "parse '%s'", wrapped);
	cr_assert_eq(envelope(args, out, sizeof(out)), 0, "%s", wrapped);
	cr_assert_str_eq(out, "32", "the sealed data key is 32 bytes");
	/* The application seals a value under the data key, then forgets it. */
	snprintf(args, sizeof(args), "seal %s %s", dk, "YSByb3cgdmFsdWU=");
	cr_assert_eq(envelope(args, sealed, sizeof(sealed)), 0);
	cr_assert(strncmp(sealed, "$enc1$v1$", 9) == 0, "%s", sealed);
	/* Later: keyward unwraps the data key (with its context) ... */
	char dk2[128];
	cr_assert_eq(decrypt(dec_a, "env", wrapped, "cm93LTQy", dk2, sizeof(dk2)), 200);
	cr_assert_str_eq(dk2, dk);
	cr_assert_eq(decrypt(dec_a, "env", wrapped, NULL, out, sizeof(out)), 400, "the context is bound");
	/* ... and the independent implementation opens the value with it. */
	snprintf(args, sizeof(args), "open %s '%s'", dk2, sealed);
	cr_assert_eq(envelope(args, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "YSByb3cgdmFsdWU=");
	/* A value sealed by keyward under the transit key does not open with
	 * the data key: they are different keys. */
	char *ct = encrypt(enc_a, "env", "YSByb3cgdmFsdWU=", NULL);
	snprintf(args, sizeof(args), "open %s '%s'", dk2, ct);
	cr_assert_eq(envelope(args, out, sizeof(out)), 1);
	free(ct);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long metric_on(const kwt_daemon *dd, const char *name)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(dd, "/metrics", &r), 0);
	char line[200];
	snprintf(line, sizeof(line), "\n%s ", name); /* a sample, not its HELP line */
	const char *p = strstr(r.body, line);
	cr_assert_not_null(p, "no metric %s", name);
	unsigned long long v = strtoull(p + strlen(line), NULL, 10);
	kwt_resp_free(&r);
	return v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Two instances on one database: each caches derived keys, and a rotate
 * or config change on one holds on the other within a second (the change
 * feed), measured over 20 rotations. */
Test(transit, a_change_on_one_instance_holds_on_another_within_a_second)
{
	char ci[1200], ai[1200];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", d.db.app);
	snprintf(ai, sizeof(ai), "KEYWARD_DB_ADMIN_CONNINFO=%s", d.db.admin);
	/* The polling below is many requests from one address. */
	const char *env[] = {ci, ai, "KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000", NULL};
	kwt_daemon d2;
	kwt_daemon_start(&d2, env);
	make_key(&ta, "multi", "aes256-gcm");
	json_t *o = NULL;
	char pt[256];
	/* d2 holds version 1 (a second encrypt is served from its cache). */
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(call_on(&d2, "POST", "/api/v1/transit/keys/multi/encrypt", enc_a,
		                     "{\"plaintext\":\"b25l\"}", &o),
		             200);
		cr_assert_eq(json_integer_value(json_object_get(o, "key_version")), 1);
		json_decref(o);
	}
	cr_assert_gt(metric_on(&d2, "keyward_transit_cache_lookups_total{result=\"hit\"}"), 0,
	             "the second instance does not cache");
	char *v1 = encrypt(enc_a, "multi", "b25l", NULL);
	double delay[20];
	for (int round = 0; round < 20; round++) {
		cr_assert_eq(call("POST", "/api/v1/transit/keys/multi/rotate", ta.auth, NULL, &o), 200);
		json_int_t want = json_integer_value(json_object_get(o, "latest_version"));
		json_decref(o);
		double t0 = now_s(), waited = -1;
		while (now_s() - t0 < 2.0) {
			int st = call_on(&d2, "POST", "/api/v1/transit/keys/multi/encrypt", enc_a,
			                 "{\"plaintext\":\"b25l\"}", &o);
			cr_assert_eq(st, 200, "round %d: encrypt on the second instance answered %d", round,
			             st);
			json_int_t v = json_integer_value(json_object_get(o, "key_version"));
			json_decref(o);
			if (v == want) {
				waited = now_s() - t0;
				break;
			}
		}
		cr_assert(waited >= 0 && waited < 1.0, "round %d: version %lld not used within 1 s", round,
		          (long long)want);
		delay[round] = waited;
	}
	qsort(delay, 20, sizeof(delay[0]), cmp_double);
	cr_log_info("rotate on one instance, used by the other: median %.1f ms, p99 (max of 20) %.1f ms",
	            delay[10] * 1e3, delay[19] * 1e3);
	/* d2 still decrypts version 1 from its cache... */
	cr_assert_eq(decrypt_on(&d2, v1, pt, sizeof(pt)), 200);
	/* ... until the minimum moves past it on the first instance. */
	cr_assert_eq(
	    call("POST", "/api/v1/transit/keys/multi/config", ta.auth, "{\"min_decryption_version\":2}", &o),
	    200);
	json_decref(o);
	double t0 = now_s();
	int st = 200;
	while (st == 200 && now_s() - t0 < 2.0)
		st = decrypt_on(&d2, v1, pt, sizeof(pt));
	cr_assert_eq(st, 400, "version 1 still decrypts on the other instance after 2 s");
	cr_assert_str_eq(pt, "key_version_retired");
	cr_assert_lt(now_s() - t0, 1.0);
	unsigned long long drops = metric_on(&d2, "keyward_transit_cache_drops_total"),
	                   hits = metric_on(&d2, "keyward_transit_cache_lookups_total{result=\"hit\"}"),
	                   misses = metric_on(&d2, "keyward_transit_cache_lookups_total{result=\"miss\"}");
	cr_log_info("second instance: %llu cache hits, %llu misses, %llu drops", hits, misses, drops);
	cr_assert_geq(drops, 20);
	cr_assert_eq(metric_on(&d2, "keyward_changes_total{result=\"ignored\"}"), 0);
	free(v1);
	kwt_daemon_stop(&d2);
}

/* Encrypt runs on the I/O thread once the key is cached: the key's own
 * budget and its headers hold there as on a worker, and the refusal is
 * audited. */
Test(transit, the_fast_path_spends_the_keys_budget)
{
	make_key(&ta, "fast", "aes256-gcm");
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "limited", "[\"transit:encrypt\"]", 3, key, id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	int ok = 0, limited = 0;
	for (int i = 0; i < 6; i++) {
		kwt_resp r;
		cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/transit/keys/fast/encrypt", auth,
		                          "{\"plaintext\":\"b25l\"}", &r),
		             0);
		char v[64];
		if (r.status == 200) {
			ok++;
			cr_assert_not_null(kwt_resp_header(&r, "RateLimit-Remaining", v, sizeof(v)), "%s",
			                   r.head);
		} else {
			kwt_assert_json_error(&r, 429, "rate_limited");
			limited++;
		}
		kwt_resp_free(&r);
	}
	cr_assert_eq(ok, 3, "a key limited to 3 a minute encrypted %d times", ok);
	cr_assert_eq(limited, 3);
	kwt_audit_settle(&d);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE tenant_id = '%s' AND action = 'auth.rate_limited'",
	         ta.id);
	char *n = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(n, "3", "each refusal has its audit row");
	free(n);
}
