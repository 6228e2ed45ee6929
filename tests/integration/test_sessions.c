/* test_sessions.c — refresh families, refresh tokens, revocations, wallet
 * nonces and housekeeping against a real PostgreSQL.
 *
 * Tenants and tampering (expiring rows, seeding dead rows) go through the
 * schema owner (db.admin); every repository call runs as the service role
 * (db.app), so row-level security and column privileges apply to it. No
 * token is needed: random 32-byte arrays stand in for token HMACs. */
#include <criterion/criterion.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/db/sessions.h"
#include "kwtest.h"

static kwt_db tdb;
static char ta[37], tb[37]; /* two tenants */
static kw_db *app;

static void new_tenant(const char *name, char id[37])
{
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT INTO tenants (name) VALUES ('%s') RETURNING id", name);
	char *v = kwt_db_admin_sql(&tdb, sql);
	cr_assert(v != NULL && strlen(v) == 36);
	memcpy(id, v, 37);
	free(v);
}

static void setup(void)
{
	kwt_db_create(&tdb);
	new_tenant("a", ta);
	new_tenant("b", tb);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
}

static void teardown(void)
{
	kw_db_close(app);
	kwt_db_drop(&tdb);
}

TestSuite(sessions, .init = setup, .fini = teardown, .timeout = 120);

/* --- helpers ------------------------------------------------------------- */

static char *admin_sqlf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *admin_sqlf(const char *fmt, ...)
{
	char sql[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(sql));
	return kwt_db_admin_sql(&tdb, sql);
}

