/* listen.h — a PostgreSQL connection for a background thread that must
 * never block its own shutdown: connect, queries and LISTEN notifications
 * without blocking, every wait going through the caller's wait function
 * (which also watches the caller's stop signal). src/db/listen.c.
 *
 * Used by the revocation list (src/auth/revocation.c) through the queries
 * of keyward/repo_revocations.h. Statements carry no data, so the
 * server's error messages may be logged; the conninfo never is. */
#ifndef KEYWARD_LISTEN_H
#define KEYWARD_LISTEN_H

#include <stdbool.h>
#include <stdint.h>

#include "keyward/core/log.h"
#include "keyward/db/db.h"

typedef struct kw_listener kw_listener;

/* Waits until fd (-1: none) is ready for events (poll bits) or until
 * deadline_ms on the monotonic clock. 1: ready; 0: timed out; -1: the
 * caller is stopping (or poll failed). */
typedef int (*kw_listener_wait_fn)(void *arg, int fd, short events, int64_t deadline_ms);

typedef struct kw_listener_opts {
	const char *conninfo;
	const char *app_name; /* application_name, after the conninfo's (so it wins) */
	const char *log_name; /* prefix of log lines ("revocations") */
	kw_listener_wait_fn wait;
	void *wait_arg;
	int connect_ms, query_ms; /* slower than this is an error */
} kw_listener_opts;

/* NULL on failure, logged at level unless the wait said stop. */
kw_listener *kw_listener_connect(const kw_listener_opts *opts, kw_log_level level);
/* Runs one statement without parameters; *out (if non-NULL) gets the
 * result. KW_ERR_DB_UNAVAILABLE when the connection is gone or slow (drop
 * it), KW_ERR_DB when the statement failed. */
KW_MUST_CHECK kw_err kw_listener_query(kw_listener *l, const char *sql, kw_log_level level,
                                       kw_db_result **out);
/* The socket to wait on for notifications. */
int kw_listener_fd(const kw_listener *l);
/* Reads what arrived on the socket; false when the connection is lost
 * (logged). */
bool kw_listener_consume(kw_listener *l);
/* Hands each queued notification on channel to each(arg, payload); false
 * if one of them returned false (the rest are still handed over). */
bool kw_listener_drain(kw_listener *l, const char *channel, bool (*each)(void *arg, const char *payload),
                       void *arg);
void kw_listener_close(kw_listener *l);

/* A wait function for the threads that use a listener: polls fd (-1: none)
 * for events and wake_fd (an eventfd written when the thread must stop)
 * until deadline_ms (monotonic). 1: fd ready; 0: timed out; -1: woken or
 * poll failed (logged with log_name). */
int kw_listener_poll(int wake_fd, const char *log_name, int fd, short events, int64_t deadline_ms);
/* The monotonic clock in milliseconds. */
int64_t kw_mono_ms(void);

#endif
