/* test_audit.c — the MAC-chained audit log against real PostgreSQL and
 * SoftHSM: appends, rollbacks, tampering as the superuser, many chains,
 * and the group-commit writer. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/audit/audit.h"
#include "kwtest.h"

#define TENANT_A "6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41"
#define TENANT_B "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"

static kwt_db tdb;
static kw_hsm *hsm;
static kw_hsm_session *sess;
static kw_db *app;
static kw_db *admin;

static void setup(void)
{
	kwt_db_create(&tdb);
	hsm = kwt_hsm_open();
	cr_assert_eq(kw_hsm_session_open(hsm, &sess), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.admin, &admin), KW_OK);
}

static void teardown(void)
{
	kw_db_close(app);
	kw_db_close(admin);
	kwt_db_drop(&tdb);
	kw_hsm_session_close(sess);
	kw_hsm_close(hsm);
}

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 120);

static kw_audit_event event(const char *tenant, const char *action)
{
	return (kw_audit_event){
	    .tenant_id = tenant,
	    .actor = "api_key:3f2a",
	    .action = action,
	    .target = "vault:user-1",
	    .status = "ok",
	    .ip = "192.0.2.7",
	    .user_agent = "curl/8.0",
	    .request_id = "req-123",
	    .context = "{\"kek_id\": 1,  \"note\":\"exact text\"}",
	};
}

/* Runs verify as the superuser; returns its result and the report text. */
static kw_err verify(char **report, unsigned long long *rows)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_not_null(f);
	kw_err err = kw_audit_verify(hsm, sess, admin, f, rows, NULL, 0);
	fclose(f);
	*report = buf;
	return err;
}

static void expect_ok(unsigned long long want_rows, int want_chains)
{
	char *report = NULL, want[128];
	unsigned long long rows = 0;
	kw_err err = verify(&report, &rows);
	cr_assert_eq(err, KW_OK, "verify: %s: %s", kw_err_str(err), report);
	cr_assert_eq(rows, want_rows);
	snprintf(want, sizeof(want), "audit verify: %d chains, %llu rows: ok\n", want_chains, want_rows);
	cr_assert_str_eq(report, want);
	free(report);
}

/* verify must fail, and its report must name chain and seq and say why. */
static void expect_broken(const char *chain, const char *seq, const char *reason)
{
	char *report = NULL, want[256];
	unsigned long long rows = 12345;
	cr_assert_eq(verify(&report, &rows), KW_ERR_VERIFY, "verify passed: %s", report);
	cr_assert_eq(rows, 12345, "rows_checked set on failure");
	snprintf(want, sizeof(want), "audit chain %s broken at seq %s (row id ", chain, seq);
	cr_assert(strncmp(report, want, strlen(want)) == 0, "report: %s, want prefix: %s", report, want);
	cr_assert_not_null(strstr(report, reason), "report: %s, want reason: %s", report, reason);
	free(report);
}

/* Three committed rows on a new chain, in one transaction. */
static kw_audit_chain *three_rows(void)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:three", &c), KW_OK);
	cr_assert_eq(kw_db_begin(app, TENANT_A, NULL), KW_OK);
	kw_audit_event ev = event(TENANT_A, "secret.create");
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	ev = event(NULL, "auth.login");
	ev.target = NULL;
	ev.ip = NULL;
	ev.context = NULL;
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	ev = event(TENANT_A, "secret.update");
	ev.status = "denied";
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	kw_audit_chain_committed(c);
	return c;
}

