/* test_vault.c — per-user master keys (DESIGN §5.3) against the real
 * SoftHSM token and a throwaway PostgreSQL.
 *
 * Wrapping: round trips, and the AAD that binds a blob to its tenant, user,
 * KEK version and format. Rows: every repository call and raw statement
 * runs as the service role (db.app, a member of keyward_app), so the RLS
 * policies of migration 0004 apply to it; the schema owner (db.admin, a
 * superuser) only seeds, inspects and runs KEK maintenance. The shared test
 * token keeps its single KEK version: rotation is covered by a black-box
 * test on its own token. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/audit/audit.h"
#include "keyward/vault/vault.h"
#include "kwtest.h"

/* A role outside keyward_app that the maintenance policy is meant for,
 * without superuser's blanket RLS bypass. Cluster-wide, so tolerant of
 * existing already. */
#define MAINT_ROLE "kw_itv_maint"
/* A role that is handed the table for a while: an owner without bypass. */
#define OWNER_ROLE "kw_itv_owner"

static kwt_db tdb;
static kw_hsm *hsm;
static kw_hsm_session *sess;
static kw_db *app;
static kw_db *admin;
static char ta[37], tb[37]; /* two tenants, fresh for each test */

static void new_uuid(char id[37])
{
	char *v = kwt_db_admin_sql(&tdb, "SELECT gen_random_uuid()::text");
	cr_assert(v != NULL && strlen(v) == 36);
	memcpy(id, v, 37);
	free(v);
}

static void setup(void)
{
	kwt_db_create(&tdb);
	hsm = kwt_hsm_open();
	cr_assert_eq(kw_hsm_session_open(hsm, &sess), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.admin, &admin), KW_OK);
	new_uuid(ta);
	new_uuid(tb);
	cr_assert_str_neq(ta, tb);
}

static void teardown(void)
{
	kw_db_close(app);
	kw_db_close(admin);
	kwt_db_drop(&tdb);
	kw_hsm_session_close(sess);
	kw_hsm_close(hsm);
}

TestSuite(vault, .init = setup, .fini = teardown, .timeout = 120);

/* --- helpers ------------------------------------------------------------- */

static void expect_sql(const char *want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_sql(const char *want, const char *fmt, ...)
{
	char sql[4096];
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

static void begin(kw_db *db, const char *tenant, const char *user)
{
	kw_err err = kw_db_begin(db, tenant, user);
	cr_assert_eq(err, KW_OK, "begin(%s, %s): %s", tenant ? tenant : "NULL", user ? user : "NULL",
	             kw_err_str(err));
}

static void commit(kw_db *db)
{
	kw_err err = kw_db_commit(db);
	cr_assert_eq(err, KW_OK, "commit: %s", kw_err_str(err));
}

/* Runs sql as whatever role db is; the number of rows it returned or
 * touched, or -1 if the statement failed (the transaction is then
 * aborted: the caller rolls back). */
static long exec_rows(kw_db *db, const char *sql)
{
	PGresult *res = NULL;
	if (kw_db_exec(db, sql, 0, NULL, NULL, NULL, &res) != KW_OK)
		return -1;
	long rows = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rows;
}

/* SELECT count(*) FROM encryption_vaults, as db's role, in its open
 * transaction. */
static long visible_rows(kw_db *db)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, "SELECT count(*) FROM encryption_vaults", 0, NULL, NULL, NULL, &res);
	cr_assert_eq(err, KW_OK, "count: %s", kw_err_str(err));
	long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

static uint32_t active_kek(void)
{
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_KEK, &k), KW_OK);
	return kw_hsm_key_version(k);
}

/* A fresh MK wrapped for tenant/user. */
static void wrap_new(const char *tenant, const char *user, unsigned char mk[KW_MK_LEN], kw_vault_row *row)
{
	memset(row, 0, sizeof(*row));
	snprintf(row->tenant_id, sizeof(row->tenant_id), "%s", tenant);
	snprintf(row->user_id, sizeof(row->user_id), "%s", user);
	cr_assert_eq(kw_vault_new_mk(sess, mk), KW_OK);
	kw_err err = kw_vault_wrap(hsm, sess, mk, row);
	cr_assert_eq(err, KW_OK, "wrap: %s", kw_err_str(err));
}

/* Wraps a fresh MK for tenant/user and stores it as the service role, in
 * its own scoped and committed transaction. */
static void seed(const char *tenant, const char *user, unsigned char mk[KW_MK_LEN], kw_vault_row *row)
{
	wrap_new(tenant, user, mk, row);
	begin(app, tenant, user);
	kw_err err = kw_vault_insert(app, row);
	cr_assert_eq(err, KW_OK, "insert: %s", kw_err_str(err));
	commit(app);
}

static bool contains(const unsigned char *hay, size_t n, const unsigned char *needle, size_t m)
{
	for (size_t i = 0; m <= n && i <= n - m; i++)
		if (memcmp(hay + i, needle, m) == 0)
			return true;
	return false;
}

static void expect_unwrap(const kw_vault_row *row, kw_err want, const char *what)
{
	unsigned char out[KW_MK_LEN];
	memset(out, 0xA5, sizeof(out));
	kw_err err = kw_vault_unwrap(hsm, sess, row, out);
	cr_assert_eq(err, want, "%s: unwrap gave %s, want %s", what, kw_err_str(err), kw_err_str(want));
	if (want != KW_OK) {
		/* Nothing of a refused blob reaches the caller's buffer. */
		for (size_t i = 0; i < sizeof(out); i++)
			cr_assert_eq(out[i], 0xA5, "%s: output written on failure", what);
	}
}

/* --- wrapping ------------------------------------------------------------ */

