/* changes.h — the change feed (DESIGN §5.9, migration 0011): what another
 * instance changed, seen here within a second. src/db/changes.c.
 *
 * A thread with its own connection (application_name keyward-changes)
 * runs LISTEN keyward_changes. A notification is a cue: its payload must
 * be the id of a row of the changes table, which the thread then reads and
 * hands to every sink; a payload that is not an id, or names no row, is
 * ignored and counted. The table is the truth: a forged notification can
 * only repeat a real change, and every sink applies a change idempotently.
 *
 * Each (re)connection first LISTENs, then resets every sink (drop all that
 * was learned from the database), then counts as fresh; a heartbeat every
 * KW_CHANGES_BEAT_MS proves the connection. kw_changes_fresh() is false
 * once no contact was made for KW_CHANGES_FRESH_MS: a sink's cache must
 * then not be used, so nothing stale is served for more than a second
 * after a change on another instance. */
#ifndef KEYWARD_CHANGES_H
#define KEYWARD_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"

#define KW_CHANGES_CHANNEL  "keyward_changes"
#define KW_CHANGES_BEAT_MS  250
#define KW_CHANGES_FRESH_MS 750

typedef struct kw_change {
	int64_t id;
	const char *kind;      /* "transit_key" */
	const char *tenant_id; /* "" when the change is not a tenant's */
	const char *subject;   /* the thing changed (a transit key's name) */
} kw_change;

typedef struct kw_change_sink {
	void (*apply)(void *arg, const kw_change *c); /* one change */
	void (*reset)(void *arg);                     /* forget everything: the feed (re)started */
	void (*tick)(void *arg);                      /* every heartbeat (may be NULL) */
	void *arg;
} kw_change_sink;

typedef struct kw_changes kw_changes;

typedef struct kw_changes_stats {
	uint64_t applied, ignored, reconnects;
} kw_changes_stats;

/* Starts the thread; sinks (at most 4) are called on it, in order. */
KW_MUST_CHECK kw_err kw_changes_start(const char *conninfo, const kw_change_sink *sinks, size_t nsinks,
                                      kw_changes **out);
/* True while the feed is connected and made contact within
 * KW_CHANGES_FRESH_MS. NULL: false. */
bool kw_changes_fresh(kw_changes *f);
/* Waits up to timeout_ms for the first connection; its freshness. */
bool kw_changes_wait_ready(kw_changes *f, int timeout_ms);
void kw_changes_stats_get(kw_changes *f, kw_changes_stats *out);
void kw_changes_stop(kw_changes *f);

#endif
