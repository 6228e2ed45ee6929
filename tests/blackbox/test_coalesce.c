/* Black-box: request coalescing (DESIGN 5.8) against the real keywardd:
 * a burst of identical secret fetches costs fewer reads than answers,
 * while every caller keeps its own request id and audit row; credentials
 * are checked per caller (scopes, revocation); failures fan out; a
 * follower past coalesce.timeout_ms runs on its own. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta;

static void start(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000",
	                                  "KEYWARD_COALESCE_TIMEOUT_MS=300",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1000000", NULL};
	kwt_daemon_start(&d, env);
	kwt_tenant_create(&d, "coalesce-a", &ta);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(coalesce, .init = start, .fini = stop, .timeout = 120);

static unsigned long long metric(const char *name)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/metrics", &r), 0);
	char line[256];
	snprintf(line, sizeof(line), "\n%s ", name);
	const char *p = strstr(r.body, line);
	unsigned long long v = p ? strtoull(p + strlen(line), NULL, 10) : 0;
	kwt_resp_free(&r);
	return v;
}

static void make_key(const char *name, const char *scopes, char auth[200])
{
	char key[128], id[64];
	kwt_api_key_create(&d, &ta, name, scopes, 1000000, key, id);
	snprintf(auth, 200, "Authorization: Bearer %s\r\n", key);
}

static void make_secret(const char *auth, const char *name, char id[64])
{
	char body[200];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"value\":\"c2VjcmV0LXZhbHVl\"}", name);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "POST", "/api/v1/secrets", auth, body, &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
	json_decref(o);
	kwt_resp_free(&r);
}

typedef struct burst {
	const char *auth, *path;
	int n;
	int ok, status_other, last_status;
	char ids[64][64];
	pthread_t t;
} burst;

static void *fire(void *arg)
{
	burst *b = arg;
	for (int i = 0; i < b->n; i++) {
		kwt_resp r;
		if (kwt_http_req(&d, "GET", b->path, b->auth, NULL, &r) != 0)
			continue;
		b->last_status = r.status;
		if (r.status == 200)
			b->ok++;
		else
			b->status_other++;
		char rid[64];
		if (i < 64 && kwt_resp_header(&r, "X-Request-Id", rid, sizeof(rid)))
			snprintf(b->ids[i], sizeof(b->ids[i]), "%s", rid);
		kwt_resp_free(&r);
	}
	return NULL;
}

static void run_bursts(burst *bs, int n)
{
	for (int i = 0; i < n; i++)
		pthread_create(&bs[i].t, NULL, fire, &bs[i]);
	for (int i = 0; i < n; i++)
		pthread_join(bs[i].t, NULL);
}

Test(coalesce, a_burst_shares_its_reads_not_its_envelopes)
{
	char auth[200], id[64], path[128];
	make_key("reader", "[\"secrets:read\",\"secrets:write\"]", auth);
	make_secret(auth, "burst/one", id);
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", id);
	unsigned long long l0 = metric("keyward_coalesce_leaders_total{route=\"secrets_get\"}"),
	                   f0 = metric("keyward_coalesce_followers_total{route=\"secrets_get\"}");
	enum { T = 24, N = 20 };
	burst bs[T];
	memset(bs, 0, sizeof(bs));
	for (int i = 0; i < T; i++)
		bs[i] = (burst){.auth = auth, .path = path, .n = N};
	run_bursts(bs, T);
	int ok = 0;
	for (int i = 0; i < T; i++)
		ok += bs[i].ok;
	cr_assert_eq(ok, T * N, "every caller answered 200 (%d of %d)", ok, T * N);
	unsigned long long leaders = metric("keyward_coalesce_leaders_total{route=\"secrets_get\"}") - l0,
	                   followers = metric("keyward_coalesce_followers_total{route=\"secrets_get\"}") - f0;
	cr_log_info("%d answers: %llu leaders (reads), %llu followers", ok, leaders, followers);
	cr_assert_eq(leaders + followers, (unsigned long long)ok, "each answer led or followed");
	cr_assert_gt(followers, 0, "nothing was coalesced under a burst of %d connections", T);
	/* Each answer its own request id, and its own audit row. */
	for (int i = 0; i < T; i++)
		for (int j = 0; j < N; j++)
			for (int k = 0; k < j; k++)
				cr_assert_str_neq(bs[i].ids[j], bs[i].ids[k]);
	kwt_audit_settle(&d);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*), count(DISTINCT request_id) FROM audit_log WHERE action = 'secret.read' "
	         "AND target = '%s' "
	         "AND status = 'ok'",
	         id);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_eq(strtol(v, NULL, 10), T * N + 0, "audit rows: %s", v);
	free(v);
}

