/* test_db.c — connections, RLS transactions, error mapping, privileges. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/db/db.h"
#include "kwtest.h"

static kwt_db tdb;
static kw_db *app;
static kw_db *admin;
static char tenant_a[40], tenant_b[40];

static void setup(void)
{
	kwt_db_create(&tdb);
	char *a = kwt_db_admin_sql(&tdb, "INSERT INTO tenants (name) VALUES ('alpha') RETURNING id");
	char *b = kwt_db_admin_sql(&tdb, "INSERT INTO tenants (name) VALUES ('beta') RETURNING id");
	snprintf(tenant_a, sizeof(tenant_a), "%s", a);
	snprintf(tenant_b, sizeof(tenant_b), "%s", b);
	free(a);
	free(b);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.admin, &admin), KW_OK);
}

static void teardown(void)
{
	kw_db_close(app);
	kw_db_close(admin);
	kwt_db_drop(&tdb);
}

TestSuite(db, .init = setup, .fini = teardown);

/* Rows of `SELECT name FROM tenants ORDER BY name`, joined with ','. */
static void tenant_names(kw_db *d, char *buf, size_t cap)
{
	PGresult *res = NULL;
	buf[0] = '\0';
	cr_assert_eq(kw_db_exec(d, "SELECT name FROM tenants ORDER BY name", 0, NULL, NULL, NULL, &res),
	             KW_OK);
	for (int i = 0; i < PQntuples(res); i++) {
		if (i > 0)
			strncat(buf, ",", cap - strlen(buf) - 1);
		strncat(buf, PQgetvalue(res, i, 0), cap - strlen(buf) - 1);
	}
	PQclear(res);
}

Test(db, connect_failure_is_unavailable)
{
	kw_db *d = NULL;
	cr_assert_eq(kw_db_connect("host=/nonexistent port=1 dbname=x connect_timeout=2", &d),
	             KW_ERR_DB_UNAVAILABLE);
	cr_assert_null(d);
}

Test(db, ping)
{
	cr_assert_eq(kw_db_ping(app), KW_OK);
	cr_assert_not(kw_db_in_tx(app));
}

Test(db, empty_tenant_refused_before_any_sql)
{
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_db_begin(app, "", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, NULL, ""), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, tenant_a, ""), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before);
	cr_assert_not(kw_db_in_tx(app));
}

Test(db, non_uuid_tenant_refused)
{
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_db_begin(app, "not-a-uuid", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "' OR true --", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "00000000-0000-0000-0000-00000000000g", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_begin(app, "00000000000000000000000000000000000", NULL), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before);
}

Test(db, begin_sets_ids_for_the_transaction_only)
{
	PGresult *res = NULL;
	cr_assert_eq(kw_db_begin(app, tenant_a, "user-7"), KW_OK);
	cr_assert(kw_db_in_tx(app));
	cr_assert_eq(
	    kw_db_exec(app,
	               "SELECT current_setting('app.tenant_id', true), current_setting('app.user_id', true)",
	               0, NULL, NULL, NULL, &res),
	    KW_OK);
	cr_assert_str_eq(PQgetvalue(res, 0, 0), tenant_a);
	cr_assert_str_eq(PQgetvalue(res, 0, 1), "user-7");
	PQclear(res);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_not(kw_db_in_tx(app));
	cr_assert_eq(kw_db_exec(app, "SELECT coalesce(current_setting('app.tenant_id', true), '')", 0, NULL,
	                        NULL, NULL, &res),
	             KW_OK);
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "");
	PQclear(res);
}

Test(db, tenants_rls_for_the_app_role)
{
	char names[256];
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	tenant_names(app, names, sizeof(names));
	cr_assert_str_eq(names, "alpha");
	kw_db_rollback(app);

	cr_assert_eq(kw_db_begin(app, tenant_b, NULL), KW_OK);
	tenant_names(app, names, sizeof(names));
	cr_assert_str_eq(names, "beta");
	kw_db_rollback(app);

	/* No tenant: nothing, in a transaction or outside one. */
	cr_assert_eq(kw_db_begin(app, NULL, NULL), KW_OK);
	tenant_names(app, names, sizeof(names));
	cr_assert_str_eq(names, "");
	kw_db_rollback(app);
	tenant_names(app, names, sizeof(names));
	cr_assert_str_eq(names, "");

	/* An uppercase spelling of the same id is the same tenant. */
	char upper[40];
	snprintf(upper, sizeof(upper), "%s", tenant_a);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	cr_assert_eq(kw_db_begin(app, upper, NULL), KW_OK);
	tenant_names(app, names, sizeof(names));
	cr_assert_str_eq(names, "alpha");
	kw_db_rollback(app);

	/* The superuser sees both. */
	tenant_names(admin, names, sizeof(names));
	cr_assert_str_eq(names, "alpha,beta");
}