static void expect_sql(const char *want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_sql(const char *want, const char *fmt, ...)
{
	char sql[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(sql));
	char *v = kwt_db_admin_sql(&tdb, sql);
	cr_assert_str_eq(v != NULL ? v : "(null)", want, "%s\n  got:  %s\n  want: %s", sql,
	                 v != NULL ? v : "(null)", want);
	free(v);
}

static void new_hmac(unsigned char h[KW_HMAC_LEN])
{
	cr_assert_eq(RAND_bytes(h, KW_HMAC_LEN), 1);
}

static void hex(const unsigned char *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void begin(kw_db *db, const char *tenant)
{
	kw_err err = kw_db_begin(db, tenant, NULL);
	cr_assert_eq(err, KW_OK, "begin: %s", kw_err_str(err));
}

static void commit(kw_db *db)
{
	kw_err err = kw_db_commit(db);
	cr_assert_eq(err, KW_OK, "commit: %s", kw_err_str(err));
}

typedef struct family {
	char id[37];
	unsigned char hmac[KW_HMAC_LEN];
	int64_t abs_exp, sliding_exp;
} family;

/* A family with its first token, created as the app role in its own
 * committed transaction. */
static void new_family_ttl(const char *tenant, const char *subject, const char *ip, const char *ua,
                           int64_t abs_ttl, int64_t sliding_ttl, family *f)
{
	memset(f, 0, sizeof(*f));
	cr_assert_eq(kw_random_uuid(f->id), KW_OK);
	new_hmac(f->hmac);
	kw_family_new n = {.id = f->id,
	                   .tenant_id = tenant,
	                   .subject = subject,
	                   .role = "track1",
	                   .absolute_ttl_s = abs_ttl,
	                   .sliding_ttl_s = sliding_ttl,
	                   .ip = ip,
	                   .user_agent = ua,
	                   .token_hmac = f->hmac,
	                   .pepper_id = 1};
	begin(app, tenant);
	kw_err err = kw_family_create(app, &n, &f->abs_exp, &f->sliding_exp);
	cr_assert_eq(err, KW_OK, "family_create: %s", kw_err_str(err));
	commit(app);
}

static void new_family(const char *tenant, const char *subject, family *f)
{
	new_family_ttl(tenant, subject, NULL, NULL, 30 * 86400, 7 * 86400, f);
}

/* Runs sql as whatever role db is; the number of rows it touched, or -1
 * if the statement failed. */
static long exec_rows(kw_db *db, const char *sql, int n, const char *const *vals)
{
	PGresult *res = NULL;
	if (kw_db_exec(db, sql, n, vals, NULL, NULL, &res) != KW_OK)
		return -1;
	long rows = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rows;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void expect_row(const family *f, const kw_refresh_row *r, const char *subject)
{
	cr_assert_str_eq(r->family_id, f->id);
	cr_assert_str_eq(r->subject, subject);
	cr_assert_str_eq(r->role, "track1");
	cr_assert_not(r->used);
	cr_assert_not(r->has_used_child);
	cr_assert_not(r->family_revoked);
	cr_assert_str_eq(r->revoke_reason, "");
	cr_assert_eq(r->absolute_exp, f->abs_exp);
	cr_assert_eq(r->sliding_exp, f->sliding_exp);
	cr_assert(r->issued_at <= r->now && r->now - r->issued_at < 60);
	cr_assert(llabs(r->now - now_s()) <= 2, "database clock %lld", (long long)r->now);
}

/* --- row-level security ---------------------------------------------------- */

Test(sessions, family_visible_to_its_tenant_only)
{
	family f;
	int64_t t0 = now_s();
	new_family_ttl(ta, "alice", "192.0.2.7", "ua/1", 3000, 600, &f);
	cr_assert(f.abs_exp >= t0 + 3000 - 1 && f.abs_exp <= now_s() + 3000 + 1, "%lld",
	          (long long)f.abs_exp);
	cr_assert(f.sliding_exp >= t0 + 600 - 1 && f.sliding_exp <= now_s() + 600 + 1);
	char hx[2 * KW_HMAC_LEN + 1];
	hex(f.hmac, KW_HMAC_LEN, hx);
	expect_sql(ta, "SELECT tenant_id FROM refresh_tokens WHERE token_hmac = '\\x%s'", hx);
	expect_sql("192.0.2.7 ua/1 alice",
	           "SELECT ip || ' ' || user_agent || ' ' || subject "
	           "FROM refresh_families WHERE id = '%s'",
	           f.id);

	kw_refresh_row r;
	begin(app, ta);
	memset(&r, 0, sizeof(r));
	cr_assert_eq(kw_refresh_lock(app, f.hmac, &r), KW_OK);
	expect_row(&f, &r, "alice");
	memset(&r, 0, sizeof(r));
	cr_assert_eq(kw_refresh_find(app, f.hmac, &r), KW_OK);
	expect_row(&f, &r, "alice");
	unsigned char other[KW_HMAC_LEN];
	new_hmac(other);
	cr_assert_eq(kw_refresh_find(app, other, &r), KW_ERR_NOT_FOUND);
	commit(app);

	/* Another tenant's transaction, and no tenant at all. */
	const char *scopes[] = {tb, NULL};
	for (size_t i = 0; i < 2; i++) {
		begin(app, scopes[i]);
		cr_assert_eq(kw_refresh_lock(app, f.hmac, &r), KW_ERR_NOT_FOUND, "visible to %s",
		             scopes[i] ? "tenant b" : "no tenant");
		cr_assert_eq(kw_refresh_find(app, f.hmac, &r), KW_ERR_NOT_FOUND);
		const char *id[1] = {f.id};
		cr_assert_eq(
		    exec_rows(app, "UPDATE refresh_families SET revoked_at = now() WHERE id = $1", 1, id), 0);
		cr_assert_eq(exec_rows(app, "DELETE FROM refresh_tokens WHERE family_id = $1", 1, id), 0);
		commit(app);
	}
	expect_sql("f", "SELECT revoked_at IS NOT NULL FROM refresh_families WHERE id = '%s'", f.id);
}

static void expect_rls_refusal(const char *scope, const char *sql, const char *tenant, const char *fam)
{
	char hx[2 + 2 * KW_HMAC_LEN + 1] = "\\x";
	unsigned char h[KW_HMAC_LEN];
	new_hmac(h);
	hex(h, KW_HMAC_LEN, hx + 2);
	const char *vals[3] = {tenant, fam, hx};
	begin(app, scope);
	long rows = exec_rows(app, sql, fam ? 3 : 1, vals);
	const char *msg = PQerrorMessage(kw_db_conn(app));
	cr_assert_eq(rows, -1, "insert for another tenant accepted: %s", sql);
	cr_assert(strstr(msg, "row-level security") != NULL, "refused for another reason: %s", msg);
	kw_db_rollback(app);
}

Test(sessions, insert_for_another_tenant_refused)
{
	family fa, fb;
	new_family(ta, "alice", &fa);
	new_family(tb, "alice", &fb);
	const char *ins_family =
	    "INSERT INTO refresh_families (tenant_id, subject, role, absolute_expires_at) "
	    "VALUES ($1, 's', 'r', now() + interval '1 day')";
	const char *ins_token =
	    "INSERT INTO refresh_tokens (tenant_id, family_id, token_hmac, pepper_id, "
	    "sliding_expires_at) VALUES ($1, $2, $3::bytea, 1, now() + interval '1 hour')";

	/* The same statements for the transaction's own tenant work. */
	begin(app, ta);
	const char *own[1] = {ta};
	cr_assert_eq(exec_rows(app, ins_family, 1, own), 1);
	char hx[2 + 2 * KW_HMAC_LEN + 1] = "\\x";
	unsigned char h[KW_HMAC_LEN];
	new_hmac(h);
	hex(h, KW_HMAC_LEN, hx + 2);
	const char *own_tok[3] = {ta, fa.id, hx};
	cr_assert_eq(exec_rows(app, ins_token, 3, own_tok), 1);
	kw_db_rollback(app);

	/* Tenant a's transaction writing rows of tenant b. */
	expect_rls_refusal(ta, ins_family, tb, NULL);
	expect_rls_refusal(ta, ins_token, tb, fb.id);
	expect_rls_refusal(ta, ins_token, tb, fa.id);
	/* No tenant set: nothing can be written. */
	expect_rls_refusal(NULL, ins_family, ta, NULL);
	expect_rls_refusal(NULL, ins_token, ta, fa.id);
	expect_sql("1", "SELECT count(*) FROM refresh_families WHERE tenant_id = '%s'", ta);
	expect_sql("1", "SELECT count(*) FROM refresh_tokens WHERE tenant_id = '%s'", tb);
}

/* --- rotation -------------------------------------------------------------- */

static kw_refresh_row lock_row(const char *tenant, const unsigned char *hmac)
{
	kw_refresh_row r;
	memset(&r, 0, sizeof(r));
	begin(app, tenant);
	kw_err err = kw_refresh_lock(app, hmac, &r);
	cr_assert_eq(err, KW_OK, "lock: %s", kw_err_str(err));
	commit(app);
	return r;
}

static void rotate(const char *tenant, const unsigned char *parent, unsigned char child[KW_HMAC_LEN],
                   int64_t *sliding_exp)
{
	kw_refresh_row r;
	new_hmac(child);
	begin(app, tenant);
	cr_assert_eq(kw_refresh_lock(app, parent, &r), KW_OK);
	kw_err err = kw_refresh_rotate(app, tenant, &r, child, 2, 3600, sliding_exp);
	cr_assert_eq(err, KW_OK, "rotate: %s", kw_err_str(err));
	commit(app);
}

Test(sessions, rotate_marks_parent_and_adds_child)
{
	family f;
	new_family(ta, "alice", &f);
	unsigned char h1[KW_HMAC_LEN], h2[KW_HMAC_LEN], h3[KW_HMAC_LEN];
	int64_t sl1 = 0, sl2 = 0, sl3 = 0;
	int64_t t0 = now_s();
	rotate(ta, f.hmac, h1, &sl1);
	cr_assert(sl1 >= t0 + 3600 - 1 && sl1 <= now_s() + 3600 + 1, "sliding %lld", (long long)sl1);

	kw_refresh_row p = lock_row(ta, f.hmac), c1 = lock_row(ta, h1);
	cr_assert(p.used, "parent not marked used");
	cr_assert(p.used_ago_s >= 0 && p.used_ago_s < 60, "used %f s ago", p.used_ago_s);
	cr_assert_not(p.has_used_child);
	cr_assert_not(c1.used);
	cr_assert_str_eq(c1.family_id, f.id);
	cr_assert_str_neq(c1.id, p.id);
	cr_assert_eq(c1.sliding_exp, sl1);
	cr_assert_eq(c1.absolute_exp, f.abs_exp);
	char hx[2 * KW_HMAC_LEN + 1];
	hex(h1, KW_HMAC_LEN, hx);
	expect_sql(p.id, "SELECT parent_id FROM refresh_tokens WHERE token_hmac = '\\x%s'", hx);
	expect_sql("2 2",
	           "SELECT pepper_id || ' ' || (SELECT count(*) FROM refresh_tokens WHERE family_id = "
	           "'%s') FROM refresh_tokens WHERE token_hmac = '\\x%s'",
	           f.id, hx);

	/* The child is rotated in turn: now the first token has a used child. */
	rotate(ta, h1, h2, &sl2);
	p = lock_row(ta, f.hmac);
	c1 = lock_row(ta, h1);
	cr_assert(p.has_used_child, "has_used_child stays false after the child was rotated");
	cr_assert(c1.used);
	cr_assert_not(c1.has_used_child);
	kw_refresh_row c2 = lock_row(ta, h2);
	cr_assert_not(c2.used);
	cr_assert_str_eq(c2.family_id, f.id);

	/* Rotating a used token again (grace window) keeps its first used_at. */
	hex(f.hmac, KW_HMAC_LEN, hx);
	char *before = admin_sqlf("SELECT used_at::text FROM refresh_tokens WHERE token_hmac = '\\x%s'", hx);
	sleep_ms(20);
	rotate(ta, f.hmac, h3, &sl3);
	expect_sql(before, "SELECT used_at::text FROM refresh_tokens WHERE token_hmac = '\\x%s'", hx);
	free(before);
	expect_sql("4", "SELECT count(*) FROM refresh_tokens WHERE family_id = '%s'", f.id);
}

Test(sessions, sliding_expiry_capped_by_family)
{
	family f;
	new_family_ttl(ta, "alice", NULL, NULL, 100, 3600, &f);
	cr_assert_eq(f.sliding_exp, f.abs_exp, "first token outlives its family");
	unsigned char h1[KW_HMAC_LEN];
	int64_t sl = 0;
	rotate(ta, f.hmac, h1, &sl);
	cr_assert_eq(sl, f.abs_exp, "rotated token outlives its family");
}

/* --- concurrency ----------------------------------------------------------- */

typedef struct locker {
	const char *conninfo, *tenant;
	const unsigned char *hmac;
	kw_err err;
	kw_refresh_row row;
	atomic_bool done;
	int64_t done_ms;
} locker;

/* Owns its own connection; asserts nothing (the main thread does). */
static void *lock_thread(void *arg)
{
	locker *l = arg;
	kw_db *db = NULL;
	l->err = kw_db_connect(l->conninfo, &db);
	if (l->err == KW_OK)
		l->err = kw_db_begin(db, l->tenant, NULL);
	if (l->err == KW_OK) {
		l->err = kw_refresh_lock(db, l->hmac, &l->row);
		l->done_ms = mono_ms();
		kw_db_rollback(db);
	}
	kw_db_close(db);
	atomic_store(&l->done, true);
	return NULL;
}

Test(sessions, concurrent_lock_waits_for_rotation)
{
	family f;
	new_family(ta, "alice", &f);
	kw_refresh_row r;
	begin(app, ta);
	cr_assert_eq(kw_refresh_lock(app, f.hmac, &r), KW_OK);
	cr_assert_not(r.used);

	locker l = {.conninfo = tdb.app, .tenant = ta, .hmac = f.hmac};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, lock_thread, &l), 0);
	/* Wait until the second transaction is queued on the row lock. */
	bool waiting = false;
	for (int64_t end = mono_ms() + 10000; !waiting && mono_ms() < end && !atomic_load(&l.done);) {
		char *v = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
		                                 "current_database() AND wait_event_type = 'Lock'");
		waiting = v != NULL && strcmp(v, "1") == 0;
		free(v);
		if (!waiting)
			sleep_ms(20);
	}
	cr_assert(waiting, "the second kw_refresh_lock did not wait for the first (done=%d)",
	          (int)atomic_load(&l.done));
	sleep_ms(100);
	cr_assert_not(atomic_load(&l.done), "the second lock returned while the first was held");

	unsigned char child[KW_HMAC_LEN];
	new_hmac(child);
	int64_t sl;
	cr_assert_eq(kw_refresh_rotate(app, ta, &r, child, 1, 3600, &sl), KW_OK);
	int64_t committed = mono_ms();
	commit(app);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(l.err, KW_OK, "second lock: %s", kw_err_str(l.err));
	cr_assert(l.done_ms >= committed, "second lock returned before the commit");
	cr_assert(l.row.used, "the second transaction saw the token unused after the rotation");
	cr_assert_str_eq(l.row.id, r.id);
}