Test(vault, wrap_unwrap_round_trip)
{
	unsigned char mk[KW_MK_LEN], mk2[KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row row;

	wrap_new(ta, "u1", mk, &row);
	cr_assert_eq(row.kek_id, active_kek());
	cr_assert_eq(row.format_version, KW_VAULT_FORMAT);
	/* The blob is not the MK, and no part of it is the MK either. */
	cr_assert_neq(memcmp(row.wrapped, mk, KW_MK_LEN), 0);
	cr_assert(!contains(row.wrapped, sizeof(row.wrapped), mk, KW_MK_LEN));
	cr_assert(!contains(row.wrapped, sizeof(row.wrapped), mk, 16), "half the MK is in the blob");

	memset(got, 0, sizeof(got));
	kw_err err = kw_vault_unwrap(hsm, sess, &row, got);
	cr_assert_eq(err, KW_OK, "unwrap: %s", kw_err_str(err));
	cr_assert_eq(CRYPTO_memcmp(got, mk, KW_MK_LEN), 0);

	/* MKs come from the token's RNG: two are different. */
	cr_assert_eq(kw_vault_new_mk(sess, mk2), KW_OK);
	cr_assert_neq(CRYPTO_memcmp(mk, mk2, KW_MK_LEN), 0);
	OPENSSL_cleanse(mk, sizeof(mk));
	OPENSSL_cleanse(mk2, sizeof(mk2));
	OPENSSL_cleanse(got, sizeof(got));
}

Test(vault, aad_names_purpose_tenant_user_and_kek)
{
	char aad[512], want[512], upper[37];
	snprintf(want, sizeof(want), "keyward:v1:encryption-vault:%s:u1:7", ta);
	cr_assert_eq(kw_vault_aad(aad, sizeof(aad), ta, "u1", 7), strlen(want));
	cr_assert_str_eq(aad, want);

	/* The database prints uuids in lowercase: the AAD binds to that form. */
	for (size_t i = 0; i <= 36; i++)
		upper[i] = (char)(ta[i] >= 'a' && ta[i] <= 'f' ? ta[i] - 32 : ta[i]);
	cr_assert_eq(kw_vault_aad(aad, sizeof(aad), upper, "u1", 7), strlen(want));
	cr_assert_str_eq(aad, want);

	/* Too small a buffer, or not a 36-character tenant: 0. */
	cr_assert_eq(kw_vault_aad(aad, strlen(want), ta, "u1", 7), 0);
	cr_assert_eq(kw_vault_aad(aad, sizeof(aad), "not-a-tenant", "u1", 7), 0);

	/* A row wrapped under the uppercase tenant unwraps as the database
	 * gives it back. */
	unsigned char mk[KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row row;
	wrap_new(upper, "u1", mk, &row);
	memcpy(row.tenant_id, ta, 37);
	cr_assert_eq(kw_vault_unwrap(hsm, sess, &row, got), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(got, mk, KW_MK_LEN), 0);
}

Test(vault, blob_is_bound_to_its_row)
{
	unsigned char mk[KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row row, other;

	wrap_new(ta, "u1", mk, &row);
	expect_unwrap(&row, KW_OK, "the row itself");

	other = row;
	snprintf(other.user_id, sizeof(other.user_id), "u2");
	expect_unwrap(&other, KW_ERR_VERIFY, "another user");
	other = row;
	snprintf(other.user_id, sizeof(other.user_id), "u1 ");
	expect_unwrap(&other, KW_ERR_VERIFY, "a user id with a trailing space");
	other = row;
	snprintf(other.user_id, sizeof(other.user_id), "u");
	expect_unwrap(&other, KW_ERR_VERIFY, "a prefix of the user id");

	other = row;
	memcpy(other.tenant_id, tb, 37);
	expect_unwrap(&other, KW_ERR_VERIFY, "another tenant");

	/* Another KEK version: the token has only the active one, so it is not
	 * found; an older one, if the token had it, would not verify. */
	other = row;
	other.kek_id = row.kek_id + 1;
	expect_unwrap(&other, KW_ERR_NOT_FOUND, "a KEK version the token lacks");
	if (row.kek_id > 1) {
		other.kek_id = row.kek_id - 1;
		expect_unwrap(&other, KW_ERR_VERIFY, "an older KEK version");
	}

	/* Any flipped bit of the ciphertext, the tag or the IV. */
	const size_t at[] = {0, 15, KW_MK_LEN - 1, KW_MK_LEN, KW_VAULT_WRAPPED_LEN - 1};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		other = row;
		other.wrapped[at[i]] ^= 0x01;
		char what[64];
		snprintf(what, sizeof(what), "blob byte %zu flipped", at[i]);
		expect_unwrap(&other, KW_ERR_VERIFY, what);
	}
	for (size_t i = 0; i < KW_GCM_IV_LEN; i += KW_GCM_IV_LEN - 1) {
		other = row;
		other.iv[i] ^= 0x80;
		expect_unwrap(&other, KW_ERR_VERIFY, "IV byte flipped");
	}

	/* An unknown format is refused before the token is asked. */
	other = row;
	other.format_version = 2;
	expect_unwrap(&other, KW_ERR_INVALID, "format 2");
	other.format_version = 0;
	expect_unwrap(&other, KW_ERR_INVALID, "format 0");

	/* Wrapping the same MK twice: fresh IVs, different blobs, same MK. */
	kw_vault_row again = row;
	cr_assert_eq(kw_vault_wrap(hsm, sess, mk, &again), KW_OK);
	cr_assert_neq(memcmp(again.iv, row.iv, KW_GCM_IV_LEN), 0, "IV reused");
	cr_assert_neq(memcmp(again.wrapped, row.wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert_eq(kw_vault_unwrap(hsm, sess, &again, got), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(got, mk, KW_MK_LEN), 0);
	/* And the IV belongs to its blob: the other wrap's IV does not fit. */
	other = row;
	memcpy(other.iv, again.iv, KW_GCM_IV_LEN);
	expect_unwrap(&other, KW_ERR_VERIFY, "the IV of another wrap");
	OPENSSL_cleanse(mk, sizeof(mk));
	OPENSSL_cleanse(got, sizeof(got));
}

/* --- rows under RLS, as the service role --------------------------------- */

Test(vault, owner_scope_reads_its_row_back)
{
	unsigned char mk[KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row row, back;

	seed(ta, "u1", mk, &row);
	expect_sql("1", "SELECT count(*) FROM encryption_vaults WHERE tenant_id = '%s' AND user_id = 'u1'",
	           ta);
	/* What the table holds is the blob: the MK appears nowhere. */
	char mkhex[2 * KW_MK_LEN + 1];
	for (size_t i = 0; i < KW_MK_LEN; i++)
		snprintf(mkhex + 2 * i, 3, "%02x", mk[i]);
	expect_sql("0",
	           "SELECT count(*) FROM encryption_vaults WHERE position('\\x%s'::bytea IN wrapped_mk) > 0",
	           mkhex);

	begin(app, ta, "u1");
	cr_assert_eq(visible_rows(app), 1);
	memset(&back, 0, sizeof(back));
	cr_assert_eq(kw_vault_get(app, ta, "u1", true, &back), KW_OK);
	kw_db_rollback(app);
	cr_assert_str_eq(back.tenant_id, ta);
	cr_assert_str_eq(back.user_id, "u1");
	cr_assert_eq(memcmp(back.wrapped, row.wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert_eq(memcmp(back.iv, row.iv, KW_GCM_IV_LEN), 0);
	cr_assert_eq(back.kek_id, row.kek_id);
	cr_assert_eq(back.format_version, KW_VAULT_FORMAT);
	cr_assert_eq(kw_vault_unwrap(hsm, sess, &back, got), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(got, mk, KW_MK_LEN), 0);

	/* The one-round-trip read scopes itself. */
	memset(&back, 0, sizeof(back));
	cr_assert_eq(kw_vault_fetch(app, ta, "u1", &back), KW_OK);
	cr_assert_eq(memcmp(back.wrapped, row.wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert(!kw_db_in_tx(app));

	/* A second insert for the same user is refused, the first row kept. */
	kw_vault_row dup;
	wrap_new(ta, "u1", got, &dup);
	begin(app, ta, "u1");
	cr_assert_eq(kw_vault_insert(app, &dup), KW_ERR_EXISTS);
	kw_db_rollback(app);
	cr_assert_eq(kw_vault_fetch(app, ta, "u1", &back), KW_OK);
	cr_assert_eq(memcmp(back.wrapped, row.wrapped, KW_VAULT_WRAPPED_LEN), 0);

	/* The owner may replace its own blob (rotation). */
	begin(app, ta, "u1");
	cr_assert_eq(kw_vault_replace(app, &dup), KW_OK);
	commit(app);
	cr_assert_eq(kw_vault_fetch(app, ta, "u1", &back), KW_OK);
	cr_assert_eq(memcmp(back.wrapped, dup.wrapped, KW_VAULT_WRAPPED_LEN), 0);
	expect_sql("t", "SELECT rotated_at IS NOT NULL FROM encryption_vaults WHERE user_id = 'u1'");
	OPENSSL_cleanse(mk, sizeof(mk));
	OPENSSL_cleanse(got, sizeof(got));
}

/* Reads batched into one round trip: each read is its own transaction,
 * scoped to its own tenant and user, and each gets its own answer. */
Test(vault, fetch_many_scopes_each_read_on_its_own)
{
	unsigned char mk[3][KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row seeded[3];
	seed(ta, "u1", mk[0], &seeded[0]);
	seed(ta, "u2", mk[1], &seeded[1]);
	seed(tb, "u1", mk[2], &seeded[2]);

	char upper[37];
	for (size_t i = 0; i <= 36; i++)
		upper[i] = (char)toupper((unsigned char)tb[i]);
	const char *tenants[] = {ta, ta, ta, upper, ta, "not-a-uuid", tb};
	const char *users[] = {"u1", "nobody", "", "u1", "u2", "u1", "u2"};
	const kw_err want[] = {KW_OK, KW_ERR_NOT_FOUND, KW_ERR_INVALID,  KW_OK,
	                       KW_OK, KW_ERR_INVALID,   KW_ERR_NOT_FOUND};
	const int from[] = {0, -1, -1, 2, 1, -1, -1};
	enum { N = sizeof(tenants) / sizeof(tenants[0]) };
	kw_vault_row rows[N];
	kw_err errs[N];
	memset(rows, 0, sizeof(rows));
	unsigned long long before = kw_db_statements();
	kw_vault_fetch_many(app, N, tenants, users, rows, errs);
	/* Four statements for each read that reached SQL, none for the two
	 * refused before it. */
	cr_assert_eq(kw_db_statements() - before, 4 * 5);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(errs[i], want[i], "read %d: %s, want %s", i, kw_err_str(errs[i]),
		             kw_err_str(want[i]));
		if (from[i] < 0)
			continue;
		const kw_vault_row *s = &seeded[from[i]];
		cr_assert_str_eq(rows[i].tenant_id, s->tenant_id, "read %d", i);
		cr_assert_str_eq(rows[i].user_id, s->user_id, "read %d", i);
		cr_assert_eq(memcmp(rows[i].wrapped, s->wrapped, KW_VAULT_WRAPPED_LEN), 0, "read %d", i);
		cr_assert_eq(kw_vault_unwrap(hsm, sess, &rows[i], got), KW_OK, "read %d", i);
		cr_assert_eq(CRYPTO_memcmp(got, mk[from[i]], KW_MK_LEN), 0, "read %d: another user's key", i);
	}
	/* No transaction and no scope are left on the connection. */
	cr_assert(!kw_db_in_tx(app));
	PGresult *res = NULL;
	cr_assert_eq(kw_db_exec(app,
	                        "SELECT coalesce(current_setting('app.tenant_id', true), '') || "
	                        "coalesce(current_setting('app.user_id', true), '')",
	                        0, NULL, NULL, NULL, &res),
	             KW_OK);
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "");
	PQclear(res);
	cr_assert_eq(visible_rows(app), 0);

	/* One read the database refuses (a user id that is not UTF-8) aborts
	 * the shared pipeline; each read is then tried alone, so only that one
	 * fails. */
	const char *tenants2[] = {ta, ta, tb};
	const char *users2[] = {"u1", "bad-\xff", "u1"};
	kw_vault_row rows2[3];
	kw_err errs2[3];
	before = kw_db_statements();
	kw_vault_fetch_many(app, 3, tenants2, users2, rows2, errs2);
	/* 12 in the shared pipeline, then 12 more read by read. */
	cr_assert_geq(kw_db_statements() - before, 24, "no read-by-read retry: %llu statements",
	              kw_db_statements() - before);
	cr_assert_eq(errs2[0], KW_OK);
	cr_assert_eq(errs2[1], KW_ERR_DB, "%s", kw_err_str(errs2[1]));
	cr_assert_eq(errs2[2], KW_OK);
	cr_assert_eq(memcmp(rows2[0].wrapped, seeded[0].wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert_eq(memcmp(rows2[2].wrapped, seeded[2].wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert(!kw_db_in_tx(app));
	OPENSSL_cleanse(mk, sizeof(mk));
	OPENSSL_cleanse(got, sizeof(got));
}

/* Everything a scope that is not (ta, u1) can try against u1's row:
 * nothing sees it, nothing changes it, nothing writes one for u1. */
static void expect_shut_out(const char *tenant, const char *user, const kw_vault_row *row, const char *what)
{
	kw_vault_row got, forged = *row;
	kw_err err;

	begin(app, tenant, user);
	cr_assert_eq(visible_rows(app), 0, "%s: sees u1's row", what);
	err = kw_vault_get(app, ta, "u1", false, &got);
	cr_assert_eq(err, KW_ERR_NOT_FOUND, "%s: get gave %s", what, kw_err_str(err));
	err = kw_vault_get(app, ta, "u1", true, &got);
	cr_assert_eq(err, KW_ERR_NOT_FOUND, "%s: get for update gave %s", what, kw_err_str(err));
	cr_assert_eq(exec_rows(app, "UPDATE encryption_vaults SET kek_id = kek_id"), 0,
	             "%s: update reached u1", what);
	/* Overwriting u1's blob with another one (say, the attacker's). */
	memset(forged.wrapped, 0x42, sizeof(forged.wrapped));
	err = kw_vault_replace(app, &forged);
	cr_assert_eq(err, KW_ERR_NOT_FOUND, "%s: replace gave %s", what, kw_err_str(err));
	kw_db_rollback(app);

	/* Writing a row for u1 from this scope: an RLS violation, not a silent
	 * "exists" (which would also tell that u1 has a vault). */
	begin(app, tenant, user);
	err = kw_vault_insert(app, row);
	cr_assert_eq(err, KW_ERR_DB, "%s: insert as u1 gave %s", what, kw_err_str(err));
	kw_db_rollback(app);
	/* Same for a user that has no row yet. */
	forged = *row;
	snprintf(forged.user_id, sizeof(forged.user_id), "u3");
	begin(app, tenant, user);
	err = kw_vault_insert(app, &forged);
	cr_assert_eq(err, KW_ERR_DB, "%s: insert as u3 gave %s", what, kw_err_str(err));
	kw_db_rollback(app);

	/* The one-round-trip read under this scope's ids. */
	if (tenant != NULL && user != NULL) {
		err = kw_vault_fetch(app, tenant, user, &got);
		cr_assert_eq(err, KW_ERR_NOT_FOUND, "%s: fetch gave %s", what, kw_err_str(err));
	}
	cr_assert(!kw_db_in_tx(app));
}

static void expect_row_intact(const kw_vault_row *row)
{
	kw_vault_row back;
	expect_sql("1", "SELECT count(*) FROM encryption_vaults");
	cr_assert_eq(kw_vault_fetch(app, ta, "u1", &back), KW_OK);
	cr_assert_eq(memcmp(back.wrapped, row->wrapped, KW_VAULT_WRAPPED_LEN), 0);
	cr_assert_eq(memcmp(back.iv, row->iv, KW_GCM_IV_LEN), 0);
	cr_assert_eq(back.kek_id, row->kek_id);
	expect_sql("t", "SELECT rotated_at IS NULL FROM encryption_vaults");
}

Test(vault, another_user_of_the_tenant_is_shut_out)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	seed(ta, "u1", mk, &row);
	expect_shut_out(ta, "u2", &row, "(ta, u2)");
	/* A user id that only differs in case or by a prefix is another user. */
	expect_shut_out(ta, "U1", &row, "(ta, U1)");
	expect_shut_out(ta, "u", &row, "(ta, u)");
	/* Tenant scope alone names no user. */
	expect_shut_out(ta, NULL, &row, "(ta, -)");
	expect_row_intact(&row);
}

Test(vault, another_tenant_is_shut_out)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	seed(ta, "u1", mk, &row);
	expect_shut_out(tb, "u1", &row, "(tb, u1)");
	expect_row_intact(&row);
}

Test(vault, no_scope_is_shut_out)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	seed(ta, "u1", mk, &row);
	expect_shut_out(NULL, NULL, &row, "(-, -)");
	/* A user scope without a tenant. */
	expect_shut_out(NULL, "u1", &row, "(-, u1)");
	expect_row_intact(&row);
}

Test(vault, the_owner_cannot_move_its_row)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	char sql[256];
	seed(ta, "u1", mk, &row);

	/* Control: the owner's own scope reaches the row. */
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "UPDATE encryption_vaults SET kek_id = kek_id"), 1);
	kw_db_rollback(app);
	/* But cannot relabel it as another user's or another tenant's. */
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "UPDATE encryption_vaults SET user_id = 'u2'"), -1);
	kw_db_rollback(app);
	begin(app, ta, "u1");
	snprintf(sql, sizeof(sql), "UPDATE encryption_vaults SET tenant_id = '%s'", tb);
	cr_assert_eq(exec_rows(app, sql), -1);
	kw_db_rollback(app);
	expect_sql("u1", "SELECT user_id FROM encryption_vaults WHERE tenant_id = '%s'", ta);
	expect_row_intact(&row);
}

Test(vault, delete_is_not_granted)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	seed(ta, "u1", mk, &row);
	/* Even the row's own scope, which RLS would admit. */
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "DELETE FROM encryption_vaults"), -1);
	kw_db_rollback(app);
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "DELETE FROM encryption_vaults WHERE user_id = 'u1'"), -1);
	kw_db_rollback(app);
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "TRUNCATE encryption_vaults"), -1);
	kw_db_rollback(app);
	expect_row_intact(&row);
}