Test(db, app_cannot_create_tenants)
{
	const char *params[1] = {"gamma"};
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, "INSERT INTO tenants (name) VALUES ($1)", 1, params, NULL, NULL, NULL),
	             KW_ERR_DB);
	kw_db_rollback(app);
	cr_assert_not(kw_db_in_tx(app));
}

Test(db, audit_log_privileges_for_the_app_role)
{
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, "UPDATE audit_log SET actor = 'x'", 0, NULL, NULL, NULL, NULL),
	             KW_ERR_DB);
	kw_db_rollback(app);
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, "DELETE FROM audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	kw_db_rollback(app);
	cr_assert_eq(kw_db_exec(app, "TRUNCATE audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	cr_assert_eq(kw_db_exec(app, "SELECT count(*) FROM audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);

	/* INSERT is allowed, for the transaction's tenant or no tenant only. */
	static const char *ins =
	    "INSERT INTO audit_log (chain_id, seq, at, tenant_id, actor, action, status, "
	    "key_version, prev_mac, mac) VALUES (gen_random_uuid(), 1, now(), $1::uuid, "
	    "'t', 'a', 'ok', 1, '\\x00', '\\x00')";
	const char *pa[1] = {tenant_a}, *pb[1] = {tenant_b}, *pn[1] = {NULL};
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, ins, 1, pa, NULL, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, ins, 1, pn, NULL, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, ins, 1, pb, NULL, NULL, NULL), KW_ERR_DB);
	kw_db_rollback(app);
}

static void insert_audit_row_as_admin(void)
{
	free(kwt_db_admin_sql(&tdb,
	                      "INSERT INTO audit_log (chain_id, seq, at, actor, action, status, key_version, "
	                      "prev_mac, mac) VALUES (gen_random_uuid(), 1, now(), 't', 'a', 'ok', 1, "
	                      "'\\x00', '\\x00')"));
}