/* --- revocation ------------------------------------------------------------ */

/* The sid revocation of a family, as "count jti-null tenant subject reason exp". */
#define SID_REVOCATION                                                                                       \
	"SELECT count(*) || ' ' || bool_and(jti IS NULL) || ' ' || min(tenant_id::text) || ' ' || "          \
	"min(subject) || ' ' || min(reason) || ' ' || "                                                      \
	"min(floor(extract(epoch FROM token_expires_at))::bigint) FROM jwt_revocations WHERE sid = '%s'"

Test(sessions, family_revoke)
{
	family f, other;
	new_family(ta, "alice", &f);
	new_family(tb, "bob", &other);
	bool newly = false;
	int64_t exp = 0, t0 = now_s();
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, f.id, "logout", 3600, &newly, &exp), KW_OK);
	commit(app);
	cr_assert(newly, "first revocation not reported as new");
	cr_assert(exp >= t0 + 3600 - 1 && exp <= now_s() + 3600 + 1, "revocation exp %lld", (long long)exp);
	char want[128];
	snprintf(want, sizeof(want), "1 true %s alice logout %lld", ta, (long long)exp);
	expect_sql(want, SID_REVOCATION, f.id);
	expect_sql("logout true",
	           "SELECT revoke_reason || ' ' || (revoked_at IS NOT NULL) FROM refresh_families "
	           "WHERE id = '%s'",
	           f.id);

	/* Again: not new, one row, the first reason kept. */
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, f.id, "reuse", 3600, &newly, &exp), KW_OK);
	kw_refresh_row r;
	cr_assert_eq(kw_refresh_lock(app, f.hmac, &r), KW_OK);
	commit(app);
	cr_assert_not(newly, "second revocation reported as new");
	expect_sql(want, SID_REVOCATION, f.id);
	cr_assert(r.family_revoked);
	cr_assert_str_eq(r.revoke_reason, "logout");

	/* Unknown, malformed and other tenants' families: KW_OK, nothing new. */
	char unknown[37];
	cr_assert_eq(kw_random_uuid(unknown), KW_OK);
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, unknown, "logout", 3600, &newly, &exp), KW_OK);
	cr_assert_not(newly);
	cr_assert_eq(kw_family_revoke(app, "not-a-uuid", "logout", 3600, &newly, &exp), KW_OK);
	cr_assert_not(newly);
	cr_assert_eq(kw_family_revoke(app, other.id, "logout", 3600, &newly, &exp), KW_OK);
	cr_assert_not(newly, "another tenant's family revoked");
	commit(app);
	expect_sql("f", "SELECT revoked_at IS NOT NULL FROM refresh_families WHERE id = '%s'", other.id);
	expect_sql("1", "SELECT count(*) FROM jwt_revocations");
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

