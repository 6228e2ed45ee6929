/* metrics.h — process-wide counters rendered as Prometheus text.
 *
 * Counters are relaxed atomics bumped from any thread; rendering reads them
 * without a lock, so a scrape is a consistent-enough snapshot. */
#ifndef KEYWARD_METRICS_H
#define KEYWARD_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct kw_app kw_app;

/* route = index in kw_routes, or -1 for unmatched; seconds = latency. */
void kw_metrics_observe(int route, int status, double seconds);
void kw_metrics_rejected_busy(void);
/* Renders every metric (HTTP, HSM, queue, DB, audit) into a malloc'd
 * string. */
char *kw_metrics_render(kw_app *app, size_t *len);

#endif
