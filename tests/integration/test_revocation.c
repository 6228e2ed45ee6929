/* test_revocation.c — the revocation cache against a real PostgreSQL.
 *
 * Caches connect as the service role (db.app), so the column grants and
 * row-level security of jwt_revocations apply to the listener. Revocations
 * are inserted as the service role in a tenant-scoped transaction (the
 * trigger announces them at commit), or as the schema owner when a test
 * needs to tamper (disable the trigger, drop the table, kill a backend). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keyward/auth/revocation.h"
#include "kwtest.h"

#define STALE_MS 1000

static kwt_db tdb;
static char tenant[37];
static kw_db *app;

static void setup(void)
{
	kwt_db_create(&tdb);
	char *id = kwt_db_admin_sql(&tdb, "INSERT INTO tenants (name) VALUES ('t1') RETURNING id");
	cr_assert(id != NULL && strlen(id) == 36);
	memcpy(tenant, id, sizeof(tenant));
	free(id);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
}

static void teardown(void)
{
	kw_db_close(app);
	kwt_db_drop(&tdb);
}

TestSuite(revocation, .init = setup, .fini = teardown, .timeout = 60);

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

static void hex(const unsigned char *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void new_jti(char out[KW_JTI_HEX_LEN + 1])
{
	unsigned char b[16];
	cr_assert_eq(RAND_bytes(b, sizeof(b)), 1);
	hex(b, sizeof(b), out);
}

static void new_sid(char out[37])
{
	unsigned char b[16];
	char h[33];
	cr_assert_eq(RAND_bytes(b, sizeof(b)), 1);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	hex(b, sizeof(b), h);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

static char *admin_sqlf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *admin_sqlf(const char *fmt, ...)
{
	char sql[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(sql));
	return kwt_db_admin_sql(&tdb, sql);
}

static void admin_exec(const char *sql)
{
	free(kwt_db_admin_sql(&tdb, sql));
}

/* Inserts a revocation as the service role, expiring in_s seconds from the
 * database's now (negative: already expired). jti or sid is NULL. */
static void add_row_on(kw_db *db, const char *jti, const char *sid, int in_s)
{
	char secs[32];
	snprintf(secs, sizeof(secs), "%d", in_s);
	const char *vals[4] = {jti, sid, tenant, secs};
	cr_assert_eq(kw_db_begin(db, tenant, NULL), KW_OK);
	kw_err err =
	    kw_db_exec(db,
	               "INSERT INTO jwt_revocations (jti, sid, tenant_id, subject, token_expires_at, reason) "
	               "VALUES ($1, $2::uuid, $3::uuid, 'alice', "
	               "now() + make_interval(secs => $4::double precision), 'test')",
	               4, vals, NULL, NULL, NULL);
	cr_assert_eq(err, KW_OK, "insert: %s", kw_err_str(err));
	cr_assert_eq(kw_db_commit(db), KW_OK);
}

static void add_row(const char *jti, const char *sid, int in_s)
{
	add_row_on(app, jti, sid, in_s);
}

static kw_revcache *start_stale(int stale_ms)
{
	kw_revcache *rc = NULL;
	cr_assert_eq(kw_revcache_start(tdb.app, stale_ms, &rc), KW_OK);
	cr_assert(kw_revcache_wait_ready(rc, 5000), "cache not ready within 5 s");
	return rc;
}

static kw_revcache *start(void)
{
	return start_stale(STALE_MS);
}

static kw_err check(kw_revcache *rc, const char *jti, const char *sid)
{
	return kw_revcache_check(rc, jti, sid, (int64_t)time(NULL));
}

/* Polls every 20 ms until the check answers want; the time it took in ms,
 * or -1 after timeout_ms. */
static int wait_for(kw_revcache *rc, const char *jti, const char *sid, kw_err want, int timeout_ms)
{
	int64_t t0 = mono_ms();
	for (;;) {
		if (check(rc, jti, sid) == want)
			return (int)(mono_ms() - t0);
		if (mono_ms() - t0 > timeout_ms)
			return -1;
		sleep_ms(20);
	}
}

Test(revocation, empty_list_is_ready_and_revokes_nothing)
{
	kw_revcache *rc = start();
	char jti[33], sid[37];
	kw_revcache_stats st;

	new_jti(jti);
	new_sid(sid);
	cr_assert(kw_revcache_ready(rc));
	cr_assert_eq(check(rc, jti, NULL), KW_OK);
	cr_assert_eq(check(rc, NULL, sid), KW_OK);
	cr_assert_eq(check(rc, jti, sid), KW_OK);
	cr_assert_eq(check(rc, NULL, NULL), KW_OK);
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(st.loads, 1);
	cr_assert_eq(st.entries, 0);
	cr_assert_eq(st.refused_stale, 0);
	kw_revcache_stop(rc);
}