__attribute__((format(printf, 1, 2))) static char *sqlf(const char *fmt, ...)
{
	char sql[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return kwt_db_admin_sql(&tdb, sql);
}

#define TAMPER "ALTER TABLE audit_log DISABLE TRIGGER USER; "

Test(audit, append_three_in_a_transaction)
{
	kw_audit_chain *c = three_rows();
	expect_ok(3, 1);
	char *v = sqlf(
	    "SELECT string_agg(seq::text || ':' || coalesce(tenant_id::text, '-') || ':' || context::text, "
	    "'|' ORDER BY seq) FROM audit_log WHERE chain_id = '%s'",
	    kw_audit_chain_id(c));
	cr_assert_str_eq(v, "1:" TENANT_A ":{\"kek_id\": 1,  \"note\":\"exact text\"}|2:-:{}|3:" TENANT_A
	                    ":{\"kek_id\": 1,  \"note\":\"exact text\"}");
	free(v);
	v = sqlf("SELECT last_seq || ':' || writer || ':' || (last_mac = (SELECT mac FROM audit_log WHERE "
	         "chain_id = c.chain_id AND seq = 3)) FROM audit_chains c WHERE chain_id = '%s'",
	         kw_audit_chain_id(c));
	cr_assert_str_eq(v, "3:test:three:true");
	free(v);
	v = sqlf("SELECT encode(prev_mac, 'hex') FROM audit_log WHERE chain_id = '%s' AND seq = 1",
	         kw_audit_chain_id(c));
	cr_assert_str_eq(v, "0000000000000000000000000000000000000000000000000000000000000000");
	free(v);
	kw_audit_chain_free(c);
}

Test(audit, empty_log_verifies)
{
	expect_ok(0, 0);
}

Test(audit, rollback_keeps_the_committed_head)
{
	kw_audit_chain *c = three_rows();
	kw_audit_event ev = event(TENANT_A, "secret.create");
	cr_assert_eq(kw_db_begin(app, TENANT_A, NULL), KW_OK);
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	kw_db_rollback(app);
	kw_audit_chain_rolled_back(c);
	char *v = sqlf("SELECT last_seq FROM audit_chains WHERE chain_id = '%s'", kw_audit_chain_id(c));
	cr_assert_str_eq(v, "3");
	free(v);
	expect_ok(3, 1);

	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	v = sqlf("SELECT max(seq) FROM audit_log WHERE chain_id = '%s'", kw_audit_chain_id(c));
	cr_assert_str_eq(v, "4");
	free(v);
	expect_ok(4, 1);
	kw_audit_chain_free(c);
}

Test(audit, rollback_of_a_new_chain)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:new", &c), KW_OK);
	kw_audit_event ev = event(NULL, "auth.login");
	cr_assert_eq(kw_db_begin(app, NULL, NULL), KW_OK);
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	kw_db_rollback(app);
	kw_audit_chain_rolled_back(c);
	/* The head row went with the rollback: the next append inserts it. */
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	expect_ok(2, 1);
	kw_audit_chain_free(c);
}

Test(audit, failed_append_leaves_the_head)
{
	kw_audit_chain *c = three_rows();
	/* A row of another tenant than the transaction's is refused by RLS. */
	kw_audit_event ev = event(TENANT_B, "secret.create");
	cr_assert_eq(kw_db_begin(app, TENANT_A, NULL), KW_OK);
	cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_ERR_DB);
	kw_db_rollback(app);
	kw_audit_chain_rolled_back(c);
	/* Not JSON: the json type refuses it. */
	ev = event(NULL, "x");
	ev.context = "{not json";
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_DB);
	ev = event(TENANT_B, "secret.create");
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	expect_ok(4, 1);
	kw_audit_chain_free(c);
}

Test(audit, invalid_events)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:invalid", &c), KW_OK);
	unsigned long long before = kw_db_statements();
	kw_audit_event ev = event(NULL, "a");
	ev.actor = NULL;
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_INVALID);
	ev = event(NULL, NULL);
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_INVALID);
	ev = event(NULL, "a");
	ev.status = NULL;
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_INVALID);
	ev = event("not-a-uuid", "a");
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_INVALID);
	ev = event(NULL, "a");
	ev.context = "";
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before);
	cr_assert_eq(kw_audit_chain_new(hsm, "", &c), KW_ERR_INVALID);
	kw_audit_chain_free(c);
}

Test(audit, long_fields_are_capped_by_characters)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:caps", &c), KW_OK);
	char ua[1000], target[2000];
	/* "é" is 2 bytes: 256 characters are "x" and 255 of them. */
	ua[0] = 'x';
	size_t n = 1;
	while (n + 2 < sizeof(ua)) {
		ua[n++] = (char)0xC3;
		ua[n++] = (char)0xA9;
	}
	ua[n] = '\0';
	memset(target, 't', sizeof(target) - 1);
	target[sizeof(target) - 1] = '\0';
	kw_audit_event ev = event(TENANT_A, "a");
	ev.user_agent = ua;
	ev.target = target;
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	char *v = sqlf("SELECT char_length(user_agent) || ':' || octet_length(user_agent) || ':' || "
	               "char_length(target) FROM audit_log WHERE chain_id = '%s'",
	               kw_audit_chain_id(c));
	cr_assert_str_eq(v, "256:511:512");
	free(v);
	expect_ok(1, 1);
	kw_audit_chain_free(c);
}