/* A family's revoke reason (or "live") and its number of sid revocations. */
#define FAMILY_STATE                                                                                         \
	"SELECT coalesce(revoke_reason, 'live') || ' ' || (SELECT count(*) FROM jwt_revocations "            \
	"WHERE sid = f.id) FROM refresh_families f WHERE id = '%s'"

Test(sessions, family_revoke_subject)
{
	family a1, a2, a3, a4, bob, alice_b;
	new_family(ta, "alice", &a1);
	new_family(ta, "alice", &a2);
	new_family(ta, "alice", &a3);
	new_family(ta, "alice", &a4);
	new_family(ta, "bob", &bob);
	new_family(tb, "alice", &alice_b);
	bool newly;
	int64_t exp = 0;
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, a3.id, "logout", 3600, &newly, &exp), KW_OK);
	commit(app);
	char *v = admin_sqlf("UPDATE refresh_families SET absolute_expires_at = now() - interval '1 second' "
	                     "WHERE id = '%s'",
	                     a4.id);
	free(v);

	char(*sids)[37] = NULL;
	size_t n = 99;
	int64_t t0 = now_s();
	begin(app, ta);
	cr_assert_eq(kw_family_revoke_subject(app, ta, "alice", "revoke_all", 600, &sids, &n, &exp), KW_OK);
	commit(app);
	cr_assert_eq(n, 2, "%zu families revoked", n);
	qsort(sids, n, sizeof(*sids), cmp_id);
	char want[2][37];
	memcpy(want[0], a1.id, 37);
	memcpy(want[1], a2.id, 37);
	qsort(want, 2, sizeof(want[0]), cmp_id);
	cr_assert_str_eq(sids[0], want[0]);
	cr_assert_str_eq(sids[1], want[1]);
	free(sids);
	cr_assert(exp >= t0 + 600 - 1 && exp <= now_s() + 600 + 1);

	expect_sql("revoke_all 1", FAMILY_STATE, a1.id);
	expect_sql("revoke_all 1", FAMILY_STATE, a2.id);
	expect_sql("logout 1", FAMILY_STATE, a3.id);
	expect_sql("live 0", FAMILY_STATE, a4.id);
	expect_sql("live 0", FAMILY_STATE, bob.id);
	expect_sql("live 0", FAMILY_STATE, alice_b.id);

	/* Nothing left; and tenant b's alice is out of reach from tenant a. */
	begin(app, ta);
	cr_assert_eq(kw_family_revoke_subject(app, ta, "alice", "revoke_all", 600, &sids, &n, &exp), KW_OK);
	cr_assert_eq(n, 0);
	free(sids);
	cr_assert_eq(kw_family_revoke_subject(app, tb, "alice", "revoke_all", 600, &sids, &n, &exp), KW_OK);
	cr_assert_eq(n, 0, "tenant b's families revoked from tenant a");
	free(sids);
	commit(app);
	expect_sql("live 0", FAMILY_STATE, alice_b.id);
}

