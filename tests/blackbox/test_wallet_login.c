/* Black-box: wallet sign-in (EIP-191 personal_sign) against the real
 * keywardd, with signatures made by an independent implementation
 * (tests/support/kwt_wallet.py: python3-ecdsa + Cryptodome's Keccak), and
 * the refresh policy knobs that need their own daemon: the grace window,
 * sliding and absolute expiry, housekeeping, and signing-key rotation. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/auth/jwt.h"
#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;

static const char *const fast_env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
                                       "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", NULL};

static void start(void)
{
	kwt_daemon_start(&d, fast_env);
	kwt_tenant_create(&d, "tenant-a", &ta);
	kwt_tenant_create(&d, "tenant-b", &tb);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(wallet, .init = start, .fini = stop, .timeout = 180);

#define KEY1  "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
#define ADDR1 "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
#define KEY2  "8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f"

static json_t *body_json(const kwt_resp *r)
{
	json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
	cr_assert_not_null(o, "not JSON: %s", r->body);
	return o;
}

/* Signs text with the independent implementation; out: 0x + 130 hex. */
static void py_sign(const char *key, const char *text, char out[140])
{
	char path[] = "/tmp/kwt_msg_XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	char cmd[1600], src[512], script[512], word[600];
	snprintf(script, sizeof(script), "%s/tests/support/kwt_wallet.py", kwt_env("KW_SOURCE_DIR"));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s sign %s < %s", kwt_shq(script, word, sizeof(word)),
	         key, path);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(src, sizeof(src), p));
	cr_assert_eq(pclose(p), 0);
	unlink(path);
	src[strcspn(src, "\n")] = '\0';
	cr_assert_eq(strlen(src), 132, "%s", src);
	memcpy(out, src, 133);
}

typedef struct challenge {
	char nonce[64];
	char message[600];
} challenge;

static void get_nonce(const char *tenant, const char *address, challenge *c)
{
	char body[256];
	snprintf(body, sizeof(body), "{\"tenant\":\"%s\",\"address\":\"%s\"}", tenant, address);
	kwt_resp r;
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/wallet/nonce", body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	snprintf(c->nonce, sizeof(c->nonce), "%s", json_string_value(json_object_get(o, "nonce")));
	snprintf(c->message, sizeof(c->message), "%s", json_string_value(json_object_get(o, "message")));
	cr_assert_not_null(json_string_value(json_object_get(o, "expires_at")));
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_eq(strlen(c->nonce), 32);
	cr_assert(strstr(c->message, c->nonce) && strstr(c->message, tenant));
}

static int wallet_login(const char *tenant, const char *address, const char *nonce, const char *sig,
                        kwt_resp *r)
{
	char body[1024];
	snprintf(body, sizeof(body),
	         "{\"tenant\":\"%s\",\"address\":\"%s\",\"nonce\":\"%s\",\"signature\":\"%s\"}", tenant,
	         address, nonce, sig);
	return kwt_http_post(&d, "/api/v1/auth/wallet", body, r);
}

static long long audit_count(const char *where)
{
	kwt_audit_settle(&d); /* refusal rows land shortly after their answers */
	char sql[1024];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM audit_log WHERE %s", where);
	char *v = kwt_db_admin_sql(&d.db, sql);
	long long n = strtoll(v, NULL, 10);
	free(v);
	return n;
}

static void expect_refusal(const char *tenant, const char *address, const char *nonce, const char *sig,
                           int status, const char *code)
{
	kwt_resp r;
	cr_assert_eq(wallet_login(tenant, address, nonce, sig, &r), 0);
	kwt_assert_json_error(&r, status, code);
	kwt_resp_free(&r);
}