Test(audit, uppercase_tenant_is_normalised)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:upper", &c), KW_OK);
	kw_audit_event ev = event("6F1C2A9E-3B7D-4C1E-9A2F-0D5E8B7C6A41", "a");
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	expect_ok(1, 1);
	kw_audit_chain_free(c);
}

Test(audit, tamper_edited_field)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "UPDATE audit_log SET actor = 'mallory' WHERE chain_id = '%s' AND seq = 2", id));
	expect_broken(id, "2", "mac does not verify");
	kw_audit_chain_free(c);
}

Test(audit, tamper_edited_context_whitespace)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "UPDATE audit_log SET context = '{\"kek_id\": 1, \"note\":\"exact text\"}' "
	                 "WHERE chain_id = '%s' AND seq = 3",
	          id));
	expect_broken(id, "3", "mac does not verify");
	kw_audit_chain_free(c);
}

Test(audit, tamper_edited_timestamp)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER
	          "UPDATE audit_log SET at = at - interval '1 microsecond' WHERE chain_id = '%s' AND seq = 1",
	          id));
	expect_broken(id, "1", "mac does not verify");
	kw_audit_chain_free(c);
}

Test(audit, tamper_deleted_middle_row)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "DELETE FROM audit_log WHERE chain_id = '%s' AND seq = 2", id));
	expect_broken(id, "2", "row missing");
	kw_audit_chain_free(c);
}

Test(audit, tamper_deleted_last_row)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "DELETE FROM audit_log WHERE chain_id = '%s' AND seq = 3", id));
	expect_broken(id, "3", "rows deleted at the tail");
	kw_audit_chain_free(c);
}

Test(audit, tamper_deleted_last_row_and_rewound_head)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "DELETE FROM audit_log WHERE chain_id = '%1$s' AND seq = 3; "
	                 "UPDATE audit_chains SET last_seq = 2, last_mac = (SELECT mac FROM audit_log "
	                 "WHERE chain_id = '%1$s' AND seq = 2) WHERE chain_id = '%1$s'",
	          id));
	expect_broken(id, "2", "chain head mac does not verify");
	kw_audit_chain_free(c);
}

Test(audit, tamper_deleted_whole_first_row)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "DELETE FROM audit_log WHERE chain_id = '%s' AND seq = 1", id));
	expect_broken(id, "1", "row missing");
	kw_audit_chain_free(c);
}

Test(audit, tamper_forged_row_at_the_end)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(
	    "INSERT INTO audit_log (chain_id, seq, at, actor, action, status, key_version, prev_mac, mac) "
	    "SELECT chain_id, 4, now(), 'mallory', 'secret.read', 'ok', key_version, mac, "
	    "sha256(mac) FROM audit_log WHERE chain_id = '%s' AND seq = 3",
	    id));
	expect_broken(id, "4", "beyond the chain head");
	kw_audit_chain_free(c);
}

Test(audit, tamper_forged_row_and_head)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(
	    "INSERT INTO audit_log (chain_id, seq, at, actor, action, status, key_version, prev_mac, mac) "
	    "SELECT chain_id, 4, now(), 'mallory', 'secret.read', 'ok', key_version, mac, "
	    "sha256(mac) FROM audit_log WHERE chain_id = '%1$s' AND seq = 3; "
	    "UPDATE audit_chains SET last_seq = 4, last_mac = (SELECT mac FROM audit_log "
	    "WHERE chain_id = '%1$s' AND seq = 4) WHERE chain_id = '%1$s'",
	    id));
	expect_broken(id, "4", "mac does not verify");
	kw_audit_chain_free(c);
}

Test(audit, tamper_forged_chain)
{
	kw_audit_chain *c = three_rows();
	free(kwt_db_admin_sql(&tdb,
	                      "INSERT INTO audit_log (chain_id, seq, at, actor, action, status, key_version, "
	                      "prev_mac, mac) VALUES ('11111111-2222-4333-8444-555555555555', 1, now(), "
	                      "'mallory', 'x', 'ok', 1, '\\x00', '\\x00')"));
	expect_broken("11111111-2222-4333-8444-555555555555", "1", "no head in audit_chains");
	kw_audit_chain_free(c);
}

