/* Black-box: access and refresh tokens (DESIGN §5.4) against the real
 * keywardd, token and database — login, JWKS checked by an independent
 * JOSE library (PyJWT), hostile tokens, refresh rotation with reuse
 * detection, the parallel-refresh race, logout/revoke/revoke-all,
 * sessions, introspection, revocation seen by a second instance, and the
 * fail-closed answer when the revocation table is missing. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyward/auth/jwt.h"
#include "keyward/auth/tokens.h"
#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;
static char issuer_a[128], issuer_auth_a[200], issuer_b[128], issuer_auth_b[200];

static void make_issuers(void)
{
	char id[64];
	kwt_tenant_create(&d, "tenant-a", &ta);
	kwt_tenant_create(&d, "tenant-b", &tb);
	kwt_api_key_create(&d, &ta, "app", "[\"auth:issue\"]", 100000, issuer_a, id);
	kwt_api_key_create(&d, &tb, "app", "[\"auth:issue\"]", 100000, issuer_b, id);
	snprintf(issuer_auth_a, sizeof(issuer_auth_a), "Authorization: Bearer %s\r\n", issuer_a);
	snprintf(issuer_auth_b, sizeof(issuer_auth_b), "Authorization: Bearer %s\r\n", issuer_b);
}

static void start_with(const char *const *env)
{
	kwt_daemon_start(&d, env);
	make_issuers();
}

static void start(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", NULL};
	start_with(env);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(tokens, .init = start, .fini = stop, .timeout = 180);

typedef struct session {
	char access[2048];
	char refresh[128];
	char sid[64];
	char jti[64];
} session;

static json_t *body_json(const kwt_resp *r)
{
	json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
	cr_assert_not_null(o, "not JSON: %s", r->body);
	return o;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	cr_assert_not_null(s, "no string %s", k);
	return s;
}

/* Reads the claims of an access token without verifying (test only). */
static json_t *peek_claims(const char *jwt)
{
	const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	cr_assert(d1 && d2);
	unsigned char buf[4096];
	size_t n = 0;
	cr_assert_eq(kw_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, sizeof(buf), &n), KW_OK);
	json_t *o = json_loadb((const char *)buf, n, 0, NULL);
	cr_assert_not_null(o);
	return o;
}

static void read_session(const kwt_resp *r, session *s)
{
	cr_assert_eq(r->status, 200, "%s", r->body);
	json_t *o = body_json(r);
	snprintf(s->access, sizeof(s->access), "%s", jstr(o, "access_token"));
	snprintf(s->refresh, sizeof(s->refresh), "%s", jstr(o, "refresh_token"));
	json_decref(o);
	json_t *c = peek_claims(s->access);
	snprintf(s->sid, sizeof(s->sid), "%s", jstr(c, "sid"));
	snprintf(s->jti, sizeof(s->jti), "%s", jstr(c, "jti"));
	json_decref(c);
}

static void login_as(const kwt_daemon *dd, const char *auth, const char *subject, const char *role,
                     session *s)
{
	char body[512];
	snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"%s\"}", subject, role);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, "POST", "/api/v1/auth/login", auth, body, &r), 0);
	read_session(&r, s);
	kwt_resp_free(&r);
}

static void login(const char *subject, session *s)
{
	login_as(&d, issuer_auth_a, subject, "track1", s);
}

static int with_bearer(const kwt_daemon *dd, const char *method, const char *path, const char *tok,
                       const char *body, kwt_resp *r)
{
	char h[4096];
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\nUser-Agent: kwtest/1.0\r\n", tok);
	return kwt_http_req(dd, method, path, h, body, r);
}

static int whoami_status(const kwt_daemon *dd, const char *tok, char *code, size_t cap)
{
	kwt_resp r;
	cr_assert_eq(with_bearer(dd, "GET", "/api/v1/auth/whoami", tok, NULL, &r), 0);
	int st = r.status;
	if (code) {
		code[0] = '\0';
		json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
		const char *e = json_string_value(json_object_get(o, "error"));
		snprintf(code, cap, "%s", e ? e : "");
		json_decref(o);
	}
	kwt_resp_free(&r);
	return st;
}