Test(wallet, signature_from_an_independent_implementation_signs_in)
{
	challenge c;
	get_nonce(ta.id, ADDR1, &c);
	char sig[140];
	py_sign(KEY1, c.message, sig);
	kwt_resp r;
	cr_assert_eq(wallet_login(ta.id, ADDR1, c.nonce, sig, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	const char *access = json_string_value(json_object_get(o, "access_token"));
	cr_assert_not_null(access);
	cr_assert_str_eq(json_string_value(json_object_get(o, "role")), "track4");
	cr_assert_not_null(json_string_value(json_object_get(o, "refresh_token")));
	char h[2300];
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\n", access);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_req(&d, "GET", "/api/v1/auth/whoami", h, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	o = body_json(&r);
	cr_assert_str_eq(json_string_value(json_object_get(o, "sub")), ADDR1);
	cr_assert_str_eq(json_string_value(json_object_get(o, "tid")), ta.id);
	json_decref(o);
	kwt_resp_free(&r);
	/* The same nonce again: single use. */
	expect_refusal(ta.id, ADDR1, c.nonce, sig, 401, "nonce_reused");
	/* v as 0/1 and an all-lower-case address are accepted too. */
	get_nonce(ta.id, "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23", &c);
	py_sign(KEY1, c.message, sig);
	cr_assert(strcmp(sig + 130, "1b") == 0 || strcmp(sig + 130, "1c") == 0, "%s", sig);
	sig[130] = '0';
	sig[131] = sig[131] == 'b' ? '0' : '1';
	cr_assert_eq(wallet_login(ta.id, "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23", c.nonce, sig, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(audit_count("action = 'auth.login' AND context::text LIKE '%wallet%'"), 2);
}

Test(wallet, hostile_inputs_get_distinct_401s_and_audit_rows)
{
	challenge c;
	char sig[140], other[140];
	get_nonce(ta.id, ADDR1, &c);
	py_sign(KEY1, c.message, sig);
	py_sign(KEY2, c.message, other);

	expect_refusal(ta.id, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c2", c.nonce, sig, 401,
	               "invalid_address");
	expect_refusal(ta.id, "2c7536E3605D9C16a7a3D7b1898e529396a65c23ab", c.nonce, sig, 401,
	               "invalid_address");
	expect_refusal(ta.id, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c2g", c.nonce, sig, 401,
	               "invalid_address");
	expect_refusal(ta.id, "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23", c.nonce, sig, 401,
	               "address_checksum_mismatch");
	char shortsig[140];
	snprintf(shortsig, sizeof(shortsig), "%.130s", sig);
	expect_refusal(ta.id, ADDR1, c.nonce, shortsig, 401, "invalid_signature");
	char badv[140];
	snprintf(badv, sizeof(badv), "%.130s1d", sig);
	expect_refusal(ta.id, ADDR1, c.nonce, badv, 401, "invalid_signature");
	expect_refusal(ta.id, ADDR1, "00000000000000000000000000000000", sig, 401, "nonce_invalid");
	expect_refusal(ta.id, ADDR1, "not-a-nonce", sig, 401, "nonce_invalid");
	/* Up to here the nonce was never consumed: parsing refused first. */
	expect_refusal(ta.id, ADDR1, c.nonce, other, 401, "signature_mismatch");
	/* ... and that attempt consumed it, although the signature was bad. */
	expect_refusal(ta.id, ADDR1, c.nonce, sig, 401, "nonce_reused");
	/* Another tenant has no such nonce. */
	expect_refusal(tb.id, ADDR1, c.nonce, sig, 401, "nonce_invalid");

	/* Expired: the stored expiry moved to the past. */
	get_nonce(ta.id, ADDR1, &c);
	py_sign(KEY1, c.message, sig);
	char *v =
	    kwt_db_admin_sql(&d.db, "UPDATE wallet_nonces SET expires_at = now() - interval '1 second'");
	free(v);
	expect_refusal(ta.id, ADDR1, c.nonce, sig, 401, "nonce_expired");
	expect_refusal(ta.id, ADDR1, c.nonce, sig, 401, "nonce_reused");
	/* A newer nonce replaces an outstanding one. */
	challenge c1, c2;
	get_nonce(ta.id, ADDR1, &c1);
	get_nonce(ta.id, ADDR1, &c2);
	py_sign(KEY1, c1.message, sig);
	expect_refusal(ta.id, ADDR1, c1.nonce, sig, 401, "nonce_invalid");

	kwt_resp r;
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/wallet/nonce",
	                           "{\"tenant\":\"00000000-0000-4000-8000-000000000000\",\"address\":\"" ADDR1
	                           "\"}",
	                           &r),
	             0);
	kwt_assert_json_error(&r, 404, "tenant_not_found");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/wallet/nonce",
	                           "{\"tenant\":\"x\",\"address\":\"" ADDR1 "\"}", &r),
	             0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/wallet", "{}", &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);

	const char *codes[] = {"invalid_address", "address_checksum_mismatch", "invalid_signature",
	                       "nonce_invalid",   "signature_mismatch",        "nonce_reused",
	                       "nonce_expired"};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char where[256];
		snprintf(where, sizeof(where), "action = 'auth.wallet' AND status LIKE '401 %s'", codes[i]);
		cr_assert(audit_count(where) >= 1, "no audit row for %s", codes[i]);
	}
	/* Neither a nonce nor a signature is in the audit trail. */
	char where[512];
	snprintf(where, sizeof(where),
	         "position('%s' in concat_ws(' ', actor, target, status, context::text)) > 0 OR "
	         "position('%.40s' in concat_ws(' ', actor, target, status, context::text)) > 0",
	         c2.nonce, sig + 2);
	cr_assert_eq(audit_count(where), 0);
	char *log = kwt_daemon_log(&d);
	cr_assert(strstr(log, c2.nonce) == NULL && strstr(log, sig + 2) == NULL);
	free(log);
}