Test(sessions, jti_revoke_is_idempotent)
{
	char jti[33];
	cr_assert_eq(kw_random_hex128(jti), KW_OK);
	int64_t exp = now_s() + 900;
	begin(app, ta);
	cr_assert_eq(kw_jti_revoke(app, ta, "alice", jti, exp, "logout"), KW_OK);
	cr_assert_eq(kw_jti_revoke(app, ta, "alice", jti, exp, "logout"), KW_OK);
	commit(app);
	begin(app, ta);
	kw_err err = kw_jti_revoke(app, ta, "alice", jti, exp + 5, "again");
	cr_assert_eq(err, KW_OK, "second transaction: %s", kw_err_str(err));
	commit(app);
	char want[96];
	snprintf(want, sizeof(want), "1 %lld logout true", (long long)exp);
	expect_sql(
	    want,
	    "SELECT count(*) || ' ' || min(floor(extract(epoch FROM token_expires_at))::bigint) || ' ' || "
	    "min(reason) || ' ' || bool_and(sid IS NULL) FROM jwt_revocations WHERE jti = '%s'",
	    jti);
}

/* --- sessions list ----------------------------------------------------------- */

static bool rfc3339(const char *s)
{
	regex_t re;
	cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
	                     REG_EXTENDED | REG_NOSUB),
	             0);
	bool ok = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

Test(sessions, list_live_families_only)
{
	family live1, live2, revoked, expired, slid, bob, other_tenant;
	new_family_ttl(ta, "alice", "192.0.2.1", "agent/1", 30 * 86400, 7 * 86400, &live1);
	new_family(ta, "alice", &revoked);
	new_family(ta, "alice", &expired);
	new_family(ta, "alice", &slid);
	new_family(ta, "bob", &bob);
	new_family(tb, "alice", &other_tenant);
	new_family(ta, "alice", &live2); /* the newest */
	bool newly;
	int64_t exp;
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, revoked.id, "logout", 3600, &newly, &exp), KW_OK);
	commit(app);
	free(admin_sqlf("UPDATE refresh_families SET absolute_expires_at = now() - interval '1 second' "
	                "WHERE id = '%s'",
	                expired.id));
	free(admin_sqlf("UPDATE refresh_tokens SET sliding_expires_at = now() - interval '1 second' "
	                "WHERE family_id = '%s'",
	                slid.id));

	kw_session_row *rows = NULL;
	size_t n = 99;
	begin(app, ta);
	cr_assert_eq(kw_sessions_list(app, "alice", &rows, &n), KW_OK);
	commit(app);
	cr_assert_eq(n, 2, "%zu sessions listed", n);
	cr_assert_str_eq(rows[0].id, live2.id, "not newest first");
	cr_assert_str_eq(rows[1].id, live1.id);
	cr_assert_str_eq(rows[1].ip, "192.0.2.1");
	cr_assert_str_eq(rows[1].user_agent, "agent/1");
	cr_assert_str_eq(rows[0].ip, "");
	cr_assert_str_eq(rows[0].user_agent, "");
	char abs[32];
	kw_time_rfc3339(live1.abs_exp, abs);
	cr_assert_str_eq(rows[1].absolute_expires_at, abs);
	for (size_t i = 0; i < n; i++) {
		cr_assert(rfc3339(rows[i].created_at), "%s", rows[i].created_at);
		cr_assert(rfc3339(rows[i].last_used_at), "%s", rows[i].last_used_at);
	}
	free(rows);

	begin(app, ta);
	cr_assert_eq(kw_sessions_list(app, "nobody", &rows, &n), KW_OK);
	cr_assert_eq(n, 0);
	free(rows);
	cr_assert_eq(kw_sessions_list(app, "bob", &rows, &n), KW_OK);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(rows[0].id, bob.id);
	free(rows);
	commit(app);

	begin(app, tb);
	cr_assert_eq(kw_sessions_list(app, "alice", &rows, &n), KW_OK);
	commit(app);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(rows[0].id, other_tenant.id);
	free(rows);
}

/* --- wallet nonces ------------------------------------------------------------ */