Test(audit, tamper_key_version)
{
	kw_audit_chain *c = three_rows();
	const char *id = kw_audit_chain_id(c);
	free(sqlf(TAMPER "UPDATE audit_log SET key_version = 999 WHERE chain_id = '%s' AND seq = 2", id));
	expect_broken(id, "2", "audit key version 999 is not in the token");
	kw_audit_chain_free(c);
}

Test(audit, verify_needs_a_reader_role)
{
	kw_audit_chain *c = three_rows();
	unsigned long long rows = 0;
	/* The service role cannot read audit_log at all. */
	cr_assert_eq(kw_audit_verify(hsm, sess, app, NULL, &rows, NULL, 0), KW_ERR_DB);
	cr_assert_not(kw_db_in_tx(app));
	kw_audit_chain_free(c);
}

Test(audit, verify_pages_through_long_chains)
{
	enum { ROWS = 2100, CHAINS = 1001 };
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:long", &c), KW_OK);
	kw_audit_event ev = event(NULL, "secret.read");
	cr_assert_eq(kw_db_begin(app, NULL, NULL), KW_OK);
	for (int i = 0; i < ROWS; i++)
		cr_assert_eq(kw_audit_append(c, sess, app, &ev), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	kw_audit_chain_committed(c);

	/* More chains than one page of heads. */
	kw_audit_chain **many = calloc(CHAINS, sizeof(*many));
	cr_assert_not_null(many);
	cr_assert_eq(kw_db_begin(app, NULL, NULL), KW_OK);
	for (int i = 0; i < CHAINS - 1; i++) {
		cr_assert_eq(kw_audit_chain_new(hsm, "test:many", &many[i]), KW_OK);
		cr_assert_eq(kw_audit_append(many[i], sess, app, &ev), KW_OK);
	}
	cr_assert_eq(kw_db_commit(app), KW_OK);
	for (int i = 0; i < CHAINS - 1; i++) {
		kw_audit_chain_committed(many[i]);
		kw_audit_chain_free(many[i]);
	}
	free(many);
	expect_ok(ROWS + CHAINS - 1, CHAINS);

	free(sqlf(TAMPER "UPDATE audit_log SET status = 'denied' WHERE chain_id = '%s' AND seq = 1500",
	          kw_audit_chain_id(c)));
	expect_broken(kw_audit_chain_id(c), "1500", "mac does not verify");
	kw_audit_chain_free(c);
}

/* ---- many chains ---- */

struct chain_arg {
	const char *conninfo;
	int n;
	int idx;
	kw_err err;
};

static void *chain_worker(void *p)
{
	struct chain_arg *a = p;
	kw_hsm_session *s = NULL;
	kw_db *d = NULL;
	kw_audit_chain *c = NULL;
	char name[64];
	snprintf(name, sizeof(name), "test:worker-%d", a->idx);
	a->err = kw_hsm_session_open(hsm, &s);
	if (a->err == KW_OK)
		a->err = kw_db_connect(a->conninfo, &d);
	if (a->err == KW_OK)
		a->err = kw_audit_chain_new(hsm, name, &c);
	for (int i = 0; i < a->n && a->err == KW_OK; i++) {
		kw_audit_event ev = event(i % 3 == 0   ? NULL
		                          : i % 3 == 1 ? TENANT_A
		                                       : TENANT_B,
		                          "secret.read");
		a->err = kw_audit_write_one(c, s, d, &ev);
	}
	kw_audit_chain_free(c);
	kw_db_close(d);
	if (s != NULL)
		kw_hsm_session_close(s);
	return NULL;
}

Test(audit, several_chains_in_parallel)
{
	enum { THREADS = 4, PER = 100 };
	pthread_t th[THREADS];
	struct chain_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct chain_arg){.conninfo = tdb.app, .n = PER, .idx = i};
		cr_assert_eq(pthread_create(&th[i], NULL, chain_worker, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].err, KW_OK, "worker %d: %s", i, kw_err_str(args[i].err));
	}
	expect_ok(THREADS * PER, THREADS);
	char *v = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM audit_chains WHERE last_seq = 100");
	cr_assert_str_eq(v, "4");
	free(v);
}

/* ---- group-commit writer ---- */