Test(wallet, nonces_per_address_are_limited)
{
	const char *addr = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
	char body[256];
	snprintf(body, sizeof(body), "{\"tenant\":\"%s\",\"address\":\"%s\"}", ta.id, addr);
	int ok = 0;
	kwt_resp r;
	for (int i = 0; i < 11; i++) {
		cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/wallet/nonce", body, &r), 0);
		if (r.status == 200)
			ok++;
		else
			kwt_assert_json_error(&r, 429, "rate_limited");
		kwt_resp_free(&r);
	}
	cr_assert_eq(ok, 10);
	/* Another address is not affected. */
	challenge c;
	get_nonce(ta.id, ADDR1, &c);
}

/* --- refresh policy ----------------------------------------------------- */

static char issuer_auth[200];

static void start_grace(void)
{
	static const char *const env[] = {
	    "KEYWARD_RATELIMIT_IP_PER_MINUTE=100000", "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000",
	    "KEYWARD_AUTH_REFRESH_GRACE=30s",         "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s",
	    "KEYWARD_AUTH_HOUSEKEEPING_BATCH=2",      NULL};
	kwt_daemon_start(&d, env);
	kwt_tenant_create(&d, "tenant-a", &ta);
	char key[128], id[64];
	kwt_api_key_create(&d, &ta, "app", "[\"auth:issue\"]", 100000, key, id);
	snprintf(issuer_auth, sizeof(issuer_auth), "Authorization: Bearer %s\r\n", key);
}

TestSuite(refresh_policy, .init = start_grace, .fini = stop, .timeout = 180);

static void login(const char *subject, char refresh[80], char sid[40])
{
	char body[256];
	snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"track1\"}", subject);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth, body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	snprintf(refresh, 80, "%s", json_string_value(json_object_get(o, "refresh_token")));
	if (sid) {
		const char *at = json_string_value(json_object_get(o, "access_token"));
		const char *d1 = strchr(at, '.'), *d2 = strchr(d1 + 1, '.');
		unsigned char buf[2048];
		size_t n = 0;
		cr_assert_eq(kw_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, sizeof(buf), &n), KW_OK);
		json_t *c = json_loadb((const char *)buf, n, 0, NULL);
		snprintf(sid, 40, "%s", json_string_value(json_object_get(c, "sid")));
		json_decref(c);
	}
	json_decref(o);
	kwt_resp_free(&r);
}

/* Refreshes rt; returns the status and the child in next (if 200). */
static int do_refresh(const char *rt, char next[80], char code[64])
{
	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", rt);
	kwt_resp r;
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/refresh", body, &r), 0);
	int st = r.status;
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	if (next && st == 200)
		snprintf(next, 80, "%s", json_string_value(json_object_get(o, "refresh_token")));
	if (code)
		snprintf(code, 64, "%s", st == 200 ? "" : json_string_value(json_object_get(o, "error")));
	json_decref(o);
	kwt_resp_free(&r);
	return st;
}

Test(refresh_policy, grace_forgives_only_the_immediately_previous_token)
{
	char a[80], b[80], c[80], e[80], code[64];
	login("tabs", a, NULL);
	cr_assert_eq(do_refresh(a, b, code), 200);
	/* A second tab presents a again within the grace window. */
	cr_assert_eq(do_refresh(a, c, code), 200, "%s", code);
	cr_assert_str_neq(b, c);
	/* b is used; now a has a used child: a is an older ancestor. */
	cr_assert_eq(do_refresh(b, e, code), 200, "%s", code);
	cr_assert_eq(do_refresh(a, NULL, code), 401);
	cr_assert_str_eq(code, "token_family_compromised");
	cr_assert_eq(do_refresh(e, NULL, code), 401);
	cr_assert_str_eq(code, "token_family_compromised");
}