Test(vault, empty_ids_are_refused_before_any_sql)
{
	kw_vault_row got;
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_db_begin(app, ta, ""), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "", "u1"), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "", ""), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, NULL, ""), KW_ERR_INVALID);
	cr_assert_eq(kw_vault_fetch(app, ta, "", &got), KW_ERR_INVALID);
	cr_assert_eq(kw_vault_fetch(app, "", "u1", &got), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before, "%llu statements sent", kw_db_statements() - before);
	cr_assert(!kw_db_in_tx(app));
	/* The counter does count: a real begin moves it. */
	begin(app, ta, "u1");
	kw_db_rollback(app);
	cr_assert(kw_db_statements() > before);
}

Test(vault, kek_maintenance_is_not_for_the_service_role)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row;
	long long n = -1;
	seed(ta, "u1", mk, &row);
	char plain_insert[512];
	snprintf(
	    plain_insert, sizeof(plain_insert),
	    "INSERT INTO encryption_vaults (tenant_id, user_id, wrapped_mk, wrap_iv, format_version, kek_id) "
	    "VALUES ('%s', 'u9', decode(repeat('00', 48), 'hex'), decode(repeat('00', 12), 'hex'), 1, 1)",
	    ta);

	/* The service role declaring maintenance, unscoped or scoped to
	 * another user, still sees nothing and writes nothing. */
	const char *scopes[][2] = {{NULL, NULL}, {ta, "u2"}, {tb, "u1"}};
	for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
		begin(app, scopes[i][0], scopes[i][1]);
		cr_assert_eq(exec_rows(app, "SELECT set_config('app.kek_maintenance', 'on', true)"), 1);
		cr_assert_eq(visible_rows(app), 0, "scope %zu: maintenance opened the table to the service",
		             i);
		cr_assert_eq(exec_rows(app, "UPDATE encryption_vaults SET kek_id = kek_id"), 0);
		kw_db_rollback(app);
		begin(app, scopes[i][0], scopes[i][1]);
		cr_assert_eq(exec_rows(app, "SELECT set_config('app.kek_maintenance', 'on', true)"), 1);
		kw_vault_row forged = row;
		snprintf(forged.user_id, sizeof(forged.user_id), "u9");
		cr_assert_eq(kw_vault_insert(app, &forged), KW_ERR_DB, "scope %zu: maintenance insert", i);
		kw_db_rollback(app);
		/* kw_vault_insert's ON CONFLICT needs SELECT, which also applies
		 * the policies' USING to the new row: a plain INSERT tries the
		 * WITH CHECK clauses alone. */
		begin(app, scopes[i][0], scopes[i][1]);
		cr_assert_eq(exec_rows(app, "SELECT set_config('app.kek_maintenance', 'on', true)"), 1);
		cr_assert_eq(exec_rows(app, plain_insert), -1, "scope %zu: maintenance plain insert", i);
		kw_db_rollback(app);
	}
	/* The owner, declaring maintenance, cannot hand its row to another
	 * user either (an UPDATE that reads no column checks WITH CHECK only). */
	begin(app, ta, "u1");
	cr_assert_eq(exec_rows(app, "SELECT set_config('app.kek_maintenance', 'on', true)"), 1);
	cr_assert_eq(exec_rows(app, "UPDATE encryption_vaults SET user_id = 'u9'"), -1);
	kw_db_rollback(app);
	/* A session-wide setting (not just the transaction's) changes nothing. */
	cr_assert_eq(exec_rows(app, "SELECT set_config('app.kek_maintenance', 'on', false)"), 1);
	begin(app, NULL, NULL);
	cr_assert_eq(visible_rows(app), 0);
	kw_db_rollback(app);
	cr_assert_eq(kw_vault_count_kek(app, 0, 0, &n), KW_OK);
	cr_assert_eq(n, 0, "the service role counted %lld rows", n);
	cr_assert_eq(kw_vault_count_kek(app, row.kek_id, 0, &n), KW_OK);
	cr_assert_eq(n, 0);

	/* The schema owner's maintenance sees it. */
	cr_assert_eq(kw_vault_count_kek(admin, row.kek_id, 0, &n), KW_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(kw_vault_count_kek(admin, 0, row.kek_id, &n), KW_OK);
	cr_assert_eq(n, 0, "rows under a KEK other than the active one");
	cr_assert_eq(kw_vault_count_kek(admin, 0, row.kek_id + 1, &n), KW_OK);
	cr_assert_eq(n, 1);

	/* The superuser bypasses RLS anyway; a role outside keyward_app without
	 * that bypass shows the policy itself works: nothing without the
	 * setting, every row with it. */
	char conninfo[600];
	kw_db *maint = NULL;
	(void)kwt_db_admin_sql(&tdb,
	                       "DO $$ BEGIN "
	                       "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" MAINT_ROLE "') THEN "
	                       "CREATE ROLE " MAINT_ROLE " LOGIN NOSUPERUSER NOBYPASSRLS; END IF; "
	                       "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
	(void)kwt_db_admin_sql(
	    &tdb, "GRANT SELECT ON encryption_vaults, secret_versions, signing_keys TO " MAINT_ROLE);
	expect_sql("f", "SELECT pg_has_role('" MAINT_ROLE "', 'keyward_app', 'MEMBER')");
	snprintf(conninfo, sizeof(conninfo), "%s user=" MAINT_ROLE, tdb.admin);
	/* A role that may read the table (as pg_read_all_data may) but is not
	 * its owner gets nothing from maintenance, and keywardctl refuses to
	 * run maintenance with it rather than count an empty table. */
	cr_assert_eq(kw_db_connect(conninfo, &maint), KW_OK);
	begin(maint, NULL, NULL);
	cr_assert_eq(visible_rows(maint), 0);
	kw_db_rollback(maint);
	cr_assert_eq(kw_vault_count_kek(maint, 0, 0, &n), KW_OK);
	cr_assert_eq(n, 0, "a reader that is not the owner counted %lld rows", n);
	cr_assert_eq(kw_vault_maintenance_check(maint), KW_ERR_CONFIG);
	cr_assert_eq(kw_vault_maintenance_check(app), KW_ERR_CONFIG);
	cr_assert_eq(kw_vault_maintenance_check(admin), KW_OK);
	kw_db_close(maint);
	(void)kwt_db_admin_sql(
	    &tdb, "REVOKE ALL ON encryption_vaults, secret_versions, signing_keys FROM " MAINT_ROLE);

	/* The table's owner without superuser's bypass: FORCEd RLS hides every
	 * row until it declares maintenance, which then shows all of them, to
	 * read and re-wrap only. The policy follows the owner of the day. */
	(void)kwt_db_admin_sql(&tdb,
	                       "DO $$ BEGIN "
	                       "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" OWNER_ROLE "') THEN "
	                       "CREATE ROLE " OWNER_ROLE " LOGIN NOSUPERUSER NOBYPASSRLS; END IF; "
	                       "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
	char *was =
	    kwt_db_admin_sql(&tdb, "SELECT tableowner FROM pg_tables WHERE tablename = 'encryption_vaults'");
	cr_assert_not_null(was);
	(void)kwt_db_admin_sql(&tdb, "ALTER TABLE encryption_vaults OWNER TO " OWNER_ROLE);
	/* KEK maintenance counts every table the KEK wraps. */
	(void)kwt_db_admin_sql(&tdb, "ALTER TABLE secret_versions OWNER TO " OWNER_ROLE);
	(void)kwt_db_admin_sql(&tdb, "ALTER TABLE signing_keys OWNER TO " OWNER_ROLE);
	snprintf(conninfo, sizeof(conninfo), "%s user=" OWNER_ROLE, tdb.admin);
	kw_db *owner = NULL;
	cr_assert_eq(kw_db_connect(conninfo, &owner), KW_OK);
	begin(owner, NULL, NULL);
	cr_assert_eq(visible_rows(owner), 0);
	kw_db_rollback(owner);
	cr_assert_eq(kw_vault_maintenance_check(owner), KW_OK);
	cr_assert_eq(kw_vault_count_kek(owner, 0, 0, &n), KW_OK);
	cr_assert_eq(n, 1);
	begin(owner, NULL, NULL);
	cr_assert_eq(exec_rows(owner, "SELECT set_config('app.kek_maintenance', 'on', true)"), 1);
	cr_assert_eq(exec_rows(owner, "UPDATE encryption_vaults SET kek_id = kek_id"), 1);
	cr_assert_eq(exec_rows(owner, "DELETE FROM encryption_vaults"), 0, "maintenance may not delete");
	cr_assert_eq(exec_rows(owner, plain_insert), -1, "maintenance may not insert");
	kw_db_rollback(owner);
	kw_db_close(owner);
	char sql[256];
	snprintf(sql, sizeof(sql), "ALTER TABLE encryption_vaults OWNER TO \"%s\"", was);
	(void)kwt_db_admin_sql(&tdb, sql);
	snprintf(sql, sizeof(sql), "ALTER TABLE secret_versions OWNER TO \"%s\"", was);
	(void)kwt_db_admin_sql(&tdb, sql);
	snprintf(sql, sizeof(sql), "ALTER TABLE signing_keys OWNER TO \"%s\"", was);
	(void)kwt_db_admin_sql(&tdb, sql);
	free(was);
	expect_row_intact(&row);
}

/* --- the audit policy for vault rows ------------------------------------- */

static kw_audit_event vault_event(const char *tenant, const char *user_scope)
{
	return (kw_audit_event){
	    .tenant_id = tenant,
	    .actor = "user:u1",
	    .action = "vault.key",
	    .target = "vault",
	    .status = "ok",
	    .request_id = "req-vault",
	    .user_id = user_scope,
	};
}

Test(vault, vault_audit_rows_name_the_scoped_user)
{
	kw_audit_chain *c = NULL;
	kw_err err;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:vault", &c), KW_OK);

	/* u1's event written under u2's scope. */
	kw_audit_event ev = vault_event(ta, "u2");
	err = kw_audit_write_one(c, sess, app, &ev);
	cr_assert_eq(err, KW_ERR_DB, "u1's vault row under u2: %s", kw_err_str(err));
	/* Under no user at all, or another tenant's scope. */
	ev = vault_event(ta, NULL);
	err = kw_audit_write_one(c, sess, app, &ev);
	cr_assert_eq(err, KW_ERR_DB, "u1's vault row with no user scope: %s", kw_err_str(err));
	ev = vault_event(NULL, "u1");
	err = kw_audit_write_one(c, sess, app, &ev);
	cr_assert_eq(err, KW_ERR_DB, "a tenantless vault row: %s", kw_err_str(err));
	/* In the caller's own transaction, too. */
	ev = vault_event(ta, "u2");
	begin(app, ta, "u2");
	err = kw_audit_append(c, sess, app, &ev);
	cr_assert_eq(err, KW_ERR_DB, "append under u2: %s", kw_err_str(err));
	kw_db_rollback(app);
	kw_audit_chain_rolled_back(c);
	begin(app, tb, "u1");
	err = kw_audit_append(c, sess, app, &ev);
	cr_assert_eq(err, KW_ERR_DB, "append of a tenant-a row under tenant b: %s", kw_err_str(err));
	kw_db_rollback(app);
	kw_audit_chain_rolled_back(c);
	expect_sql("0", "SELECT count(*) FROM audit_log");

	/* The actor's own scope is admitted, by both paths. */
	ev = vault_event(ta, "u1");
	err = kw_audit_write_one(c, sess, app, &ev);
	cr_assert_eq(err, KW_OK, "u1's vault row under u1: %s", kw_err_str(err));
	begin(app, ta, "u1");
	err = kw_audit_append(c, sess, app, &ev);
	cr_assert_eq(err, KW_OK, "append under u1: %s", kw_err_str(err));
	commit(app);
	kw_audit_chain_committed(c);

	/* Other actions are not the vault policy's business. */
	kw_audit_event login = {
	    .tenant_id = ta, .actor = "user:u1", .action = "auth.login", .status = "ok", .user_id = NULL};
	err = kw_audit_write_one(c, sess, app, &login);
	cr_assert_eq(err, KW_OK, "auth.login: %s", kw_err_str(err));
	login.user_id = "u2";
	err = kw_audit_write_one(c, sess, app, &login);
	cr_assert_eq(err, KW_OK, "auth.login under another user: %s", kw_err_str(err));

	expect_sql("2",
	           "SELECT count(*) FROM audit_log WHERE action = 'vault.key' AND actor = 'user:u1' "
	           "AND tenant_id = '%s'",
	           ta);
	expect_sql("2", "SELECT count(*) FROM audit_log WHERE action = 'auth.login'");
	/* The refused rows left no gap: the chain verifies. */
	unsigned long long rows = 0;
	err = kw_audit_verify(hsm, sess, admin, NULL, &rows, NULL, 0);
	cr_assert_eq(err, KW_OK, "verify: %s", kw_err_str(err));
	cr_assert_eq(rows, 4);
	kw_audit_chain_free(c);
}

/* --- KEK maintenance: re-wrap ------------------------------------------- */

/* The group-commit writer checks each vault row on its own: many users'
 * vault rows share batches (one INSERT each, migration 0007), and a row
 * whose actor is not its own user is refused (before it is queued) while
 * its batch-mates commit. */
typedef struct writer_arg {
	kw_audit_writer *w;
	int idx;
	int ok, refused, other;
} writer_arg;

static void *writer_client(void *p)
{
	writer_arg *a = p;
	for (int i = 0; i < 40; i++) {
		char user[16], actor[24];
		int u = (a->idx + i) % 8;
		snprintf(user, sizeof(user), "w%d", u);
		/* Every 10th row names another user as its actor. */
		snprintf(actor, sizeof(actor), "user:w%d", i % 10 == 9 ? (u + 1) % 8 : u);
		kw_audit_event ev = {.tenant_id = u < 4 ? ta : tb,
		                     .actor = actor,
		                     .action = "vault.key",
		                     .target = "encryption_vault",
		                     .status = "ok",
		                     .request_id = "req-writer",
		                     .user_id = user};
		if (i % 7 == 3) /* and some rows of no tenant and no user between them */
			ev = (kw_audit_event){.actor = "system", .action = "test.tick", .status = "ok"};
		kw_err err = kw_audit_writer_log(a->w, &ev);
		if (err == KW_OK)
			a->ok++;
		else if (err == KW_ERR_INVALID && i % 10 == 9 && i % 7 != 3)
			a->refused++;
		else
			a->other++;
	}
	return NULL;
}

Test(vault, writer_checks_each_vault_row_names_its_user)
{
	enum { THREADS = 8 };
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 64, &w), KW_OK);
	pthread_t th[THREADS];
	writer_arg a[THREADS];
	for (int i = 0; i < THREADS; i++) {
		a[i] = (writer_arg){.w = w, .idx = i};
		cr_assert_eq(pthread_create(&th[i], NULL, writer_client, &a[i]), 0);
	}
	int ok = 0, refused = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(a[i].other, 0, "client %d: %d unexpected outcomes", i, a[i].other);
		ok += a[i].ok;
		refused += a[i].refused;
	}
	unsigned long long rows = 0, commits = 0;
	kw_audit_writer_stats(w, &rows, &commits);
	kw_audit_writer_stop(w);
	cr_assert_eq(refused, THREADS * 4, "every mismatched row refused");
	cr_assert_eq(ok, THREADS * 36);
	cr_assert_lt(commits, (unsigned long long)ok, "no shared batches: %llu commits", commits);
	char n[16];
	snprintf(n, sizeof(n), "%d", ok);
	expect_sql(n,
	           "SELECT count(*) FROM audit_log WHERE request_id = 'req-writer' OR action = 'test.tick'");
	/* Each vault row is its own user's, in its own user's tenant. */
	expect_sql("0",
	           "SELECT count(*) FROM audit_log WHERE action = 'vault.key' AND NOT ("
	           "(actor IN ('user:w0', 'user:w1', 'user:w2', 'user:w3') AND tenant_id = '%s') OR "
	           "(actor IN ('user:w4', 'user:w5', 'user:w6', 'user:w7') AND tenant_id = '%s'))",
	           ta, tb);
	expect_sql("0",
	           "SELECT count(*) FROM audit_log WHERE action = 'test.tick' AND tenant_id IS NOT NULL");
	unsigned long long verified = 0;
	kw_err err = kw_audit_verify(hsm, sess, admin, NULL, &verified, NULL, 0);
	cr_assert_eq(err, KW_OK, "verify: %s", kw_err_str(err));
	cr_assert_eq(verified, (unsigned long long)ok);
}

