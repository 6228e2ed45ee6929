/* test_migrate.c — migrations against a real PostgreSQL. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/db/migrate.h"
#include "kwtest.h"

static kwt_db tdb;
static kw_db *db;
static char dir[1024];

static void setup(void)
{
	const char *src = getenv("KW_SOURCE_DIR");
	snprintf(dir, sizeof(dir), "%s/migrations", src != NULL && src[0] != '\0' ? src : KW_SOURCE_DIR);
	kwt_db_create(&tdb);
	cr_assert_eq(kw_db_connect(tdb.admin, &db), KW_OK);
}

static void teardown(void)
{
	kw_db_close(db);
	kwt_db_drop(&tdb);
}

TestSuite(migrate, .init = setup, .fini = teardown);

/* A copy of the migrations directory in a fresh temp dir. */
static void copy_dir(char *tmp, size_t cap)
{
	char cmd[4096];
	snprintf(tmp, cap, "/tmp/kwt_mig_XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(cmd, sizeof(cmd), "cp '%s'/*.sql '%s'/", dir, tmp);
	cr_assert_eq(system(cmd), 0);
}

static void remove_dir(const char *tmp)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	cr_assert_eq(system(cmd), 0);
}

static char *status_text(kw_db *d, const char *mdir)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_not_null(f);
	cr_assert_eq(kw_migrate_status(d, mdir, f), KW_OK);
	fclose(f);
	return buf;
}

Test(migrate, fixture_applied_0001_with_checksum)
{
	char *v = kwt_db_admin_sql(&tdb, "SELECT name || ':' || length(checksum) FROM schema_migrations "
	                                 "WHERE version = 1");
	cr_assert_str_eq(v, "foundation:64");
	free(v);
	v = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM pg_tables WHERE tablename IN "
	                           "('tenants', 'audit_log', 'audit_chains')");
	cr_assert_str_eq(v, "3");
	free(v);
}

Test(migrate, up_again_applies_nothing)
{
	int applied = -1;
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_migrate_up(db, dir, &applied), KW_OK);
	cr_assert_eq(applied, 0);
	cr_assert(kw_db_statements() > before);
	char *v = kwt_db_admin_sql(&tdb, "SELECT count(*) FROM schema_migrations");
	cr_assert_eq(strtol(v, NULL, 10), KW_SCHEMA_VERSION);
	free(v);
}

Test(migrate, checksum_is_sha256_of_file)
{
	char cmd[2048], line[128] = "";
	snprintf(cmd, sizeof(cmd), "sha256sum '%s/0001_foundation.up.sql'", dir);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(line, sizeof(line), p));
	pclose(p);
	line[64] = '\0';
	char *v = kwt_db_admin_sql(&tdb, "SELECT checksum FROM schema_migrations WHERE version = 1");
	cr_assert_str_eq(v, line);
	free(v);
}

/* Every migration of this build, in order: what status lists. */
static const char *const all_migrations[] = {
    "0001 foundation",    "0002 api_keys",          "0003 tokens",       "0004 vault",
    "0005 kek_guard",     "0006 kek_guard_invoker", "0007 audit_writer", "0008 session_minter",
    "0009 prefix_lookup", "0010 transit",           "0011 changes",      "0012 secrets",
    "0013 signing",       "0014 feed_keys"};

/* The status text of every migration in state (the first in first), then
 * extra (NULL: nothing). */
static char *status_expected(const char *first, const char *state, const char *extra)
{
	static char buf[2048];
	size_t used = 0;
	size_t n = sizeof(all_migrations) / sizeof(all_migrations[0]);
	cr_assert_eq(n, KW_SCHEMA_VERSION, "all_migrations misses one");
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s %s\n", all_migrations[i],
		                         i == 0 ? first : state);
	if (extra)
		snprintf(buf + used, sizeof(buf) - used, "%s", extra);
	return buf;
}

Test(migrate, status_lines)
{
	char *s = status_text(db, dir);
	cr_assert_str_eq(s, status_expected("applied", "applied", NULL));
	free(s);
}

Test(migrate, status_pending_on_empty_database)
{
	kw_db *d2 = NULL;
	char conninfo[600];
	char *dbn = kwt_db_admin_sql(&tdb, "SELECT 'kwt_empty_' || pg_backend_pid()");
	PGconn *c = PQconnectdb(kwt_env("KEYWARD_PG_ADMIN"));
	char sql[128];
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbn);
	PQclear(PQexec(c, sql));
	snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", kwt_env("KEYWARD_PG_ADMIN"), dbn);
	cr_assert_eq(kw_db_connect(conninfo, &d2), KW_OK);
	int v = -1;
	cr_assert_eq(kw_migrate_current(d2, &v), KW_OK);
	cr_assert_eq(v, 0);
	char *s = status_text(d2, dir);
	cr_assert_str_eq(s, status_expected("pending", "pending", NULL));
	free(s);
	kw_db_close(d2);
	snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", dbn);
	PQclear(PQexec(c, sql));
	PQfinish(c);
	free(dbn);
}