Test(coalesce, scopes_and_revocation_hold_per_caller)
{
	char with[200], without[200], writer[200], id[64], path[128];
	make_key("with", "[\"secrets:read\"]", with);
	make_key("without", "[\"transit:encrypt\"]", without);
	make_key("writer", "[\"secrets:write\"]", writer);
	make_secret(writer, "iso/one", id);
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", id);
	burst bs[16];
	memset(bs, 0, sizeof(bs));
	for (int i = 0; i < 16; i++)
		bs[i] = (burst){.auth = i % 2 ? with : without, .path = path, .n = 10};
	run_bursts(bs, 16);
	for (int i = 0; i < 16; i++) {
		if (i % 2) {
			cr_assert_eq(bs[i].ok, 10, "the key with the scope was refused");
		} else {
			cr_assert_eq(bs[i].ok, 0, "the key without the scope got the secret");
			cr_assert_eq(bs[i].last_status, 403);
		}
	}
	/* A revoked key in a burst: refused even with its twin in flight. */
	char key[128], kid[64], revoked[200], dpath[128];
	kwt_api_key_create(&d, &ta, "doomed", "[\"secrets:read\"]", 1000000, key, kid);
	snprintf(revoked, sizeof(revoked), "Authorization: Bearer %s\r\n", key);
	snprintf(dpath, sizeof(dpath), "/api/v1/api-keys/%s", kid);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "DELETE", dpath, ta.auth, NULL, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	for (int i = 0; i < 16; i++)
		bs[i] = (burst){.auth = i % 2 ? with : revoked, .path = path, .n = 10};
	run_bursts(bs, 16);
	for (int i = 0; i < 16; i++)
		cr_assert_eq(bs[i].ok, i % 2 ? 10 : 0, "burst %d: %d ok, last status %d", i, bs[i].ok,
		             bs[i].last_status);
}

Test(coalesce, failures_fan_out_and_slow_leaders_time_out)
{
	char auth[200], id[64], path[128];
	make_key("fan", "[\"secrets:read\",\"secrets:write\"]", auth);
	/* No such secret: every caller of the burst gets the 404. */
	burst bs[12];
	memset(bs, 0, sizeof(bs));
	for (int i = 0; i < 12; i++)
		bs[i] = (burst){
		    .auth = auth, .path = "/api/v1/secrets/00000000-0000-4000-8000-000000000000", .n = 10};
	unsigned long long e0 = metric("keyward_coalesce_errors_total{route=\"secrets_get\"}");
	run_bursts(bs, 12);
	for (int i = 0; i < 12; i++) {
		cr_assert_eq(bs[i].ok, 0);
		cr_assert_eq(bs[i].last_status, 404);
	}
	cr_assert_gt(metric("keyward_coalesce_errors_total{route=\"secrets_get\"}"), e0);
	/* A leader held up past the timeout (its read waits on a lock): its
	 * followers run on their own, and every caller is still answered. */
	make_secret(auth, "slow/one", id);
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", id);
	unsigned long long t0 = metric("keyward_coalesce_timeouts_total{route=\"secrets_get\"}");
	char *conn = kwt_db_admin_sql(&d.db, "SELECT 1");
	free(conn);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd),
	         "psql '%s' -q -c 'BEGIN; LOCK TABLE secret_versions IN ACCESS EXCLUSIVE MODE; SELECT "
	         "pg_sleep(1.5); "
	         "COMMIT;' >/dev/null 2>&1 &",
	         d.db.admin);
	cr_assert_eq(system(cmd), 0);
	usleep(300 * 1000);
	for (int i = 0; i < 12; i++)
		bs[i] = (burst){.auth = auth, .path = path, .n = 1};
	run_bursts(bs, 12);
	int ok = 0;
	for (int i = 0; i < 12; i++)
		ok += bs[i].ok;
	cr_assert_eq(ok, 12, "a caller was lost behind a slow leader");
	cr_assert_gt(metric("keyward_coalesce_timeouts_total{route=\"secrets_get\"}"), t0,
	             "no follower timed out behind a leader held 1.5 s");
}
