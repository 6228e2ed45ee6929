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

#include "keyward/sessions.h"
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
	cr_assert_str_eq(v != NULL ? v : "(null)", want, "%s", sql);
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

