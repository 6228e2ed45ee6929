/* Black-box: tenants, API keys, scopes, tenant isolation, rate limits and
 * their audit rows — against the real keywardd, token and database. Each
 * test gets its own daemon (fresh buckets) and database with two tenants. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;

static void start_with(const char *const *env)
{
	kwt_daemon_start(&d, env);
	kwt_tenant_create(&d, "tenant-a", &ta);
	kwt_tenant_create(&d, "tenant-b", &tb);
}

static void start(void)
{
	start_with(NULL);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(api_keys, .init = start, .fini = stop, .timeout = 120);

static int req(const char *method, const char *path, const char *auth, const char *body, kwt_resp *r)
{
	return kwt_http_req(&d, method, path, auth, body, r);
}

static unsigned long long metric(const char *name)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/metrics", &r), 0);
	const char *p = strstr(r.body, name);
	cr_assert_not_null(p, "no metric %s", name);
	unsigned long long v = strtoull(p + strlen(name) + 1, NULL, 10);
	kwt_resp_free(&r);
	return v;
}

static void bearer(char *out, size_t cap, const char *key)
{
	snprintf(out, cap, "Authorization: Bearer %s\r\n", key);
}

Test(api_keys, create_shows_key_once_and_list_has_no_secret)
{
	char key[128], id[64];
	kwt_api_key_create(&d, &ta, "svc", "[\"auth:issue\",\"secrets:read\"]", 0, key, id);
	cr_assert_eq(strlen(key), 65);
	cr_assert(strncmp(key, "kw_", 3) == 0 && key[15] == '_');
	kwt_resp r;
	cr_assert_eq(req("GET", "/api/v1/api-keys", ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_null(strstr(r.body, key + 16), "the secret part appears in the list");
	cr_assert_null(strstr(r.body, ta.admin_key + 16), "the admin key appears in the list");
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	json_t *items = json_object_get(o, "items");
	cr_assert_eq(json_array_size(items), 2);
	size_t i;
	json_t *it;
	bool found = false;
	json_array_foreach(items, i, it)
	{
		cr_assert_null(json_object_get(it, "key"));
		cr_assert_not_null(json_object_get(it, "prefix"));
		cr_assert_not_null(json_object_get(it, "created_at"));
		if (strcmp(json_string_value(json_object_get(it, "id")), id) == 0) {
			found = true;
			cr_assert_eq(json_array_size(json_object_get(it, "scopes")), 2);
		}
	}
	cr_assert(found);
	json_decref(o);
	kwt_resp_free(&r);
	/* Neither key is anywhere in the database, nor in the daemon's log. */
	char sql[1024];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM (SELECT row_to_json(t)::text AS j FROM api_keys t UNION ALL "
	         "SELECT row_to_json(a)::text FROM audit_log a UNION ALL SELECT row_to_json(p)::text FROM "
	         "api_key_prefixes p) x WHERE j LIKE '%%%s%%' OR j LIKE '%%%s%%'",
	         key + 16, ta.admin_key + 16);
	char *n = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(n, "0");
	free(n);
	char *log = kwt_daemon_log(&d);
	cr_assert_null(strstr(log, key + 16));
	free(log);
}