struct log_arg {
	kw_audit_writer *w;
	int n;
	int idx;
	bool mixed; /* every row its own user's, vault rows among them */
	int failures;
	kw_err last_err;
};

static void *log_worker(void *p)
{
	struct log_arg *a = p;
	char rid[32], user[32], actor[40];
	for (int i = 0; i < a->n; i++) {
		snprintf(rid, sizeof(rid), "req-%d-%d", a->idx, i);
		kw_audit_event ev = event((a->idx + i) % 3 == 0   ? NULL
		                          : (a->idx + i) % 3 == 1 ? TENANT_A
		                                                  : TENANT_B,
		                          "secret.read");
		if (a->mixed) {
			snprintf(user, sizeof(user), "user-%d-%d", a->idx, i);
			snprintf(actor, sizeof(actor), "user:%s", user);
			ev = event(i % 2 ? TENANT_A : TENANT_B, i % 3 ? "vault.key" : "auth.login");
			ev.actor = actor;
			ev.user_id = user;
		}
		ev.request_id = rid;
		kw_err err = kw_audit_writer_log(a->w, &ev);
		if (err != KW_OK) {
			a->failures++;
			a->last_err = err;
		}
	}
	return NULL;
}

Test(audit, group_commit_writer)
{
	enum { THREADS = 16, PER = 50 };
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 64, &w), KW_OK);
	pthread_t th[THREADS];
	struct log_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct log_arg){.w = w, .n = PER, .idx = i};
		cr_assert_eq(pthread_create(&th[i], NULL, log_worker, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].failures, 0, "thread %d: %d failures, last %s", i, args[i].failures,
		             kw_err_str(args[i].last_err));
	}
	unsigned long long rows = 0, commits = 0;
	kw_audit_writer_stats(w, &rows, &commits);
	cr_assert_eq(rows, THREADS * PER);
	cr_assert_lt(commits, THREADS * PER, "no batching: %llu commits", commits);
	cr_log_info("group commit: %llu rows in %llu commits", rows, commits);
	kw_audit_writer_stop(w);
	expect_ok(THREADS * PER, 1);
	char *v = kwt_db_admin_sql(&tdb, "SELECT count(DISTINCT request_id) FROM audit_log");
	cr_assert_str_eq(v, "800");
	free(v);
}

/* Many tenants' and users' rows, vault rows of different users among them,
 * land with one INSERT per group commit, and the chain verifies. */
Test(audit, writer_inserts_a_batch_of_many_tenants_and_users_with_one_statement)
{
	enum { THREADS = 16, PER = 40 };
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 64, &w), KW_OK);
	unsigned long long stmts0 = kw_db_statements();
	pthread_t th[THREADS];
	struct log_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct log_arg){.w = w, .n = PER, .idx = i, .mixed = true};
		cr_assert_eq(pthread_create(&th[i], NULL, log_worker, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].failures, 0, "thread %d: %s", i, kw_err_str(args[i].last_err));
	}
	unsigned long long rows = 0, commits = 0, stmts = kw_db_statements() - stmts0;
	kw_audit_writer_stats(w, &rows, &commits);
	kw_audit_writer_stop(w);
	cr_assert_eq(rows, THREADS * PER);
	cr_assert_lt(commits * 4, rows, "little batching: %llu rows in %llu commits", rows, commits);
	/* Per commit: BEGIN, the writer's mark, one INSERT, the head, COMMIT. */
	cr_assert_eq(stmts, 5 * commits, "%llu statements for %llu commits of %llu rows", stmts, commits,
	             rows);
	cr_log_info("%llu rows in %llu commits, %llu statements", rows, commits, stmts);
	expect_ok(THREADS * PER, 1);
	char *v = kwt_db_admin_sql(
	    &tdb, "SELECT count(DISTINCT tenant_id) || ':' || count(DISTINCT actor) || ':' || "
	          "count(*) FILTER (WHERE action = 'vault.key') FROM audit_log");
	cr_assert_str_eq(v, "2:640:416");
	free(v);
}

/* Outside the writer's transactions the insert policies still hold: a
 * vault row in another user's scope is refused. */
Test(audit, vault_rows_outside_the_writer_keep_their_owner_check)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:owner", &c), KW_OK);
	kw_audit_event ev = event(TENANT_A, "vault.key");
	ev.actor = "user:mallory";
	ev.user_id = "alice";
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_ERR_DB);
	ev.actor = "user:alice";
	cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	kw_audit_chain_free(c);
}

