/* writer.c — group commit for audit rows that have no transaction of their
 * own (reads, denied attempts).
 *
 * One thread owns a connection, an HSM session and a chain. Callers queue
 * an event and block; the thread takes everything queued (up to max_batch),
 * writes it in one transaction — one INSERT of every row, of any tenants
 * and users, and one head UPDATE, in one round trip — commits once, and
 * wakes every caller with the outcome. The transaction is marked as the
 * writer's (app.audit_writer), which its own INSERT policy admits: audit
 * rows are protected by the MAC chain, not by RLS on insert (see
 * docs/threat-model.md). While it commits, the next batch gathers, so the number of
 * durable commits per second stops bounding the number of audited
 * requests. A caller is answered only after its row is durable.
 *
 * A caller may also hand over statements of its own (kw_audit_writer_log_with,
 * e.g. the rows of a new session): they run in the same transaction, before
 * the rows and under the caller's tenant's scope, so the change and its
 * audit row commit together — and many callers' changes share one commit.
 *
 * Failure: if the connection was lost before COMMIT, the thread reconnects
 * and retries the batch once; if it was lost during COMMIT, the outcome is
 * unknown, so the callers get KW_ERR_DB_UNAVAILABLE and the chain restarts
 * under a new id (the old one verifies whichever way the commit went). A
 * batch that the database refuses (e.g. a context that is not JSON) is
 * retried row by row so one bad row fails only its own caller.
 *
 * Locking: w->mu guards the queue, `stopping` and every request's `done`
 * and `result`; the database, session and chain belong to the thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_internal.h"
#include "keyward/core/log.h"

#define KW_WRITER_MAX_QUEUE 4096

typedef struct wreq {
	struct wreq *next;
	const kw_audit_event *ev; /* the caller's: it blocks until done */
	const kw_db_stmt *pre;    /* the caller's change, run just before its row */
	size_t npre;
	kw_audit_done_fn cb; /* async: called on the writer thread, then r is freed */
	void *cb_arg;
	kw_err result;
	bool done;
	pthread_cond_t cv;
} wreq;

struct kw_audit_writer {
	kw_hsm *hsm;
	kw_db *db;
	kw_hsm_session *session;
	kw_audit_chain *chain;
	size_t max_batch;
	wreq **batch;
	kw_err *results;
	char **rows_sql; /* [n]: the INSERT of n rows, built on first use */

	pthread_mutex_t mu;
	pthread_cond_t wake;
	wreq *head, *tail;
	size_t queued;
	bool stopping;
	bool thread_started;
	pthread_t thread;

	atomic_ullong rows, commits;
	atomic_ullong pending; /* queued or in a batch, not yet settled */
};

/* The INSERT of n rows (cached: the writer sees the same sizes again). */
static const char *rows_sql(kw_audit_writer *w, size_t n)
{
	if (w->rows_sql[n] == NULL)
		w->rows_sql[n] = kw_audit_rows_sql(n);
	return w->rows_sql[n];
}

/* One transaction for n events: BEGIN, the writer's mark, each caller's
 * own statements under its scope, one INSERT of every row, the head,
 * COMMIT. *sent_commit tells whether COMMIT went out (then a lost
 * connection leaves the outcome unknown). */
