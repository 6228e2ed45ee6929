/* kwtest_db.c — throwaway PostgreSQL databases for the integration tiers.
 *
 * Each kwt_db_create makes a fresh database (kwt_<pid>_<n>) on the cluster
 * at KEYWARD_PG_ADMIN, applies every migration as the superuser, and makes
 * sure the login role kw_svc (member of keyward_app, so subject to RLS)
 * exists. Roles are cluster-wide and test processes run concurrently, so
 * creating the role tolerates losing the race. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/db.h"
#include "keyward/migrate.h"
#include "kwtest.h"

#define KWT_SVC_ROLE "kw_svc"

static atomic_uint kwt_db_counter;

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static PGconn *admin_connect(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	cr_assert(c != NULL && PQstatus(c) == CONNECTION_OK, "cannot connect as admin: %s",
	          c != NULL ? PQerrorMessage(c) : "out of memory");
	PQsetNoticeProcessor(c, quiet, NULL);
	return c;
}

static void admin_run(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "admin SQL failed: %s: %s", sql,
	          PQresultErrorMessage(r));
	PQclear(r);
}

static const char *migrations_dir(char *buf, size_t cap)
{
	const char *src = getenv("KW_SOURCE_DIR");
	if (src == NULL || src[0] == '\0')
		src = KW_SOURCE_DIR;
	snprintf(buf, cap, "%s/migrations", src);
	return buf;
}

void kwt_db_create(kwt_db *out)
{
	const char *admin = kwt_env("KEYWARD_PG_ADMIN");
	kwt_db db;
	char sql[256], dir[1024];
	kw_db *conn = NULL;
	int applied = -1;

	memset(&db, 0, sizeof(db));
	snprintf(db.name, sizeof(db.name), "kwt_%ld_%u", (long)getpid(),
	         atomic_fetch_add(&kwt_db_counter, 1));
	int n = snprintf(db.admin, sizeof(db.admin), "%s dbname=%s", admin, db.name);
	cr_assert(n > 0 && (size_t)n < sizeof(db.admin), "KEYWARD_PG_ADMIN too long");
	n = snprintf(db.app, sizeof(db.app), "%s user=%s", db.admin, KWT_SVC_ROLE);
	cr_assert(n > 0 && (size_t)n < sizeof(db.app), "KEYWARD_PG_ADMIN too long");

	PGconn *c = admin_connect(admin);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db.name);
	admin_run(c, sql);
	PQfinish(c);

	cr_assert_eq(kw_db_connect(db.admin, &conn), KW_OK, "cannot connect to %s", db.name);
	cr_assert_eq(kw_migrate_up(conn, migrations_dir(dir, sizeof(dir)), &applied), KW_OK,
	             "migrations failed on %s", db.name);
	kw_db_close(conn);

	c = admin_connect(db.admin);
	admin_run(c, "DO $$ BEGIN "
	             "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" KWT_SVC_ROLE "') THEN "
	             "CREATE ROLE " KWT_SVC_ROLE " LOGIN IN ROLE keyward_app; END IF; "
	             "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
	admin_run(c, "DO $$ BEGIN GRANT keyward_app TO " KWT_SVC_ROLE "; "
	             "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
	PQfinish(c);
	*out = db;
}

void kwt_db_drop(const kwt_db *db)
{
	char sql[256];
	PGconn *c = admin_connect(kwt_env("KEYWARD_PG_ADMIN"));
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db->name);
	admin_run(c, sql);
	PQfinish(c);
}

char *kwt_db_admin_sql(const kwt_db *db, const char *sql)
{
	char *value = NULL;
	PGconn *c = admin_connect(db->admin);
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "admin SQL failed: %s: %s", sql,
	          PQresultErrorMessage(r));
	if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0)) {
		value = strdup(PQgetvalue(r, 0, 0));
		cr_assert(value != NULL);
	}
	PQclear(r);
	PQfinish(c);
	return value;
}