Test(audit, verify_while_the_writer_appends)
{
	enum { THREADS = 4, PER = 100 };
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 32, &w), KW_OK);
	pthread_t th[THREADS];
	struct log_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct log_arg){.w = w, .n = PER, .idx = i};
		cr_assert_eq(pthread_create(&th[i], NULL, log_worker, &args[i]), 0);
	}
	/* A consistent snapshot: never a false alarm mid-append. */
	int runs = 0;
	for (;;) {
		unsigned long long rows = 0, done = 0;
		char *report = NULL;
		kw_err err = verify(&report, &rows);
		cr_assert_eq(err, KW_OK, "verify during appends: %s", report);
		free(report);
		runs++;
		kw_audit_writer_stats(w, &done, NULL);
		if (done == THREADS * PER)
			break;
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].failures, 0);
	}
	kw_audit_writer_stop(w);
	cr_log_info("%d verify runs during appends", runs);
	expect_ok(THREADS * PER, 1);
}

struct bad_arg {
	kw_audit_writer *w;
	kw_err err;
};

static void *bad_worker(void *p)
{
	struct bad_arg *a = p;
	kw_audit_event ev = event(NULL, "bad");
	ev.context = "{not json";
	a->err = kw_audit_writer_log(a->w, &ev);
	return NULL;
}

Test(audit, writer_isolates_a_bad_row)
{
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 64, &w), KW_OK);
	pthread_t th[9];
	struct log_arg args[8];
	struct bad_arg bad = {.w = w};
	for (int i = 0; i < 8; i++) {
		args[i] = (struct log_arg){.w = w, .n = 20, .idx = i};
		cr_assert_eq(pthread_create(&th[i], NULL, log_worker, &args[i]), 0);
	}
	cr_assert_eq(pthread_create(&th[8], NULL, bad_worker, &bad), 0);
	for (int i = 0; i < 9; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(args[i].failures, 0, "thread %d: %s", i, kw_err_str(args[i].last_err));
	cr_assert_eq(bad.err, KW_ERR_DB);
	kw_audit_event ev = event(NULL, "a");
	ev.actor = NULL;
	cr_assert_eq(kw_audit_writer_log(w, &ev), KW_ERR_INVALID);
	kw_audit_writer_stop(w);
	expect_ok(160, 1);
}

Test(audit, writer_survives_a_killed_connection)
{
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 16, &w), KW_OK);
	kw_audit_event ev = event(TENANT_A, "secret.read");
	int ok = 0;
	for (int i = 0; i < 5; i++)
		ok += kw_audit_writer_log(w, &ev) == KW_OK;
	cr_assert_eq(ok, 5);
	for (int round = 0; round < 3; round++) {
		char sql[256];
		snprintf(
		    sql, sizeof(sql),
		    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'kw_svc' "
		    "AND datname = current_database() AND pid <> %d",
		    PQbackendPID(kw_db_conn(app)));
		char *n = kwt_db_admin_sql(&tdb, sql);
		cr_assert_str_eq(n, "1");
		free(n);
		/* The first call after the kill may fail cleanly or reconnect. */
		kw_err first = kw_audit_writer_log(w, &ev);
		cr_assert(first == KW_OK || first == KW_ERR_DB_UNAVAILABLE, "first: %s", kw_err_str(first));
		ok += first == KW_OK;
		for (int i = 0; i < 5; i++) {
			kw_err err = kw_audit_writer_log(w, &ev);
			cr_assert_eq(err, KW_OK, "after reconnect: %s", kw_err_str(err));
			ok++;
		}
	}
	kw_audit_writer_stop(w);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM audit_log");
	cr_assert_eq((int)strtol(n, NULL, 10), ok);
	free(n);
	expect_ok((unsigned long long)ok, 1);
}

Test(audit, writer_stop_with_nothing_queued)
{
	kw_audit_writer *w = NULL;
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 8, &w), KW_OK);
	unsigned long long rows = 1, commits = 1;
	kw_audit_writer_stats(w, &rows, &commits);
	cr_assert_eq(rows, 0);
	cr_assert_eq(commits, 0);
	kw_audit_writer_stop(w);
	cr_assert_eq(kw_audit_writer_start(hsm, tdb.app, 0, &w), KW_ERR_INVALID);
	cr_assert_eq(kw_audit_writer_start(hsm, "host=/nonexistent port=1 connect_timeout=2", 8, &w),
	             KW_ERR_DB_UNAVAILABLE);
}

