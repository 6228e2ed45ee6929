/* metrics.h — process-wide counters rendered as Prometheus text.
 *
 * Counters are relaxed atomics bumped from any thread; rendering reads them
 * without a lock, so a scrape is a consistent-enough snapshot. */
#ifndef KEYWARD_METRICS_H
#define KEYWARD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "keyward/core/strbuf.h"

struct kw_route;
/* Names the rows of the route table (at most 64) for rendering; called by
 * kw_server_start before any request. */
void kw_metrics_set_routes(const struct kw_route *routes, size_t n);
/* route = index in the route table, or -1 for unmatched; seconds = latency. */
void kw_metrics_observe(int route, int status, double seconds);
void kw_metrics_rejected_busy(void);
/* Appends the HTTP counters and histograms as Prometheus text. */
void kw_metrics_render_http(kw_strbuf *b);

#endif