Test(revocation, stale_ms_below_one_second_is_refused)
{
	kw_revcache *rc = NULL;
	cr_assert_eq(kw_revcache_start(tdb.app, 999, &rc), KW_ERR_INVALID);
	cr_assert_null(rc);
	kw_revcache_stop(NULL);
}

Test(revocation, notification_reaches_the_cache_within_a_second)
{
	kw_revcache *rc = start();
	char jti[33], sid[37], upper[37], other[33];
	kw_revcache_stats st;

	new_jti(jti);
	new_sid(sid);
	new_jti(other);
	cr_assert_eq(check(rc, jti, NULL), KW_OK);
	add_row(jti, NULL, 3600);
	int ms = wait_for(rc, jti, NULL, KW_ERR_VERIFY, 1000);
	cr_assert(ms >= 0, "jti revocation not seen within 1 s");
	fprintf(stderr, "revocation: jti seen after %d ms\n", ms);

	cr_assert_eq(check(rc, NULL, sid), KW_OK);
	add_row(NULL, sid, 3600);
	ms = wait_for(rc, NULL, sid, KW_ERR_VERIFY, 1000);
	cr_assert(ms >= 0, "sid revocation not seen within 1 s");
	fprintf(stderr, "revocation: sid seen after %d ms\n", ms);

	/* Either id revokes the token; case does not matter for a uuid. */
	for (size_t i = 0; i < 36; i++)
		upper[i] = (char)(sid[i] >= 'a' && sid[i] <= 'f' ? sid[i] - 'a' + 'A' : sid[i]);
	upper[36] = '\0';
	cr_assert_eq(check(rc, other, sid), KW_ERR_VERIFY);
	cr_assert_eq(check(rc, jti, NULL), KW_ERR_VERIFY);
	cr_assert_eq(check(rc, NULL, upper), KW_ERR_VERIFY);
	cr_assert_eq(check(rc, other, NULL), KW_OK);
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(st.notifications, 2);
	cr_assert_eq(st.entries, 2);
	kw_revcache_stop(rc);
}

Test(revocation, rows_present_before_start_are_loaded)
{
	char jti[33], sid[37], gone[33];
	kw_revcache_stats st;

	new_jti(jti);
	new_sid(sid);
	new_jti(gone);
	add_row(jti, NULL, 3600);
	add_row(NULL, sid, 3600);
	add_row(gone, NULL, -3600);
	kw_revcache *rc = start();
	cr_assert_eq(check(rc, jti, NULL), KW_ERR_VERIFY);
	cr_assert_eq(check(rc, NULL, sid), KW_ERR_VERIFY);
	cr_assert_eq(check(rc, gone, NULL), KW_OK);
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(st.loads, 1);
	cr_assert_eq(st.entries, 2);
	cr_assert_eq(st.notifications, 0);
	kw_revcache_stop(rc);
}

Test(revocation, two_instances_see_a_third_connections_revocation)
{
	kw_revcache *a = start(), *b = start();
	kw_db *third = NULL;
	char jti[33], sid[37];

	new_jti(jti);
	new_sid(sid);
	cr_assert_eq(kw_db_connect(tdb.app, &third), KW_OK);
	add_row_on(third, jti, NULL, 600);
	add_row_on(third, NULL, sid, 600);
	kw_db_close(third);
	int ma = wait_for(a, jti, sid, KW_ERR_VERIFY, 1000);
	int mb = wait_for(b, jti, sid, KW_ERR_VERIFY, 1000);
	cr_assert(ma >= 0 && mb >= 0, "not seen by both within 1 s (%d, %d)", ma, mb);
	cr_assert(wait_for(a, NULL, sid, KW_ERR_VERIFY, 1000) >= 0);
	cr_assert(wait_for(b, NULL, sid, KW_ERR_VERIFY, 1000) >= 0);
	cr_assert_eq(check(a, jti, NULL), KW_ERR_VERIFY);
	cr_assert_eq(check(b, jti, NULL), KW_ERR_VERIFY);
	fprintf(stderr, "revocation: two instances saw it after %d and %d ms\n", ma, mb);
	kw_revcache_stop(a);
	kw_revcache_stop(b);
}