/* ---- checkpoints ---- */

/* The checkpoints of every chain the database holds now. */
static size_t current_checkpoints(kw_audit_checkpoint *out, size_t cap)
{
	char *buf = NULL;
	size_t len = 0, n = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_eq(kw_audit_checkpoints_current(hsm, sess, admin, f), KW_OK);
	fclose(f);
	for (char *line = strtok(buf, "\n"); line != NULL && n < cap; line = strtok(NULL, "\n"))
		cr_assert_eq(kw_audit_checkpoint_parse(line, &out[n++]), KW_OK, "%s", line);
	free(buf);
	return n;
}

static kw_err verify_with(const kw_audit_checkpoint *cps, size_t n, char **report)
{
	char *buf = NULL;
	size_t len = 0;
	unsigned long long rows = 0;
	FILE *f = open_memstream(&buf, &len);
	kw_err err = kw_audit_verify(hsm, sess, admin, f, &rows, cps, n);
	fclose(f);
	*report = buf;
	return err;
}

static void write_rows(kw_audit_chain *c, int n)
{
	for (int i = 0; i < n; i++) {
		kw_audit_event ev = event(TENANT_A, "secret.read");
		cr_assert_eq(kw_audit_write_one(c, sess, app, &ev), KW_OK);
	}
}

/* The attack a head alone cannot catch: delete the newest rows and put
 * back the head as it was before them (an old copy of its row). */
Test(audit, tail_cut_back_to_an_old_head_is_caught_by_a_checkpoint)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:tail", &c), KW_OK);
	const char *id = kw_audit_chain_id(c);
	write_rows(c, 3);
	free(sqlf("CREATE TABLE old_head AS SELECT * FROM audit_chains WHERE chain_id = '%s'", id));
	write_rows(c, 2);
	kw_audit_checkpoint cps[8];
	size_t n = current_checkpoints(cps, 8);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(cps[0].chain_id, id);
	cr_assert_eq(cps[0].seq, 5);
	free(sqlf(TAMPER "DELETE FROM audit_log WHERE chain_id = '%1$s' AND seq > 3; "
	                 "DELETE FROM audit_chains WHERE chain_id = '%1$s'; "
	                 "INSERT INTO audit_chains SELECT * FROM old_head",
	          id));
	/* Without the checkpoint the database looks whole... */
	expect_ok(3, 1);
	/* ...with it, it is 2 rows behind. */
	char *report = NULL;
	cr_assert_eq(verify_with(cps, n, &report), KW_ERR_VERIFY, "%s", report);
	cr_assert_not_null(strstr(report, "a checkpoint saw seq 5 (rows deleted at the tail)"), "%s", report);
	free(report);
	kw_audit_chain_free(c);
}

Test(audit, checkpoints_of_a_whole_database_pass_and_a_deleted_chain_is_caught)
{
	kw_audit_chain *c1 = NULL, *c2 = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:one", &c1), KW_OK);
	cr_assert_eq(kw_audit_chain_new(hsm, "test:two", &c2), KW_OK);
	write_rows(c1, 2);
	write_rows(c2, 1);
	kw_audit_checkpoint cps[8];
	size_t n = current_checkpoints(cps, 4);
	cr_assert_eq(n, 2);
	/* More rows since: older checkpoints still hold. */
	write_rows(c1, 2);
	size_t m = current_checkpoints(cps + n, 4);
	char *report = NULL;
	cr_assert_eq(verify_with(cps, n + m, &report), KW_OK, "%s", report);
	free(report);
	free(sqlf(TAMPER
	          "DELETE FROM audit_log WHERE chain_id = '%1$s'; DELETE FROM audit_chains WHERE chain_id = "
	          "'%1$s'",
	          kw_audit_chain_id(c2)));
	expect_ok(4, 1);
	cr_assert_eq(verify_with(cps, n + m, &report), KW_ERR_VERIFY, "%s", report);
	cr_assert_not_null(strstr(report, "the chain is gone"), "%s", report);
	free(report);
	kw_audit_chain_free(c1);
	kw_audit_chain_free(c2);
}