Test(db, audit_log_trigger_refuses_superuser_changes)
{
	insert_audit_row_as_admin();
	cr_assert_eq(kw_db_exec(admin, "UPDATE audit_log SET actor = 'x'", 0, NULL, NULL, NULL, NULL),
	             KW_ERR_DB);
	cr_assert_eq(kw_db_exec(admin, "DELETE FROM audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	cr_assert_eq(kw_db_exec(admin, "TRUNCATE audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	/* Replica mode does not switch the triggers off (ENABLE ALWAYS). */
	cr_assert_eq(kw_db_exec(admin, "SET session_replication_role = replica", 0, NULL, NULL, NULL, NULL),
	             KW_OK);
	cr_assert_eq(kw_db_exec(admin, "DELETE FROM audit_log", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	cr_assert_eq(kw_db_exec(admin, "SET session_replication_role = DEFAULT", 0, NULL, NULL, NULL, NULL),
	             KW_OK);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM audit_log");
	cr_assert_str_eq(n, "1");
	free(n);
}

Test(db, error_mapping)
{
	const char *params[1] = {"alpha"};
	cr_assert_eq(kw_db_exec(admin, "INSERT INTO tenants (name) VALUES ($1)", 1, params, NULL, NULL, NULL),
	             KW_ERR_EXISTS);
	cr_assert_eq(kw_db_exec(admin, "SELECT * FROM no_such_table", 0, NULL, NULL, NULL, NULL),
	             KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_db_exec(admin, "SELECT 1/0", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	params[0] = "not-json";
	cr_assert_eq(kw_db_exec(admin, "SELECT $1::uuid", 1, params, NULL, NULL, NULL), KW_ERR_DB);
	cr_assert_eq(
	    kw_db_exec(admin,
	               "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'serialization_failure'; END $$", 0,
	               NULL, NULL, NULL, NULL),
	    KW_ERR_CONFLICT);
	cr_assert_eq(kw_db_exec(admin,
	                        "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'deadlock_detected'; END $$",
	                        0, NULL, NULL, NULL, NULL),
	             KW_ERR_CONFLICT);
	cr_assert_eq(
	    kw_db_exec(admin, "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'connection_failure'; END $$",
	               0, NULL, NULL, NULL, NULL),
	    KW_ERR_DB_UNAVAILABLE);
}

Test(db, commit_of_failed_transaction_is_an_error)
{
	cr_assert_eq(kw_db_begin(admin, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(admin, "SELECT 1/0", 0, NULL, NULL, NULL, NULL), KW_ERR_DB);
	cr_assert_eq(kw_db_commit(admin), KW_ERR_DB);
	cr_assert_not(kw_db_in_tx(admin));
}

Test(db, rollback_undoes)
{
	const char *params[1] = {"gamma"};
	cr_assert_eq(kw_db_begin(admin, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(admin, "INSERT INTO tenants (name) VALUES ($1)", 1, params, NULL, NULL, NULL),
	             KW_OK);
	kw_db_rollback(admin);
	char *n = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM tenants");
	cr_assert_str_eq(n, "2");
	free(n);
}

Test(db, parameters_are_never_sql)
{
	const char *params[1] = {"x'); DROP TABLE tenants; --"};
	PGresult *res = NULL;
	cr_assert_eq(
	    kw_db_exec(admin, "SELECT count(*) FROM tenants WHERE name = $1", 1, params, NULL, NULL, &res),
	    KW_OK);
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "0");
	PQclear(res);
}

Test(db, pipeline)
{
	const char *p1[1] = {"delta"}, *p2[1] = {"epsilon"};
	kw_db_stmt st[3] = {
	    {"INSERT INTO tenants (name) VALUES ($1)", 1, p1, NULL, NULL},
	    {"INSERT INTO tenants (name) VALUES ($1)", 1, p2, NULL, NULL},
	    {"SELECT count(*) FROM tenants", 0, NULL, NULL, NULL},
	};
	PGresult *res[3] = {0};
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_db_begin(admin, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec_pipeline(admin, st, 3, res), KW_OK);
	cr_assert_str_eq(PQgetvalue(res[2], 0, 0), "4");
	cr_assert_str_eq(PQcmdTuples(res[0]), "1");
	for (int i = 0; i < 3; i++)
		PQclear(res[i]);
	cr_assert_eq(kw_db_commit(admin), KW_OK);
	cr_assert_eq(kw_db_statements() - before, 5);

	/* A failure in the middle: its error wins, the rest is skipped. */
	cr_assert_eq(kw_db_begin(admin, NULL, NULL), KW_OK);
	cr_assert_eq(kw_db_exec_pipeline(admin, st, 3, NULL), KW_ERR_EXISTS);
	cr_assert(kw_db_in_tx(admin));
	kw_db_rollback(admin);
	cr_assert_not(kw_db_in_tx(admin));
	cr_assert_eq(kw_db_ping(admin), KW_OK);
}

static void terminate_backend_of(kw_db *d)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", PQbackendPID(kw_db_conn(d)));
	char *ok = kwt_db_admin_sql(&tdb, sql);
	cr_assert_str_eq(ok, "t");
	free(ok);
}

Test(db, reconnect_after_backend_terminated)
{
	int old_pid = PQbackendPID(kw_db_conn(app));
	terminate_backend_of(app);
	cr_assert_eq(kw_db_ping(app), KW_OK);
	cr_assert_neq(PQbackendPID(kw_db_conn(app)), old_pid);

	/* A statement on a dead connection is "unavailable"; ensure recovers. */
	terminate_backend_of(app);
	cr_assert_eq(kw_db_exec(app, "SELECT 1", 0, NULL, NULL, NULL, NULL), KW_ERR_DB_UNAVAILABLE);
	cr_assert_eq(kw_db_ensure(app), KW_OK);
	cr_assert_eq(kw_db_begin(app, tenant_a, NULL), KW_OK);
	kw_db_rollback(app);

	/* Killed inside a pipeline. */
	terminate_backend_of(app);
	kw_db_stmt st[2] = {{"SELECT 1", 0, NULL, NULL, NULL}, {"SELECT 2", 0, NULL, NULL, NULL}};
	cr_assert_eq(kw_db_exec_pipeline(app, st, 2, NULL), KW_ERR_DB_UNAVAILABLE);
	cr_assert_eq(kw_db_ping(app), KW_OK);
	cr_assert_eq(kw_db_exec_pipeline(app, st, 2, NULL), KW_OK);
}
