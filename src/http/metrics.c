/* metrics.c — request counters and latency histograms, Prometheus text.
 *
 * Storage is a fixed array indexed by (route, status slot); every bump is
 * a relaxed atomic add, so the hot path takes no lock. */
#include "keyward/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/app.h"
#include "keyward/auth.h"
#include "keyward/http.h"

#define MAX_ROUTES 64
#define NBUCKETS   13
static const int statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 429, 431, 500, 501, 503};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]) + 1) /* + "other" */
static const double buckets[NBUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                         0.025,  0.05,    0.1,    0.25,  1.0,    5.0};

typedef struct kw_series {
	atomic_ullong count;
	atomic_ullong usec_sum;
	atomic_ullong bucket[NBUCKETS];
} kw_series;

/* Row 0 is "unmatched"; route i is row i + 1. */
static kw_series series[MAX_ROUTES + 1][NSTATUS];
static atomic_ullong rejected_busy;

static size_t status_slot(int status)
{
	for (size_t i = 0; i < NSTATUS - 1; i++)
		if (statuses[i] == status)
			return i;
	return NSTATUS - 1;
}

void kw_metrics_observe(int route, int status, double seconds)
{
	size_t row = (route < 0 || route >= MAX_ROUTES) ? 0 : (size_t)route + 1;
	kw_series *s = &series[row][status_slot(status)];
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->usec_sum, (unsigned long long)(seconds * 1e6), memory_order_relaxed);
	for (size_t b = 0; b < NBUCKETS; b++) {
		if (seconds <= buckets[b]) {
			atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
			break;
		}
	}
}

void kw_metrics_rejected_busy(void)
{
	atomic_fetch_add_explicit(&rejected_busy, 1, memory_order_relaxed);
}

typedef struct kw_buf {
	char *p;
	size_t len, cap;
	bool failed;
} kw_buf;