Test(refresh_policy, sliding_and_absolute_expiry)
{
	char a[80], sid[40], code[64];
	login("slider", a, sid);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "UPDATE refresh_tokens SET sliding_expires_at = now() - interval '1 second' "
	         "WHERE family_id = '%s'",
	         sid);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(do_refresh(a, NULL, code), 401);
	cr_assert_str_eq(code, "refresh_token_expired");
	login("absolute", a, sid);
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE refresh_families SET absolute_expires_at = now() - interval '1 second' WHERE id = '%s'",
	    sid);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(do_refresh(a, NULL, code), 401);
	cr_assert_str_eq(code, "refresh_token_expired");
	/* A child never outlives its family's absolute expiry. */
	login("bounded", a, sid);
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE refresh_families SET absolute_expires_at = now() + interval '1 hour' WHERE id = '%s'",
	    sid);
	free(kwt_db_admin_sql(&d.db, sql));
	char b[80];
	cr_assert_eq(do_refresh(a, b, code), 200);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM refresh_tokens WHERE family_id = '%s' AND parent_id IS NOT NULL AND "
	         "sliding_expires_at <= now() + interval '1 hour'",
	         sid);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, "1");
	free(v);
}

Test(refresh_policy, housekeeping_purges_dead_rows_in_batches)
{
	char a[80], sid[40];
	login("old", a, sid);
	login("live", a, NULL);
	char sql[512];
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE refresh_families SET absolute_expires_at = now() - interval '1 minute' WHERE id = '%s'",
	    sid);
	free(kwt_db_admin_sql(&d.db, sql));
	snprintf(sql, sizeof(sql),
	         "INSERT INTO jwt_revocations (jti, tenant_id, subject, token_expires_at, reason) SELECT "
	         "md5(g::text), '%s', 's', now() - interval '1 minute', 'test' FROM generate_series(1, 7) g",
	         ta.id);
	free(kwt_db_admin_sql(&d.db, sql));
	/* Housekeeping runs every second with batches of 2. */
	char *v = NULL;
	for (int i = 0; i < 100; i++) {
		free(v);
		v = kwt_db_admin_sql(&d.db, "SELECT (SELECT count(*) FROM jwt_revocations) || ' ' || "
		                            "(SELECT count(*) FROM refresh_families)");
		if (strcmp(v, "0 1") == 0)
			break;
		usleep(100000);
	}
	cr_assert_str_eq(v, "0 1");
	free(v);
	char *log = kwt_daemon_log(&d);
	cr_assert(strstr(log, "housekeeping: purged 7 revocations"), "%s", log);
	free(log);
}