#define ADDR1 "0x52908400098527886E0F7030069857D2E4169EE7"
#define ADDR2 "0x8617E340B3D01FA5F11F306F4090FD50E238070D"

static kw_nonce_state take(const char *tenant, const char *addr, const char *nonce, int64_t *exp)
{
	kw_nonce_state st = (kw_nonce_state)-1;
	int64_t e = -1;
	begin(app, tenant);
	kw_err err = kw_nonce_take(app, tenant, addr, nonce, &st, &e);
	cr_assert_eq(err, KW_OK, "take: %s", kw_err_str(err));
	commit(app);
	if (exp != NULL)
		*exp = e;
	return st;
}

static int64_t put(const char *tenant, const char *addr, const char *nonce)
{
	int64_t exp = 0;
	begin(app, tenant);
	kw_err err = kw_nonce_put(app, tenant, addr, nonce, 300, &exp);
	cr_assert_eq(err, KW_OK, "put: %s", kw_err_str(err));
	commit(app);
	return exp;
}

Test(sessions, wallet_nonces)
{
	char n1[33], n2[33], n3[33], wrong[33];
	cr_assert_eq(kw_random_hex128(n1), KW_OK);
	cr_assert_eq(kw_random_hex128(n2), KW_OK);
	cr_assert_eq(kw_random_hex128(n3), KW_OK);
	cr_assert_eq(kw_random_hex128(wrong), KW_OK);

	int64_t t0 = now_s();
	int64_t exp = put(ta, ADDR1, n1), got = 0;
	cr_assert(exp >= t0 + 300 - 1 && exp <= now_s() + 300 + 1, "expires %lld", (long long)exp);
	/* A wrong nonce neither matches nor consumes. */
	cr_assert_eq(take(ta, ADDR1, wrong, NULL), KW_NONCE_UNKNOWN);
	cr_assert_eq(take(ta, ADDR2, n1, NULL), KW_NONCE_UNKNOWN, "nonce of another address taken");
	cr_assert_eq(take(tb, ADDR1, n1, NULL), KW_NONCE_UNKNOWN, "nonce of another tenant taken");
	cr_assert_eq(take(ta, ADDR1, n1, &got), KW_NONCE_OK);
	cr_assert_eq(got, exp);
	cr_assert_eq(take(ta, ADDR1, n1, NULL), KW_NONCE_REUSED);
	cr_assert_eq(take(ta, ADDR1, n1, NULL), KW_NONCE_REUSED);

	/* A new nonce replaces the outstanding one. */
	put(ta, ADDR1, n2);
	put(ta, ADDR1, n3);
	cr_assert_eq(take(ta, ADDR1, n2, NULL), KW_NONCE_UNKNOWN, "replaced nonce still valid");
	cr_assert_eq(take(ta, ADDR1, n3, NULL), KW_NONCE_OK);
	expect_sql("1", "SELECT count(*) FROM wallet_nonces WHERE tenant_id = '%s'", ta);

	/* Re-issuing a used nonce value makes it usable again (a fresh row state). */
	put(ta, ADDR1, n1);
	cr_assert_eq(take(ta, ADDR1, n1, NULL), KW_NONCE_OK);

	/* Expired: told apart, and consumed. */
	put(ta, ADDR2, n2);
	free(admin_sqlf("UPDATE wallet_nonces SET expires_at = now() - interval '1 second' "
	                "WHERE tenant_id = '%s' AND address = '%s'",
	                ta, ADDR2));
	cr_assert_eq(take(ta, ADDR2, wrong, NULL), KW_NONCE_UNKNOWN);
	cr_assert_eq(take(ta, ADDR2, n2, NULL), KW_NONCE_EXPIRED);
	cr_assert_eq(take(ta, ADDR2, n2, NULL), KW_NONCE_REUSED);

	/* A rolled-back take does not consume. */
	put(tb, ADDR1, n3);
	kw_nonce_state st;
	begin(app, tb);
	cr_assert_eq(kw_nonce_take(app, tb, ADDR1, n3, &st, &got), KW_OK);
	cr_assert_eq(st, KW_NONCE_OK);
	kw_db_rollback(app);
	cr_assert_eq(take(tb, ADDR1, n3, NULL), KW_NONCE_OK);
}

Test(sessions, tenant_exists)
{
	char unknown[37];
	cr_assert_eq(kw_random_uuid(unknown), KW_OK);
	bool exists = false;
	begin(app, ta);
	cr_assert_eq(kw_tenant_exists(app, ta, &exists), KW_OK);
	cr_assert(exists);
	exists = true;
	cr_assert_eq(kw_tenant_exists(app, unknown, &exists), KW_OK);
	cr_assert_not(exists);
	exists = true;
	cr_assert_eq(kw_tenant_exists(app, tb, &exists), KW_OK);
	cr_assert_not(exists, "another tenant visible");
	commit(app);
	begin(app, tb);
	cr_assert_eq(kw_tenant_exists(app, tb, &exists), KW_OK);
	cr_assert(exists);
	commit(app);
}

/* --- housekeeping -------------------------------------------------------------- */

/* Per tenant: 4 dead and 2 live revocations and nonces; families "live"
 * and "recent" (revoked an hour ago) stay, "exp1"/"exp2" (past their
 * absolute expiry) and "rev1"/"rev2" (revoked two days ago) go; 4 tokens
 * past their sliding expiry go, the rev families' live tokens go with
 * their family, 2 tokens stay. */
