/* metrics.c — the transport's request counters and latency histograms.
 *
 * Storage is a fixed array indexed by (route, status slot); every bump is
 * a relaxed atomic add, so the hot path takes no lock. Route names come
 * from the table the server is handed (kw_metrics_set_routes); what the
 * rest of the service counts is rendered above the transport (src/api). */
#include "keyward/http/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"
#include "keyward/http/http.h"

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
/* Set once, before the I/O threads start. */
static const char *route_names[MAX_ROUTES];
static size_t route_count;

void kw_metrics_set_routes(const kw_route *routes, size_t n)
{
	if (n > MAX_ROUTES)
		kw_misuse("kw_metrics_set_routes: more than 64 routes");
	for (size_t i = 0; i < n; i++)
		route_names[i] = routes[i].name;
	route_count = n;
}

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

void kw_metrics_render_http(kw_strbuf *b)
{
	kw_strbuf_printf(b,
	                 "# HELP keyward_http_requests_total HTTP requests answered, by route and status.\n"
	                 "# TYPE keyward_http_requests_total counter\n");
	for (size_t r = 0; r <= route_count; r++) {
		const char *name = r == 0 ? "unmatched" : route_names[r - 1];
		for (size_t s = 0; s < NSTATUS; s++) {
			unsigned long long c =
			    atomic_load_explicit(&series[r][s].count, memory_order_relaxed);
			if (c == 0)
				continue;
			char st[8];
			snprintf(st, sizeof(st), s < NSTATUS - 1 ? "%d" : "other",
			         statuses[s < NSTATUS - 1 ? s : 0]);
			kw_strbuf_printf(b, "keyward_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
			                 name, st, c);
		}
	}
	kw_strbuf_printf(
	    b, "# HELP keyward_http_request_duration_seconds Time from request parsed to reply queued.\n"
	       "# TYPE keyward_http_request_duration_seconds histogram\n");
	for (size_t r = 0; r <= route_count; r++) {
		const char *name = r == 0 ? "unmatched" : route_names[r - 1];
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
				kw_strbuf_printf(
				    b,
				    "keyward_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\","
				    "le=\"%g\"} "
				    "%llu\n",
				    name, st, buckets[k], cum);
			}
			kw_strbuf_printf(
			    b,
			    "keyward_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"+"
			    "Inf\"} %llu\n",
			    name, st, c);
			kw_strbuf_printf(
			    b, "keyward_http_request_duration_seconds_sum{route=\"%s\",status=\"%s\"} %.6f\n",
			    name, st,
			    (double)atomic_load_explicit(&se->usec_sum, memory_order_relaxed) / 1e6);
			kw_strbuf_printf(
			    b,
			    "keyward_http_request_duration_seconds_count{route=\"%s\",status=\"%s\"} %llu\n",
			    name, st, c);
		}
	}
	kw_strbuf_printf(
	    b,
	    "# HELP keyward_http_rejected_busy_total Requests refused with 503 because the queue was full.\n"
	    "# TYPE keyward_http_rejected_busy_total counter\nkeyward_http_rejected_busy_total %llu\n",
	    atomic_load(&rejected_busy));
}
