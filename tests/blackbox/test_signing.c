/* Black-box: HMAC request signing (DESIGN 5.6) against the real keywardd,
 * token and database. Signatures are made by an independent signer
 * (tests/support/kwt_sign.py, Python's hmac) that follows only the written
 * scheme, and by keywardctl sign (the project's client library). */
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
static kwt_tenant ta;
static char secret_file[64];

static void start(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", NULL};
	kwt_daemon_start(&d, env);
	kwt_tenant_create(&d, "signing-a", &ta);
	snprintf(secret_file, sizeof(secret_file), "/tmp/kwt_sig_secret_XXXXXX");
	int fd = mkstemp(secret_file);
	cr_assert(fd >= 0);
	close(fd);
}

static void stop(void)
{
	unlink(secret_file);
	kwt_daemon_stop(&d);
}

TestSuite(signing, .init = start, .fini = stop, .timeout = 120);

typedef struct sigkey {
	char id[64];
	char secret[64];
} sigkey;

static int call_on(const kwt_daemon *dd, const char *method, const char *path, const char *headers,
                   const char *body, json_t **o)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, method, path, headers, body, &r), 0);
	int st = r.status;
	if (o)
		*o = json_loadb(r.body, r.body_len, 0, NULL);
	kwt_resp_free(&r);
	return st;
}

static void make_sigkey(const char *name, const char *scopes, sigkey *k)
{
	char body[256];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"scopes\":%s}", name, scopes);
	json_t *o = NULL;
	cr_assert_eq(call_on(&d, "POST", "/api/v1/signing-keys", ta.auth, body, &o), 201);
	snprintf(k->id, sizeof(k->id), "%s", json_string_value(json_object_get(o, "id")));
	snprintf(k->secret, sizeof(k->secret), "%s", json_string_value(json_object_get(o, "secret")));
	json_decref(o);
	cr_assert_eq(strlen(k->secret), 53, "%s", k->secret);
	cr_assert(strncmp(k->secret, "kws_", 4) == 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The X-Signature value from the independent signer. */
static void py_sign(const sigkey *k, const char *method, const char *target, const char *ts,
                    const char *nonce, const char *body, char *out, size_t cap)
{
	FILE *f = fopen(secret_file, "w");
	fputs(k->secret, f);
	fclose(f);
	char bodyfile[] = "/tmp/kwt_sig_body_XXXXXX", cmd[2048], script[512], w[6][600];
	int fd = mkstemp(bodyfile);
	if (body)
		cr_assert_eq(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	close(fd);
	snprintf(script, sizeof(script), "%s/tests/support/kwt_sign.py", kwt_env("KW_SOURCE_DIR"));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %s %s %s %s %s %s",
	         kwt_shq(script, w[0], sizeof(w[0])), k->id, secret_file, method,
	         kwt_shq(target, w[1], sizeof(w[1])), ts, nonce, kwt_shq(bodyfile, w[2], sizeof(w[2])));
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(out, (int)cap, p));
	cr_assert_eq(pclose(p), 0);
	out[strcspn(out, "\n")] = '\0';
	unlink(bodyfile);
}

static unsigned nonce_seq;

static void fresh_nonce(char out[64])
{
	snprintf(out, 64, "n%d-%u-abcdefghijklmnopqrstu", (int)getpid(), ++nonce_seq);
}

/* Headers of a request signed for (sign_method, sign_target, sign_body). */
static void signed_headers(const sigkey *k, const char *method, const char *target, const char *body,
                           int64_t ts_ms, const char *nonce, char *hdr, size_t cap)
{
	char ts[32], sig[256];
	snprintf(ts, sizeof(ts), "%lld", (long long)ts_ms);
	py_sign(k, method, target, ts, nonce, body, sig, sizeof(sig));
	snprintf(hdr, cap, "X-Timestamp: %s\r\nX-Nonce: %s\r\nX-Signature: %s\r\n", ts, nonce, sig);
}

/* Sends a request signed by the independent signer: its status and error. */
static int send_signed(const kwt_daemon *dd, const sigkey *k, const char *method, const char *target,
                       const char *body, char *code, size_t cap)
{
	char nonce[64], hdr[600];
	fresh_nonce(nonce);
	signed_headers(k, method, target, body, now_ms(), nonce, hdr, sizeof(hdr));
	json_t *o = NULL;
	int st = call_on(dd, method, target, hdr, body, &o);
	snprintf(code, cap, "%s", json_string_value(json_object_get(o, "error")) ?: "");
	json_decref(o);
	return st;
}