static int refresh(const char *rt, kwt_resp *r)
{
	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", rt);
	return kwt_http_post(&d, "/api/v1/auth/refresh", body, r);
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

Test(tokens, login_answers_tokens_and_pyjwt_verifies_with_our_jwks)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth_a,
	                          "{\"subject\":\"alice\",\"role\":\"track2\",\"tenant_id\":\"x\"}", &r),
	             0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	cr_assert_str_eq(jstr(o, "token_type"), "Bearer");
	cr_assert_str_eq(jstr(o, "role"), "track2");
	cr_assert(json_is_array(json_object_get(o, "permissions")));
	cr_assert_eq(strlen(jstr(o, "refresh_token")), 64);
	cr_assert_eq(strlen(jstr(o, "expires_at")), 20);
	cr_assert_eq(strlen(jstr(o, "refresh_expires_at")), 20);
	char token[2048];
	snprintf(token, sizeof(token), "%s", jstr(o, "access_token"));
	json_decref(o);
	kwt_resp_free(&r);

	json_t *c = peek_claims(token);
	cr_assert_str_eq(jstr(c, "sub"), "alice");
	cr_assert_str_eq(jstr(c, "tid"), ta.id);
	cr_assert_str_eq(jstr(c, "iss"), "keyward");
	cr_assert_str_eq(jstr(c, "aud"), "keyward");
	cr_assert_eq(strlen(jstr(c, "jti")), 32);
	json_int_t iat = json_integer_value(json_object_get(c, "iat"));
	cr_assert_eq(json_integer_value(json_object_get(c, "exp")) - iat, 8 * 3600);
	cr_assert_eq(json_integer_value(json_object_get(c, "nbf")), iat);
	json_decref(c);

	cr_assert_eq(kwt_http_get(&d, "/.well-known/jwks.json", &r), 0);
	cr_assert_eq(r.status, 200);
	char cc[128];
	cr_assert_not_null(kwt_resp_header(&r, "Cache-Control", cc, sizeof(cc)));
	cr_assert(strstr(cc, "max-age=300"), "%s", cc);
	char jwks_path[] = "/tmp/kwt_jwks_XXXXXX";
	int fd = mkstemp(jwks_path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, r.body, r.body_len), (ssize_t)r.body_len);
	close(fd);
	kwt_resp_free(&r);
	/* PyJWT (Debian's python3-jwt) with nothing but the published JWKS. */
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
	         "/usr/bin/python3 -c 'import jwt,json,sys; ks=json.load(open(\"%s\"))[\"keys\"]; "
	         "h=jwt.get_unverified_header(sys.argv[1]); k=[x for x in ks if x[\"kid\"]==h[\"kid\"]][0]; "
	         "assert k[\"alg\"]==\"ES256\" and k[\"use\"]==\"sig\" and k[\"crv\"]==\"P-256\"; "
	         "pk=jwt.PyJWK(k).key; c=jwt.decode(sys.argv[1], pk, algorithms=[\"ES256\"], "
	         "issuer=\"keyward\", audience=\"keyward\"); "
	         "print(c[\"sub\"], c[\"sid\"] != \"\")' '%s'",
	         jwks_path, token);
	FILE *p = popen(cmd, "r");
	char out[256] = "";
	cr_assert_not_null(fgets(out, sizeof(out), p));
	cr_assert_eq(pclose(p), 0);
	cr_assert_str_eq(out, "alice True\n");
	/* A changed payload fails PyJWT too. */
	token[strlen(token) - 10] = token[strlen(token) - 10] == 'A' ? 'B' : 'A';
	snprintf(cmd, sizeof(cmd),
	         "/usr/bin/python3 -c 'import jwt,json,sys; ks=json.load(open(\"%s\"))[\"keys\"]; "
	         "pk=jwt.PyJWK(ks[0]).key; jwt.decode(sys.argv[1], pk, algorithms=[\"ES256\"], "
	         "audience=\"keyward\")' '%s' "
	         "2>/dev/null",
	         jwks_path, token);
	cr_assert_neq(system(cmd), 0);
	unlink(jwks_path);
	cr_assert_eq(audit_count("action = 'auth.login' AND status = 'ok'"), 1);
}

