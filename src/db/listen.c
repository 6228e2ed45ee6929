/* listen.c — see keyward/db/listen.h. */
#include "keyward/db/listen.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kw_listener {
	PGconn *conn;
	kw_listener_opts o;
};

int64_t kw_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kw_listener_poll(int wake_fd, const char *log_name, int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd p[2] = {{wake_fd, POLLIN, 0}, {fd, events, 0}};
		int64_t left = deadline_ms - kw_mono_ms();
		if (left < 0)
			left = 0;
		int n = poll(p, fd >= 0 ? 2 : 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			kw_warn("%s: poll failed: errno %d", log_name, errno);
			return -1;
		}
		if (p[0].revents != 0)
			return -1;
		if (n > 0 && fd >= 0 && p[1].revents != 0)
			return 1;
		if (n == 0 || kw_mono_ms() >= deadline_ms)
			return 0;
	}
}

static void notice_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

kw_listener *kw_listener_connect(const kw_listener_opts *opts, kw_log_level level)
{
	const char *const keys[] = {"dbname", "application_name", NULL};
	const char *const vals[] = {opts->conninfo, opts->app_name, NULL};
	int64_t deadline = kw_mono_ms() + opts->connect_ms;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	kw_listener *l = calloc(1, sizeof(*l));
	PGconn *conn = l != NULL ? PQconnectStartParams(keys, vals, 1) : NULL;

	if (conn == NULL) {
		kw_log(level, "%s: cannot connect: out of memory", opts->log_name);
		free(l);
		return NULL;
	}
	while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		int w = opts->wait(opts->wait_arg, PQsocket(conn),
		                   st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
		if (w < 0)
			goto fail; /* stopping: nothing to say */
		if (w == 0) {
			kw_log(level, "%s: connection timed out", opts->log_name);
			goto fail;
		}
		st = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		/* libpq's connection errors name host and role, never a password. */
		kw_log(level, "%s: connection failed: %s", opts->log_name, PQerrorMessage(conn));
		goto fail;
	}
	PQsetNoticeProcessor(conn, notice_quiet, NULL);
	l->conn = conn;
	l->o = *opts;
	return l;
fail:
	PQfinish(conn);
	free(l);
	return NULL;
}

kw_err kw_listener_query(kw_listener *l, const char *sql, kw_log_level level, kw_db_result **out)
{
	int64_t deadline = kw_mono_ms() + l->o.query_ms;
	PGresult *res = NULL, *first = NULL;
	const char *name = l->o.log_name;

	if (PQsendQueryParams(l->conn, sql, 0, NULL, NULL, NULL, NULL, 0) != 1) {
		kw_log(level, "%s: cannot send a query: %s", name, PQerrorMessage(l->conn));
		return KW_ERR_DB_UNAVAILABLE;
	}
	while (PQisBusy(l->conn)) {
		int w = l->o.wait(l->o.wait_arg, PQsocket(l->conn), POLLIN, deadline);
		if (w <= 0) {
			if (w == 0)
				kw_log(level, "%s: no answer within %d ms", name, l->o.query_ms);
			return KW_ERR_DB_UNAVAILABLE; /* the connection is dropped after this */
		}
		if (PQconsumeInput(l->conn) != 1) {
			kw_log(level, "%s: connection lost: %s", name, PQerrorMessage(l->conn));
			return KW_ERR_DB_UNAVAILABLE;
		}
	}
	while ((res = PQgetResult(l->conn)) != NULL) {
		if (first == NULL)
			first = res;
		else
			PQclear(res);
	}
	ExecStatusType st = first != NULL ? PQresultStatus(first) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *state = first != NULL ? PQresultErrorField(first, PG_DIAG_SQLSTATE) : NULL;
		const char *msg = first != NULL ? PQresultErrorField(first, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		kw_log(level, "%s: query failed: SQLSTATE %s: %s", name, state != NULL ? state : "none",
		       msg != NULL ? msg : PQerrorMessage(l->conn));
		kw_err err = PQstatus(l->conn) == CONNECTION_BAD ? KW_ERR_DB_UNAVAILABLE : KW_ERR_DB;
		PQclear(first);
		return err;
	}
	if (out != NULL)
		*out = first;
	else
		PQclear(first);
	return KW_OK;
}

int kw_listener_fd(const kw_listener *l)
{
	return PQsocket(l->conn);
}

bool kw_listener_consume(kw_listener *l)
{
	if (PQconsumeInput(l->conn) == 1)
		return true;
	kw_warn("%s: connection lost: %s", l->o.log_name, PQerrorMessage(l->conn));
	return false;
}

bool kw_listener_drain(kw_listener *l, const char *channel, bool (*each)(void *arg, const char *payload),
                       void *arg)
{
	PGnotify *nf;
	bool ok = true;
	while ((nf = PQnotifies(l->conn)) != NULL) {
		if (strcmp(nf->relname, channel) == 0 && !each(arg, nf->extra))
			ok = false;
		PQfreemem(nf);
	}
	return ok;
}

void kw_listener_close(kw_listener *l)
{
	if (l == NULL)
		return;
	PQfinish(l->conn);
	free(l);
}