Test(vault, rewrap_with_one_kek_has_nothing_to_do)
{
	unsigned char mk1[KW_MK_LEN], mk2[KW_MK_LEN], got[KW_MK_LEN];
	kw_vault_row r1, r2, back;
	kw_audit_chain *c = NULL;
	size_t done = 99, skipped = 99;
	long long n = -1;

	seed(ta, "u1", mk1, &r1);
	seed(tb, "u1", mk2, &r2);
	cr_assert_eq(r1.kek_id, active_kek());
	cr_assert_eq(kw_audit_chain_new(hsm, "test:rewrap", &c), KW_OK);

	cr_assert_eq(kw_vault_maintenance_check(admin), KW_OK);
	cr_assert_eq(kw_vault_rewrap_start(admin), KW_OK);
	kw_err err = kw_vault_rewrap_batch(hsm, sess, admin, c, 100, &done, &skipped);
	cr_assert_eq(err, KW_OK, "rewrap: %s", kw_err_str(err));
	cr_assert_eq(done, 0);
	cr_assert_eq(skipped, 0);
	cr_assert(!kw_db_in_tx(admin));
	/* Again: still nothing, and a bad batch size is refused. */
	done = 99;
	cr_assert_eq(kw_vault_rewrap_batch(hsm, sess, admin, c, 1, &done, &skipped), KW_OK);
	cr_assert_eq(done, 0);
	cr_assert_eq(kw_vault_rewrap_batch(hsm, sess, admin, c, 0, &done, &skipped), KW_ERR_INVALID);
	cr_assert_eq(kw_vault_rewrap_left(admin, r1.kek_id, &n), KW_OK);
	cr_assert_eq(n, 0);

	/* Nothing changed, no audit row was written for an empty batch. */
	cr_assert_eq(kw_vault_count_kek(admin, 0, r1.kek_id, &n), KW_OK);
	cr_assert_eq(n, 0);
	cr_assert_eq(kw_vault_count_kek(admin, r1.kek_id, 0, &n), KW_OK);
	cr_assert_eq(n, 2);
	expect_sql("0", "SELECT count(*) FROM audit_log WHERE action = 'kek.rewrap'");
	expect_sql("2", "SELECT count(*) FROM encryption_vaults WHERE rotated_at IS NULL");
	const kw_vault_row *rows[2] = {&r1, &r2};
	const unsigned char *mks[2] = {mk1, mk2};
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(kw_vault_fetch(app, rows[i]->tenant_id, "u1", &back), KW_OK);
		cr_assert_eq(memcmp(back.wrapped, rows[i]->wrapped, KW_VAULT_WRAPPED_LEN), 0,
		             "row %zu re-wrapped", i);
		cr_assert_eq(memcmp(back.iv, rows[i]->iv, KW_GCM_IV_LEN), 0);
		cr_assert_eq(back.kek_id, rows[i]->kek_id);
		cr_assert_eq(kw_vault_unwrap(hsm, sess, &back, got), KW_OK);
		cr_assert_eq(CRYPTO_memcmp(got, mks[i], KW_MK_LEN), 0);
	}
	kw_audit_chain_free(c);
	OPENSSL_cleanse(mk1, sizeof(mk1));
	OPENSSL_cleanse(mk2, sizeof(mk2));
	OPENSSL_cleanse(got, sizeof(got));
}