Test(tokens, whoami_accepts_the_token_and_nothing_else)
{
	session s;
	login("bob", &s);
	kwt_resp r;
	cr_assert_eq(with_bearer(&d, "GET", "/api/v1/auth/whoami", s.access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	cr_assert_str_eq(jstr(o, "sub"), "bob");
	cr_assert_str_eq(jstr(o, "sid"), s.sid);
	json_decref(o);
	kwt_resp_free(&r);

	char code[64];
	/* The API key is not an access token. */
	cr_assert_eq(whoami_status(&d, issuer_a, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "invalid_token");
	/* No Authorization header. */
	cr_assert_eq(kwt_http_get(&d, "/api/v1/auth/whoami", &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_token");
	kwt_resp_free(&r);
	/* The refresh token is not an access token. */
	cr_assert_eq(whoami_status(&d, s.refresh, code, sizeof(code)), 401);
	/* Every single-character change of the token is refused. */
	size_t n = strlen(s.access);
	for (size_t i = 0; i < n; i += 7) {
		char t[2048];
		snprintf(t, sizeof(t), "%s", s.access);
		t[i] = t[i] == 'A' ? 'B' : (t[i] == '.' ? 'x' : 'A');
		cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 401, "change at %zu accepted", i);
	}
	/* The refusals left audit rows; the token itself appears in none. */
	cr_assert(audit_count("action = 'auth.token_refused'") >= (long long)(n / 7));
	char sql[4200];
	snprintf(sql, sizeof(sql),
	         "position('%.40s' in concat_ws(' ', actor, action, target, status, context::text))"
	         " > 0",
	         s.access + n - 40);
	cr_assert_eq(audit_count(sql), 0);
}

/* alg=none, HS256 keyed with the public key, and a kid that is not ours. */
Test(tokens, forged_tokens_are_refused)
{
	session s;
	login("mallory", &s);
	json_t *c = peek_claims(s.access);
	json_object_set_new(c, "sub", json_string("admin"));
	char *payload = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	char p64[2048], h64[256], tok[4096], code[64];
	kw_b64url_encode((const unsigned char *)payload, strlen(payload), p64);
	free(payload);

	const char *none = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
	kw_b64url_encode((const unsigned char *)none, strlen(none), h64);
	snprintf(tok, sizeof(tok), "%s.%s.", h64, p64);
	cr_assert_eq(whoami_status(&d, tok, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "invalid_token");

	/* HS256 with the JWKS public key bytes as the HMAC secret. */
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/.well-known/jwks.json", &r), 0);
	json_t *jwks = body_json(&r);
	kwt_resp_free(&r);
	json_t *k0 = json_array_get(json_object_get(jwks, "keys"), 0);
	char hs[256];
	snprintf(hs, sizeof(hs), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", jstr(k0, "kid"));
	kw_b64url_encode((const unsigned char *)hs, strlen(hs), h64);
	char input[3000];
	int il = snprintf(input, sizeof(input), "%s.%s", h64, p64);
	unsigned char mac[32];
	unsigned int ml = 0;
	const char *x = jstr(k0, "x");
	HMAC(EVP_sha256(), x, (int)strlen(x), (const unsigned char *)input, (size_t)il, mac, &ml);
	char m64[64];
	kw_b64url_encode(mac, ml, m64);
	snprintf(tok, sizeof(tok), "%s.%s", input, m64);
	cr_assert_eq(whoami_status(&d, tok, code, sizeof(code)), 401);

	/* ES256 header, our kid, the original signature over a changed payload. */
	const char *sig = strrchr(s.access, '.') + 1;
	const char *hdr_end = strchr(s.access, '.');
	snprintf(tok, sizeof(tok), "%.*s.%s.%s", (int)(hdr_end - s.access), s.access, p64, sig);
	cr_assert_eq(whoami_status(&d, tok, code, sizeof(code)), 401);
	json_decref(jwks);
	/* The genuine token still works: refusals did not poison the cache. */
	cr_assert_eq(whoami_status(&d, s.access, NULL, 0), 200);
}

/* Tokens minted in this process with the service's own key and code path,
 * so exp and nbf can be set freely. */
static char *mint_for(const char *tenant, int64_t iat, int64_t nbf, int64_t exp, const char *iss,
                      const char *aud)
{
	kw_hsm *hsm = kwt_hsm_open();
	kw_hsm_session *hs;
	cr_assert_eq(kw_hsm_session_open(hsm, &hs), KW_OK);
	kw_jwt_keyset *ks;
	cr_assert_eq(kw_jwt_keyset_load(hsm, &ks), KW_OK);
	kw_access_claims c;
	memset(&c, 0, sizeof(c));
	snprintf(c.sub, sizeof(c.sub), "minted");
	snprintf(c.tid, sizeof(c.tid), "%.36s", tenant);
	snprintf(c.role, sizeof(c.role), "track1");
	snprintf(c.permissions, sizeof(c.permissions), "[]");
	cr_assert_eq(kw_random_hex128(c.jti), KW_OK);
	cr_assert_eq(kw_random_uuid(c.sid), KW_OK);
	c.iat = iat;
	c.nbf = nbf;
	c.exp = exp;
	char *tok = NULL;
	cr_assert_eq(kw_access_token_sign(hs, hsm, ks, iss, aud, &c, &tok), KW_OK);
	kw_jwt_keyset_free(ks);
	kw_hsm_session_close(hs);
	kw_hsm_close(hsm);
	return tok;
}

static char *mint(const char *tenant, int64_t iat, int64_t nbf, int64_t exp, const char *iss)
{
	return mint_for(tenant, iat, nbf, exp, iss, "keyward");
}

Test(tokens, expired_and_not_yet_valid_tokens_are_refused_with_leeway)
{
	int64_t now = (int64_t)time(NULL);
	char code[64];
	char *t = mint(ta.id, now - 3600, now - 3600, now - 31, "keyward"); /* leeway is 30 s */
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "token_expired");
	free(t);
	t = mint(ta.id, now - 3600, now - 3600, now - 5, "keyward"); /* within the leeway */
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 200);
	free(t);
	t = mint(ta.id, now, now + 120, now + 3600, "keyward");
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "token_not_yet_valid");
	free(t);
	t = mint(ta.id, now, now, now + 3600, "someone-else");
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "invalid_token");
	free(t);
	t = mint(ta.id, now, now, now + 3600, "keyward");
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 200);
	free(t);
	/* Signed by this service's key, but for another audience. */
	t = mint_for(ta.id, now, now, now + 3600, "keyward", "another-service");
	cr_assert_eq(whoami_status(&d, t, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "invalid_token");
	free(t);
}

Test(tokens, login_needs_auth_issue_and_a_known_role)
{
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "reader", "[\"secrets:read\"]", 0, key, id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", auth,
	                          "{\"subject\":\"a\",\"role\":\"track1\"}", &r),
	             0);
	kwt_assert_json_error(&r, 403, "insufficient_scope");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth_a,
	                          "{\"subject\":\"a\",\"role\":\"root\"}", &r),
	             0);
	kwt_assert_json_error(&r, 400, "unknown_role");
	kwt_resp_free(&r);
	cr_assert_eq(audit_count("action = 'auth.login' AND status = '400 unknown_role'"), 1);
	const char *bad[] = {"{\"subject\":\"\",\"role\":\"track1\"}",
	                     "{\"role\":\"track1\"}",
	                     "{\"subject\":5,\"role\":\"track1\"}",
	                     "[1]",
	                     "{\"subject\":\"a\\u0001\",\"role\":\"track1\"}",
	                     "not json"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth_a, bad[i], &r), 0);
		kwt_assert_json_error(&r, 400, "invalid_request");
		kwt_resp_free(&r);
	}
	cr_assert_eq(whoami_status(&d, "x", NULL, 0), 401); /* still serving */
}

