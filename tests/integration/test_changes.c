/* test_changes.c — the change feed (keyward/db/changes.h) against a real
 * PostgreSQL: a change made by the service role reaches a feed within a
 * second, notifications are cues that are read back (never trusted), the
 * service role cannot write the feed, and a lost connection resets the
 * sinks. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/db/changes.h"
#include "keyward/db/sessions.h"
#include "kwtest.h"

static kwt_db tdb;
static char tenant[37];

/* What a sink saw. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int resets, applied;
static char last_kind[32], last_tenant[37], last_subject[80];

static void on_apply(void *arg, const kw_change *c)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	applied++;
	snprintf(last_kind, sizeof(last_kind), "%s", c->kind);
	snprintf(last_tenant, sizeof(last_tenant), "%s", c->tenant_id);
	snprintf(last_subject, sizeof(last_subject), "%s", c->subject);
	pthread_mutex_unlock(&mu);
}

static void on_reset(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	resets++;
	pthread_mutex_unlock(&mu);
}

static int get(int *v)
{
	pthread_mutex_lock(&mu);
	int x = *v;
	pthread_mutex_unlock(&mu);
	return x;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Milliseconds until *v reaches want, or -1 after limit_ms. */
static int wait_count(int *v, int want, int limit_ms)
{
	int64_t t0 = mono_ms();
	while (mono_ms() - t0 <= limit_ms) {
		if (get(v) >= want)
			return (int)(mono_ms() - t0);
		sleep_ms(2);
	}
	return -1;
}

static void setup(void)
{
	kwt_db_create(&tdb);
	char *id = kwt_db_admin_sql(&tdb, "INSERT INTO tenants (name) VALUES ('t1') RETURNING id");
	cr_assert(id != NULL && strlen(id) == 36);
	memcpy(tenant, id, sizeof(tenant));
	free(id);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO transit_keys (tenant_id, name, type) VALUES ('%s', 'emails', 'aes256-gcm')",
	         tenant);
	free(kwt_db_admin_sql(&tdb, sql));
	resets = applied = 0;
}

static void teardown(void)
{
	kwt_db_drop(&tdb);
}

TestSuite(changes, .init = setup, .fini = teardown, .timeout = 60);

static kw_changes *start(void)
{
	kw_change_sink sink = {.apply = on_apply, .reset = on_reset, .arg = NULL};
	kw_changes *f = NULL;
	int before = get(&resets);
	cr_assert_eq(kw_changes_start(tdb.app, &sink, 1, &f), KW_OK);
	cr_assert(kw_changes_wait_ready(f, 5000), "the feed did not connect");
	cr_assert_eq(get(&resets), before + 1, "a (re)connection resets its sinks first");
	return f;
}

/* A change the way the service makes one: the service role, in the
 * tenant's transaction. */
static void touch_key(const char *name)
{
	kw_db *db = NULL;
	cr_assert_eq(kw_db_connect(tdb.app, &db), KW_OK);
	cr_assert_eq(kw_db_begin(db, tenant, NULL), KW_OK);
	const char *vals[1] = {name};
	cr_assert_eq(kw_db_exec(db, "UPDATE transit_keys SET updated_at = now() WHERE name = $1", 1, vals,
	                        NULL, NULL, NULL),
	             KW_OK);
	cr_assert_eq(kw_db_commit(db), KW_OK);
	kw_db_close(db);
}

Test(changes, a_service_change_reaches_every_feed_within_a_second)
{
	kw_changes *a = start();
	kw_changes *b = start(); /* two instances */
	int64_t t0 = mono_ms();
	touch_key("emails");
	int ms = wait_count(&applied, 2, 1000);
	cr_assert(ms >= 0, "the change did not reach both feeds within 1 s");
	fprintf(stderr, "changes: both feeds applied the change %lld ms after the commit began\n",
	        (long long)(mono_ms() - t0));
	cr_assert_str_eq(last_kind, "transit_key");
	cr_assert_str_eq(last_tenant, tenant);
	cr_assert_str_eq(last_subject, "emails");
	kw_changes_stats st;
	kw_changes_stats_get(a, &st);
	cr_assert_eq(st.applied, 1);
	cr_assert_eq(st.ignored, 0);
	kw_changes_stop(a);
	kw_changes_stop(b);
}