Test(vault, rewrap_sets_aside_a_row_it_cannot_unwrap)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row good, bad;
	kw_audit_chain *c = NULL;
	size_t done = 99, skipped = 99;
	long long n = -1;
	seed(ta, "good", mk, &good);
	seed(ta, "bad", mk, &bad);
	/* A row naming a KEK version the token never held. */
	expect_sql("UPDATE 1",
	           "WITH u AS (UPDATE encryption_vaults SET kek_id = %u WHERE user_id = 'bad' "
	           "RETURNING 1) SELECT 'UPDATE ' || count(*) FROM u",
	           active_kek() + 7);
	cr_assert_eq(kw_audit_chain_new(hsm, "test:rewrap", &c), KW_OK);
	cr_assert_eq(kw_vault_rewrap_start(admin), KW_OK);
	cr_assert_eq(kw_vault_rewrap_left(admin, active_kek(), &n), KW_OK);
	cr_assert_eq(n, 1);
	kw_err err = kw_vault_rewrap_batch(hsm, sess, admin, c, 10, &done, &skipped);
	cr_assert_eq(err, KW_OK, "rewrap: %s", kw_err_str(err));
	cr_assert_eq(done, 0);
	cr_assert_eq(skipped, 1);
	kw_audit_chain_committed(c);
	/* Set aside for the rest of the run: the next batch finds nothing. */
	cr_assert_eq(kw_vault_rewrap_batch(hsm, sess, admin, c, 10, &done, &skipped), KW_OK);
	cr_assert_eq(done + skipped, 0);
	cr_assert_eq(kw_vault_rewrap_left(admin, active_kek(), &n), KW_OK);
	cr_assert_eq(n, 0);
	expect_sql("1", "SELECT count(*) FROM audit_log WHERE action = 'kek.rewrap' AND status = 'partial' "
	                "AND context->>'skipped' = '1'");
	expect_sql("1", "SELECT count(*) FROM encryption_vaults WHERE user_id = 'bad' AND kek_id = %u",
	           active_kek() + 7);
	/* A new run starts with nothing set aside. */
	cr_assert_eq(kw_vault_rewrap_start(admin), KW_OK);
	cr_assert_eq(kw_vault_rewrap_left(admin, active_kek(), &n), KW_OK);
	cr_assert_eq(n, 1);
	kw_audit_chain_free(c);
	OPENSSL_cleanse(mk, sizeof(mk));
}