Test(audit, a_checkpoint_that_is_not_keywards_is_refused)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:forged", &c), KW_OK);
	write_rows(c, 2);
	kw_audit_checkpoint cp;
	cr_assert_eq(current_checkpoints(&cp, 1), 1);
	cp.seq = 7; /* a made-up progress, with the old MAC */
	char *report = NULL;
	cr_assert_eq(verify_with(&cp, 1, &report), KW_ERR_INVALID, "%s", report);
	cr_assert_not_null(strstr(report, "is not keyward's"), "%s", report);
	free(report);
	kw_audit_chain_free(c);
}

Test(audit, checkpoint_lines_parse_strictly)
{
	kw_audit_checkpoint cp = {.seq = 42, .key_version = 3};
	snprintf(cp.chain_id, sizeof(cp.chain_id), "%s", "6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41");
	memset(cp.mac, 0xab, sizeof(cp.mac));
	memset(cp.head_mac, 0x01, sizeof(cp.head_mac));
	char line[300], logline[400];
	kw_audit_checkpoint_format(&cp, line, sizeof(line));
	snprintf(logline, sizeof(logline), "2026-12-06T04:00:00.000Z NOTICE %s\n", line);
	kw_audit_checkpoint back;
	cr_assert_eq(kw_audit_checkpoint_parse(logline, &back), KW_OK);
	cr_assert_eq(memcmp(&back, &cp, sizeof(cp)), 0);
	cr_assert_eq(kw_audit_checkpoint_parse("INFO something else", &back), KW_ERR_NOT_FOUND);
	/* Each mutation of a good line, one at a time. */
	char mac[65];
	memset(mac, 'a', 64);
	mac[64] = '\0';
	const struct {
		const char *chain, *seq, *key, *mac_suffix, *order;
	} bad[] = {
	    {"6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41", "-1", "1", "", ""},
	    {"6F1C2A9E-3B7D-4C1E-9A2F-0D5E8B7C6A41", "1", "1", "", ""},
	    {"6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41", "01", "1", "", ""},
	    {"6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41", "1", "0", "", ""},
	    {"6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41", "1", "1", "A", ""},
	    {"6f1c2a9e-3b7d-4c1e-9a2f-0d5e8b7c6a41", "1", "1", "", "swapped"},
	    {"not-a-uuid", "1", "1", "", ""},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[400];
		if (bad[i].order[0] != '\0')
			snprintf(text, sizeof(text),
			         "audit checkpoint v1 chain=%s seq=%s mac=%s key=%s head_mac=%s",
			         bad[i].chain, bad[i].seq, mac, bad[i].key, mac);
		else
			snprintf(text, sizeof(text),
			         "audit checkpoint v1 chain=%s seq=%s key=%s mac=%s%s head_mac=%s",
			         bad[i].chain, bad[i].seq, bad[i].key, mac, bad[i].mac_suffix, mac);
		cr_assert_eq(kw_audit_checkpoint_parse(text, &back), KW_ERR_INVALID, "%s", text);
	}
}

/* After a new audit key, new rows are MAC'd under it on a new chain, and
 * the rows of the old key still verify. */
Test(audit, a_new_audit_key_starts_a_new_chain_and_old_rows_still_verify)
{
	kw_audit_chain *c = NULL;
	cr_assert_eq(kw_audit_chain_new(hsm, "test:rotate", &c), KW_OK);
	write_rows(c, 2);
	char first[40];
	snprintf(first, sizeof(first), "%s", kw_audit_chain_id(c));
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_AUDIT, &k), KW_OK);
	uint32_t next = kw_hsm_key_version(k) + 1;
	cr_assert_eq(kw_hsm_key_generate(sess, KW_KEY_AUDIT, next), KW_OK);
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	write_rows(c, 2);
	cr_assert_str_neq(kw_audit_chain_id(c), first, "the chain went on under the new key");
	char *v =
	    sqlf("SELECT string_agg(DISTINCT key_version::text, ',') FROM audit_log WHERE chain_id = '%s'",
	         kw_audit_chain_id(c));
	char want[16];
	snprintf(want, sizeof(want), "%u", (unsigned)next);
	cr_assert_str_eq(v, want);
	free(v);
	expect_ok(4, 2);
	kw_audit_chain_free(c);
}