Test(revocation, add_holds_at_once_without_a_row)
{
	kw_revcache *rc = start();
	char jti[33], sid[37], upper[37];
	int64_t exp = (int64_t)time(NULL) + 600;

	new_jti(jti);
	new_sid(sid);
	kw_revcache_add(rc, jti, NULL, exp);
	cr_assert_eq(check(rc, jti, NULL), KW_ERR_VERIFY);
	for (size_t i = 0; i < 37; i++)
		upper[i] = (char)(sid[i] >= 'a' && sid[i] <= 'f' ? sid[i] - 'a' + 'A' : sid[i]);
	kw_revcache_add(rc, NULL, upper, exp);
	cr_assert_eq(check(rc, NULL, sid), KW_ERR_VERIFY);
	/* Past its expiry (by the caller's clock) the entry no longer counts. */
	cr_assert_eq(kw_revcache_check(rc, jti, NULL, exp), KW_ERR_VERIFY);
	cr_assert_eq(kw_revcache_check(rc, jti, NULL, exp + 1), KW_OK);
	char *n = admin_sqlf("SELECT count(*) FROM jwt_revocations");
	cr_assert_str_eq(n, "0");
	free(n);
	kw_revcache_stop(rc);
}

Test(revocation, expired_rows_are_not_revoked)
{
	kw_revcache *rc = start();
	char expired[33], live[37], sid_expired[37];

	new_jti(expired);
	new_sid(sid_expired);
	new_sid(live);
	add_row(expired, NULL, -10);
	add_row(NULL, sid_expired, -10);
	add_row(NULL, live, 3600);
	/* Notifications come in commit order: once the last is applied, the
	 * expired ones have been seen too. */
	cr_assert(wait_for(rc, NULL, live, KW_ERR_VERIFY, 1000) >= 0);
	cr_assert_eq(check(rc, expired, NULL), KW_OK);
	cr_assert_eq(check(rc, NULL, sid_expired), KW_OK);
	cr_assert_eq(check(rc, expired, sid_expired), KW_OK);
	kw_revcache_stop(rc);
}

Test(revocation, dropped_table_fails_closed)
{
	/* A long stale_ms: closing must come from the failed query itself. */
	kw_revcache *rc = start_stale(60000);
	char jti[33];
	kw_revcache_stats st;

	new_jti(jti);
	add_row(jti, NULL, 3600);
	cr_assert(wait_for(rc, jti, NULL, KW_ERR_VERIFY, 1000) >= 0);
	admin_exec("DROP TABLE jwt_revocations CASCADE");
	int64_t t0 = mono_ms();
	kw_err got = KW_ERR_VERIFY;
	while (mono_ms() - t0 < 2500) {
		got = check(rc, jti, NULL);
		cr_assert_neq(got, KW_OK, "a revoked token was valid after the table was dropped");
		if (got == KW_ERR_DB_UNAVAILABLE)
			break;
		sleep_ms(20);
	}
	cr_assert_eq(got, KW_ERR_DB_UNAVAILABLE, "still answering 2.5 s after the table was dropped");
	fprintf(stderr, "revocation: dropped table noticed after %d ms\n", (int)(mono_ms() - t0));
	/* And it stays closed: the reload keeps failing. */
	for (int i = 0; i < 50; i++) {
		cr_assert_eq(check(rc, jti, NULL), KW_ERR_DB_UNAVAILABLE);
		sleep_ms(40);
	}
	cr_assert_not(kw_revcache_ready(rc));
	kw_revcache_stats_get(rc, &st);
	cr_assert_geq(st.refused_stale, 51);
	kw_revcache_stop(rc);
}

Test(revocation, reconnect_reloads_the_whole_list)
{
	kw_revcache *rc = start();
	char before[33], during[37], probe[33];
	kw_revcache_stats st;

	new_jti(before);
	new_sid(during);
	new_jti(probe);
	/* Without the trigger nothing is announced: only a load can see these
	 * rows. */
	admin_exec("ALTER TABLE jwt_revocations DISABLE TRIGGER jwt_revocations_notify");
	add_row(before, NULL, 3600);
	sleep_ms(1000);
	cr_assert_eq(check(rc, before, NULL), KW_OK, "seen without a notification or a reload?");

	char *n = admin_sqlf("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
	                     "WHERE application_name = 'keyward-revocations' AND datname = '%s'",
	                     tdb.name);
	cr_assert_str_eq(n, "1", "the listener's backend not found by application_name");
	free(n);
	int64_t t0 = mono_ms();
	add_row(NULL, during, 3600);
	admin_exec("ALTER TABLE jwt_revocations ENABLE TRIGGER jwt_revocations_notify");

	int ms = -1;
	while (mono_ms() - t0 < 5000) {
		kw_err a = check(rc, before, NULL), b = check(rc, NULL, during);
		if (a == KW_ERR_VERIFY && b == KW_ERR_VERIFY) {
			ms = (int)(mono_ms() - t0);
			break;
		}
		sleep_ms(20);
	}
	cr_assert(ms >= 0, "rows inserted while the listener was down were not loaded within 5 s");
	fprintf(stderr, "revocation: reconnected and reloaded after %d ms\n", ms);
	cr_assert_eq(check(rc, probe, NULL), KW_OK);
	kw_revcache_stats_get(rc, &st);
	cr_assert_geq(st.loads, 2);
	cr_assert_eq(st.notifications, 0);
	cr_assert_geq(st.refused_stale, 0);

	/* Notifications flow again on the new connection. */
	add_row(probe, NULL, 3600);
	cr_assert(wait_for(rc, probe, NULL, KW_ERR_VERIFY, 1000) >= 0);
	kw_revcache_stop(rc);
}

