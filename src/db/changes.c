/* changes.c — see keyward/db/changes.h. */
#include "keyward/db/changes.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "keyward/core/log.h"
#include "keyward/db/listen.h"

#define KW_CF_QUERY_MS       5000
#define KW_CF_CONNECT_MS     10000
#define KW_CF_BACKOFF_MIN_MS 100
#define KW_CF_BACKOFF_MAX_MS 1000
#define KW_CF_MAX_SINKS      4
#define KW_CF_MAX_CUES       64 /* ids read per query */

#define SQL_LISTEN    "LISTEN " KW_CHANGES_CHANNEL
#define SQL_HEARTBEAT "SELECT id FROM changes LIMIT 1"

struct kw_changes {
	char *conninfo; /* may carry a password: wiped on free, never logged */
	kw_change_sink sink[KW_CF_MAX_SINKS];
	size_t nsinks;
	int wake_fd;
	pthread_t thread;
	atomic_bool stopping, connected;
	_Atomic int64_t last_ok_ms;
	atomic_ullong applied, ignored, reconnects;
	/* The cues of the notifications being drained. */
	int64_t cue[KW_CF_MAX_CUES];
	size_t ncues;
	bool overflow;
};

static int wait_fd(void *arg, int fd, short events, int64_t deadline_ms)
{
	kw_changes *f = arg;
	if (atomic_load(&f->stopping))
		return -1;
	return kw_listener_poll(f->wake_fd, "changes", fd, events, deadline_ms);
}

static void each_sink_reset(kw_changes *f)
{
	for (size_t i = 0; i < f->nsinks; i++)
		f->sink[i].reset(f->sink[i].arg);
}

/* A payload is a cue only if it is a row id: 1..2^63-1, decimal, no sign,
 * no leading zero. */
static bool collect_cue(void *arg, const char *payload)
{
	kw_changes *f = arg;
	size_t n = strnlen(payload, 20);
	bool digits = n > 0 && n < 20 && payload[0] != '0' && payload[n] == '\0';
	for (size_t i = 0; digits && i < n; i++)
		digits = payload[i] >= '0' && payload[i] <= '9';
	if (!digits) {
		atomic_fetch_add(&f->ignored, 1);
		return true;
	}
	if (f->ncues == KW_CF_MAX_CUES) {
		f->overflow = true; /* more than a query's worth: read them later */
		return true;
	}
	f->cue[f->ncues++] = (int64_t)strtoll(payload, NULL, 10);
	return true;
}

/* Reads the rows the collected cues name and applies them in id order;
 * cues naming nothing are counted as ignored. */
static kw_err apply_cues(kw_changes *f, kw_listener *l)
{
	char sql[128 + KW_CF_MAX_CUES * 21];
	int off = snprintf(sql, sizeof(sql),
	                   "SELECT id::text, kind, coalesce(tenant_id::text, ''), subject FROM changes "
	                   "WHERE id IN (");
	for (size_t i = 0; i < f->ncues; i++)
		off += snprintf(sql + off, sizeof(sql) - (size_t)off, "%s%" PRId64, i ? "," : "", f->cue[i]);
	snprintf(sql + off, sizeof(sql) - (size_t)off, ") ORDER BY id");
	kw_db_result *res = NULL;
	kw_err err = kw_listener_query(l, sql, KW_LOG_WARN, &res);
	if (err != KW_OK)
		return err;
	int n = kw_db_nrows(res);
	size_t named = 0;
	for (int i = 0; i < n; i++) {
		kw_change c = {.id = strtoll(kw_db_value(res, i, 0), NULL, 10),
		               .kind = kw_db_value(res, i, 1),
		               .tenant_id = kw_db_value(res, i, 2),
		               .subject = kw_db_value(res, i, 3)};
		for (size_t s = 0; s < f->nsinks; s++)
			f->sink[s].apply(f->sink[s].arg, &c);
		atomic_fetch_add(&f->applied, 1);
	}
	for (size_t i = 0; i < f->ncues; i++) /* duplicates name one row */
		for (int r = 0; r < n; r++)
			if (strtoll(kw_db_value(res, r, 0), NULL, 10) == f->cue[i]) {
				named++;
				break;
			}
	atomic_fetch_add(&f->ignored, f->ncues - named);
	kw_db_result_free(res);
	f->ncues = 0;
	return KW_OK;
}

/* Drains the notifications that arrived and applies what they name. A
 * drain that overflowed cannot tell what it dropped: reconnect (reset). */
static bool drain(kw_changes *f, kw_listener *l)
{
	f->ncues = 0;
	f->overflow = false;
	(void)kw_listener_drain(l, KW_CHANGES_CHANNEL, collect_cue, f);
	if (f->ncues > 0 && apply_cues(f, l) != KW_OK)
		return false;
	if (f->overflow)
		kw_warn("changes: more than %d notifications at once; starting over", KW_CF_MAX_CUES);
	return !f->overflow;
}

static void mark_contact(kw_changes *f)
{
	atomic_store(&f->last_ok_ms, kw_mono_ms());
}