static long sql_long(const char *sql)
{
	char *v = kwt_db_admin_sql(&d.db, sql);
	long n = v ? strtol(v, NULL, 10) : -1;
	free(v);
	return n;
}

Test(signing, keys_are_managed_and_signed_requests_pass)
{
	sigkey k;
	make_sigkey("svc", "[\"secrets:read\"]", &k);
	json_t *o = NULL;
	cr_assert_eq(call_on(&d, "GET", "/api/v1/signing-keys", ta.auth, NULL, &o), 200);
	char *text = json_dumps(o, 0);
	cr_assert_null(strstr(text, k.secret + 4), "a list shows a secret");
	cr_assert_null(strstr(text, "\"secret\""));
	free(text);
	json_decref(o);
	char code[64];
	cr_assert_eq(send_signed(&d, &k, "GET", "/api/v1/secrets?limit=5", NULL, code, sizeof(code)), 200,
	             "%s", code);
	/* The signature is the credential: its key's scopes decide. */
	cr_assert_eq(send_signed(&d, &k, "POST", "/api/v1/secrets", "{\"name\":\"x\",\"value\":\"eA==\"}",
	                         code, sizeof(code)),
	             403);
	cr_assert_str_eq(code, "insufficient_scope");
	/* The secret is stored only wrapped. */
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM signing_keys WHERE position('%s'::bytea IN wrapped_secret) > 0",
	         k.secret + 4);
	cr_assert_eq(sql_long(sql), 0);
	char *log = kwt_daemon_log(&d);
	cr_assert_null(strstr(log, k.secret + 4), "a secret reached the log");
	free(log);
}