Test(revocation, a_hung_connection_goes_stale)
{
	kw_revcache *rc = start();
	char jti[33];
	kw_revcache_stats st;

	new_jti(jti);
	char *pid_s = admin_sqlf("SELECT pid FROM pg_stat_activity "
	                         "WHERE application_name = 'keyward-revocations' AND datname = '%s'",
	                         tdb.name);
	cr_assert(pid_s != NULL);
	pid_t pid = (pid_t)strtol(pid_s, NULL, 10);
	free(pid_s);
	cr_assert_gt(pid, 0);
	/* The backend stops answering but the connection stays up: only the
	 * time since the last contact can tell. */
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	int ms = wait_for(rc, jti, NULL, KW_ERR_DB_UNAVAILABLE, 3000);
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(kill(pid, SIGCONT), 0);
	cr_assert(ms >= 0, "still answering 3 s after the database stopped answering");
	cr_assert_eq(st.loads, 1, "the cache reconnected instead of going stale");
	fprintf(stderr, "revocation: hung backend noticed after %d ms\n", ms);
	cr_assert(wait_for(rc, jti, NULL, KW_OK, 3000) >= 0, "did not recover after SIGCONT");
	kw_revcache_stop(rc);
}

static int closed_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd); /* bound, never listened: nothing answers there */
	return ntohs(a.sin_port);
}

Test(revocation, unreachable_database_fails_closed)
{
	char conninfo[256], jti[33];
	kw_revcache *rc = NULL;
	kw_revcache_stats st;

	new_jti(jti);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=postgres",
	         closed_port());
	cr_assert_eq(kw_revcache_start(conninfo, STALE_MS, &rc), KW_OK);
	cr_assert_eq(check(rc, jti, NULL), KW_ERR_DB_UNAVAILABLE);
	int64_t t0 = mono_ms();
	cr_assert_not(kw_revcache_wait_ready(rc, 300));
	int64_t waited = mono_ms() - t0;
	cr_assert(waited >= 290 && waited < 1000, "wait_ready(300) took %d ms", (int)waited);
	cr_assert_eq(check(rc, jti, NULL), KW_ERR_DB_UNAVAILABLE);
	cr_assert_not(kw_revcache_ready(rc));
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(st.refused_stale, 2);
	cr_assert_eq(st.loads, 0);
	t0 = mono_ms();
	kw_revcache_stop(rc);
	cr_assert_lt(mono_ms() - t0, 500, "stop took %d ms", (int)(mono_ms() - t0));
}

#define CONC_N       200
#define CONC_THREADS 4

typedef struct conc_state {
	kw_revcache *rc;
	char jti[CONC_N][33];
	char sid[CONC_N][37];
	atomic_int published; /* ids [0, published) are committed */
	atomic_bool done;
} conc_state;

typedef struct conc_result {
	unsigned long checks, unavailable, bad, went_back;
} conc_result;

typedef struct conc_arg {
	conc_state *st;
	conc_result res;
} conc_arg;

static void *checker(void *p)
{
	conc_arg *a = p;
	conc_state *st = a->st;
	bool seen[CONC_N] = {false};
	char miss[33];
	unsigned char b[16];

	memset(b, (int)(uintptr_t)a & 0xff, sizeof(b));
	hex(b, sizeof(b), miss);
	while (!atomic_load(&st->done)) {
		int n = atomic_load(&st->published);
		for (int i = 0; i < n; i++) {
			kw_err e = kw_revcache_check(st->rc, (i & 1) ? NULL : st->jti[i],
			                             (i & 1) ? st->sid[i] : NULL, (int64_t)time(NULL));
			a->res.checks++;
			if (e == KW_ERR_VERIFY)
				seen[i] = true;
			else if (e == KW_OK && seen[i])
				a->res.went_back++;
			else if (e == KW_ERR_DB_UNAVAILABLE)
				a->res.unavailable++;
			else if (e != KW_OK)
				a->res.bad++;
		}
		kw_err e = kw_revcache_check(st->rc, miss, NULL, (int64_t)time(NULL));
		a->res.checks++;
		if (e != KW_OK)
			a->res.bad++;
	}
	return NULL;
}