Test(refresh_policy, jwt_rotation_keeps_old_tokens_valid_until_retired)
{
	/* A token of its own, so rotation does not disturb other suites. */
	char label[64], cmd[2048], bin[600], ctl[1024];
	snprintf(label, sizeof(label), "kwt-rot-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
	         "softhsm2-util --init-token --free --label %s --pin 87654321 --so-pin 12345678 >/dev/null",
	         label);
	cr_assert_eq(system(cmd), 0);
	char pin[] = "/tmp/kwt_rot_pin_XXXXXX";
	int fd = mkstemp(pin);
	cr_assert_eq(write(fd, "87654321", 8), 8);
	close(fd);
	kwt_daemon d2;
	memset(&d2, 0, sizeof(d2));
	char uri[128], pinenv[128];
	snprintf(uri, sizeof(uri), "KEYWARD_HSM_URI=pkcs11:token=%s", label);
	snprintf(pinenv, sizeof(pinenv), "KEYWARD_HSM_PIN_SOURCE=%s", pin);
	/* Keys first: production mode refuses a token without them. */
	snprintf(cmd, sizeof(cmd),
	         "KEYWARD_HSM_URI='pkcs11:token=%s' KEYWARD_HSM_PIN_SOURCE=%s %s token init >/dev/null",
	         label, pin, kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	cr_assert_eq(system(cmd), 0);
	const char *env[] = {uri, pinenv, "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s", NULL};
	kwt_daemon_start(&d2, env);
	snprintf(ctl, sizeof(ctl),
	         "KEYWARD_HSM_URI='pkcs11:token=%s' KEYWARD_HSM_PIN_SOURCE=%s "
	         "KEYWARD_DB_ADMIN_CONNINFO='%s' %s",
	         label, pin, d2.db.admin, kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	/* A tenant whose admin key is peppered by this token. */
	snprintf(cmd, sizeof(cmd), "%s tenant create rot 2>/dev/null | sed -n 's/^api_key: //p'", ctl);
	FILE *p = popen(cmd, "r");
	char key[128] = "", auth[256], body[512];
	cr_assert_not_null(fgets(key, sizeof(key), p));
	cr_assert_eq(pclose(p), 0);
	key[strcspn(key, "\n")] = '\0';
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d2, "POST", "/api/v1/api-keys", auth,
	                          "{\"name\":\"app\",\"scopes\":[\"auth:issue\"]}", &r),
	             0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	json_t *o = body_json(&r);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n",
	         json_string_value(json_object_get(o, "key")));
	json_decref(o);
	kwt_resp_free(&r);
	char old_access[2300];
	snprintf(body, sizeof(body), "{\"subject\":\"rot\",\"role\":\"track1\"}");
	cr_assert_eq(kwt_http_req(&d2, "POST", "/api/v1/auth/login", auth, body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	o = body_json(&r);
	snprintf(old_access, sizeof(old_access), "Authorization: Bearer %s\r\n",
	         json_string_value(json_object_get(o, "access_token")));
	json_decref(o);
	kwt_resp_free(&r);

	snprintf(cmd, sizeof(cmd), "%s jwt rotate", ctl);
	p = popen(cmd, "r");
	char line[512] = "";
	cr_assert_not_null(fgets(line, sizeof(line), p));
	cr_assert_eq(pclose(p), 0);
	cr_assert(strstr(line, "keyward/jwt/2"), "%s", line);
	/* Retiring too early, or the active key, is refused. */
	snprintf(cmd, sizeof(cmd), "%s jwt retire 1 2>/dev/null", ctl);
	cr_assert_neq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s jwt retire 2 2>/dev/null", ctl);
	cr_assert_neq(system(cmd), 0);
	/* Within a housekeeping interval the daemon publishes both keys and
	 * signs with the new one. */
	int nkeys = 0;
	for (int i = 0; i < 50 && nkeys < 2; i++) {
		cr_assert_eq(kwt_http_get(&d2, "/.well-known/jwks.json", &r), 0);
		o = body_json(&r);
		nkeys = (int)json_array_size(json_object_get(o, "keys"));
		json_decref(o);
		kwt_resp_free(&r);
		if (nkeys < 2)
			usleep(100000);
	}
	cr_assert_eq(nkeys, 2);
	cr_assert_eq(kwt_http_req(&d2, "GET", "/api/v1/auth/whoami", old_access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_req(&d2, "POST", "/api/v1/auth/login", auth, body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	o = body_json(&r);
	const char *at = json_string_value(json_object_get(o, "access_token"));
	char old_kid[64] = "", new_kid[64] = "";
	unsigned char hb[256];
	size_t hn = 0;
	cr_assert_eq(kw_b64url_decode(at, (size_t)(strchr(at, '.') - at), hb, sizeof(hb), &hn), KW_OK);
	json_t *h = json_loadb((const char *)hb, hn, 0, NULL);
	snprintf(new_kid, sizeof(new_kid), "%s", json_string_value(json_object_get(h, "kid")));
	json_decref(h);
	const char *ot = old_access + strlen("Authorization: Bearer ");
	cr_assert_eq(kw_b64url_decode(ot, (size_t)(strchr(ot, '.') - ot), hb, sizeof(hb), &hn), KW_OK);
	h = json_loadb((const char *)hb, hn, 0, NULL);
	snprintf(old_kid, sizeof(old_kid), "%s", json_string_value(json_object_get(h, "kid")));
	json_decref(h);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_str_neq(old_kid, new_kid);
	/* Forced retirement: key 1 leaves the JWKS and its tokens fail. */
	snprintf(cmd, sizeof(cmd), "%s jwt retire 1 --force >/dev/null", ctl);
	cr_assert_eq(system(cmd), 0);
	for (int i = 0; i < 50 && nkeys > 1; i++) {
		cr_assert_eq(kwt_http_get(&d2, "/.well-known/jwks.json", &r), 0);
		o = body_json(&r);
		nkeys = (int)json_array_size(json_object_get(o, "keys"));
		json_decref(o);
		kwt_resp_free(&r);
		if (nkeys > 1)
			usleep(100000);
	}
	cr_assert_eq(nkeys, 1);
	cr_assert_eq(kwt_http_req(&d2, "GET", "/api/v1/auth/whoami", old_access, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_token");
	kwt_resp_free(&r);
	char *v = kwt_db_admin_sql(
	    &d2.db, "SELECT count(*) FROM audit_log WHERE action IN ('jwt.rotate', 'jwt.retire')");
	cr_assert_str_eq(v, "2");
	free(v);
	cr_assert_eq(kwt_daemon_stop(&d2), 0);
	snprintf(cmd, sizeof(cmd), "softhsm2-util --delete-token --token %s >/dev/null 2>&1", label);
	cr_assert_eq(system(cmd), 0);
	unlink(pin);
}