Test(migrate, changed_applied_migration_is_conflict)
{
	char tmp[256], path[512];
	int applied = -1;
	copy_dir(tmp, sizeof(tmp));
	cr_assert_eq(kw_migrate_up(db, tmp, &applied), KW_OK);
	cr_assert_eq(applied, 0);
	snprintf(path, sizeof(path), "%s/0001_foundation.up.sql", tmp);
	FILE *f = fopen(path, "a");
	cr_assert_not_null(f);
	fputs("\n-- edited after it was applied\n", f);
	fclose(f);
	cr_assert_eq(kw_migrate_up(db, tmp, &applied), KW_ERR_CONFLICT);
	char *s = status_text(db, tmp);
	cr_assert_str_eq(s, status_expected("changed", "applied", NULL));
	free(s);
	remove_dir(tmp);
}

Test(migrate, new_migration_is_applied_once)
{
	char tmp[256], path[512];
	int applied = -1;
	copy_dir(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/0099_extra.up.sql", tmp);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("CREATE TABLE IF NOT EXISTS kwt_extra (id int);\nINSERT INTO kwt_extra VALUES (1);\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/0099_extra.down.sql", tmp);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("DROP TABLE IF EXISTS kwt_extra;\n", f);
	fclose(f);
	cr_assert_eq(kw_migrate_up(db, tmp, &applied), KW_OK);
	cr_assert_eq(applied, 1);
	cr_assert_eq(kw_migrate_up(db, tmp, &applied), KW_OK);
	cr_assert_eq(applied, 0);
	int v = 0;
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, 99);
	char *s = status_text(db, tmp);
	cr_assert_str_eq(s, status_expected("applied", "applied", "0099 extra applied\n"));
	free(s);
	cr_assert_eq(kw_migrate_down(db, tmp, 1), KW_OK);
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION);
	char *t = kwt_db_admin_sql(&tdb, "SELECT to_regclass('kwt_extra') IS NULL");
	cr_assert_str_eq(t, "t");
	free(t);
	remove_dir(tmp);
}

Test(migrate, failing_migration_rolls_back)
{
	char tmp[256], path[512];
	int applied = -1;
	copy_dir(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/0099_broken.up.sql", tmp);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("CREATE TABLE kwt_half (id int);\nSELECT no_such_function();\n", f);
	fclose(f);
	cr_assert_eq(kw_migrate_up(db, tmp, &applied), KW_ERR_DB);
	char *t = kwt_db_admin_sql(&tdb, "SELECT to_regclass('kwt_half') IS NULL");
	cr_assert_str_eq(t, "t");
	free(t);
	int v = 0;
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION);
	cr_assert_not(kw_db_in_tx(db));
	remove_dir(tmp);
}

Test(migrate, down_then_up)
{
	int applied = -1, v = -1;
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION - 1);
	/* 0014 reverted: no announcements. */
	char *fk = kwt_db_admin_sql(&tdb, "SELECT to_regproc('changes_announce') IS NULL");
	cr_assert_str_eq(fk, "t");
	free(fk);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0013 reverted: no signing keys. */
	char *sg = kwt_db_admin_sql(&tdb, "SELECT to_regclass('signing_keys') IS NULL");
	cr_assert_str_eq(sg, "t");
	free(sg);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0012 reverted: no secrets store. */
	char *se = kwt_db_admin_sql(&tdb, "SELECT to_regclass('secret_versions') IS NULL");
	cr_assert_str_eq(se, "t");
	free(se);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0011 reverted: no change feed. */
	char *ch = kwt_db_admin_sql(&tdb, "SELECT to_regclass('changes') IS NULL");
	cr_assert_str_eq(ch, "t");
	free(ch);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0010 reverted: no transit tables. */
	char *tt = kwt_db_admin_sql(&tdb, "SELECT to_regclass('transit_keys') IS NULL");
	cr_assert_str_eq(tt, "t");
	free(tt);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0009 reverted: no lookup function. */
	char *g = kwt_db_admin_sql(&tdb, "SELECT to_regproc('keyward_api_key_tenant') IS NULL");
	cr_assert_str_eq(g, "t");
	free(g);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0008 reverted: no minter column. */
	char *f = kwt_db_admin_sql(
	    &tdb, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'minted_by'");
	cr_assert_str_eq(f, "0");
	free(f);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0007 reverted: no writer policy. */
	char *w =
	    kwt_db_admin_sql(&tdb, "SELECT count(*) FROM pg_policies WHERE policyname = 'audit_log_writer'");
	cr_assert_str_eq(w, "0");
	free(w);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0006 reverted: no rotation table, 0005's trigger function. */
	char *t = kwt_db_admin_sql(&tdb, "SELECT to_regclass('key_rotations') IS NULL AND "
	                                 "to_regclass('kek_retired') IS NOT NULL AND "
	                                 "(SELECT prosecdef FROM pg_proc WHERE proname = "
	                                 "'encryption_vaults_kek_live')");
	cr_assert_str_eq(t, "t");
	free(t);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	/* 0005 reverted: no retirement table, and 0004's maintenance policy. */
	t = kwt_db_admin_sql(&tdb, "SELECT to_regclass('kek_retired') IS NULL AND "
	                           "to_regclass('encryption_vaults') IS NOT NULL AND "
	                           "(SELECT array_agg(policyname::text ORDER BY policyname) FROM "
	                           "pg_policies WHERE tablename = 'encryption_vaults') = "
	                           "ARRAY['encryption_vaults_kek_maintenance', "
	                           "'encryption_vaults_owner']");
	cr_assert_str_eq(t, "t");
	free(t);
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	t = kwt_db_admin_sql(&tdb, "SELECT to_regclass('encryption_vaults') IS NULL AND "
	                           "to_regclass('refresh_tokens') IS NOT NULL AND "
	                           "NOT EXISTS (SELECT 1 FROM pg_policies WHERE policyname = "
	                           "'audit_log_vault_owner')");
	cr_assert_str_eq(t, "t");
	free(t);
	cr_assert_eq(kw_migrate_down(db, dir, 3), KW_OK); /* 0003 .. 0001 */
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, 0);
	t = kwt_db_admin_sql(&tdb,
	                     "SELECT to_regclass('audit_log') IS NULL AND to_regclass('tenants') IS NULL");
	cr_assert_str_eq(t, "t");
	free(t);
	/* Nothing left to revert: a no-op. */
	cr_assert_eq(kw_migrate_down(db, dir, 1), KW_OK);
	cr_assert_eq(kw_migrate_up(db, dir, &applied), KW_OK);
	cr_assert_eq(applied, KW_SCHEMA_VERSION);
	cr_assert_eq(kw_migrate_current(db, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION);
	cr_assert_eq(kw_migrate_down(db, dir, 0), KW_ERR_INVALID);
}