Test(signing, keywardctl_sign_prints_headers_the_service_accepts)
{
	sigkey k;
	make_sigkey("ctl", "[\"secrets:read\"]", &k);
	FILE *f = fopen(secret_file, "w");
	fprintf(f, "%s\n", k.secret);
	fclose(f);
	char cmd[1600], bin[600], hdr[1024] = "", line[300];
	snprintf(cmd, sizeof(cmd),
	         "KEYWARD_SIGN_KID=%s KEYWARD_SIGN_SECRET_FILE=%s %s sign GET '/api/v1/secrets?limit=2'",
	         k.id, secret_file, kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	FILE *p = popen(cmd, "r");
	while (fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = '\0';
		strcat(hdr, line);
		strcat(hdr, "\r\n");
	}
	cr_assert_eq(pclose(p), 0);
	cr_assert_eq(call_on(&d, "GET", "/api/v1/secrets?limit=2", hdr, NULL, NULL), 200, "%s", hdr);
	cr_assert_eq(call_on(&d, "GET", "/api/v1/secrets?limit=2", hdr, NULL, NULL), 401, "a replay passed");
	/* The secret never on the command line: --help names the variables. */
	snprintf(cmd, sizeof(cmd), "%s sign --help 2>&1", kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	p = popen(cmd, "r");
	char help[2048] = "";
	size_t used = 0;
	while (fgets(line, sizeof(line), p) && used + strlen(line) < sizeof(help))
		used += (size_t)snprintf(help + used, sizeof(help) - used, "%s", line);
	pclose(p);
	cr_assert_not_null(strstr(help, "KEYWARD_SIGN_KID"));
	cr_assert_not_null(strstr(help, "KEYWARD_SIGN_SECRET_FILE"));
}

Test(signing, bad_signatures_are_401_and_audited)
{
	sigkey k;
	make_sigkey("bad", "[\"secrets:read\"]", &k);
	const char *target = "/api/v1/secrets?limit=3";
	char nonce[64], hdr[700], sig[256], ts[32];
	json_t *o = NULL;
	long before = sql_long("SELECT count(*) FROM audit_log WHERE action = 'auth.signature_refused'");
	int refused = 0;
#define EXPECT(h, want_code)                                                                                 \
	do {                                                                                                 \
		int st_ = call_on(&d, "GET", target, h, NULL, &o);                                           \
		cr_assert_eq(st_, 401, "%s", h);                                                             \
		cr_assert_str_eq(json_string_value(json_object_get(o, "error")), want_code, "%s", h);        \
		json_decref(o);                                                                              \
		refused++;                                                                                   \
	} while (0)
	/* Partial headers, an empty one, and a signature with Authorization. */
	fresh_nonce(nonce);
	signed_headers(&k, "GET", target, NULL, now_ms(), nonce, hdr, sizeof(hdr));
	char partial[700];
	snprintf(partial, sizeof(partial), "%.*s", (int)(strstr(hdr, "X-Signature") - hdr), hdr);
	EXPECT(partial, "invalid_signature");
	char with_auth[1000];
	snprintf(with_auth, sizeof(with_auth), "%s%s", hdr, ta.auth);
	EXPECT(with_auth, "invalid_signature");
	/* Malformed values. */
	snprintf(ts, sizeof(ts), "%lld", (long long)now_ms());
	py_sign(&k, "GET", target, ts, nonce, NULL, sig, sizeof(sig));
	const char *bad_values[][3] = {{"12x", nonce, sig},
	                               {"", nonce, sig},
	                               {ts, "short", sig},
	                               {ts, "has space in the nonce value", sig},
	                               {ts, nonce, "kid=x;hmac-sha256=00"}};
	for (size_t i = 0; i < 5; i++) {
		snprintf(hdr, sizeof(hdr), "X-Timestamp: %s\r\nX-Nonce: %s\r\nX-Signature: %s\r\n",
		         bad_values[i][0], bad_values[i][1], bad_values[i][2]);
		EXPECT(hdr, "invalid_signature");
	}
	/* Upper-case hex is not the scheme. */
	char upper[256];
	snprintf(upper, sizeof(upper), "%s", sig);
	for (char *c = strstr(upper, "sha256=") + 7; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 32);
	snprintf(hdr, sizeof(hdr), "X-Timestamp: %s\r\nX-Nonce: %s\r\nX-Signature: %s\r\n", ts, nonce, upper);
	EXPECT(hdr, "invalid_signature");
	/* Out of the window, either way. */
	for (int dir = -1; dir <= 1; dir += 2) {
		fresh_nonce(nonce);
		signed_headers(&k, "GET", target, NULL, now_ms() + dir * 6 * 60 * 1000, nonce, hdr,
		               sizeof(hdr));
		EXPECT(hdr, "timestamp_out_of_window");
	}
	/* Signed for something else: method, target, query, body. */
	const char *other[][3] = {{"POST", "/api/v1/secrets?limit=3", NULL},
	                          {"GET", "/api/v1/secrets?limit=4", NULL},
	                          {"GET", "/api/v1/secrets?limit=3&x=1", NULL},
	                          {"GET", "/api/v1/secrets?limit=3", "body"}};
	for (size_t i = 0; i < 4; i++) {
		fresh_nonce(nonce);
		signed_headers(&k, other[i][0], other[i][1], other[i][2], now_ms(), nonce, hdr, sizeof(hdr));
		EXPECT(hdr, "invalid_signature");
	}
	/* An unknown key id. */
	sigkey ghost = k;
	snprintf(ghost.id, sizeof(ghost.id), "00000000-0000-4000-8000-000000000000");
	fresh_nonce(nonce);
	signed_headers(&ghost, "GET", target, NULL, now_ms(), nonce, hdr, sizeof(hdr));
	EXPECT(hdr, "invalid_signature");
	/* A forged request does not burn a real nonce; a reused one is refused. */
	fresh_nonce(nonce);
	signed_headers(&k, "GET", "/api/v1/secrets?limit=9", NULL, now_ms(), nonce, hdr, sizeof(hdr));
	EXPECT(hdr, "invalid_signature");
	signed_headers(&k, "GET", target, NULL, now_ms(), nonce, hdr, sizeof(hdr));
	cr_assert_eq(call_on(&d, "GET", target, hdr, NULL, NULL), 200, "the forged request burnt the nonce");
	EXPECT(hdr, "nonce_reused");
#undef EXPECT
	cr_assert_eq(call_on(&d, "GET", "/healthz", NULL, NULL, NULL), 200);
	kwt_audit_settle(&d);
	long after = sql_long("SELECT count(*) FROM audit_log WHERE action = 'auth.signature_refused'");
	cr_assert_eq(after - before, refused, "each refusal has its audit row");
}

Test(signing, replays_are_refused_on_every_instance_and_deletion_reaches_them)
{
	sigkey k;
	make_sigkey("multi", "[\"secrets:read\"]", &k);
	char ci[1200], ai[1200];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", d.db.app);
	snprintf(ai, sizeof(ai), "KEYWARD_DB_ADMIN_CONNINFO=%s", d.db.admin);
	const char *env[] = {ci, ai, "KEYWARD_RATELIMIT_IP_PER_MINUTE=100000", NULL};
	kwt_daemon d2;
	kwt_daemon_start(&d2, env);
	const char *target = "/api/v1/secrets";
	char nonce[64], hdr[700], code[64];
	fresh_nonce(nonce);
	signed_headers(&k, "GET", target, NULL, now_ms(), nonce, hdr, sizeof(hdr));
	cr_assert_eq(call_on(&d, "GET", target, hdr, NULL, NULL), 200);
	json_t *o = NULL;
	cr_assert_eq(call_on(&d2, "GET", target, hdr, NULL, &o), 401, "replayed on the second instance");
	cr_assert_str_eq(json_string_value(json_object_get(o, "error")), "nonce_reused");
	json_decref(o);
	/* d2 holds the key (a request verified there); deleting it on d holds
	 * on d2 within a second. */
	cr_assert_eq(send_signed(&d2, &k, "GET", target, NULL, code, sizeof(code)), 200);
	char path[128];
	snprintf(path, sizeof(path), "/api/v1/signing-keys/%s", k.id);
	cr_assert_eq(call_on(&d, "DELETE", path, ta.auth, NULL, NULL), 200);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int st = 200;
	double waited = 0;
	while (st == 200 && waited < 2.0) {
		st = send_signed(&d2, &k, "GET", target, NULL, code, sizeof(code));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	}
	cr_assert_eq(st, 401, "the deleted key still verifies on the other instance");
	cr_assert_lt(waited, 1.0);
	cr_log_info("deletion held on the other instance after %.3f s", waited);
	kwt_daemon_stop(&d2);
}

Test(signing, rotation_overlap_then_the_old_key_stops)
{
	sigkey k;
	make_sigkey("rot", "[\"secrets:read\"]", &k);
	char path[128], code[64];
	snprintf(path, sizeof(path), "/api/v1/signing-keys/%s/rotate", k.id);
	json_t *o = NULL;
	cr_assert_eq(call_on(&d, "POST", path, ta.auth, "{\"overlap_seconds\":86401}", NULL), 400);
	cr_assert_eq(call_on(&d, "POST", path, ta.auth, "{\"overlap_seconds\":2}", &o), 201);
	sigkey n;
	snprintf(n.id, sizeof(n.id), "%s", json_string_value(json_object_get(o, "id")));
	snprintf(n.secret, sizeof(n.secret), "%s", json_string_value(json_object_get(o, "secret")));
	cr_assert_str_eq(json_string_value(json_object_get(o, "replaces")), k.id);
	json_decref(o);
	cr_assert_eq(call_on(&d, "POST", path, ta.auth, "{}", NULL), 409, "a rotated key is rotated once");
	cr_assert_eq(send_signed(&d, &k, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 200,
	             "within the overlap");
	cr_assert_eq(send_signed(&d, &n, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 200);
	sleep(3);
	cr_assert_eq(send_signed(&d, &k, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 401,
	             "after the overlap");
	cr_assert_str_eq(code, "invalid_signature");
	cr_assert_eq(send_signed(&d, &n, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 200);
}

Test(signing, a_nonce_store_outage_is_503_never_accepted)
{
	sigkey k;
	make_sigkey("outage", "[\"secrets:read\"]", &k);
	char code[64];
	free(kwt_db_admin_sql(&d.db, "ALTER TABLE signing_nonces RENAME TO signing_nonces_away"));
	int st = send_signed(&d, &k, "GET", "/api/v1/secrets", NULL, code, sizeof(code));
	free(kwt_db_admin_sql(&d.db, "ALTER TABLE signing_nonces_away RENAME TO signing_nonces"));
	cr_assert_eq(st, 503, "%s", code);
	cr_assert_str_eq(code, "nonce_store_unavailable");
	cr_assert_eq(send_signed(&d, &k, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 200, "%s",
	             code);
}

/* Each refused signature spends one of the address's failed
 * authentications: past the budget, even a good signature waits (429). */
Test(signing, refusals_spend_the_failed_authentication_budget)
{
	sigkey k;
	make_sigkey("budget", "[\"secrets:read\"]", &k);
	char ci[1200];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", d.db.app);
	const char *env[] = {ci, "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=3", NULL};
	kwt_daemon d3;
	kwt_daemon_start(&d3, env);
	char nonce[64], hdr[700], code[64];
	for (int i = 0; i < 3; i++) {
		fresh_nonce(nonce);
		signed_headers(&k, "GET", "/api/v1/secrets?other", NULL, now_ms(), nonce, hdr, sizeof(hdr));
		cr_assert_eq(call_on(&d3, "GET", "/api/v1/secrets", hdr, NULL, NULL), 401);
	}
	cr_assert_eq(send_signed(&d3, &k, "GET", "/api/v1/secrets", NULL, code, sizeof(code)), 429, "%s",
	             code);
	kwt_daemon_stop(&d3);
}
