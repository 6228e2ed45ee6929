/* Black-box: three keywardd on one token (a token of their own) and one
 * database. A change made through one instance, or by keywardctl, holds on
 * the others within a second (the change feed, DESIGN 5.9): a revoked API
 * key is refused, a rotated JWT key signs new tokens, a rotated KEK wraps
 * new vaults. Delays are measured and their p99 logged. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_private p;
static kwt_daemon others[2];
static char admin[200];

static void start(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1000000",
	                                  "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1h", NULL};
	kwt_private_start(&p, "inst", env);
	char ci[1200], ai[1200];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", p.d.db.app);
	snprintf(ai, sizeof(ai), "KEYWARD_DB_ADMIN_CONNINFO=%s", p.d.db.admin);
	/* Housekeeping an hour apart: only the change feed can carry a change
	 * within the second these tests allow. */
	const char *env2[] = {p.uri_env, p.pin_env, ci, ai, env[0], env[1], env[2], NULL};
	for (int i = 0; i < 2; i++)
		kwt_daemon_start(&others[i], env2);
	char cmd[1600], key[128] = "";
	snprintf(cmd, sizeof(cmd), "%s tenant create inst 2>/dev/null | sed -n 's/^api_key: //p'", p.ctl);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(fgets(key, sizeof(key), f));
	cr_assert_eq(pclose(f), 0);
	key[strcspn(key, "\n")] = '\0';
	snprintf(admin, sizeof(admin), "Authorization: Bearer %s\r\n", key);
}

static void stop(void)
{
	for (int i = 0; i < 2; i++)
		kwt_daemon_stop(&others[i]);
	kwt_private_stop(&p);
}

TestSuite(instances, .init = start, .fini = stop, .timeout = 180);

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int req(const kwt_daemon *dd, const char *method, const char *path, const char *hdr, const char *body,
               json_t **o)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, method, path, hdr, body, &r), 0);
	int st = r.status;
	if (o)
		*o = json_loadb(r.body, r.body_len, 0, NULL);
	kwt_resp_free(&r);
	return st;
}

static void new_key(const char *scopes, char auth[200], char id[64])
{
	char body[200];
	snprintf(body, sizeof(body), "{\"name\":\"k\",\"scopes\":%s,\"rate_limit_per_minute\":1000000}",
	         scopes);
	json_t *o = NULL;
	cr_assert_eq(req(&p.d, "POST", "/api/v1/api-keys", admin, body, &o), 201);
	snprintf(auth, 200, "Authorization: Bearer %s\r\n", json_string_value(json_object_get(o, "key")));
	snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
	json_decref(o);
}

Test(instances, a_revoked_api_key_is_refused_everywhere_within_a_second)
{
	enum { ROUNDS = 10 };
	double delay[ROUNDS];
	for (int round = 0; round < ROUNDS; round++) {
		char auth[200], id[64], path[128];
		new_key("[\"secrets:read\"]", auth, id);
		for (int i = 0; i < 2; i++) /* each instance has it in its verified-key cache */
			cr_assert_eq(req(&others[i], "GET", "/api/v1/secrets", auth, NULL, NULL), 200);
		snprintf(path, sizeof(path), "/api/v1/api-keys/%s", id);
		cr_assert_eq(req(&p.d, "DELETE", path, admin, NULL, NULL), 200);
		double t0 = now_s(), worst = 0;
		for (int i = 0; i < 2; i++) {
			int st = 200;
			while (st == 200 && now_s() - t0 < 2.0)
				st = req(&others[i], "GET", "/api/v1/secrets", auth, NULL, NULL);
			cr_assert_eq(st, 401, "round %d: instance %d still accepts the key", round, i + 2);
			if (now_s() - t0 > worst)
				worst = now_s() - t0;
		}
		cr_assert_lt(worst, 1.0);
		delay[round] = worst;
	}
	qsort(delay, ROUNDS, sizeof(delay[0]), cmp);
	cr_log_info("API-key revocation on the other instances: median %.1f ms, p99 (max of %d) %.1f ms",
	            delay[ROUNDS / 2] * 1e3, ROUNDS, delay[ROUNDS - 1] * 1e3);
}

/* The kid of an access token issued by instance dd. */
static void login_kid(const kwt_daemon *dd, const char *auth, char kid[64])
{
	json_t *o = NULL;
	cr_assert_eq(
	    req(dd, "POST", "/api/v1/auth/login", auth, "{\"subject\":\"u1\",\"role\":\"track1\"}", &o), 200);
	const char *tok = json_string_value(json_object_get(o, "access_token"));
	cr_assert_not_null(tok);
	const char *dot = strchr(tok, '.');
	char cmd[2048], line[256] = "";
	snprintf(cmd, sizeof(cmd),
	         "python3 -c 'import base64,json,sys; h=sys.argv[1]; "
	         "print(json.loads(base64.urlsafe_b64decode(h + "
	         "\"=\" * (-len(h) %% 4)))[\"kid\"])' '%.*s'",
	         (int)(dot - tok), tok);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(fgets(line, sizeof(line), f));
	pclose(f);
	line[strcspn(line, "\n")] = '\0';
	snprintf(kid, 64, "%s", line);
	json_decref(o);
}

Test(instances, key_rotations_by_keywardctl_hold_everywhere_within_a_second)
{
	char auth[200], id[64], before[64], out[4096];
	new_key("[\"auth:issue\"]", auth, id);
	login_kid(&others[0], auth, before);
	cr_assert_eq(kwt_private_ctl(&p, "jwt rotate", out, sizeof(out)), 0, "%s", out);
	double t0 = now_s(), worst = 0;
	for (int i = 0; i < 2; i++) {
		char kid[64];
		do
			login_kid(&others[i], auth, kid);
		while (strcmp(kid, before) == 0 && now_s() - t0 < 2.0);
		cr_assert_str_neq(kid, before, "instance %d still signs with %s", i + 2, before);
		if (now_s() - t0 > worst)
			worst = now_s() - t0;
	}
	cr_assert_lt(worst, 1.0);
	cr_log_info("JWT rotation used by the other instances after %.1f ms", worst * 1e3);

	/* A KEK rotation: new vaults are wrapped with KEK 2 everywhere. */
	json_t *o = NULL;
	cr_assert_eq(kwt_private_ctl(&p, "kek rotate", out, sizeof(out)), 0, "%s", out);
	t0 = now_s();
	worst = 0;
	for (int i = 0; i < 2; i++) {
		long kek = 0;
		for (int n = 0; kek != 2 && now_s() - t0 < 2.0; n++) {
			char sub[64], body[128];
			snprintf(sub, sizeof(sub), "kek-%d-%d", i, n);
			snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"track1\"}", sub);
			cr_assert_eq(req(&others[i], "POST", "/api/v1/auth/login", auth, body, &o), 200);
			char bearer[2200];
			snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s\r\n",
			         json_string_value(json_object_get(o, "access_token")));
			json_decref(o);
			cr_assert_eq(
			    req(&others[i], "POST", "/api/v1/me/encryption-vault/init", bearer, NULL, &o),
			    201);
			kek = (long)json_integer_value(json_object_get(o, "kek_id"));
			json_decref(o);
		}
		cr_assert_eq(kek, 2, "instance %d still wraps with KEK 1", i + 2);
		if (now_s() - t0 > worst)
			worst = now_s() - t0;
	}
	cr_assert_lt(worst, 1.0);
	cr_log_info("KEK rotation used by the other instances after %.1f ms", worst * 1e3);
}