Test(vault, retire_refuses_a_kek_in_use_and_bars_it_afterwards)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row, forged;
	long long rows = -1;
	seed(ta, "u1", mk, &row);
	/* In use: refused, nothing marked. */
	cr_assert_eq(kw_vault_kek_retire(admin, row.kek_id, &rows), KW_ERR_EXISTS);
	cr_assert_eq(rows, 1);
	expect_sql("0", "SELECT count(*) FROM kek_retired");
	cr_assert(!kw_db_in_tx(admin));
	/* A version no row uses: marked, and marking again is harmless. */
	uint32_t gone = row.kek_id + 3;
	cr_assert_eq(kw_vault_kek_retire(admin, gone, &rows), KW_OK);
	cr_assert_eq(rows, 0);
	cr_assert_eq(kw_vault_kek_retire(admin, gone, &rows), KW_OK);
	expect_sql("1", "SELECT count(*) FROM kek_retired WHERE kek_id = %u", gone);
	/* No row may be written under it again: neither a new one nor an
	 * existing one moved to it (an instance that missed the rotation). */
	wrap_new(ta, "u2", mk, &forged);
	forged.kek_id = gone;
	begin(app, ta, "u2");
	cr_assert_eq(kw_vault_insert(app, &forged), KW_ERR_NOT_FOUND);
	kw_db_rollback(app);
	snprintf(forged.user_id, sizeof(forged.user_id), "u1");
	begin(app, ta, "u1");
	cr_assert_eq(kw_vault_replace(app, &forged), KW_ERR_NOT_FOUND);
	kw_db_rollback(app);
	expect_row_intact(&row);
	expect_sql("0", "SELECT count(*) FROM encryption_vaults WHERE kek_id = %u", gone);
	/* The service role cannot mark anything. */
	cr_assert_neq(kw_vault_kek_retire(app, gone + 1, &rows), KW_OK);
	expect_sql("1", "SELECT count(*) FROM kek_retired");
	OPENSSL_cleanse(mk, sizeof(mk));
}