static void seed_dead_and_live(const char *t)
{
	free(admin_sqlf(
	    "INSERT INTO jwt_revocations (jti, sid, tenant_id, subject, token_expires_at, reason) "
	    "SELECT CASE WHEN g = 1 THEN NULL ELSE md5(random()::text) END, "
	    "CASE WHEN g = 1 THEN gen_random_uuid() END, '%1$s', 's', "
	    "CASE WHEN g <= 4 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END, 'x' "
	    "FROM generate_series(1, 6) g; "
	    "INSERT INTO wallet_nonces (tenant_id, address, nonce, expires_at) "
	    "SELECT '%1$s', '0x' || lpad(to_hex(g), 40, '0'), md5(g::text), "
	    "CASE WHEN g <= 4 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END "
	    "FROM generate_series(1, 6) g; "
	    "INSERT INTO refresh_families (tenant_id, subject, role, absolute_expires_at, revoked_at) VALUES "
	    "('%1$s', 'live', 'r', now() + interval '1 day', NULL), "
	    "('%1$s', 'recent', 'r', now() + interval '1 day', now() - interval '1 hour'), "
	    "('%1$s', 'exp1', 'r', now() - interval '1 minute', NULL), "
	    "('%1$s', 'exp2', 'r', now() - interval '1 hour', NULL), "
	    "('%1$s', 'rev1', 'r', now() + interval '1 day', now() - interval '2 days'), "
	    "('%1$s', 'rev2', 'r', now() + interval '1 day', now() - interval '2 days'); "
	    "INSERT INTO refresh_tokens (family_id, tenant_id, token_hmac, pepper_id, sliding_expires_at) "
	    "SELECT f.id, f.tenant_id, decode(md5(random()::text) || md5(random()::text), 'hex'), 1, s.exp "
	    "FROM refresh_families f JOIN (VALUES "
	    "('live', now() + interval '1 hour'), ('live', now() - interval '1 minute'), "
	    "('live', now() - interval '1 day'), ('recent', now() + interval '1 hour'), "
	    "('exp1', now() - interval '1 minute'), ('exp2', now() - interval '1 hour'), "
	    "('rev1', now() + interval '1 hour'), ('rev2', now() + interval '1 hour')) AS s(subject, exp) "
	    "ON s.subject = f.subject WHERE f.tenant_id = '%1$s'",
	    t));
}

static const char *purge_state =
    "SELECT (SELECT count(*) FROM jwt_revocations WHERE token_expires_at > now()) || '/' || "
    "(SELECT count(*) FROM jwt_revocations) || ' ' || "
    "(SELECT count(*) FROM wallet_nonces WHERE expires_at > now()) || '/' || "
    "(SELECT count(*) FROM wallet_nonces) || ' ' || "
    "(SELECT count(*) FROM refresh_tokens WHERE sliding_expires_at > now()) || '/' || "
    "(SELECT count(*) FROM refresh_tokens) || ' ' || "
    "(SELECT string_agg(subject, ',' ORDER BY subject) FROM refresh_families)";

Test(sessions, purge_as_app_role)
{
	seed_dead_and_live(ta);
	seed_dead_and_live(tb);
	expect_sql("4/12 4/12 8/16 exp1,exp1,exp2,exp2,live,live,recent,recent,rev1,rev1,rev2,rev2", "%s",
	           purge_state);

	/* Without app.purge, the app role deletes nothing dead: not with no
	 * tenant set, and not another tenant's rows from its own scope. */
	const char *del[] = {
	    "DELETE FROM jwt_revocations WHERE token_expires_at < now()",
	    "DELETE FROM wallet_nonces WHERE expires_at < now()",
	    "DELETE FROM refresh_tokens WHERE sliding_expires_at < now()",
	    "DELETE FROM refresh_families WHERE absolute_expires_at < now() OR revoked_at < now() - "
	    "interval '1 day'",
	};
	/* Unqualified too: then only the DELETE policies decide (a WHERE
	 * clause would bring in the SELECT policies as well). */
	const char *del_all[] = {"DELETE FROM jwt_revocations", "DELETE FROM wallet_nonces",
	                         "DELETE FROM refresh_tokens", "DELETE FROM refresh_families"};
	begin(app, NULL);
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(exec_rows(app, del[i], 0, NULL), 0, "no tenant, no purge: %s", del[i]);
		cr_assert_eq(exec_rows(app, del_all[i], 0, NULL), 0, "no tenant, no purge: %s", del_all[i]);
	}
	commit(app);
	const char *del_b[] = {
	    "DELETE FROM wallet_nonces WHERE tenant_id = $1",
	    "DELETE FROM refresh_tokens WHERE tenant_id = $1",
	    "DELETE FROM refresh_families WHERE tenant_id = $1",
	};
	const char *b[1] = {tb};
	begin(app, ta);
	cr_assert_eq(exec_rows(app, del[0], 0, NULL), 0, "revocations deleted without app.purge");
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(exec_rows(app, del_b[i], 1, b), 0, "tenant b's rows deleted from a: %s",
		             del_b[i]);
	commit(app);
	expect_sql("4/12 4/12 8/16 exp1,exp1,exp2,exp2,live,live,recent,recent,rev1,rev1,rev2,rev2", "%s",
	           purge_state);

	kw_purge_counts c;
	memset(&c, 0xff, sizeof(c));
	kw_err err = kw_sessions_purge(app, 3, 100, &c);
	cr_assert_eq(err, KW_OK, "purge: %s", kw_err_str(err));
	cr_assert_eq(c.revocations, 8, "%llu revocations", (unsigned long long)c.revocations);
	cr_assert_eq(c.nonces, 8, "%llu nonces", (unsigned long long)c.nonces);
	cr_assert_eq(c.tokens, 8, "%llu tokens", (unsigned long long)c.tokens);
	cr_assert_eq(c.families, 8, "%llu families", (unsigned long long)c.families);
	expect_sql("4/4 4/4 4/4 live,live,recent,recent", "%s", purge_state);
	cr_assert_not(kw_db_in_tx(app), "purge left a transaction open");

	/* Even with app.purge on, the policies protect live rows. */
	begin(app, NULL);
	cr_assert_eq(exec_rows(app, "SELECT set_config('app.purge', 'on', true)", 0, NULL), 1);
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(exec_rows(app, del_all[i], 0, NULL), 0, "live rows deleted: %s", del_all[i]);
	commit(app);

	memset(&c, 0xff, sizeof(c));
	cr_assert_eq(kw_sessions_purge(app, 3, 100, &c), KW_OK);
	cr_assert(c.revocations == 0 && c.nonces == 0 && c.tokens == 0 && c.families == 0);
	expect_sql("4/4 4/4 4/4 live,live,recent,recent", "%s", purge_state);
}

