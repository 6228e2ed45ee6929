/* Black-box tests of keywardd: the real daemon, a real token, a real
 * PostgreSQL, raw HTTP. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "keyward/audit/audit.h"
#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;

static void start(void)
{
	kwt_daemon_start(&d, NULL);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(service, .init = start, .fini = stop, .timeout = 120);

Test(service, healthz_ok_with_request_id)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.body, "{\"status\":\"ok\"}");
	char rid[160], ct[64];
	cr_assert_not_null(kwt_resp_header(&r, "X-Request-Id", rid, sizeof(rid)));
	cr_assert_eq(strlen(rid), 32);
	cr_assert_str_eq(kwt_resp_header(&r, "Content-Type", ct, sizeof(ct)), "application/json");
	kwt_resp_free(&r);
}

Test(service, request_id_echoed_only_when_valid)
{
	const char good[] =
	    "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123_X.y\r\nConnection: close\r\n\r\n";
	const char bad[] =
	    "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: <script>\r\nConnection: close\r\n\r\n";
	kwt_resp r;
	char rid[160];
	cr_assert_eq(kwt_http_raw(&d, false, good, sizeof(good) - 1, &r), 0);
	cr_assert_str_eq(kwt_resp_header(&r, "X-Request-Id", rid, sizeof(rid)), "abc-123_X.y");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_raw(&d, false, bad, sizeof(bad) - 1, &r), 0);
	cr_assert_not_null(kwt_resp_header(&r, "X-Request-Id", rid, sizeof(rid)));
	cr_assert_str_neq(rid, "<script>");
	cr_assert_eq(strlen(rid), 32);
	kwt_resp_free(&r);
}

Test(service, readyz_ok)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "body: %s", r.body);
	cr_assert(strstr(r.body, "\"hsm\":\"ok\"") && strstr(r.body, "\"database\":\"ok\""));
	kwt_resp_free(&r);
}

/* ALTER DATABASE must run from another database of the cluster. */
static void cluster_sql(const char *sql)
{
	PGconn *c = PQconnectdb(kwt_env("KEYWARD_PG_ADMIN"));
	cr_assert_eq(PQstatus(c), CONNECTION_OK);
	PGresult *r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s",
	          sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

static int readyz_status(char *body, size_t cap)
{
	kwt_resp r;
	int st = kwt_http_get(&d, "/readyz", &r) == 0 ? r.status : -1;
	if (body)
		snprintf(body, cap, "%s", r.body ? r.body : "");
	kwt_resp_free(&r);
	return st;
}

Test(service, readyz_follows_the_database)
{
	char sql[512], body[512];
	/* Take the database away from the service: no new connections, and
	 * every existing one of the service role is cut. */
	snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS false", d.db.name);
	cluster_sql(sql);
	snprintf(sql, sizeof(sql),
	         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'kw_svc' AND "
	         "datname = '%s'",
	         d.db.name);
	cluster_sql(sql);
	/* Every worker must see it: ask more times than there are workers. */
	int seen503 = 0;
	for (int i = 0; i < 12; i++)
		if (readyz_status(body, sizeof(body)) == 503)
			seen503++;
	cr_assert_eq(seen503, 12, "readyz stayed 200 with the database gone");
	cr_assert(strstr(body, "\"database\":\"unavailable\"") && strstr(body, "\"hsm\":\"ok\""), "%s", body);
	cr_assert(strstr(body, "\"error\":\"not_ready\""), "%s", body);

	snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS true", d.db.name);
	cluster_sql(sql);
	/* The revocation listener reconnects with a backoff of up to 1 s and
	 * reloads; until then readyz rightly says the list is stale. */
	for (int i = 0; i < 60 && readyz_status(body, sizeof(body)) != 200; i++)
		usleep(50000);
	for (int i = 0; i < 12; i++)
		cr_assert_eq(readyz_status(body, sizeof(body)), 200, "after the database came back: %s",
		             body);
}

Test(service, metrics_prometheus_text)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&d, "/readyz", &r), 0);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&d, "/metrics", &r), 0);
	cr_assert_eq(r.status, 200);
	char ct[128];
	cr_assert(strncmp(kwt_resp_header(&r, "Content-Type", ct, sizeof(ct)), "text/plain", 10) == 0);
	cr_assert(strstr(r.body, "keyward_http_requests_total{route=\"healthz\",status=\"200\"}"), "%s",
	          r.body);
	cr_assert(strstr(
	    r.body, "keyward_http_request_duration_seconds_bucket{route=\"readyz\",status=\"200\",le=\""));
	cr_assert(strstr(r.body, "# TYPE keyward_http_request_duration_seconds histogram"));
	cr_assert(strstr(r.body, "keyward_hsm_operations_total{op=\"random\"}"));
	cr_assert(strstr(r.body, "keyward_worker_queue_depth "));
	cr_assert(strstr(r.body, "keyward_db_connections "));
	kwt_resp_free(&r);
}