typedef struct blocked_write {
	kw_vault_row row;
	kw_err err;
} blocked_write;

static void *write_under_lock(void *arg)
{
	blocked_write *w = arg;
	w->err = kw_db_begin(app, w->row.tenant_id, w->row.user_id);
	if (w->err == KW_OK)
		w->err = kw_vault_insert(app, &w->row);
	if (kw_db_in_tx(app))
		kw_db_rollback(app);
	return NULL;
}

/* The race retire closes: a write that reaches the table while retire holds
 * its lock waits, and once retire commits, sees the mark and is refused. */
Test(vault, a_write_waiting_on_retire_sees_the_retirement)
{
	unsigned char mk[KW_MK_LEN];
	blocked_write w = {.err = KW_ERR_INTERNAL};
	uint32_t gone = active_kek() + 11;
	wrap_new(ta, "late", mk, &w.row);
	w.row.kek_id = gone; /* an instance that still wraps with `gone` */
	begin(admin, NULL, NULL);
	cr_assert_eq(exec_rows(admin, "LOCK TABLE encryption_vaults IN SHARE ROW EXCLUSIVE MODE"), 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, write_under_lock, &w), 0);
	/* Until the insert is queued behind the lock. */
	bool waiting = false;
	for (int i = 0; i < 200 && !waiting; i++) {
		char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM pg_locks WHERE NOT granted AND "
		                                 "relation = 'encryption_vaults'::regclass");
		waiting = n != NULL && strcmp(n, "0") != 0;
		free(n);
		if (!waiting)
			usleep(20000);
	}
	cr_assert(waiting, "the insert never waited for the lock");
	char k[16];
	snprintf(k, sizeof(k), "%u", gone);
	const char *vals[1] = {k};
	cr_assert_eq(
	    kw_db_exec(admin, "INSERT INTO kek_retired (kek_id) VALUES ($1::int)", 1, vals, NULL, NULL, NULL),
	    KW_OK);
	commit(admin);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(w.err, KW_ERR_NOT_FOUND, "the waiting write got %s", kw_err_str(w.err));
	expect_sql("0", "SELECT count(*) FROM encryption_vaults WHERE user_id = 'late'");
	OPENSSL_cleanse(mk, sizeof(mk));
}