Test(migrate, migration_sql_is_idempotent)
{
	/* Re-running each migration on a schema that has it changes nothing. */
	static const char *files[] = {
	    "0001_foundation.up.sql",   "0002_api_keys.up.sql",       "0003_tokens.up.sql",
	    "0004_vault.up.sql",        "0005_kek_guard.up.sql",      "0006_kek_guard_invoker.up.sql",
	    "0007_audit_writer.up.sql", "0008_session_minter.up.sql", "0009_prefix_lookup.up.sql",
	    "0010_transit.up.sql",      "0011_changes.up.sql",        "0012_secrets.up.sql",
	    "0013_signing.up.sql",      "0014_feed_keys.up.sql"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[1200], *text = NULL;
		size_t len = 0;
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		FILE *f = fopen(path, "r");
		cr_assert_not_null(f);
		cr_assert(getdelim(&text, &len, '\0', f) > 0);
		fclose(f);
		cr_assert_eq(kw_db_begin(db, NULL, NULL), KW_OK);
		cr_assert_eq(kw_db_exec_script(db, text), KW_OK, "%s is not idempotent", files[i]);
		cr_assert_eq(kw_db_commit(db), KW_OK);
		free(text);
	}
}

Test(migrate, missing_directory)
{
	int applied = -1;
	cr_assert_eq(kw_migrate_up(db, "/nonexistent/keyward/migrations", &applied), KW_ERR_NOT_FOUND);
	cr_assert_eq(applied, -1);
}

struct race_arg {
	const char *conninfo;
	int applied;
	kw_err err;
};

static void *race_up(void *p)
{
	struct race_arg *a = p;
	kw_db *d = NULL;
	a->err = kw_db_connect(a->conninfo, &d);
	if (a->err == KW_OK)
		a->err = kw_migrate_up(d, dir, &a->applied);
	kw_db_close(d);
	return NULL;
}

Test(migrate, concurrent_up_runs_do_not_race)
{
	/* Several runs on an empty database: the advisory lock serialises. */
	char *dbn = kwt_db_admin_sql(&tdb, "SELECT 'kwt_race_' || pg_backend_pid()");
	char sql[128], conninfo[600];
	PGconn *c = PQconnectdb(kwt_env("KEYWARD_PG_ADMIN"));
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbn);
	PQclear(PQexec(c, sql));
	snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", kwt_env("KEYWARD_PG_ADMIN"), dbn);
	struct race_arg args[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct race_arg){.conninfo = conninfo, .applied = -1};
		cr_assert_eq(pthread_create(&th[i], NULL, race_up, &args[i]), 0);
	}
	int total = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].err, KW_OK, "run %d: %s", i, kw_err_str(args[i].err));
		total += args[i].applied;
	}
	cr_assert_eq(total, KW_SCHEMA_VERSION);
	kw_db *b = NULL;
	int v = 0;
	cr_assert_eq(kw_db_connect(conninfo, &b), KW_OK);
	cr_assert_eq(kw_migrate_current(b, &v), KW_OK);
	cr_assert_eq(v, KW_SCHEMA_VERSION);
	kw_db_close(b);
	snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", dbn);
	PQclear(PQexec(c, sql));
	PQfinish(c);
	free(dbn);
}