Test(service, unknown_route_and_method)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/nope", &r), 0);
	kwt_assert_json_error(&r, 404, "not_found");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_post(&d, "/healthz", "{}", &r), 0);
	kwt_assert_json_error(&r, 405, "method_not_allowed");
	kwt_resp_free(&r);
}

Test(service, oversize_body_is_413_json)
{
	size_t n = (1 << 20) + 10;
	char *body = malloc(n + 1);
	memset(body, 'a', n);
	body[n] = '\0';
	kwt_resp r;
	cr_assert_eq(kwt_http_post(&d, "/healthz", body, &r), 0);
	kwt_assert_json_error(&r, 413, "payload_too_large");
	kwt_resp_free(&r);
	free(body);
	/* And the service keeps serving. */
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(service, oversize_headers_is_431_json)
{
	size_t n = 70 * 1024;
	char *req = malloc(n + 256);
	int off = snprintf(req, n + 256, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(req + off, 'b', n);
	snprintf(req + off + n, 256 - (size_t)off, "\r\nConnection: close\r\n\r\n");
	kwt_resp r;
	cr_assert_eq(kwt_http_raw(&d, false, req, strlen(req), &r), 0);
	kwt_assert_json_error(&r, 431, "headers_too_large");
	kwt_resp_free(&r);
	free(req);
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(service, malformed_request_lines_are_400_json)
{
	const char *bad[] = {
	    "GARBAGE\r\n\r\n",
	    "GET\r\n\r\n",
	    "GET /healthz HTTP/9.9\r\n\r\n",
	    "GET /healthz HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
	    "\x01\x02\x03\xff\xfe binary\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kwt_resp r;
		cr_assert_eq(kwt_http_raw(&d, false, bad[i], strlen(bad[i]), &r), 0, "no answer to case %zu",
		             i);
		kwt_assert_json_error(&r, 400, "malformed_request");
		kwt_resp_free(&r);
	}
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(service, unix_socket_listener)
{
	const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	kwt_resp r;
	cr_assert_eq(kwt_http_raw(&d, true, req, sizeof(req) - 1, &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

Test(service, keep_alive_serves_many_requests)
{
	char req[4096] = "";
	size_t n = 0;
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(req + n, sizeof(req) - n, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	snprintf(req + n, sizeof(req) - n, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	kwt_resp r;
	cr_assert_eq(kwt_http_raw(&d, false, req, strlen(req), &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

/* SIGTERM while a request waits on a stopped database backend: the daemon
 * stops accepting, finishes the request, and exits 0. */
typedef struct inflight {
	kwt_daemon *d;
	kwt_resp r;
	int rc;
} inflight;

static void *slow_request(void *arg)
{
	inflight *f = arg;
	f->rc = kwt_http_get(f->d, "/readyz", &f->r);
	return NULL;
}

/* The PostgreSQL backends of the service's connections (space-separated). */
static char *service_backends(void)
{
	char *pids = kwt_db_admin_sql(&d.db, "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity "
	                                     "WHERE usename = 'kw_svc' AND datname = current_database()");
	cr_assert_not_null(pids, "the service holds no database connection");
	return pids;
}

static void signal_backends(const char *sig, const char *pids)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "kill -%s %s", sig, pids);
	cr_assert_eq(system(cmd), 0);
}

Test(service, sigterm_drains_request_in_flight)
{
	char *pids = service_backends();
	signal_backends("STOP", pids);
	inflight f = {.d = &d};
	pthread_t t;
	pthread_create(&t, NULL, slow_request, &f);
	usleep(300 * 1000); /* the request reaches a worker and blocks in SQL */
	kill(d.pid, SIGTERM);
	usleep(300 * 1000);
	int st;
	pid_t early = waitpid(d.pid, &st, WNOHANG);
	/* A new connection is refused while draining. */
	kwt_resp r2;
	int late_rc = kwt_http_get(&d, "/healthz", &r2);
	signal_backends("CONT", pids);
	cr_assert_eq(early, 0, "keywardd exited with a request in flight");
	cr_assert_neq(late_rc, 0, "still accepting while draining");
	pthread_join(t, NULL);
	cr_assert_eq(f.rc, 0, "the in-flight request got no answer");
	cr_assert_eq(f.r.status, 200, "%s", f.r.body);
	kwt_resp_free(&f.r);
	cr_assert_eq(waitpid(d.pid, &st, 0), d.pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	d.pid = 0;
	free(pids);
	char *log = kwt_daemon_log(&d);
	cr_assert(strstr(log, "shutting down"), "%s", log);
	free(log);
}

/* Refusals are answered without waiting for their audit rows, and a clean
 * shutdown still writes every one: the database is frozen while they are
 * answered and thawed only after SIGTERM. */
Test(service, refusal_rows_are_written_before_a_clean_exit)
{
	char *v = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM audit_log WHERE status ~ '^(401|429) '");
	long long before = strtoll(v, NULL, 10);
	free(v);
	char *pids = service_backends();
	signal_backends("STOP", pids);
	int answered = 0;
	for (int i = 0; i < 30; i++) {
		kwt_resp r;
		if (kwt_http_req(&d, "GET", "/api/v1/api-keys", "Authorization: Bearer not-a-key\r\n", NULL,
		                 &r) == 0 &&
		    (r.status == 401 || r.status == 429))
			answered++;
		kwt_resp_free(&r);
	}
	kill(d.pid, SIGTERM);
	usleep(300 * 1000);
	signal_backends("CONT", pids);
	free(pids);
	cr_assert_eq(answered, 30, "refusals waited for the frozen database");
	int st;
	cr_assert_eq(waitpid(d.pid, &st, 0), d.pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	d.pid = 0;
	v = kwt_db_admin_sql(&d.db, "SELECT count(*) FROM audit_log WHERE status ~ '^(401|429) '");
	cr_assert_eq(strtoll(v, NULL, 10) - before, 30, "refusal rows lost at shutdown");
	free(v);
}

/* --- audit checkpoints ----------------------------------------------------- */

static kwt_daemon cpd;

static void start_checkpoints(void)
{
	static const char *const env[] = {"KEYWARD_AUDIT_CHECKPOINT_INTERVAL=1s", NULL};
	kwt_daemon_start(&cpd, env);
}

static void stop_checkpoints(void)
{
	kwt_daemon_stop(&cpd);
}

TestSuite(checkpoints, .init = start_checkpoints, .fini = stop_checkpoints, .timeout = 120);

static int ctl(const char *args, char *out, size_t cap)
{
	return kwt_ctl(&cpd, args, out, cap);
}

/* The daemon's log so far, in a file keywardctl can read. */
static void log_to_file(const char *path)
{
	char *log = kwt_daemon_log(&cpd);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(log, f);
	fclose(f);
	free(log);
}

Test(checkpoints, logged_as_the_chains_move_and_a_deleted_chain_is_caught)
{
	for (int i = 0; i < 5; i++) { /* refusals: rows of the group-commit writer's chain */
		kwt_resp r;
		cr_assert_eq(
		    kwt_http_req(&cpd, "GET", "/api/v1/api-keys", "Authorization: Bearer nope\r\n", NULL, &r),
		    0);
		cr_assert_eq(r.status, 401);
		kwt_resp_free(&r);
	}
	kwt_audit_settle(&cpd);
	usleep(1500 * 1000); /* one checkpoint interval and a half */
	char *log = kwt_daemon_log(&cpd);
	const char *line = strstr(log, "NOTICE audit checkpoint v1 chain=");
	cr_assert_not_null(line, "no checkpoint in the log: %s", log);
	kw_audit_checkpoint cp;
	cr_assert_eq(kw_audit_checkpoint_parse(line, &cp), KW_OK);
	free(log);

	char path[] = "/tmp/kwt-checkpoints-XXXXXX", out[4096];
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	log_to_file(path);
	char args[200];
	snprintf(args, sizeof(args), "audit verify --checkpoints %s", path);
	cr_assert_eq(ctl(args, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "the database holds every one of"), "%s", out);
	cr_assert_eq(ctl("audit checkpoint", out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, cp.chain_id), "%s", out);

	/* The chain deleted whole: the database alone still verifies. */
	char sql[300];
	snprintf(
	    sql, sizeof(sql),
	    "ALTER TABLE audit_log DISABLE TRIGGER USER; DELETE FROM audit_log WHERE chain_id = '%1$s'; "
	    "DELETE FROM audit_chains WHERE chain_id = '%1$s'; ALTER TABLE audit_log ENABLE TRIGGER USER",
	    cp.chain_id);
	free(kwt_db_admin_sql(&cpd.db, sql));
	cr_assert_eq(ctl("audit verify", out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(ctl(args, out, sizeof(out)), 1, "%s", out);
	cr_assert_not_null(strstr(out, "the chain is gone"), "%s", out);
	/* A damaged checkpoint file is refused, not skipped. */
	FILE *f = fopen(path, "a");
	fputs("NOTICE audit checkpoint v1 chain=garbage\n", f);
	fclose(f);
	cr_assert_eq(ctl(args, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "a malformed checkpoint"), "%s", out);
	unlink(path);
}

Test(checkpoints, every_chain_is_checkpointed_at_shutdown)
{
	kwt_resp r;
	cr_assert_eq(
	    kwt_http_req(&cpd, "GET", "/api/v1/api-keys", "Authorization: Bearer nope\r\n", NULL, &r), 0);
	kwt_resp_free(&r);
	kwt_audit_settle(&cpd);
	kill(cpd.pid, SIGTERM);
	int st;
	cr_assert_eq(waitpid(cpd.pid, &st, 0), cpd.pid);
	cpd.pid = 0;
	char *log = kwt_daemon_log(&cpd);
	const char *down = strstr(log, "shutting down");
	cr_assert_not_null(down, "%s", log);
	cr_assert_not_null(strstr(down, "audit checkpoint v1 chain="), "no checkpoint after the shutdown: %s",
	                   log);
	free(log);
}

Test(checkpoints, rotating_the_audit_key_keeps_the_trail_verifiable)
{
	kwt_resp r;
	cr_assert_eq(
	    kwt_http_req(&cpd, "GET", "/api/v1/api-keys", "Authorization: Bearer nope\r\n", NULL, &r), 0);
	kwt_resp_free(&r);
	kwt_audit_settle(&cpd);
	char out[4096];
	cr_assert_eq(ctl("audit rotate-key", out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "active: keyward/audit/"), "%s", out);
	/* The daemon keeps writing (under the old key until it re-reads the
	 * token); every row, of either key, verifies. */
	cr_assert_eq(
	    kwt_http_req(&cpd, "GET", "/api/v1/api-keys", "Authorization: Bearer nope\r\n", NULL, &r), 0);
	kwt_resp_free(&r);
	kwt_audit_settle(&cpd);
	cr_assert_eq(ctl("audit verify", out, sizeof(out)), 0, "%s", out);
	char *v = kwt_db_admin_sql(&cpd.db, "SELECT count(*) FROM audit_log WHERE action = 'audit.rotate'");
	cr_assert_str_eq(v, "1");
	free(v);
}

/* A client on the Unix socket is known by its uid (SO_PEERCRED), not as
 * one shared "unix"; its X-Forwarded-For is believed only when that uid is
 * listed as a trusted proxy. */
static int unix_refusal(kwt_daemon *dd, const char *xff)
{
	char req[512];
	int n =
	    snprintf(req, sizeof(req),
	             "GET /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
	             "nope\r\n%s%s%s\r\n",
	             xff ? "X-Forwarded-For: " : "", xff ? xff : "", xff ? "\r\n" : "");
	kwt_resp r;
	cr_assert_eq(kwt_http_raw(dd, true, req, (size_t)n, &r), 0);
	int st = r.status;
	kwt_resp_free(&r);
	return st;
}

Test(service, unix_socket_clients_are_known_by_uid)
{
	cr_assert_eq(unix_refusal(&d, "198.51.100.9"), 401);
	kwt_audit_settle(&d);
	char want[64];
	snprintf(want, sizeof(want), "unix:%u", (unsigned)getuid());
	char *v = kwt_db_admin_sql(
	    &d.db, "SELECT string_agg(DISTINCT ip, ',') FROM audit_log WHERE status LIKE '401 %'");
	cr_assert_str_eq(v, want,
	                 "an untrusted socket peer's X-Forwarded-For was believed, or the uid is lost");
	free(v);
}

Test(service, a_trusted_socket_uid_may_forward)
{
	char trusted[80];
	snprintf(trusted, sizeof(trusted), "KEYWARD_HTTP_TRUSTED_PROXIES=unix:%u", (unsigned)getuid());
	const char *env[] = {trusted, NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	cr_assert_eq(unix_refusal(&dd, "198.51.100.9"), 401);
	kwt_audit_settle(&dd);
	char *v = kwt_db_admin_sql(
	    &dd.db, "SELECT string_agg(DISTINCT ip, ',') FROM audit_log WHERE status LIKE '401 %'");
	cr_assert_str_eq(v, "198.51.100.9");
	free(v);
	kwt_daemon_stop(&dd);
}

/* http.admin_listen: /metrics and /readyz there and only there. */
Test(service, admin_routes_move_to_the_admin_listener)
{
	int admin_port = kwt_free_port();
	char env_admin[64];
	snprintf(env_admin, sizeof(env_admin), "KEYWARD_HTTP_ADMIN_LISTEN=127.0.0.1:%d", admin_port);
	const char *env[] = {env_admin, NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	kwt_daemon admin = dd;
	admin.port = admin_port;
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&dd, "/metrics", &r), 0);
	kwt_assert_json_error(&r, 404, "not_found");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&dd, "/readyz", &r), 0);
	kwt_assert_json_error(&r, 404, "not_found");
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&dd, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&admin, "/metrics", &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_not_null(strstr(r.body, "keyward_http_requests_total"), "%s", r.body);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_http_get(&admin, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	/* The API is not on the admin listener. */
	cr_assert_eq(
	    kwt_http_req(&admin, "GET", "/api/v1/api-keys", "Authorization: Bearer nope\r\n", NULL, &r), 0);
	kwt_assert_json_error(&r, 404, "not_found");
	kwt_resp_free(&r);
	kwt_daemon_stop(&dd);
}