Test(vault, the_kek_guard_cannot_be_shadowed_or_outrun)
{
	unsigned char mk[KW_MK_LEN];
	kw_vault_row row, forged;
	long long rows = -1;
	seed(ta, "u1", mk, &row);
	uint32_t gone = row.kek_id + 5;
	cr_assert_eq(kw_vault_kek_retire(admin, gone, &rows), KW_OK);
	/* An empty temporary kek_retired in the service's own session does not
	 * hide the real one from the trigger. */
	cr_assert_eq(
	    kw_db_exec(app, "CREATE TEMPORARY TABLE kek_retired (kek_id int)", 0, NULL, NULL, NULL, NULL),
	    KW_OK);
	wrap_new(ta, "u2", mk, &forged);
	forged.kek_id = gone;
	begin(app, ta, "u2");
	cr_assert_eq(kw_vault_insert(app, &forged), KW_ERR_NOT_FOUND);
	kw_db_rollback(app);
	cr_assert_eq(kw_db_exec(app, "DROP TABLE pg_temp.kek_retired", 0, NULL, NULL, NULL, NULL), KW_OK);
	/* Outside READ COMMITTED the trigger's look-up could miss a retirement
	 * that committed after the snapshot: such writes are refused outright,
	 * even under a live KEK. */
	wrap_new(ta, "u2", mk, &forged);
	cr_assert_eq(kw_db_exec(app, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL, NULL, NULL, NULL),
	             KW_OK);
	const char *ids[2] = {ta, "u2"};
	cr_assert_eq(kw_db_exec(app,
	                        "SELECT set_config('app.tenant_id', $1, true), "
	                        "set_config('app.user_id', $2, true)",
	                        2, ids, NULL, NULL, NULL),
	             KW_OK);
	cr_assert_eq(kw_vault_insert(app, &forged), KW_ERR_DB);
	kw_db_rollback(app);
	expect_sql("0", "SELECT count(*) FROM encryption_vaults WHERE user_id = 'u2'");
	/* kw_db_begin is READ COMMITTED even where the database's default is
	 * not, so the service's own writes go through. */
	cr_assert_eq(
	    kw_db_exec(app, "SET default_transaction_isolation = 'serializable'", 0, NULL, NULL, NULL, NULL),
	    KW_OK);
	begin(app, ta, "u2");
	cr_assert_eq(kw_vault_insert(app, &forged), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_eq(kw_db_exec(app, "RESET default_transaction_isolation", 0, NULL, NULL, NULL, NULL),
	             KW_OK);
	expect_sql("1", "SELECT count(*) FROM encryption_vaults WHERE user_id = 'u2'");
	/* Nor can the service record a rotation, which would open retire's
	 * wait early: key_rotations is not its to write (or read). */
	cr_assert_neq(kw_db_exec(app,
	                         "INSERT INTO key_rotations (family, version, previous, rotated_at) "
	                         "VALUES ('kek', 2, 1, now() - interval '1 day')",
	                         0, NULL, NULL, NULL, NULL),
	              KW_OK);
	expect_sql("0", "SELECT count(*) FROM key_rotations");
	OPENSSL_cleanse(mk, sizeof(mk));
}