Test(api_keys, revoked_key_is_refused_at_once)
{
	char key[128], id[64], auth[200], path[128];
	kwt_api_key_create(&d, &ta, "doomed", "[\"admin\"]", 0, key, id);
	bearer(auth, sizeof(auth), key);
	kwt_resp r;
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	snprintf(path, sizeof(path), "/api/v1/api-keys/%s", id);
	cr_assert_eq(req("DELETE", path, ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert(strstr(r.body, "\"revoked_at\":\"20"), "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_credentials");
	kwt_resp_free(&r);
	/* Revoking again is harmless. */
	cr_assert_eq(req("DELETE", path, ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(api_keys, revocation_reaches_another_instance_within_a_second)
{
	char key[128], id[64], auth[200], path[128], ci[1200], ai[1200];
	kwt_api_key_create(&d, &ta, "shared", "[\"admin\"]", 0, key, id);
	bearer(auth, sizeof(auth), key);
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", d.db.app);
	snprintf(ai, sizeof(ai), "KEYWARD_DB_ADMIN_CONNINFO=%s", d.db.admin);
	const char *env[] = {ci, ai, NULL};
	kwt_daemon d2;
	kwt_daemon_start(&d2, env);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d2, "GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	snprintf(path, sizeof(path), "/api/v1/api-keys/%s", id);
	cr_assert_eq(req("DELETE", path, ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	usleep(1000 * 1000);
	cr_assert_eq(kwt_http_req(&d2, "GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 401, "invalid_credentials");
	kwt_resp_free(&r);
	kwt_daemon_stop(&d2);
}

Test(api_keys, bad_checksum_never_reaches_the_database)
{
	char bad[128], auth[200];
	snprintf(bad, sizeof(bad), "%s", ta.admin_key);
	bad[64] = bad[64] == 'A' ? 'B' : 'A';
	bearer(auth, sizeof(auth), bad);
	unsigned long long before = metric("keyward_auth_key_lookups_total");
	kwt_resp r;
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
		kwt_assert_json_error(&r, 401, "invalid_credentials");
		kwt_resp_free(&r);
	}
	cr_assert_eq(metric("keyward_auth_key_lookups_total"), before);
}

Test(api_keys, other_tenants_objects_answer_404)
{
	char key[128], id[64], path[128];
	kwt_api_key_create(&d, &ta, "a-key", "[\"secrets:read\"]", 0, key, id);
	snprintf(path, sizeof(path), "/api/v1/api-keys/%s", id);
	kwt_resp r, r2;
	cr_assert_eq(req("DELETE", path, tb.auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 404, "not_found");
	/* Indistinguishable from an id that does not exist at all. */
	cr_assert_eq(
	    req("DELETE", "/api/v1/api-keys/00000000-0000-4000-8000-000000000000", tb.auth, NULL, &r2), 0);
	kwt_assert_json_error(&r2, 404, "not_found");
	kwt_resp_free(&r2);
	cr_assert_eq(req("DELETE", "/api/v1/api-keys/not-a-uuid", tb.auth, NULL, &r2), 0);
	kwt_assert_json_error(&r2, 404, "not_found");
	kwt_resp_free(&r2);
	kwt_resp_free(&r);
	/* B's list does not show A's key; A's key still works for A. */
	cr_assert_eq(req("GET", "/api/v1/api-keys", tb.auth, NULL, &r), 0);
	cr_assert_null(strstr(r.body, id));
	kwt_resp_free(&r);
	char *rev = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL");
	cr_assert_str_eq(rev, "0");
	free(rev);
	/* Each refused attempt (A's id, an unknown id, a malformed id) left an
	 * audit row under B. */
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE tenant_id = '%s' AND action = 'api_key.revoke' AND "
	         "status = '404 "
	         "not_found'",
	         tb.id);
	kwt_audit_settle(&d);
	char *n = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(n, "3");
	free(n);
}

Test(api_keys, scopes_are_enforced)
{
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "issuer", "[\"auth:issue\"]", 0, key, id);
	bearer(auth, sizeof(auth), key);
	kwt_resp r;
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 403, "insufficient_scope");
	kwt_resp_free(&r);
	cr_assert_eq(req("POST", "/api/v1/api-keys", auth, "{\"name\":\"x\",\"scopes\":[\"admin\"]}", &r), 0);
	kwt_assert_json_error(&r, 403, "insufficient_scope");
	kwt_resp_free(&r);
	kwt_audit_settle(&d);
	char *n =
	    kwt_db_admin_sql(&d.db, "SELECT count(*) FROM audit_log WHERE status = '403 insufficient_scope'");
	cr_assert_str_eq(n, "2");
	free(n);
}

Test(api_keys, per_key_rate_limit_and_recovery)
{
	char key[128], id[64], auth[200], v[64];
	kwt_api_key_create(&d, &ta, "limited", "[\"admin\"]", 60, key, id);
	bearer(auth, sizeof(auth), key);
	kwt_resp r;
	for (int i = 0; i < 60; i++) {
		cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
		cr_assert_eq(r.status, 200, "request %d: %d", i, r.status);
		kwt_resp_free(&r);
	}
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 429, "rate_limited");
	cr_assert_str_eq(kwt_resp_header(&r, "RateLimit-Limit", v, sizeof(v)), "60");
	cr_assert_str_eq(kwt_resp_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
	cr_assert_not_null(kwt_resp_header(&r, "RateLimit-Reset", v, sizeof(v)));
	cr_assert_str_eq(kwt_resp_header(&r, "Retry-After", v, sizeof(v)), "1");
	kwt_resp_free(&r);
	/* Another key of the same tenant is not affected. */
	cr_assert_eq(req("GET", "/api/v1/api-keys", ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	usleep(1100 * 1000);
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "no recovery after the window: %d", r.status);
	kwt_resp_free(&r);
	kwt_audit_settle(&d);
	char *n = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM audit_log WHERE status = '429 rate_limited'");
	cr_assert_str_eq(n, "1");
	free(n);
}

Test(api_keys, failed_authentications_are_throttled_per_ip)
{
	kwt_resp r;
	int refused = 0, throttled = 0;
	for (int i = 0; i < 25; i++) {
		cr_assert_eq(req("GET", "/api/v1/api-keys", "Authorization: Bearer kw_guess\r\n", NULL, &r),
		             0);
		refused += r.status == 401;
		throttled += r.status == 429;
		kwt_resp_free(&r);
	}
	cr_assert_eq(refused, 20);
	cr_assert_eq(throttled, 5);
	/* Even the right key is throttled from this address now. */
	cr_assert_eq(req("GET", "/api/v1/api-keys", ta.auth, NULL, &r), 0);
	kwt_assert_json_error(&r, 429, "rate_limited");
	kwt_resp_free(&r);
}

Test(api_keys, malformed_authorization_headers)
{
	char *huge = malloc(20000);
	memcpy(huge, "Authorization: Bearer ", 22);
	memset(huge + 22, 'k', 17000);
	memcpy(huge + 22 + 17000, "\r\n", 3);
	char two[400];
	snprintf(two, sizeof(two), "%s%s", ta.auth, tb.auth);
	const char *cases[] = {
	    "",
	    "Authorization: \r\n",
	    "Authorization: Bearer\r\n",
	    "Authorization: Basic dXNlcjpwYXNz\r\n",
	    "Authorization: Bearer \x80\x81\xfe\xff binary\r\n",
	    "Authorization: Bearer kw_\r\n",
	    huge,
	    two,
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kwt_resp r;
		cr_assert_eq(req("GET", "/api/v1/api-keys", cases[i], NULL, &r), 0, "case %zu: no answer", i);
		kwt_assert_json_error(&r, 401, "invalid_credentials");
		kwt_resp_free(&r);
	}
	free(huge);
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	cr_assert_eq(req("GET", "/api/v1/api-keys", ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(api_keys, create_rejects_bad_input)
{
	const char *bodies[] = {
	    "",
	    "not json",
	    "[]",
	    "{\"name\":\"\",\"scopes\":[\"admin\"]}",
	    "{\"name\":5,\"scopes\":[\"admin\"]}",
	    "{\"name\":\"x\"}",
	    "{\"name\":\"x\",\"scopes\":[]}",
	    "{\"name\":\"x\",\"scopes\":[\"root\"]}",
	    "{\"name\":\"x\",\"scopes\":[7]}",
	    "{\"name\":\"x\",\"scopes\":\"admin\"}",
	    "{\"name\":\"x\",\"scopes\":[\"admin\"],\"rate_limit_per_minute\":0}",
	    "{\"name\":\"x\",\"scopes\":[\"admin\"],\"rate_limit_per_minute\":\"5\"}",
	    "{\"name\":\"x\",\"scopes\":[\"admin\"],\"name\":\"y\"}",
	    "{\"name\":\"a\\u0000b\",\"scopes\":[\"admin\"]}",
	    "{\"name\":"
	    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",\"scopes\":[\"admin\"]}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		kwt_resp r;
		cr_assert_eq(req("POST", "/api/v1/api-keys", ta.auth, bodies[i], &r), 0);
		kwt_assert_json_error(&r, 400, "invalid_request");
		kwt_resp_free(&r);
	}
	/* Nothing was half-written; a tenant_id in the body is ignored. */
	char *n = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM api_keys");
	cr_assert_str_eq(n, "2");
	free(n);
	char body[256], key[128], id[64];
	snprintf(body, sizeof(body), "{\"name\":\"sneaky\",\"scopes\":[\"admin\"],\"tenant_id\":\"%s\"}",
	         tb.id);
	kwt_resp r;
	cr_assert_eq(req("POST", "/api/v1/api-keys", ta.auth, body, &r), 0);
	cr_assert_eq(r.status, 201);
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(o, "id")));
	snprintf(key, sizeof(key), "%s", json_string_value(json_object_get(o, "key")));
	json_decref(o);
	kwt_resp_free(&r);
	char sql[200];
	snprintf(sql, sizeof(sql), "SELECT tenant_id FROM api_keys WHERE id = '%s'", id);
	char *t = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(t, ta.id);
	free(t);
}

Test(api_keys, last_used_at_and_audit_chain)
{
	char key[128], id[64], auth[200];
	kwt_api_key_create(&d, &ta, "user", "[\"admin\"]", 0, key, id);
	bearer(auth, sizeof(auth), key);
	kwt_resp r;
	cr_assert_eq(req("GET", "/api/v1/api-keys", auth, NULL, &r), 0);
	kwt_resp_free(&r);
	char sql[200];
	snprintf(sql, sizeof(sql), "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = '%s'", id);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, "t");
	free(v);
	char *n = kwt_db_admin_sql(&d.db,
	                           "SELECT count(*) FROM audit_log WHERE action = 'api_key.create' AND "
	                           "user_agent = 'kwtest/1' AND ip = '127.0.0.1' AND request_id IS NOT NULL");
	cr_assert_str_eq(n, "1");
	free(n);
	/* The whole trail verifies. */
	char bin[600], cmd[3000];
	kwt_bin_sh("keywardctl", bin, sizeof(bin));
	snprintf(cmd, sizeof(cmd), "KEYWARD_DB_ADMIN_CONNINFO='%s' %s audit verify >/dev/null", d.db.admin,
	         bin);
	cr_assert_eq(system(cmd), 0, "audit verify failed");
}

/* X-Forwarded-For: ignored from an untrusted peer, believed from a
 * configured proxy. Separate daemons with a small per-IP budget. */
TestSuite(client_ip, .timeout = 120);

static int count_429(kwt_daemon *dd, const kwt_tenant *t, int n, bool vary_xff)
{
	int limited = 0;
	for (int i = 0; i < n; i++) {
		char h[400];
		snprintf(h, sizeof(h), "%sX-Forwarded-For: 203.0.113.%d\r\n", t->auth, vary_xff ? i + 1 : 1);
		kwt_resp r;
		cr_assert_eq(kwt_http_req(dd, "GET", "/api/v1/api-keys", h, NULL, &r), 0);
		limited += r.status == 429;
		kwt_resp_free(&r);
	}
	return limited;
}

Test(client_ip, forwarded_for_ignored_from_untrusted_peer)
{
	const char *env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=5", NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	kwt_tenant t;
	kwt_tenant_create(&dd, "xff-a", &t);
	cr_assert_eq(count_429(&dd, &t, 8, true), 3, "spoofed X-Forwarded-For escaped the per-IP limit");
	kwt_audit_settle(&dd); /* refusal rows land shortly after their answers */
	char *n = kwt_db_admin_sql(&dd.db, "SELECT count(*) FROM audit_log WHERE ip LIKE '203.0.113.%'");
	cr_assert_str_eq(n, "0");
	free(n);
	kwt_daemon_stop(&dd);
}

Test(client_ip, forwarded_for_believed_from_trusted_proxy)
{
	const char *env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=5", "KEYWARD_HTTP_TRUSTED_PROXIES=127.0.0.1/32",
	                     NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	kwt_tenant t;
	kwt_tenant_create(&dd, "xff-b", &t);
	cr_assert_eq(count_429(&dd, &t, 8, true), 0, "each forwarded client should have its own budget");
	/* 203.0.113.1 spent one above; four more fit, then two are refused. */
	cr_assert_eq(count_429(&dd, &t, 6, false), 2, "one forwarded client over its budget");
	kwt_audit_settle(&dd);
	char *n = kwt_db_admin_sql(&dd.db, "SELECT count(*) FROM audit_log WHERE ip = '203.0.113.1'");
	cr_assert_str_eq(n, "2");
	free(n);
	kwt_daemon_stop(&dd);
}

/* A proxy that adds its own X-Forwarded-For line: the lines are one list
 * (RFC 9110 5.3), so the client's own line cannot choose its address. */
Test(client_ip, forwarded_for_lines_are_combined)
{
	const char *env[] = {"KEYWARD_HTTP_TRUSTED_PROXIES=127.0.0.1/32", NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&dd, "GET", "/api/v1/api-keys",
	                          "Authorization: Bearer nope\r\nX-Forwarded-For: 203.0.113.66\r\n"
	                          "X-Forwarded-For: 198.51.100.7\r\n",
	                          NULL, &r),
	             0);
	cr_assert_eq(r.status, 401);
	kwt_resp_free(&r);
	kwt_audit_settle(&dd);
	char *n =
	    kwt_db_admin_sql(&dd.db, "SELECT string_agg(ip, ',') FROM audit_log WHERE status LIKE '401 %'");
	cr_assert_str_eq(n, "198.51.100.7", "the client chose its own address");
	free(n);
	kwt_daemon_stop(&dd);
}