Test(sessions, purge_stops_after_max_rounds)
{
	free(admin_sqlf("INSERT INTO jwt_revocations (jti, tenant_id, subject, token_expires_at, reason) "
	                "SELECT md5(g::text), '%s', 's', now() - interval '1 minute', 'x' "
	                "FROM generate_series(1, 7) g",
	                ta));
	kw_purge_counts c;
	cr_assert_eq(kw_sessions_purge(app, 3, 2, &c), KW_OK);
	cr_assert_eq(c.revocations, 6, "%llu deleted in 2 rounds of 3", (unsigned long long)c.revocations);
	expect_sql("1", "SELECT count(*) FROM jwt_revocations");
	cr_assert_eq(kw_sessions_purge(app, 3, 2, &c), KW_OK);
	cr_assert_eq(c.revocations, 1);
	expect_sql("0", "SELECT count(*) FROM jwt_revocations");
}

/* --- NOTIFY ------------------------------------------------------------------- */

/* The next notification on c within ms, or NULL. */
static PGnotify *wait_notify(PGconn *c, int ms)
{
	int64_t end = mono_ms() + ms;
	for (;;) {
		cr_assert_eq(PQconsumeInput(c), 1, "%s", PQerrorMessage(c));
		PGnotify *n = PQnotifies(c);
		int64_t left = end - mono_ms();
		if (n != NULL || left <= 0)
			return n;
		struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
		(void)poll(&p, 1, (int)left);
	}
}

Test(sessions, revocations_are_notified_at_commit)
{
	PGconn *l = PQconnectdb(tdb.admin);
	cr_assert_eq(PQstatus(l), CONNECTION_OK, "%s", PQerrorMessage(l));
	PGresult *r = PQexec(l, "LISTEN keyward_revocations");
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);

	char jti[33];
	cr_assert_eq(kw_random_hex128(jti), KW_OK);
	int64_t exp = now_s() + 777;
	begin(app, ta);
	cr_assert_eq(kw_jti_revoke(app, ta, "alice", jti, exp, "logout"), KW_OK);
	PGnotify *n = wait_notify(l, 200);
	cr_assert_null(n, "notified before commit: %s", n ? n->extra : "");
	commit(app);
	n = wait_notify(l, 5000);
	cr_assert_not_null(n, "no notification after commit");
	/* The payload is the row's id (a cue, migration 0014), nothing else. */
	char want[128], sql[200];
	snprintf(sql, sizeof(sql), "SELECT id::text FROM jwt_revocations WHERE jti = '%s'", jti);
	char *id = kwt_db_admin_sql(&tdb, sql);
	snprintf(want, sizeof(want), "%s", id);
	free(id);
	cr_assert_str_eq(n->relname, "keyward_revocations");
	cr_assert_str_eq(n->extra, want);
	PQfreemem(n);

	/* A family revocation names its sid. */
	family f;
	new_family(ta, "alice", &f);
	bool newly;
	int64_t rexp = 0;
	begin(app, ta);
	cr_assert_eq(kw_family_revoke(app, f.id, "logout", 600, &newly, &rexp), KW_OK);
	commit(app);
	n = wait_notify(l, 5000);
	cr_assert_not_null(n, "no notification for a family revocation");
	snprintf(sql, sizeof(sql), "SELECT id::text FROM jwt_revocations WHERE sid = '%s'", f.id);
	id = kwt_db_admin_sql(&tdb, sql);
	snprintf(want, sizeof(want), "%s", id);
	free(id);
	cr_assert_str_eq(n->extra, want);
	PQfreemem(n);

	/* A rolled-back revocation is never announced. */
	cr_assert_eq(kw_random_hex128(jti), KW_OK);
	begin(app, ta);
	cr_assert_eq(kw_jti_revoke(app, ta, "alice", jti, exp, "logout"), KW_OK);
	kw_db_rollback(app);
	n = wait_notify(l, 300);
	cr_assert_null(n, "rolled-back revocation notified: %s", n ? n->extra : "");
	PQfinish(l);
}