__attribute__((format(printf, 2, 3))) static void out(kw_buf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap * 2 + (size_t)n;
		char *np = realloc(b->p, ncap);
		if (np == NULL) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

static void render_http(kw_buf *b)
{
	out(b, "# HELP keyward_http_requests_total HTTP requests answered, by route and status.\n"
	       "# TYPE keyward_http_requests_total counter\n");
	for (size_t r = 0; r <= MAX_ROUTES && r <= kw_routes_count; r++) {
		const char *name = r == 0 ? "unmatched" : kw_routes[r - 1].name;
		for (size_t s = 0; s < NSTATUS; s++) {
			unsigned long long c =
			    atomic_load_explicit(&series[r][s].count, memory_order_relaxed);
			if (c == 0)
				continue;
			char st[8];
			snprintf(st, sizeof(st), s < NSTATUS - 1 ? "%d" : "other",
			         statuses[s < NSTATUS - 1 ? s : 0]);
			out(b, "keyward_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", name, st, c);
		}
	}
	out(b, "# HELP keyward_http_request_duration_seconds Time from request parsed to reply queued.\n"
	       "# TYPE keyward_http_request_duration_seconds histogram\n");
	for (size_t r = 0; r <= MAX_ROUTES && r <= kw_routes_count; r++) {
		const char *name = r == 0 ? "unmatched" : kw_routes[r - 1].name;
		for (size_t s = 0; s < NSTATUS; s++) {
			kw_series *se = &series[r][s];
			unsigned long long c = atomic_load_explicit(&se->count, memory_order_relaxed);
			if (c == 0)
				continue;
			char st[8];
			snprintf(st, sizeof(st), s < NSTATUS - 1 ? "%d" : "other",
			         statuses[s < NSTATUS - 1 ? s : 0]);
			unsigned long long cum = 0;
			for (size_t k = 0; k < NBUCKETS; k++) {
				cum += atomic_load_explicit(&se->bucket[k], memory_order_relaxed);
				out(b,
				    "keyward_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\","
				    "le=\"%g\"} "
				    "%llu\n",
				    name, st, buckets[k], cum);
			}
			out(b,
			    "keyward_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"+"
			    "Inf\"} %llu\n",
			    name, st, c);
			out(b, "keyward_http_request_duration_seconds_sum{route=\"%s\",status=\"%s\"} %.6f\n",
			    name, st,
			    (double)atomic_load_explicit(&se->usec_sum, memory_order_relaxed) / 1e6);
			out(b,
			    "keyward_http_request_duration_seconds_count{route=\"%s\",status=\"%s\"} %llu\n",
			    name, st, c);
		}
	}
	out(b,
	    "# HELP keyward_http_rejected_busy_total Requests refused with 503 because the queue was full.\n"
	    "# TYPE keyward_http_rejected_busy_total counter\nkeyward_http_rejected_busy_total %llu\n",
	    atomic_load(&rejected_busy));
}

static void render_hsm(kw_buf *b, kw_app *app)
{
	kw_hsm_stats st;
	kw_hsm_stats_get(app->hsm, &st);
	out(b, "# HELP keyward_hsm_operations_total PKCS#11 operations, by operation.\n"
	       "# TYPE keyward_hsm_operations_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		out(b, "keyward_hsm_operations_total{op=\"%s\"} %llu\n", kw_hsm_op_name((kw_hsm_op)op),
		    (unsigned long long)st.count[op]);
	out(b, "# HELP keyward_hsm_operation_errors_total PKCS#11 operations that failed.\n"
	       "# TYPE keyward_hsm_operation_errors_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		out(b, "keyward_hsm_operation_errors_total{op=\"%s\"} %llu\n", kw_hsm_op_name((kw_hsm_op)op),
		    (unsigned long long)st.errors[op]);
	out(b, "# HELP keyward_hsm_operation_seconds_total Time spent in PKCS#11 operations.\n"
	       "# TYPE keyward_hsm_operation_seconds_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		out(b, "keyward_hsm_operation_seconds_total{op=\"%s\"} %.6f\n", kw_hsm_op_name((kw_hsm_op)op),
		    (double)st.usec[op] / 1e6);
	out(b,
	    "# HELP keyward_hsm_sessions_revived_total Sessions reopened after the token dropped them.\n"
	    "# TYPE keyward_hsm_sessions_revived_total counter\nkeyward_hsm_sessions_revived_total %llu\n",
	    (unsigned long long)st.revived_sessions);
}

char *kw_metrics_render(kw_app *app, size_t *len)
{
	kw_buf b = {.p = malloc(16384), .cap = 16384};
	if (b.p == NULL)
		return NULL;
	render_http(&b);
	if (app->hsm)
		render_hsm(&b, app);
	if (app->pool) {
		out(&b,
		    "# HELP keyward_worker_queue_depth Calls waiting for a worker.\n"
		    "# TYPE keyward_worker_queue_depth gauge\nkeyward_worker_queue_depth %d\n"
		    "# HELP keyward_workers Worker threads.\n# TYPE keyward_workers gauge\nkeyward_workers "
		    "%d\n"
		    "# HELP keyward_worker_batched_calls_total Calls run in a batch with others of their "
		    "route.\n# TYPE keyward_worker_batched_calls_total counter\n"
		    "keyward_worker_batched_calls_total %llu\n",
		    kw_pool_queue_depth(app->pool), kw_pool_workers(app->pool),
		    kw_pool_batched_calls(app->pool));
	}
	out(&b,
	    "# HELP keyward_db_connections Open PostgreSQL connections held by workers.\n"
	    "# TYPE keyward_db_connections gauge\nkeyward_db_connections %d\n"
	    "# HELP keyward_db_statements_total SQL statements sent.\n"
	    "# TYPE keyward_db_statements_total counter\nkeyward_db_statements_total %llu\n",
	    atomic_load(&app->db_connected), kw_db_statements());
	if (app->audit) {
		unsigned long long rows, commits;
		kw_audit_writer_stats(app->audit, &rows, &commits);
		out(&b,
		    "# HELP keyward_audit_group_rows_total Audit rows written by the group-commit writer.\n"
		    "# TYPE keyward_audit_group_rows_total counter\nkeyward_audit_group_rows_total %llu\n"
		    "# HELP keyward_audit_group_commits_total Transactions the group-commit writer "
		    "committed.\n"
		    "# TYPE keyward_audit_group_commits_total counter\nkeyward_audit_group_commits_total "
		    "%llu\n",
		    rows, commits);
	}
	kw_auth_stats as;
	kw_auth_stats_get(&as);
	out(&b,
	    "# HELP keyward_auth_key_lookups_total API keys looked up in the database (cache misses).\n"
	    "# TYPE keyward_auth_key_lookups_total counter\nkeyward_auth_key_lookups_total %llu\n"
	    "# HELP keyward_auth_cache_hits_total API keys accepted from the verified-key cache.\n"
	    "# TYPE keyward_auth_cache_hits_total counter\nkeyward_auth_cache_hits_total %llu\n"
	    "# HELP keyward_auth_refused_total Requests refused by authentication, by status.\n"
	    "# TYPE keyward_auth_refused_total counter\n"
	    "keyward_auth_refused_total{status=\"401\"} %llu\nkeyward_auth_refused_total{status=\"403\"} "
	    "%llu\n"
	    "# HELP keyward_ratelimit_rejections_total Requests refused with 429.\n"
	    "# TYPE keyward_ratelimit_rejections_total counter\nkeyward_ratelimit_rejections_total %llu\n",
	    as.key_lookups, as.cache_hits, as.refused_401, as.refused_403, as.refused_429);
	if (app->server)
		out(&b,
		    "# HELP keyward_http_in_flight Requests being handled.\n"
		    "# TYPE keyward_http_in_flight gauge\nkeyward_http_in_flight %ld\n",
		    kw_server_in_flight(app->server));
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}
