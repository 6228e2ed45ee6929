/* Black-box: three keywardd on one token (a token of their own) and one
 * database. A change made through one instance, or by keywardctl, holds on
 * the others within a second (the change feed, DESIGN 5.9): a revoked API
 * key is refused, a rotated JWT key signs new tokens, a rotated KEK wraps
 * new vaults. Delays are measured and their p99 logged. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyward/core/text.h"
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
	cr_assert_not_null(dot);
	unsigned char hdr[512];
	size_t n = 0;
	cr_assert_eq(kw_b64url_decode(tok, (size_t)(dot - tok), hdr, sizeof(hdr) - 1, &n), KW_OK);
	json_t *h = json_loadb((const char *)hdr, n, 0, NULL);
	cr_assert_not_null(json_string_value(json_object_get(h, "kid")));
	snprintf(kid, 64, "%s", json_string_value(json_object_get(h, "kid")));
	json_decref(h);
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

	/* Retiring the old key: the others stop publishing it within a second. */
	cr_assert_eq(kwt_private_ctl(&p, "jwt retire 1 --force", out, sizeof(out)), 0, "%s", out);
	t0 = now_s();
	worst = 0;
	for (int i = 0; i < 2; i++) {
		bool listed = true;
		while (listed && now_s() - t0 < 2.0) {
			kwt_resp r;
			cr_assert_eq(kwt_http_get(&others[i], "/.well-known/jwks.json", &r), 0);
			char needle[80];
			snprintf(needle, sizeof(needle), "\"%s\"", before);
			listed = strstr(r.body, needle) != NULL;
			kwt_resp_free(&r);
		}
		cr_assert_not(listed, "instance %d still publishes the retired key %s", i + 2, before);
		if (now_s() - t0 > worst)
			worst = now_s() - t0;
	}
	cr_assert_lt(worst, 1.0);
	cr_log_info("JWT retirement seen by the other instances after %.1f ms", worst * 1e3);

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

/* The refresh limit per subject (5 a minute) is counted in the database:
 * refreshes spread over three instances share it. */
Test(instances, the_refresh_limit_per_subject_holds_across_instances)
{
	char auth[200], id[64];
	new_key("[\"auth:issue\"]", auth, id);
	json_t *o = NULL;
	cr_assert_eq(req(&p.d, "POST", "/api/v1/auth/login", auth,
	                 "{\"subject\":\"refresher\",\"role\":\"track1\"}", &o),
	             200);
	char tok[256];
	snprintf(tok, sizeof(tok), "%s", json_string_value(json_object_get(o, "refresh_token")));
	json_decref(o);
	const kwt_daemon *at[6] = {&others[0], &others[1], &p.d, &others[0], &others[1], &p.d};
	for (int i = 0; i < 6; i++) {
		char body[400];
		snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", tok);
		int st = req(at[i], "POST", "/api/v1/auth/refresh", NULL, body, &o);
		if (i < 5) {
			cr_assert_eq(st, 200, "refresh %d", i + 1);
			snprintf(tok, sizeof(tok), "%s",
			         json_string_value(json_object_get(o, "refresh_token")));
		} else {
			cr_assert_eq(st, 429, "a sixth refresh within the minute, on a third instance");
			cr_assert_str_eq(json_string_value(json_object_get(o, "error")), "rate_limited");
		}
		json_decref(o);
	}
}

typedef struct racer {
	const kwt_daemon *d;
	char body[400];
	int status;
	pthread_t t;
} racer;

static void *race(void *arg)
{
	racer *r = arg;
	kwt_resp resp;
	if (kwt_http_req(r->d, "POST", "/api/v1/auth/refresh", NULL, r->body, &resp) == 0) {
		r->status = resp.status;
		kwt_resp_free(&resp);
	}
	return NULL;
}

/* The same refresh token sent to three instances at once: exactly one
 * wins. */
Test(instances, a_refresh_race_across_instances_has_one_winner)
{
	char auth[200], id[64];
	new_key("[\"auth:issue\"]", auth, id);
	for (int round = 0; round < 5; round++) {
		json_t *o = NULL;
		char body[128];
		snprintf(body, sizeof(body), "{\"subject\":\"racer-%d\",\"role\":\"track1\"}", round);
		cr_assert_eq(req(&p.d, "POST", "/api/v1/auth/login", auth, body, &o), 200);
		racer r[3];
		const kwt_daemon *at[3] = {&p.d, &others[0], &others[1]};
		for (int i = 0; i < 3; i++) {
			r[i] = (racer){.d = at[i]};
			snprintf(r[i].body, sizeof(r[i].body), "{\"refresh_token\":\"%s\"}",
			         json_string_value(json_object_get(o, "refresh_token")));
		}
		json_decref(o);
		for (int i = 0; i < 3; i++)
			pthread_create(&r[i].t, NULL, race, &r[i]);
		int wins = 0;
		for (int i = 0; i < 3; i++) {
			pthread_join(r[i].t, NULL);
			wins += r[i].status == 200;
			cr_assert(r[i].status == 200 || r[i].status == 401, "round %d: %d", round,
			          r[i].status);
		}
		cr_assert_eq(wins, 1, "round %d: %d winners", round, wins);
	}
}