static bool session(kw_changes *f, kw_log_level level)
{
	kw_listener_opts opts = {.conninfo = f->conninfo,
	                         .app_name = "keyward-changes",
	                         .log_name = "changes",
	                         .wait = wait_fd,
	                         .wait_arg = f,
	                         .connect_ms = KW_CF_CONNECT_MS,
	                         .query_ms = KW_CF_QUERY_MS};
	kw_listener *conn = kw_listener_connect(&opts, level);
	bool up = false;
	if (conn == NULL)
		return false;
	if (kw_listener_query(conn, SQL_LISTEN, level, NULL) != KW_OK ||
	    kw_listener_query(conn, SQL_HEARTBEAT, level, NULL) != KW_OK)
		goto done;
	/* Listening: whatever changes from now on is announced; what changed
	 * before is forgotten by the reset. */
	each_sink_reset(f);
	mark_contact(f);
	atomic_store(&f->connected, true);
	up = true;
	kw_info("changes: following the change feed");
	int64_t next_beat = kw_mono_ms() + KW_CHANGES_BEAT_MS;
	while (!atomic_load(&f->stopping)) {
		int w = wait_fd(f, kw_listener_fd(conn), POLLIN, next_beat);
		if (w < 0)
			break;
		if (w > 0 && (!kw_listener_consume(conn) || !drain(f, conn)))
			break;
		if (kw_mono_ms() < next_beat)
			continue;
		if (kw_listener_query(conn, SQL_HEARTBEAT, KW_LOG_WARN, NULL) != KW_OK || !drain(f, conn))
			break;
		mark_contact(f);
		for (size_t i = 0; i < f->nsinks; i++)
			if (f->sink[i].tick)
				f->sink[i].tick(f->sink[i].arg);
		next_beat = kw_mono_ms() + KW_CHANGES_BEAT_MS;
	}
done:
	atomic_store(&f->connected, false);
	kw_listener_close(conn);
	return up;
}

static void *feed_thread(void *arg)
{
	kw_changes *f = arg;
	int backoff = KW_CF_BACKOFF_MIN_MS;
	unsigned failures = 0;
	while (!atomic_load(&f->stopping)) {
		kw_log_level level = failures % 60 == 0 ? KW_LOG_WARN : KW_LOG_DEBUG;
		if (session(f, level)) {
			backoff = KW_CF_BACKOFF_MIN_MS;
			failures = 0;
			atomic_fetch_add(&f->reconnects, 1);
			if (!atomic_load(&f->stopping))
				kw_warn("changes: lost the change feed; reconnecting");
		} else {
			failures++;
		}
		if (wait_fd(f, -1, 0, kw_mono_ms() + backoff) < 0)
			break;
		backoff = backoff * 2 > KW_CF_BACKOFF_MAX_MS ? KW_CF_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

static void feed_free(kw_changes *f)
{
	if (f->wake_fd >= 0)
		close(f->wake_fd);
	if (f->conninfo != NULL) {
		OPENSSL_cleanse(f->conninfo, strlen(f->conninfo));
		free(f->conninfo);
	}
	free(f);
}

kw_err kw_changes_start(const char *conninfo, const kw_change_sink *sinks, size_t nsinks, kw_changes **out)
{
	if (conninfo == NULL || out == NULL || nsinks > KW_CF_MAX_SINKS)
		kw_misuse("kw_changes_start: bad argument");
	kw_changes *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return KW_ERR_NOMEM;
	f->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	f->conninfo = strdup(conninfo);
	for (size_t i = 0; i < nsinks; i++)
		f->sink[i] = sinks[i];
	f->nsinks = nsinks;
	if (f->wake_fd < 0 || f->conninfo == NULL || pthread_create(&f->thread, NULL, feed_thread, f) != 0) {
		feed_free(f);
		return KW_ERR_NOMEM;
	}
	*out = f;
	return KW_OK;
}

bool kw_changes_fresh(kw_changes *f)
{
	return f != NULL && atomic_load(&f->connected) &&
	       kw_mono_ms() - atomic_load(&f->last_ok_ms) < KW_CHANGES_FRESH_MS;
}

bool kw_changes_wait_ready(kw_changes *f, int timeout_ms)
{
	int64_t until = kw_mono_ms() + timeout_ms;
	while (!kw_changes_fresh(f) && kw_mono_ms() < until)
		usleep(10000);
	return kw_changes_fresh(f);
}

void kw_changes_stats_get(kw_changes *f, kw_changes_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (f == NULL)
		return;
	out->applied = atomic_load(&f->applied);
	out->ignored = atomic_load(&f->ignored);
	out->reconnects = atomic_load(&f->reconnects);
}

void kw_changes_stop(kw_changes *f)
{
	uint64_t one = 1;
	if (f == NULL)
		return;
	atomic_store(&f->stopping, true);
	if (write(f->wake_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		kw_warn("changes: cannot wake the feed: errno %d", errno);
	pthread_join(f->thread, NULL);
	feed_free(f);
}