static kw_err write_tx(kw_audit_writer *w, wreq **reqs, size_t n, bool *sent_commit)
{
	kw_err err = KW_OK;
	kw_audit_row *rows = NULL;
	kw_db_stmt *stmts = NULL;
	kw_db_result **res = NULL;
	kw_audit_head head = {0};
	size_t nst = 0, np = n * KW_AUDIT_INSERT_NPARAMS;
	const char **scope = NULL, **values = NULL;
	int *lengths = NULL, *formats = NULL;
	const char *sql = rows_sql(w, n);

	*sent_commit = false;
	size_t cap = 4 + n;
	for (size_t i = 0; i < n; i++)
		cap += reqs[i]->npre;
	rows = calloc(n, sizeof(*rows));
	stmts = calloc(cap, sizeof(*stmts));
	res = calloc(cap, sizeof(*res));
	scope = calloc(2 * n, sizeof(*scope));
	values = calloc(np, sizeof(*values));
	lengths = calloc(np, sizeof(*lengths));
	formats = calloc(np, sizeof(*formats));
	if (sql == NULL || rows == NULL || stmts == NULL || res == NULL || scope == NULL || values == NULL ||
	    lengths == NULL || formats == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	err = kw_db_ensure(w->db);
	if (err != KW_OK)
		goto done;
	/* BEGIN travels in the same pipeline as the rows: one round trip. */
	stmts[nst++] = (kw_db_stmt){"BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, NULL};
	stmts[nst++] = kw_audit_stmt_writer();
	for (size_t i = 0; i < n; i++) {
		err = kw_audit_stage_row(w->chain, w->session, reqs[i]->ev, &rows[i]);
		if (err != KW_OK)
			goto done;
		if (reqs[i]->npre > 0) {
			/* A caller's own statements run under its tenant's (and user's)
			 * scope, as its tables' policies demand. */
			const char *tenant = rows[i].f[KW_AF_TENANT_ID], *user = reqs[i]->ev->user_id;
			scope[2 * i] = tenant != NULL ? tenant : "";
			scope[2 * i + 1] = user != NULL ? user : "";
			stmts[nst++] = kw_db_stmt_scope(&scope[2 * i]);
			for (size_t k = 0; k < reqs[i]->npre; k++)
				stmts[nst++] = reqs[i]->pre[k];
		}
		size_t b = i * KW_AUDIT_INSERT_NPARAMS;
		memcpy(values + b, rows[i].values, KW_AUDIT_INSERT_NPARAMS * sizeof(*values));
		memcpy(lengths + b, rows[i].lengths, KW_AUDIT_INSERT_NPARAMS * sizeof(*lengths));
		memcpy(formats + b, rows[i].formats, KW_AUDIT_INSERT_NPARAMS * sizeof(*formats));
	}
	stmts[nst++] = (kw_db_stmt){sql, (int)np, values, lengths, formats};
	err = kw_audit_stage_head(w->chain, w->session, &head);
	if (err != KW_OK)
		goto done;
	stmts[nst++] = head.stmt;
	err = kw_db_exec_pipeline(w->db, stmts, nst, res);
	if (err != KW_OK)
		goto done;
	err = kw_audit_head_check(w->chain, &head, res[nst - 1]);
	if (err != KW_OK)
		goto done;
	*sent_commit = true;
	err = kw_db_commit(w->db);
done:
	if (err == KW_OK) {
		kw_audit_chain_committed(w->chain);
		atomic_fetch_add(&w->rows, n);
		atomic_fetch_add(&w->commits, 1);
	} else {
		kw_db_rollback(w->db);
		if (*sent_commit && err == KW_ERR_DB_UNAVAILABLE)
			kw_audit_chain_restart(w->chain);
		kw_audit_chain_rolled_back(w->chain);
	}
	for (size_t i = 0; res != NULL && i < cap; i++)
		kw_db_result_free(res[i]);
	for (size_t i = 0; rows != NULL && i < n; i++)
		kw_audit_row_clear(&rows[i]);
	free(res);
	free(stmts);
	free(rows);
	free(scope);
	free(values);
	free(lengths);
	free(formats);
	return err;
}

/* Writes a batch and fills w->results[0..n). */
static void write_batch(kw_audit_writer *w, wreq **reqs, size_t n)
{
	bool sent_commit = false;
	kw_err err = write_tx(w, reqs, n, &sent_commit);

	if (err == KW_ERR_DB_UNAVAILABLE && !sent_commit) {
		/* Lost while idle or mid-batch: nothing committed, try once more. */
		err = write_tx(w, reqs, n, &sent_commit);
	}
	if (err != KW_OK && err != KW_ERR_DB_UNAVAILABLE && !sent_commit && n > 1) {
		/* One row may be bad: isolate it. */
		for (size_t i = 0; i < n; i++)
			w->results[i] = write_tx(w, &reqs[i], 1, &sent_commit);
		return;
	}
	for (size_t i = 0; i < n; i++)
		w->results[i] = err;
}

static void *writer_main(void *arg)
{
	kw_audit_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->head == NULL && !w->stopping)
			pthread_cond_wait(&w->wake, &w->mu);
		if (w->head == NULL)
			break; /* stopping, and the queue is drained */
		size_t n = 0;
		while (w->head != NULL && n < w->max_batch) {
			w->batch[n++] = w->head;
			w->head = w->head->next;
		}
		if (w->head == NULL)
			w->tail = NULL;
		w->queued -= n;
		pthread_mutex_unlock(&w->mu);

		write_batch(w, w->batch, n);

		/* Asynchronous callers are answered here, outside the lock. */
		for (size_t i = 0; i < n; i++) {
			if (w->batch[i]->cb == NULL)
				continue;
			w->batch[i]->cb(w->batch[i]->cb_arg, w->results[i]);
			free(w->batch[i]);
			w->batch[i] = NULL;
		}
		pthread_mutex_lock(&w->mu);
		for (size_t i = 0; i < n; i++) {
			if (w->batch[i] == NULL)
				continue;
			w->batch[i]->result = w->results[i];
			w->batch[i]->done = true;
			pthread_cond_signal(&w->batch[i]->cv);
		}
		atomic_fetch_sub(&w->pending, n);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void writer_free(kw_audit_writer *w)
{
	if (w == NULL)
		return;
	kw_audit_chain_free(w->chain);
	if (w->session != NULL)
		kw_hsm_session_close(w->session);
	kw_db_close(w->db);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->mu);
	for (size_t n = 0; w->rows_sql != NULL && n <= w->max_batch; n++)
		free(w->rows_sql[n]);
	free(w->rows_sql);
	free(w->batch);
	free(w->results);
	free(w);
}

kw_err kw_audit_writer_start(kw_hsm *hsm, const char *conninfo, size_t max_batch, kw_audit_writer **out)
{
	kw_err err = KW_OK;
	kw_audit_writer *w = NULL;
	char name[KW_AUDIT_MAX_WRITER + 1], host[64] = "";

	if (hsm == NULL || conninfo == NULL || out == NULL)
		kw_misuse("kw_audit_writer_start: NULL argument");
	if (max_batch == 0 || max_batch > KW_WRITER_MAX_QUEUE)
		return KW_ERR_INVALID;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->wake, NULL);
	w->hsm = hsm;
	w->max_batch = max_batch;
	w->batch = calloc(max_batch, sizeof(*w->batch));
	w->results = calloc(max_batch, sizeof(*w->results));
	w->rows_sql = calloc(max_batch + 1, sizeof(*w->rows_sql));
	if (w->batch == NULL || w->results == NULL || w->rows_sql == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	err = kw_db_connect(conninfo, &w->db);
	if (err != KW_OK)
		goto done;
	err = kw_hsm_session_open(hsm, &w->session);
	if (err != KW_OK)
		goto done;
	(void)gethostname(host, sizeof(host) - 1);
	snprintf(name, sizeof(name), "keywardd:audit-writer:%s:%ld", host, (long)getpid());
	err = kw_audit_chain_new(hsm, name, &w->chain);
	if (err != KW_OK)
		goto done;
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	w->thread_started = true;
	kw_info("audit: group-commit writer started (chain %s, batch %zu)", kw_audit_chain_id(w->chain),
	        max_batch);
	*out = w;
	w = NULL;
done:
	writer_free(w);
	return err;
}

/* The rule migration 0004 holds vault rows to outside the writer (whose
 * transactions its own policy admits, migration 0007), checked here: a
 * vault row names, as its actor, the user of its tenant it is about. */
static kw_err vault_row_check(const kw_audit_event *ev)
{
	if (strncmp(ev->action, "vault.", 6) != 0)
		return KW_OK;
	if (ev->tenant_id == NULL || ev->user_id == NULL || ev->user_id[0] == '\0' ||
	    strncmp(ev->actor, "user:", 5) != 0 || strcmp(ev->actor + 5, ev->user_id) != 0)
		return KW_ERR_INVALID;
	return KW_OK;
}

/* A request for ev (checked first); NULL with *err set otherwise. */
static wreq *wreq_new(const kw_audit_event *ev, const kw_db_stmt *pre, size_t npre, kw_err *err)
{
	if ((*err = kw_audit_event_check(ev)) != KW_OK || (*err = vault_row_check(ev)) != KW_OK)
		return NULL;
	wreq *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		*err = KW_ERR_NOMEM;
		return NULL;
	}
	r->ev = ev;
	r->pre = pre;
	r->npre = npre;
	r->result = KW_ERR_INTERNAL;
	return r;
}