Test(tokens, refresh_rotates_and_reuse_revokes_the_family_and_its_access_tokens)
{
	session s0, s1;
	login("carol", &s0);
	kwt_resp r;
	cr_assert_eq(refresh(s0.refresh, &r), 0);
	read_session(&r, &s1);
	kwt_resp_free(&r);
	cr_assert_str_eq(s1.sid, s0.sid);
	cr_assert_str_neq(s1.refresh, s0.refresh);
	cr_assert_str_neq(s1.jti, s0.jti);
	cr_assert_eq(whoami_status(&d, s1.access, NULL, 0), 200);
	cr_assert_eq(whoami_status(&d, s0.access, NULL, 0), 200);

	/* The rotated token comes back: compromise. */
	cr_assert_eq(refresh(s0.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "token_family_compromised");
	kwt_resp_free(&r);
	char code[64];
	cr_assert_eq(whoami_status(&d, s1.access, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "token_revoked");
	cr_assert_eq(whoami_status(&d, s0.access, code, sizeof(code)), 401);
	cr_assert_eq(refresh(s1.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "token_family_compromised");
	kwt_resp_free(&r);
	char where[256];
	snprintf(where, sizeof(where),
	         "action = 'auth.refresh.reuse' AND target = '%s' AND context::text LIKE '%%%s%%'", s0.sid,
	         s0.sid);
	cr_assert_eq(audit_count(where), 1);
	/* Refresh tokens are stored only as HMACs. */
	char sql[512];
	snprintf(
	    sql, sizeof(sql),
	    "SELECT count(*) FROM refresh_tokens WHERE position(convert_to('%s', 'UTF8') in token_hmac) > 0 "
	    "OR encode(token_hmac, 'escape') LIKE '%%%.20s%%'",
	    s1.refresh, s1.refresh);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, "0");
	free(v);
	/* Another family of the same subject is untouched. */
	session other;
	login("carol", &other);
	cr_assert_eq(whoami_status(&d, other.access, NULL, 0), 200);
	/* Garbage refresh tokens. */
	cr_assert_eq(refresh("not-a-token", &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_refresh_token");
	kwt_resp_free(&r);
	char fake[65];
	snprintf(fake, sizeof(fake), "%.64s", other.refresh);
	fake[40] = fake[40] == 'A' ? 'B' : 'A';
	cr_assert_eq(refresh(fake, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_refresh_token");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/refresh", "{}", &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
}

typedef struct race_arg {
	const char *token;
	int status;
	char code[64];
} race_arg;

static void *race_one(void *p)
{
	race_arg *a = p;
	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", a->token);
	kwt_resp r;
	if (kwt_http_post(&d, "/api/v1/auth/refresh", body, &r) == 0) {
		a->status = r.status;
		json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
		snprintf(a->code, sizeof(a->code), "%s",
		         json_string_value(json_object_get(o, "error"))
		             ? json_string_value(json_object_get(o, "error"))
		             : "");
		json_decref(o);
		kwt_resp_free(&r);
	}
	return NULL;
}

Test(tokens, parallel_refreshes_of_one_token_let_exactly_one_through)
{
	for (int round = 0; round < 3; round++) {
		session s;
		char subject[32];
		snprintf(subject, sizeof(subject), "racer-%d", round);
		login(subject, &s);
		enum { N = 8 };
		pthread_t th[N];
		race_arg args[N];
		for (int i = 0; i < N; i++) {
			args[i] = (race_arg){.token = s.refresh, .status = -1};
			pthread_create(&th[i], NULL, race_one, &args[i]);
		}
		int ok = 0, compromised = 0;
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			ok += args[i].status == 200;
			compromised +=
			    args[i].status == 401 && strcmp(args[i].code, "token_family_compromised") == 0;
		}
		cr_assert_eq(ok, 1, "round %d: %d refreshes succeeded", round, ok);
		cr_assert_eq(compromised, N - 1, "round %d", round);
	}
}

Test(tokens, refresh_is_limited_per_subject)
{
	session s;
	login("dave", &s);
	int status = 0;
	for (int i = 0; i < 6; i++) {
		kwt_resp r;
		cr_assert_eq(refresh(s.refresh, &r), 0);
		status = r.status;
		if (r.status == 200) {
			session n;
			read_session(&r, &n);
			s = n;
		} else {
			kwt_assert_json_error(&r, 429, "rate_limited");
			char ra[16];
			cr_assert_not_null(kwt_resp_header(&r, "Retry-After", ra, sizeof(ra)));
			cr_assert_eq(i, 5, "refused after %d refreshes", i);
		}
		kwt_resp_free(&r);
	}
	cr_assert_eq(status, 429);
	/* The refused refresh changed nothing: the token is still unused. */
	kwt_resp r;
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM refresh_tokens WHERE family_id = '%s' AND used_at IS NULL", s.sid);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, "1");
	free(v);
	(void)r;
}

Test(tokens, logout_is_idempotent_and_kills_the_family)
{
	session s;
	login("erin", &s);
	kwt_resp r;
	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/logout", s.access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_str_eq(r.body, "{\"status\":\"ok\"}");
	kwt_resp_free(&r);
	char code[64];
	cr_assert_eq(whoami_status(&d, s.access, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "token_revoked");
	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/logout", s.access, "{}", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(refresh(s.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "refresh_token_revoked");
	kwt_resp_free(&r);
	cr_assert_eq(audit_count("action = 'auth.logout' AND status = 'ok'"), 2);
}

Test(tokens, revoke_by_refresh_token_and_revoke_all)
{
	session a, b, c;
	login("frank", &a);
	login("frank", &b);
	login("frank", &c);
	login_as(&d, issuer_auth_b, "frank", "track1", &(session){0}); /* another tenant's frank */
	kwt_resp r;
	cr_assert_eq(with_bearer(&d, "GET", "/api/v1/auth/sessions", a.access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	json_t *items = json_object_get(o, "items");
	cr_assert_eq(json_array_size(items), 3);
	json_t *it = json_array_get(items, 0);
	cr_assert_str_eq(jstr(it, "user_agent"), "kwtest/1"); /* the login request's */
	cr_assert_str_eq(jstr(it, "ip"), "127.0.0.1");
	cr_assert_not_null(json_object_get(it, "absolute_expires_at"));
	cr_assert(strstr(r.body, a.refresh) == NULL && strstr(r.body, "token_hmac") == NULL);
	json_decref(o);
	kwt_resp_free(&r);

	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", b.refresh);
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/revoke", body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, b.access, NULL, 0), 401);
	cr_assert_eq(whoami_status(&d, a.access, NULL, 0), 200);
	/* Unknown and malformed tokens: 200 as RFC 7009 says. */
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/revoke", "{\"refresh_token\":\"nope\"}", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);

	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/revoke-all", a.access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	o = body_json(&r);
	cr_assert_eq(json_integer_value(json_object_get(o, "revoked")), 2);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, a.access, NULL, 0), 401);
	cr_assert_eq(whoami_status(&d, c.access, NULL, 0), 401);
	cr_assert_eq(refresh(c.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "refresh_token_revoked");
	kwt_resp_free(&r);
	/* Tenant b's frank still has his session. */
	char *v = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM refresh_families WHERE revoked_at IS NULL");
	cr_assert_str_eq(v, "1");
	free(v);
	cr_assert_eq(audit_count("action = 'auth.revoke_all'"), 1);
	cr_assert_eq(audit_count("action = 'auth.revoke' AND status = 'ok'"), 1);
}

static json_t *introspect(const char *auth, const char *token, int want_status)
{
	char body[4200];
	snprintf(body, sizeof(body), "{\"token\":\"%s\"}", token);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/introspect", auth, body, &r), 0);
	cr_assert_eq(r.status, want_status, "%s", r.body);
	json_t *o = body_json(&r);
	kwt_resp_free(&r);
	return o;
}

Test(tokens, introspection_per_rfc7662_within_the_tenant)
{
	session s;
	login("gina", &s);
	json_t *o = introspect(issuer_auth_a, s.access, 200);
	cr_assert(json_is_true(json_object_get(o, "active")));
	cr_assert_str_eq(jstr(o, "token_type"), "access_token");
	cr_assert_str_eq(jstr(o, "sub"), "gina");
	cr_assert_str_eq(jstr(o, "sid"), s.sid);
	json_decref(o);
	o = introspect(issuer_auth_a, s.refresh, 200);
	cr_assert(json_is_true(json_object_get(o, "active")));
	cr_assert_str_eq(jstr(o, "token_type"), "refresh_token");
	json_decref(o);
	/* Another tenant's caller learns nothing. */
	o = introspect(issuer_auth_b, s.access, 200);
	cr_assert(json_is_false(json_object_get(o, "active")));
	cr_assert_eq(json_object_size(o), 1);
	json_decref(o);
	o = introspect(issuer_auth_b, s.refresh, 200);
	cr_assert(json_is_false(json_object_get(o, "active")));
	json_decref(o);
	o = introspect(issuer_auth_a, "garbage", 200);
	cr_assert(json_is_false(json_object_get(o, "active")));
	json_decref(o);
	/* After a refresh the old refresh token is inactive; after logout the
	 * access token is. */
	kwt_resp r;
	cr_assert_eq(refresh(s.refresh, &r), 0);
	session s2;
	read_session(&r, &s2);
	kwt_resp_free(&r);
	o = introspect(issuer_auth_a, s.refresh, 200);
	cr_assert(json_is_false(json_object_get(o, "active")));
	json_decref(o);
	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/logout", s2.access, NULL, &r), 0);
	kwt_resp_free(&r);
	o = introspect(issuer_auth_a, s2.access, 200);
	cr_assert(json_is_false(json_object_get(o, "active")));
	json_decref(o);
	/* Scope: neither auth:issue nor admin. */
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "reader", "[\"secrets:read\"]", 0, key, id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	o = introspect(auth, s.access, 403);
	json_decref(o);
}

Test(tokens, revocation_on_one_instance_holds_on_another_within_a_second)
{
	kwt_daemon d2;
	memset(&d2, 0, sizeof(d2));
	char dbenv[600];
	snprintf(dbenv, sizeof(dbenv), "KEYWARD_DB_CONNINFO=%s", d.db.app);
	const char *env2[] = {dbenv, NULL};
	kwt_daemon_start(&d2, env2);
	session s;
	login("henry", &s);
	cr_assert_eq(whoami_status(&d2, s.access, NULL, 0), 200); /* now cached as valid on d2 */
	kwt_resp r;
	struct timespec t0, t1;
	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/logout", s.access, NULL, &r), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	int st = 200;
	double waited = 0;
	while (st == 200 && waited < 1.0) {
		st = whoami_status(&d2, s.access, NULL, 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (st == 200)
			usleep(10000);
	}
	cr_assert_eq(st, 401, "instance 2 still accepted the token after %.3f s", waited);
	cr_log_info("revocation seen by the second instance after %.3f s", waited);
	/* And a family revoked on d2 (reuse) holds on d. */
	session a, a1;
	login("ivy", &a);
	cr_assert_eq(whoami_status(&d, a.access, NULL, 0), 200);
	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", a.refresh);
	cr_assert_eq(kwt_http_post(&d2, "/api/v1/auth/refresh", body, &r), 0);
	read_session(&r, &a1);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d2, "/api/v1/auth/refresh", body, &r), 0);
	kwt_assert_json_error(&r, 401, "token_family_compromised");
	kwt_resp_free(&r);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	st = 200;
	waited = 0;
	while (st == 200 && waited < 1.0) {
		st = whoami_status(&d, a1.access, NULL, 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (st == 200)
			usleep(10000);
	}
	cr_assert_eq(st, 401, "instance 1 still accepted the family after %.3f s", waited);
	cr_assert_eq(kwt_daemon_stop(&d2), 0);
}

Test(tokens, missing_revocation_table_answers_503_never_valid)
{
	session s;
	login("jack", &s);
	cr_assert_eq(whoami_status(&d, s.access, NULL, 0), 200);
	char *v = kwt_db_admin_sql(&d.db, "DROP TABLE jwt_revocations CASCADE");
	free(v);
	int st = 200;
	char code[64] = "";
	for (int i = 0; i < 400 && st == 200; i++) {
		st = whoami_status(&d, s.access, code, sizeof(code));
		if (st == 200)
			usleep(10000);
	}
	cr_assert_eq(st, 503, "got %d %s", st, code);
	cr_assert_str_eq(code, "revocation_unavailable");
	kwt_resp rz;
	cr_assert_eq(kwt_http_get(&d, "/readyz", &rz), 0);
	cr_assert_eq(rz.status, 503, "%s", rz.body);
	cr_assert(strstr(rz.body, "\"revocations\":\"stale\""), "%s", rz.body);
	kwt_resp_free(&rz);
	/* It stays closed: a fresh login's token is not "valid" either. */
	session s2;
	login("jack", &s2);
	cr_assert_eq(whoami_status(&d, s2.access, code, sizeof(code)), 503);
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(tokens, no_token_reaches_the_log_or_the_audit_trail)
{
	session s, s1;
	login("kate", &s);
	kwt_resp r;
	cr_assert_eq(refresh(s.refresh, &r), 0);
	read_session(&r, &s1);
	kwt_resp_free(&r);
	cr_assert_eq(refresh(s.refresh, &r), 0); /* reuse: logged as a warning */
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, s1.access, NULL, 0), 401);
	char *log = kwt_daemon_log(&d);
	const char *secrets[] = {s.refresh, s1.refresh, s.access + strlen(s.access) - 40,
	                         s1.access + strlen(s1.access) - 40};
	for (size_t i = 0; i < 4; i++) {
		cr_assert(strstr(log, secrets[i]) == NULL, "secret %zu in the log", i);
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "position('%s' in concat_ws(' ', actor, action, target, status, user_agent, "
		         "context::text)) > 0",
		         secrets[i]);
		cr_assert_eq(audit_count(sql), 0, "secret %zu in audit_log", i);
	}
	cr_assert(strstr(log, "family") != NULL, "the reuse warning names the family");
	free(log);
}

/* Every kind of ill-formed UTF-8 a client can put in a header value. */
static const char *const bad_utf8[] = {
    "caf\xe9 (Latin-1)",
    "lone \x80 continuation",
    "overlong \xc0\xaf slash",
    "overlong \xe0\x80\xaf three",
    "overlong \xf0\x80\x80\xaf four",
    "surrogate \xed\xa0\x80 half",
    "above \xf4\x90\x80\x80 U+10FFFF",
    "lead \xf5\x80\x80\x80 F5",
    "bytes \xff\xfe FF FE",
    "truncated at the end \xe2\x82",
    "truncated \xf0\x9f\x98 then text",
    "C1 \xc1\xbf overlong",
};

static int with_ua(const char *auth_line, const char *ua, const char *body, kwt_resp *r)
{
	char h[1024];
	snprintf(h, sizeof(h), "%sUser-Agent: %s\r\n", auth_line, ua);
	return kwt_http_req(&d, "POST", "/api/v1/auth/login", h, body, r);
}

static void audit_verifies(void)
{
	char bin[600], cmd[3000];
	kwt_bin_sh("keywardctl", bin, sizeof(bin));
	snprintf(cmd, sizeof(cmd), "KEYWARD_DB_ADMIN_CONNINFO='%s' %s audit verify >/dev/null", d.db.admin,
	         bin);
	cr_assert_eq(system(cmd), 0, "audit verify failed");
}

Test(tokens, request_bytes_never_break_an_audit_row_or_a_session)
{
	size_t n = sizeof(bad_utf8) / sizeof(bad_utf8[0]);
	long long refused0 = audit_count("status LIKE '401%' AND user_agent LIKE '%' || chr(65533) || '%'");
	long long ok0 = audit_count(
	    "action = 'auth.login' AND status = 'ok' AND user_agent LIKE '%' || chr(65533) || '%'");
	for (size_t i = 0; i < n; i++) {
		kwt_resp r;
		/* Accepted: the session row and its audit row both take the header. */
		cr_assert_eq(
		    with_ua(issuer_auth_a, bad_utf8[i], "{\"subject\":\"ua-probe\",\"role\":\"track1\"}", &r),
		    0);
		cr_assert_eq(r.status, 200, "%s: %d %s", bad_utf8[i], r.status, r.body);
		kwt_resp_free(&r);
		/* Refused: the refusal is audited all the same. */
		cr_assert_eq(
		    with_ua("Authorization: Bearer kw_live_0000000000000000000000000000000000000000\r\n",
		            bad_utf8[i], "{\"subject\":\"ua-probe\",\"role\":\"track1\"}", &r),
		    0);
		cr_assert_eq(r.status, 401, "%s: %d %s", bad_utf8[i], r.status, r.body);
		kwt_resp_free(&r);
	}
	/* Each row holds the header with U+FFFD where the bytes were ill-formed. */
	cr_assert_eq(
	    audit_count(
	        "action = 'auth.login' AND status = 'ok' AND user_agent LIKE '%' || chr(65533) || '%'") -
	        ok0,
	    (long long)n);
	const char *refused = "status LIKE '401%' AND user_agent LIKE '%' || chr(65533) || '%'";
	cr_assert_geq(audit_count(refused) - refused0, (long long)n);
	cr_assert_eq(
	    audit_count("action = 'auth.login' AND user_agent = 'caf' || chr(65533) || ' (Latin-1)'"), 1);

	/* A long user agent is cut by characters, never inside one. */
	char ua[1200] = "";
	for (int i = 0; i < 300; i++)
		strcat(ua, "\xc3\xa9");
	kwt_resp r;
	cr_assert_eq(with_ua(issuer_auth_a, ua, "{\"subject\":\"ua-long\",\"role\":\"track1\"}", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(
	    audit_count("action = 'auth.login' AND target IS NOT NULL AND char_length(user_agent) = 256 AND "
	                "user_agent = repeat(chr(233), 256)"),
	    1);

	/* A subject of 255 bytes whose 200th byte falls inside a character
	 * signs in, logs out and is audited whole. */
	char subject[300] = "a", body[600];
	for (int i = 0; i < 127; i++)
		strcat(subject, "\xc3\xa9");
	snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"track1\"}", subject);
	session s;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth_a, body, &r), 0);
	read_session(&r, &s);
	kwt_resp_free(&r);
	cr_assert_eq(with_bearer(&d, "POST", "/api/v1/auth/logout", s.access, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(audit_count("action = 'auth.logout' AND actor = 'user:a' || repeat(chr(233), 127)"), 1);
	/* A subject whose bytes are not UTF-8 is not JSON: a 400, audited as
	 * nothing worse. */
	for (size_t i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"track1\"}", bad_utf8[i]);
		cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/login", issuer_auth_a, body, &r), 0);
		kwt_assert_json_error(&r, 400, "invalid_request");
		kwt_resp_free(&r);
	}
	audit_verifies();
}

/* A delegated login's session ends with the API key that started it. */
Test(tokens, revoking_an_api_key_ends_the_sessions_it_minted)
{
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "delegate", "[\"auth:issue\"]", 100000, key, id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	session minted, other;
	login_as(&d, auth, "delegated-user", "track1", &minted);
	login_as(&d, issuer_auth_a, "delegated-user", "track1", &other);
	char path[128];
	snprintf(path, sizeof(path), "/api/v1/api-keys/%s", id);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "DELETE", path, ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	char code[64];
	cr_assert_eq(whoami_status(&d, minted.access, code, sizeof(code)), 401);
	cr_assert_str_eq(code, "token_revoked");
	cr_assert_eq(refresh(minted.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "refresh_token_revoked");
	kwt_resp_free(&r);
	/* The same subject's session from another key lives on. */
	cr_assert_eq(whoami_status(&d, other.access, NULL, 0), 200);
	cr_assert_eq(refresh(other.refresh, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	char where[256];
	snprintf(where, sizeof(where),
	         "action = 'api_key.revoke' AND target = '%s' AND context->>'sessions_revoked' = '1'", id);
	cr_assert_eq(audit_count(where), 1);
}

Test(tokens, an_admin_revokes_every_session_of_a_subject)
{
	session a, b, c;
	login("ghost", &a);
	login("ghost", &b);
	login("not-ghost", &c);
	kwt_resp r;
	/* Not with an auth:issue key. */
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/sessions/revoke", issuer_auth_a,
	                          "{\"subject\":\"ghost\"}", &r),
	             0);
	kwt_assert_json_error(&r, 403, "insufficient_scope");
	kwt_resp_free(&r);
	cr_assert_eq(
	    kwt_http_req(&d, "POST", "/api/v1/auth/sessions/revoke", ta.auth, "{\"subject\":\"\"}", &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
	cr_assert_eq(
	    kwt_http_req(&d, "POST", "/api/v1/auth/sessions/revoke", ta.auth, "{\"subject\":\"ghost\"}", &r),
	    0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_not_null(strstr(r.body, "\"revoked\":2"), "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, a.access, NULL, 0), 401);
	cr_assert_eq(whoami_status(&d, b.access, NULL, 0), 401);
	cr_assert_eq(whoami_status(&d, c.access, NULL, 0), 200);
	/* Another tenant's admin reaches nothing of tenant A. */
	session e;
	login("ghost", &e);
	cr_assert_eq(
	    kwt_http_req(&d, "POST", "/api/v1/auth/sessions/revoke", tb.auth, "{\"subject\":\"ghost\"}", &r),
	    0);
	cr_assert_not_null(strstr(r.body, "\"revoked\":0"), "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, e.access, NULL, 0), 200);
	cr_assert_eq(audit_count("action = 'auth.sessions.revoke' AND context->>'families' = '2'"), 1);
}

Test(tokens, a_rotated_token_replayed_after_its_own_expiry_is_still_a_reuse)
{
	session s0, s1;
	login("late", &s0);
	kwt_resp r;
	cr_assert_eq(refresh(s0.refresh, &r), 0);
	read_session(&r, &s1);
	kwt_resp_free(&r);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "UPDATE refresh_tokens SET sliding_expires_at = now() - interval '1 second' WHERE family_id "
	         "= '%s' "
	         "AND used_at IS NOT NULL",
	         s0.sid);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(refresh(s0.refresh, &r), 0);
	kwt_assert_json_error(&r, 401, "token_family_compromised");
	kwt_resp_free(&r);
	cr_assert_eq(whoami_status(&d, s1.access, NULL, 0), 401);
}

Test(tokens, malformed_and_oversize_bodies_and_credentials_get_json_4xx)
{
	kwt_resp r;
	const char *bad[] = {
	    "", "not json", "[]", "{\"token\":5}", "{\"token\":\"\"}", "{\"token\":\"a\\u0000b\"}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/introspect", issuer_auth_a, bad[i], &r),
		             0);
		kwt_assert_json_error(&r, 400, "invalid_request");
		kwt_resp_free(&r);
	}
	/* A token longer than any JWT we accept. */
	char *big = malloc(20000);
	cr_assert_not_null(big);
	int n = snprintf(big, 20000, "{\"token\":\"");
	memset(big + n, 'A', 10000);
	snprintf(big + n + 10000, 20000 - (size_t)n - 10000, "\"}");
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/introspect", issuer_auth_a, big, &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
	/* An oversize bearer token on a JWT route: 401, not a crash. */
	char *hdr = malloc(20000);
	cr_assert_not_null(hdr);
	n = snprintf(hdr, 20000, "Authorization: Bearer ");
	memset(hdr + n, 'a', 12000);
	snprintf(hdr + n + 12000, 20000 - (size_t)n - 12000, "\r\n");
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/logout", hdr, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_token");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/auth/logout", NULL, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_token");
	kwt_resp_free(&r);
	/* Two Authorization headers. */
	char two[256];
	snprintf(two, sizeof(two), "Authorization: Bearer x\r\nAuthorization: Bearer y\r\n");
	cr_assert_eq(kwt_http_req(&d, "GET", "/api/v1/auth/sessions", two, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_token");
	kwt_resp_free(&r);
	/* Oversize refresh token and a non-string one. */
	memset(big, 0, 20000);
	n = snprintf(big, 20000, "{\"refresh_token\":\"");
	memset(big + n, 'A', 5000);
	snprintf(big + n + 5000, 20000 - (size_t)n - 5000, "\"}");
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/refresh", big, &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d, "/api/v1/auth/revoke", "{\"refresh_token\":[1]}", &r), 0);
	kwt_assert_json_error(&r, 400, "invalid_request");
	kwt_resp_free(&r);
	free(big);
	free(hdr);
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0); /* still serving */
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

/* A daemon whose address budget is small enough to count. */
static void start_tight(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=8",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", NULL};
	kwt_daemon_start(&d, env);
}

TestSuite(tokens_budget, .init = start_tight, .fini = stop, .timeout = 120);

/* whoami runs on the I/O thread; a refused token moves to a worker to be
 * audited. The address's budget is spent once for such a request, not once
 * on each thread: 8 a minute means 8 refusals with 401, then 429. */
Test(tokens_budget, a_refused_token_spends_the_address_budget_once)
{
	kwt_resp r;
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(kwt_http_get(&d, "/api/v1/auth/whoami", &r), 0);
		cr_assert_eq(r.status, 401, "request %d answered %d: %s", i + 1, r.status, r.body);
		kwt_resp_free(&r);
	}
	cr_assert_eq(kwt_http_get(&d, "/api/v1/auth/whoami", &r), 0);
	kwt_assert_json_error(&r, 429, "rate_limited");
	kwt_resp_free(&r);
}