Test(changes, notifications_are_cues_read_back_never_trusted)
{
	kw_changes *f = start();
	/* Any role may NOTIFY: none of these names a row. */
	free(kwt_db_admin_sql(&tdb, "SELECT pg_notify('keyward_changes', 'transit_key emails')"));
	free(kwt_db_admin_sql(&tdb, "SELECT pg_notify('keyward_changes', '999999')"));
	free(kwt_db_admin_sql(&tdb, "SELECT pg_notify('keyward_changes', '-1')"));
	free(kwt_db_admin_sql(&tdb, "SELECT pg_notify('keyward_changes', '01')"));
	free(kwt_db_admin_sql(&tdb, "SELECT pg_notify('keyward_changes', '')"));
	touch_key("emails");
	cr_assert(wait_count(&applied, 1, 1000) >= 0);
	/* A real id repeated: the row is read again and applied again
	 * (harmless: every sink is idempotent). */
	char *id = kwt_db_admin_sql(&tdb, "SELECT max(id)::text FROM changes");
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT pg_notify('keyward_changes', '%s')", id);
	free(id);
	free(kwt_db_admin_sql(&tdb, sql));
	cr_assert(wait_count(&applied, 2, 1000) >= 0);
	kw_changes_stats st;
	kw_changes_stats_get(f, &st);
	cr_assert_eq(st.ignored, 5, "ignored %llu", (unsigned long long)st.ignored);
	cr_assert_eq(st.applied, 2);
	cr_assert_eq(get(&resets), 1, "a bad cue must not cost a reconnect");
	kw_changes_stop(f);
}

Test(changes, the_service_role_cannot_write_the_feed)
{
	kw_db *db = NULL;
	cr_assert_eq(kw_db_connect(tdb.app, &db), KW_OK);
	cr_assert_eq(kw_db_begin(db, tenant, NULL), KW_OK);
	const char *vals[1] = {tenant};
	kw_err err =
	    kw_db_exec(db, "INSERT INTO changes (kind, tenant_id, subject) VALUES ('transit_key', $1, 'x')",
	               1, vals, NULL, NULL, NULL);
	cr_assert_neq(err, KW_OK, "the service role inserted into the change feed");
	kw_db_rollback(db);
	cr_assert_eq(kw_db_begin(db, tenant, NULL), KW_OK);
	err = kw_db_exec(db, "UPDATE changes SET subject = 'y'", 0, NULL, NULL, NULL, NULL);
	cr_assert_neq(err, KW_OK, "the service role rewrote the change feed");
	kw_db_rollback(db);
	kw_db_close(db);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM changes");
	cr_assert_str_eq(n, "0");
	free(n);
}

Test(changes, a_lost_connection_resets_the_sinks)
{
	kw_changes *f = start();
	cr_assert(kw_changes_fresh(f));
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = "
	         "'keyward-changes' AND datname = '%s'",
	         tdb.name);
	char *n = kwt_db_admin_sql(&tdb, sql);
	cr_assert_str_eq(n, "1");
	free(n);
	cr_assert(wait_count(&resets, 2, 5000) >= 0, "no reset after the connection was lost");
	cr_assert(kw_changes_wait_ready(f, 5000));
	touch_key("emails");
	cr_assert(wait_count(&applied, 1, 1000) >= 0, "changes do not flow on the new connection");
	kw_changes_stats st;
	kw_changes_stats_get(f, &st);
	cr_assert_geq(st.reconnects, 1);
	kw_changes_stop(f);
	cr_assert_not(kw_changes_fresh(NULL));
}

Test(changes, old_rows_are_purged_only_by_housekeeping)
{
	touch_key("emails");
	free(kwt_db_admin_sql(&tdb, "UPDATE changes SET at = now() - interval '2 days'"));
	touch_key("emails");
	kw_db *db = NULL;
	cr_assert_eq(kw_db_connect(tdb.app, &db), KW_OK);
	cr_assert_eq(kw_db_begin(db, tenant, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(db, "DELETE FROM changes", 0, NULL, NULL, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_commit(db), KW_OK);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM changes");
	cr_assert_str_eq(n, "2", "the service deleted changes outside housekeeping");
	free(n);
	kw_purge_counts pc = {0};
	cr_assert_eq(kw_sessions_purge(db, 100, 2, &pc), KW_OK);
	cr_assert_eq(pc.changes, 1);
	n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM changes");
	cr_assert_str_eq(n, "1", "a change younger than a day was purged");
	free(n);
	kw_db_close(db);
}

Test(changes, expired_signing_nonces_are_purged_by_housekeeping)
{
	free(kwt_db_admin_sql(
	    &tdb, "INSERT INTO signing_nonces VALUES (gen_random_uuid(), 'aaaaaaaaaaaaaaaaaaaaaaaa', "
	          "now() - interval '1 minute'), (gen_random_uuid(), 'bbbbbbbbbbbbbbbbbbbbbbbb', "
	          "now() + interval '4 minutes')"));
	kw_db *db = NULL;
	cr_assert_eq(kw_db_connect(tdb.app, &db), KW_OK);
	kw_purge_counts pc = {0};
	cr_assert_eq(kw_sessions_purge(db, 100, 2, &pc), KW_OK);
	cr_assert_eq(pc.signing_nonces, 1);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM signing_nonces");
	cr_assert_str_eq(n, "1", "a nonce still inside its window was purged");
	free(n);
	kw_db_close(db);
}