/* Queues r for the writer thread; false when it is stopping or the queue
 * is full. Call with w->mu held. */
static bool enqueue_locked(kw_audit_writer *w, wreq *r)
{
	if (w->stopping || w->queued >= KW_WRITER_MAX_QUEUE)
		return false;
	if (w->tail != NULL)
		w->tail->next = r;
	else
		w->head = r;
	w->tail = r;
	w->queued++;
	atomic_fetch_add(&w->pending, 1);
	pthread_cond_signal(&w->wake);
	return true;
}

kw_err kw_audit_writer_log(kw_audit_writer *w, const kw_audit_event *ev)
{
	return kw_audit_writer_log_with(w, ev, NULL, 0);
}

kw_err kw_audit_writer_log_with(kw_audit_writer *w, const kw_audit_event *ev, const kw_db_stmt *pre,
                                size_t npre)
{
	kw_err err = KW_OK;
	if (w == NULL)
		kw_misuse("kw_audit_writer_log: NULL writer");
	wreq *r = wreq_new(ev, pre, npre, &err);
	if (r == NULL)
		return err;
	pthread_cond_init(&r->cv, NULL);
	pthread_mutex_lock(&w->mu);
	if (!enqueue_locked(w, r)) {
		err = KW_ERR_BUSY;
	} else {
		/* The writer unlinks r before it sets done, and touches it no more. */
		while (!r->done)
			pthread_cond_wait(&r->cv, &w->mu);
		err = r->result;
	}
	pthread_mutex_unlock(&w->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
	return err;
}

kw_err kw_audit_writer_submit(kw_audit_writer *w, const kw_audit_event *ev, const kw_db_stmt *pre,
                              size_t npre, kw_audit_done_fn cb, void *arg)
{
	kw_err err = KW_OK;
	if (w == NULL || cb == NULL)
		kw_misuse("kw_audit_writer_submit: NULL writer or callback");
	wreq *r = wreq_new(ev, pre, npre, &err);
	if (r == NULL)
		return err;
	r->cb = cb;
	r->cb_arg = arg;
	pthread_mutex_lock(&w->mu);
	if (!enqueue_locked(w, r))
		err = KW_ERR_BUSY;
	else
		r = NULL; /* the writer owns it now */
	pthread_mutex_unlock(&w->mu);
	free(r);
	return err;
}

/* A posted event and the copies of its strings. */
typedef struct posted {
	kw_audit_event ev;
	char text[];
} posted;

static void posted_done(void *arg, kw_err result)
{
	posted *p = arg;
	if (result != KW_OK)
		kw_warn("audit: a refusal row of request %s was not recorded: %s",
		        p->ev.request_id ? p->ev.request_id : "-", kw_err_str(result));
	free(p);
}

kw_err kw_audit_writer_post(kw_audit_writer *w, const kw_audit_event *ev)
{
	kw_err err = kw_audit_event_check(ev);
	if (err != KW_OK)
		return err;
	const char *const src[] = {ev->tenant_id, ev->actor,      ev->action,     ev->target,  ev->status,
	                           ev->ip,        ev->user_agent, ev->request_id, ev->context, ev->user_id};
	enum { NSTR = sizeof(src) / sizeof(src[0]) };
	size_t total = 0;
	for (size_t i = 0; i < NSTR; i++)
		total += src[i] != NULL ? strlen(src[i]) + 1 : 0;
	posted *p = malloc(sizeof(*p) + total);
	if (p == NULL)
		return KW_ERR_NOMEM;
	const char *copy[NSTR];
	char *at = p->text;
	for (size_t i = 0; i < NSTR; i++) {
		copy[i] = NULL;
		if (src[i] == NULL)
			continue;
		size_t n = strlen(src[i]) + 1;
		memcpy(at, src[i], n);
		copy[i] = at;
		at += n;
	}
	p->ev = (kw_audit_event){.tenant_id = copy[0],
	                         .actor = copy[1],
	                         .action = copy[2],
	                         .target = copy[3],
	                         .status = copy[4],
	                         .ip = copy[5],
	                         .user_agent = copy[6],
	                         .request_id = copy[7],
	                         .context = copy[8],
	                         .user_id = copy[9]};
	err = kw_audit_writer_submit(w, &p->ev, NULL, 0, posted_done, p);
	if (err != KW_OK)
		free(p);
	return err;
}

void kw_audit_writer_stats(kw_audit_writer *w, unsigned long long *rows, unsigned long long *commits)
{
	if (rows != NULL)
		*rows = atomic_load(&w->rows);
	if (commits != NULL)
		*commits = atomic_load(&w->commits);
}

unsigned long long kw_audit_writer_pending(kw_audit_writer *w)
{
	return atomic_load(&w->pending);
}

void kw_audit_writer_join(kw_audit_writer *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	bool was = w->stopping;
	w->stopping = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->mu);
	if (w->thread_started)
		pthread_join(w->thread, NULL);
	w->thread_started = false;
	if (!was)
		kw_info("audit: group-commit writer stopped (%llu rows, %llu commits)", atomic_load(&w->rows),
		        atomic_load(&w->commits));
}

void kw_audit_writer_stop(kw_audit_writer *w)
{
	if (w == NULL)
		return;
	kw_audit_writer_join(w);
	writer_free(w);
}
