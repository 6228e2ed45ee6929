/* kwtest_db.c — throwaway PostgreSQL databases for the integration tiers.
 *
 * Each kwt_db_create makes a fresh database (kwt_<pid>_<n>) on the cluster
 * at KEYWARD_PG_ADMIN as a copy of a template that has every migration
 * applied: kwt_tpl_<hash of migrations/>, built once per cluster and set of
 * migrations (by whichever test process gets there first, under an
 * advisory lock; built under another name and renamed when complete, so a
 * half-built template is never copied). Copying a database is a fraction
 * of the cost of running the migrations for each test. Building also makes
 * sure the login role kw_svc (member of keyward_app, so subject to RLS)
 * exists; roles are cluster-wide, so that tolerates losing a race. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/db/db.h"
#include "keyward/db/migrate.h"
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

/* "kwt_tpl_" + 16 hex digits of SHA-256 over the names and contents of
 * the migration files, in name order. */
static void template_name(const char *dir, char out[64])
{
	struct dirent **list = NULL;
	int n = scandir(dir, &list, NULL, alphasort);
	cr_assert(n > 0, "no migrations in %s", dir);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	cr_assert(md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1);
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;
		size_t len = strlen(name);
		if (len > 4 && strcmp(name + len - 4, ".sql") == 0) {
			char path[2048], buf[8192];
			snprintf(path, sizeof(path), "%s/%s", dir, name);
			FILE *f = fopen(path, "rb");
			cr_assert_not_null(f, "cannot read %s", path);
			EVP_DigestUpdate(md, name, len + 1);
			size_t got;
			while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
				EVP_DigestUpdate(md, buf, got);
			fclose(f);
		}
		free(list[i]);
	}
	free(list);
	unsigned char h[32];
	cr_assert_eq(EVP_DigestFinal_ex(md, h, NULL), 1);
	EVP_MD_CTX_free(md);
	snprintf(out, 64, "kwt_tpl_");
	for (int i = 0; i < 8; i++)
		snprintf(out + 8 + 2 * i, 3, "%02x", h[i]);
}

/* Makes sure the template exists; c is an admin connection to the
 * maintenance database. */
static void template_ensure(PGconn *c, const char *admin, const char *tpl, const char *dir)
{
	char sql[512], conninfo[700];
	admin_run(c, "SELECT pg_advisory_lock(7418001)");
	snprintf(sql, sizeof(sql), "SELECT 1 FROM pg_database WHERE datname = '%s'", tpl);
	PGresult *r = PQexec(c, sql);
	bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
	PQclear(r);
	if (!exists) {
		snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s_build WITH (FORCE)", tpl);
		admin_run(c, sql);
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s_build", tpl);
		admin_run(c, sql);
		snprintf(conninfo, sizeof(conninfo), "%s dbname=%s_build", admin, tpl);
		kw_db *conn = NULL;
		int applied = -1;
		cr_assert_eq(kw_db_connect(conninfo, &conn), KW_OK, "cannot connect to %s_build", tpl);
		cr_assert_eq(kw_migrate_up(conn, dir, &applied), KW_OK, "migrations failed on %s_build", tpl);
		kw_db_close(conn);
		PGconn *t = admin_connect(conninfo);
		admin_run(t, "DO $$ BEGIN "
		             "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" KWT_SVC_ROLE "') THEN "
		             "CREATE ROLE " KWT_SVC_ROLE " LOGIN IN ROLE keyward_app; END IF; "
		             "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
		admin_run(t, "DO $$ BEGIN GRANT keyward_app TO " KWT_SVC_ROLE "; "
		             "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
		PQfinish(t);
		snprintf(sql, sizeof(sql), "ALTER DATABASE %s_build RENAME TO %s", tpl, tpl);
		admin_run(c, sql);
	}
	admin_run(c, "SELECT pg_advisory_unlock(7418001)");
}

void kwt_db_create(kwt_db *out)
{
	const char *admin = kwt_env("KEYWARD_PG_ADMIN");
	kwt_db db;
	char sql[256], dir[1024];
	static char tpl[64];

	memset(&db, 0, sizeof(db));
	/* A random part too: pids are reused, and a database left by a test
	 * that was killed would otherwise collide with a later one. */
	unsigned int rnd = 0;
	cr_assert_eq(RAND_bytes((unsigned char *)&rnd, sizeof(rnd)), 1);
	snprintf(db.name, sizeof(db.name), "kwt_%ld_%u_%08x", (long)getpid(),
	         atomic_fetch_add(&kwt_db_counter, 1), rnd);
	int n = snprintf(db.admin, sizeof(db.admin), "%s dbname=%s", admin, db.name);
	cr_assert(n > 0 && (size_t)n < sizeof(db.admin), "KEYWARD_PG_ADMIN too long");
	n = snprintf(db.app, sizeof(db.app), "%s user=%s", db.admin, KWT_SVC_ROLE);
	cr_assert(n > 0 && (size_t)n < sizeof(db.app), "KEYWARD_PG_ADMIN too long");

	PGconn *c = admin_connect(admin);
	if (tpl[0] == '\0') {
		migrations_dir(dir, sizeof(dir));
		char name[64];
		template_name(dir, name);
		template_ensure(c, admin, name, dir);
		memcpy(tpl, name, sizeof(tpl));
	}
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE %s", db.name, tpl);
	admin_run(c, sql);
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