typedef struct loader {
	const kwt_daemon *d;
	const char *auth, *path;
	volatile bool *stop;
	int ok;
	char (*ids)[64];
	int cap;
	pthread_t t;
} loader;

static void *load(void *arg)
{
	loader *l = arg;
	while (!*l->stop) {
		kwt_resp r;
		if (kwt_http_req(l->d, "GET", l->path, l->auth, NULL, &r) != 0)
			continue; /* its instance is gone */
		if (r.status == 200 && l->ok < l->cap &&
		    kwt_resp_header(&r, "X-Request-Id", l->ids[l->ok], sizeof(l->ids[0])) != NULL)
			l->ok++;
		kwt_resp_free(&r);
	}
	return NULL;
}

/* One instance killed with SIGKILL in the middle of a load: the others
 * keep answering, every answer given by any instance has its audit row,
 * and the audit chains verify. */
Test(instances, sigkill_mid_load_loses_nothing_that_was_answered)
{
	char rw[200], id[64], path[128];
	new_key("[\"secrets:read\",\"secrets:write\"]", rw, id);
	json_t *o = NULL;
	cr_assert_eq(
	    req(&p.d, "POST", "/api/v1/secrets", rw, "{\"name\":\"load/one\",\"value\":\"eA==\"}", &o), 201);
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", json_string_value(json_object_get(o, "id")));
	json_decref(o);
	enum { PER = 4000 };
	static char ids[3][2][PER][64];
	volatile bool stop = false;
	loader l[6];
	const kwt_daemon *at[3] = {&p.d, &others[0], &others[1]};
	for (int i = 0; i < 6; i++) {
		l[i] = (loader){.d = at[i / 2],
		                .auth = rw,
		                .path = path,
		                .stop = &stop,
		                .ids = ids[i / 2][i % 2],
		                .cap = PER};
		pthread_create(&l[i].t, NULL, load, &l[i]);
	}
	usleep(400 * 1000);
	kill(others[1].pid, SIGKILL);
	int killed_ok_before = l[4].ok + l[5].ok;
	usleep(600 * 1000);
	int survivors_mid = l[0].ok + l[1].ok + l[2].ok + l[3].ok;
	usleep(400 * 1000);
	stop = true;
	for (int i = 0; i < 6; i++)
		pthread_join(l[i].t, NULL);
	int survivors = l[0].ok + l[1].ok + l[2].ok + l[3].ok;
	cr_assert_gt(survivors, survivors_mid, "the other instances stopped answering after the kill");
	cr_assert_gt(killed_ok_before, 0);
	/* Every 200 answered has its audit row (the killed instance's too). */
	int total = 0;
	size_t cap = 200 + (size_t)6 * PER * 70, used = 0;
	char *sql = malloc(cap);
	used += (size_t)snprintf(
	    sql, cap,
	    "SELECT count(DISTINCT request_id) FROM audit_log WHERE action = 'secret.read' AND "
	    "request_id IN (");
	for (int i = 0; i < 6; i++)
		for (int k = 0; k < l[i].ok; k++, total++)
			used +=
			    (size_t)snprintf(sql + used, cap - used, "%s'%s'", total ? "," : "", l[i].ids[k]);
	snprintf(sql + used, cap - used, ")");
	char *v = kwt_db_admin_sql(&p.d.db, sql);
	int missing = total - (int)strtol(v, NULL, 10);
	free(v);
	free(sql);
	cr_assert_eq(missing, 0, "%d of %d answers have no audit row", missing, total);
	cr_log_info("SIGKILL mid-load: %d answers checked, the survivors answered %d", total, survivors);
	char out[4096];
	cr_assert_eq(kwt_private_ctl(&p, "audit verify", out, sizeof(out)), 0, "%s", out);
	/* The killed instance comes back for the other tests. */
	kwt_daemon_stop(&others[1]);
	char ci[1200], ai[1200];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", p.d.db.app);
	snprintf(ai, sizeof(ai), "KEYWARD_DB_ADMIN_CONNINFO=%s", p.d.db.admin);
	const char *env2[] = {p.uri_env,
	                      p.pin_env,
	                      ci,
	                      ai,
	                      "KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000",
	                      "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1000000",
	                      "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1h",
	                      NULL};
	kwt_daemon_start(&others[1], env2);
}