Test(revocation, concurrent_checks_while_revoking)
{
	static conc_state st;
	conc_arg args[CONC_THREADS];
	pthread_t th[CONC_THREADS];

	memset(&st, 0, sizeof(st));
	st.rc = start();
	for (int i = 0; i < CONC_N; i++) {
		new_jti(st.jti[i]);
		new_sid(st.sid[i]);
	}
	for (int t = 0; t < CONC_THREADS; t++) {
		memset(&args[t], 0, sizeof(args[t]));
		args[t].st = &st;
		cr_assert_eq(pthread_create(&th[t], NULL, checker, &args[t]), 0);
	}
	int64_t t0 = mono_ms();
	for (int i = 0; i < CONC_N; i++) {
		add_row((i & 1) ? NULL : st.jti[i], (i & 1) ? st.sid[i] : NULL, 3600);
		atomic_store(&st.published, i + 1);
	}
	int64_t inserted = mono_ms() - t0;
	int missing = CONC_N;
	while (missing > 0 && mono_ms() - t0 < inserted + 1000) {
		missing = 0;
		for (int i = 0; i < CONC_N; i++)
			missing += check(st.rc, (i & 1) ? NULL : st.jti[i], (i & 1) ? st.sid[i] : NULL) !=
			           KW_ERR_VERIFY;
		if (missing > 0)
			sleep_ms(20);
	}
	int64_t all = mono_ms() - t0;
	atomic_store(&st.done, true);
	unsigned long checks = 0;
	for (int t = 0; t < CONC_THREADS; t++) {
		cr_assert_eq(pthread_join(th[t], NULL), 0);
		cr_assert_eq(args[t].res.bad, 0, "thread %d: unexpected answers", t);
		cr_assert_eq(args[t].res.unavailable, 0, "thread %d: refused while fresh", t);
		cr_assert_eq(args[t].res.went_back, 0, "thread %d: a revoked id became valid again", t);
		checks += args[t].res.checks;
	}
	cr_assert_eq(missing, 0, "%d of %d revocations not in the cache 1 s after the last insert", missing,
	             CONC_N);
	kw_revcache_stats st2;
	kw_revcache_stats_get(st.rc, &st2);
	cr_assert_eq(st2.entries, CONC_N);
	cr_assert_eq(st2.notifications, CONC_N);
	fprintf(stderr, "revocation: %d inserts in %d ms, all in the cache after %d ms, %lu checks\n", CONC_N,
	        (int)inserted, (int)all, checks);
	kw_revcache_stop(st.rc);
}

/* Any role may NOTIFY keyward_revocations: a notification is only a cue
 * naming a row, so garbage, a fake revocation in the old payload format
 * and an id that names nothing revoke nothing, cost no reload and leave
 * the list fresh; a real id revokes what its row says. */
Test(revocation, forged_notifications_revoke_nothing_and_cost_no_reload)
{
	kw_revcache *rc = start();
	char victim[33], real[33];
	new_jti(victim);
	new_jti(real);
	kw_revcache_stats st0, st;
	kw_revcache_stats_get(rc, &st0);
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT pg_notify('keyward_revocations', '%s - 4102444800')", victim);
	free(admin_sqlf("%s", sql));
	free(admin_sqlf("SELECT pg_notify('keyward_revocations', 'garbage \x01 payload')"));
	free(admin_sqlf("SELECT pg_notify('keyward_revocations', '999999999')"));
	for (int i = 0; i < 200; i++) /* a storm, of garbage and of ids naming nothing */
		free(admin_sqlf("SELECT pg_notify('keyward_revocations', '%s%d')", i % 2 ? "x" : "88888", i));
	add_row(real, NULL, 3600);
	cr_assert(wait_for(rc, real, NULL, KW_ERR_VERIFY, 1000) >= 0, "a real revocation was not applied");
	cr_assert_eq(check(rc, victim, NULL), KW_OK, "a forged notification revoked a token");
	kw_revcache_stats_get(rc, &st);
	cr_assert_eq(st.loads, st0.loads, "a forged notification cost a reload");
	cr_assert_geq(st.ignored, 3, "ignored %llu", (unsigned long long)st.ignored);
	cr_assert(kw_revcache_ready(rc), "the list went stale");
	kw_revcache_stop(rc);
}
