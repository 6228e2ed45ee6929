/* migrate.c — applies migrations/NNNN_name.{up,down}.sql in order.
 *
 * schema_migrations records each applied version with the SHA-256 of its
 * .up.sql file; an applied file that changed stops everything
 * (KW_ERR_CONFLICT): history is never rewritten silently. Each migration
 * runs in its own transaction together with its schema_migrations row,
 * under a transaction-scoped advisory lock so concurrent runs serialise
 * (the second one then finds nothing to do). Migration files are trusted
 * code shipped with the build: they are the only SQL sent with PQexec. */
#include "keyward/db/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keyward/core/log.h"

#define MIG_MAX_FILE  (16u * 1024 * 1024)
#define MIG_MAX_NAME  128
#define MIG_MAX_COUNT 9999
/* pg_advisory_xact_lock key: "kwmigrat" as an int64, unique to keyward. */
#define MIG_LOCK_KEY "7743103330119819636"

#define SQL_LOCK "SELECT pg_advisory_xact_lock(" MIG_LOCK_KEY ")"
#define SQL_CREATE                                                                                           \
	"CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, "        \
	"checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
#define SQL_APPLIED   "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
#define SQL_HAS_TABLE "SELECT to_regclass('schema_migrations') IS NOT NULL"

/* A migration, as a file on disk or as a row of schema_migrations. */
typedef struct mig_file {
	int version;
	char name[MIG_MAX_NAME + 1];
	char checksum[2 * 32 + 1];
} mig_file;
typedef mig_file mig_applied;

typedef struct mig_list {
	mig_file *v;
	size_t n;
} mig_list;
typedef mig_list applied_list;

/* Reads a whole migration file as a C string (no NUL bytes inside). */
static kw_err read_file(const char *path, char **out, size_t *len)
{
	kw_err err = KW_OK;
	FILE *f = NULL;
	char *buf = NULL;
	struct stat st;

	f = fopen(path, "rb");
	if (f == NULL) {
		err = errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO;
		kw_err_log("migrate: cannot open %s: %s", path, strerror(errno));
		goto done;
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uintmax_t)st.st_size > MIG_MAX_FILE) {
		kw_err_log("migrate: %s is not a regular file of at most %u bytes", path, MIG_MAX_FILE);
		err = KW_ERR_IO;
		goto done;
	}
	size_t n = (size_t)st.st_size;
	buf = malloc(n + 1);
	if (buf == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	if (fread(buf, 1, n, f) != n) {
		kw_err_log("migrate: short read on %s", path);
		err = KW_ERR_IO;
		goto done;
	}
	buf[n] = '\0';
	if (strlen(buf) != n) {
		kw_err_log("migrate: %s contains a NUL byte", path);
		err = KW_ERR_INVALID;
		goto done;
	}
	*out = buf;
	*len = n;
	buf = NULL;
done:
	free(buf);
	if (f != NULL)
		fclose(f);
	return err;
}

static kw_err sha256_hex(const char *data, size_t len, char hex[2 * 32 + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	static const char digits[] = "0123456789abcdef";

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
		return KW_ERR_INTERNAL;
	for (size_t i = 0; i < sizeof(md); i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * sizeof(md)] = '\0';
	return KW_OK;
}

static void path_of(char *buf, size_t cap, const char *dir, const mig_file *m, const char *kind)
{
	snprintf(buf, cap, "%s/%04d_%s.%s.sql", dir, m->version, m->name, kind);
}

/* "NNNN_name.up.sql" -> version and name; false for anything else. */
static bool parse_up_name(const char *fname, int *version, char name[MIG_MAX_NAME + 1])
{
	static const char suffix[] = ".up.sql";
	size_t len = strlen(fname), slen = sizeof(suffix) - 1;

	if (len <= 5 + slen || strcmp(fname + len - slen, suffix) != 0 || fname[4] != '_')
		return false;
	int v = 0;
	for (int i = 0; i < 4; i++) {
		if (fname[i] < '0' || fname[i] > '9')
			return false;
		v = v * 10 + (fname[i] - '0');
	}
	size_t nlen = len - slen - 5;
	if (v == 0 || nlen == 0 || nlen > MIG_MAX_NAME)
		return false;
	for (size_t i = 0; i < nlen; i++) {
		char c = fname[5 + i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	memcpy(name, fname + 5, nlen);
	name[nlen] = '\0';
	*version = v;
	return true;
}

static int cmp_file(const void *a, const void *b)
{
	const mig_file *x = a, *y = b;
	return (x->version > y->version) - (x->version < y->version);
}

/* Lists and checksums the .up.sql files of dir, sorted by version. */
static kw_err list_files(const char *dir, mig_list *out)
{
	kw_err err = KW_OK;
	DIR *d = NULL;
	mig_list l = {0};
	size_t cap = 0;
	char *text = NULL;

	d = opendir(dir);
	if (d == NULL) {
		kw_err_log("migrate: cannot open directory %s: %s", dir, strerror(errno));
		err = errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO;
		goto done;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		mig_file m = {0};
		if (!parse_up_name(e->d_name, &m.version, m.name))
			continue;
		if (l.n == MIG_MAX_COUNT) {
			err = KW_ERR_INVALID;
			goto done;
		}
		if (l.n == cap) {
			size_t ncap = cap == 0 ? 16 : cap * 2;
			mig_file *nv = realloc(l.v, ncap * sizeof(*nv));
			if (nv == NULL) {
				err = KW_ERR_NOMEM;
				goto done;
			}
			l.v = nv;
			cap = ncap;
		}
		l.v[l.n++] = m;
	}
	if (l.n > 0)
		qsort(l.v, l.n, sizeof(*l.v), cmp_file);
	for (size_t i = 0; i < l.n; i++) {
		char path[4096];
		size_t len = 0;
		if (i > 0 && l.v[i].version == l.v[i - 1].version) {
			kw_err_log("migrate: two migrations with version %04d in %s", l.v[i].version, dir);
			err = KW_ERR_INVALID;
			goto done;
		}
		path_of(path, sizeof(path), dir, &l.v[i], "up");
		err = read_file(path, &text, &len);
		if (err != KW_OK)
			goto done;
		err = sha256_hex(text, len, l.v[i].checksum);
		free(text);
		text = NULL;
		if (err != KW_OK)
			goto done;
	}
	*out = l;
	l.v = NULL;
done:
	free(text);
	free(l.v);
	if (d != NULL)
		closedir(d);
	return err;
}

/* Reads schema_migrations (which must exist). */
static kw_err read_applied(kw_db *db, applied_list *out)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	applied_list a = {0};

	err = kw_db_exec(db, SQL_APPLIED, 0, NULL, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	int rows = PQntuples(res);
	if (rows > 0) {
		a.v = calloc((size_t)rows, sizeof(*a.v));
		if (a.v == NULL) {
			err = KW_ERR_NOMEM;
			goto done;
		}
	}
	for (int i = 0; i < rows; i++) {
		a.v[i].version = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
		snprintf(a.v[i].name, sizeof(a.v[i].name), "%s", PQgetvalue(res, i, 1));
		snprintf(a.v[i].checksum, sizeof(a.v[i].checksum), "%s", PQgetvalue(res, i, 2));
	}
	a.n = (size_t)rows;
	*out = a;
	a.v = NULL;
done:
	free(a.v);
	PQclear(res);
	return err;
}

static const mig_applied *find_applied(const applied_list *a, int version)
{
	for (size_t i = 0; i < a->n; i++) {
		if (a->v[i].version == version)
			return &a->v[i];
	}
	return NULL;
}

static kw_err table_exists(kw_db *db, bool *exists)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, SQL_HAS_TABLE, 0, NULL, NULL, NULL, &res);
	if (err == KW_OK)
		*exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return err;
}

/* Every applied migration's file must be unchanged. */
static kw_err check_checksums(const char *dir, const mig_list *files, const applied_list *a)
{
	kw_err err = KW_OK;
	for (size_t i = 0; i < files->n; i++) {
		const mig_applied *ap = find_applied(a, files->v[i].version);
		if (ap == NULL || strcmp(ap->checksum, files->v[i].checksum) == 0)
			continue;
		char path[4096];
		path_of(path, sizeof(path), dir, &files->v[i], "up");
		kw_err_log("migrate: %s was changed after it was applied (checksum %s, recorded %s)", path,
		           files->v[i].checksum, ap->checksum);
		if (err == KW_OK)
			err = KW_ERR_CONFLICT;
	}
	return err;
}

/* One migration, in its own transaction, unless another run applied it. */
static kw_err apply_one(kw_db *db, const char *dir, const mig_file *m, bool *did)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	char *text = NULL;
	size_t len = 0;
	char path[4096], ver[16];
	const char *params[3];
	bool applied = false;

	snprintf(ver, sizeof(ver), "%d", m->version);
	path_of(path, sizeof(path), dir, m, "up");
	err = read_file(path, &text, &len);
	if (err != KW_OK)
		goto done;
	char sum[2 * 32 + 1];
	err = sha256_hex(text, len, sum);
	if (err != KW_OK)
		goto done;
	if (strcmp(sum, m->checksum) != 0) {
		kw_err_log("migrate: %s changed while migrating", path);
		err = KW_ERR_CONFLICT;
		goto done;
	}
	err = kw_db_begin(db, NULL, NULL);
	if (err != KW_OK)
		goto done;
	err = kw_db_exec(db, SQL_LOCK, 0, NULL, NULL, NULL, NULL);
	if (err != KW_OK)
		goto done;
	params[0] = ver;
	err = kw_db_exec(db, "SELECT 1 FROM schema_migrations WHERE version = $1::int", 1, params, NULL, NULL,
	                 &res);
	if (err != KW_OK)
		goto done;
	if (PQntuples(res) == 0) {
		kw_info("migrate: applying %04d_%s", m->version, m->name);
		err = kw_db_exec_script(db, text);
		if (err != KW_OK) {
			kw_err_log("migrate: %s failed", path);
			goto done;
		}
		params[1] = m->name;
		params[2] = m->checksum;
		err = kw_db_exec(
		    db, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::int, $2, $3)", 3,
		    params, NULL, NULL, NULL);
		if (err != KW_OK)
			goto done;
		applied = true;
	}
	err = kw_db_commit(db);
	if (err != KW_OK)
		goto done;
	*did = applied;
done:
	if (err != KW_OK)
		kw_db_rollback(db);
	PQclear(res);
	free(text);
	return err;
}

kw_err kw_migrate_up(kw_db *db, const char *dir, int *applied)
{
	kw_err err = KW_OK;
	mig_list files = {0};
	applied_list a = {0};
	int count = 0;

	if (db == NULL || dir == NULL || applied == NULL)
		kw_misuse("kw_migrate_up: NULL argument");
	err = list_files(dir, &files);
	if (err != KW_OK)
		goto done;
	err = kw_db_begin(db, NULL, NULL);
	if (err != KW_OK)
		goto done;
	err = kw_db_exec(db, SQL_LOCK, 0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = kw_db_exec(db, SQL_CREATE, 0, NULL, NULL, NULL, NULL);
	if (err == KW_OK)
		err = read_applied(db, &a);
	if (err == KW_OK)
		err = kw_db_commit(db);
	if (err != KW_OK) {
		kw_db_rollback(db);
		goto done;
	}
	err = check_checksums(dir, &files, &a);
	if (err != KW_OK)
		goto done;
	for (size_t i = 0; i < a.n; i++) {
		if (files.n == 0 || a.v[i].version > files.v[files.n - 1].version)
			kw_warn("migrate: the database has version %04d (%s), newer than the files in %s",
			        a.v[i].version, a.v[i].name, dir);
	}
	for (size_t i = 0; i < files.n; i++) {
		bool did = false;
		if (find_applied(&a, files.v[i].version) != NULL)
			continue;
		err = apply_one(db, dir, &files.v[i], &did);
		if (err != KW_OK)
			goto done;
		count += did ? 1 : 0;
	}
	*applied = count;
done:
	free(files.v);
	free(a.v);
	return err;
}

kw_err kw_migrate_down(kw_db *db, const char *dir, int steps)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	char *text = NULL;
	mig_list files = {0};

	if (db == NULL || dir == NULL)
		kw_misuse("kw_migrate_down: NULL argument");
	if (steps <= 0)
		return KW_ERR_INVALID;
	err = list_files(dir, &files);
	if (err != KW_OK)
		goto done;
	for (int step = 0; step < steps; step++) {
		bool exists = false;
		size_t len = 0;
		err = kw_db_begin(db, NULL, NULL);
		if (err != KW_OK)
			goto done;
		err = kw_db_exec(db, SQL_LOCK, 0, NULL, NULL, NULL, NULL);
		if (err == KW_OK)
			err = table_exists(db, &exists);
		if (err != KW_OK)
			goto done;
		if (!exists) {
			err = kw_db_commit(db);
			goto done;
		}
		err = kw_db_exec(db,
		                 "SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1",
		                 0, NULL, NULL, NULL, &res);
		if (err != KW_OK)
			goto done;
		if (PQntuples(res) == 0) {
			err = kw_db_commit(db);
			goto done;
		}
		mig_file m = {.version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10)};
		snprintf(m.name, sizeof(m.name), "%s", PQgetvalue(res, 0, 1));
		char path[4096], ver[16];
		path_of(path, sizeof(path), dir, &m, "down");
		err = read_file(path, &text, &len);
		if (err != KW_OK)
			goto done;
		kw_info("migrate: reverting %04d_%s", m.version, m.name);
		err = kw_db_exec_script(db, text);
		if (err != KW_OK) {
			kw_err_log("migrate: %s failed", path);
			goto done;
		}
		snprintf(ver, sizeof(ver), "%d", m.version);
		const char *params[1] = {ver};
		err = kw_db_exec(db, "DELETE FROM schema_migrations WHERE version = $1::int", 1, params, NULL,
		                 NULL, NULL);
		if (err == KW_OK)
			err = kw_db_commit(db);
		if (err != KW_OK)
			goto done;
		PQclear(res);
		res = NULL;
		free(text);
		text = NULL;
	}
done:
	if (err != KW_OK)
		kw_db_rollback(db);
	PQclear(res);
	free(text);
	free(files.v);
	return err;
}

kw_err kw_migrate_status(kw_db *db, const char *dir, FILE *out)
{
	kw_err err = KW_OK;
	mig_list files = {0};
	applied_list a = {0};
	bool exists = false;

	if (db == NULL || dir == NULL || out == NULL)
		kw_misuse("kw_migrate_status: NULL argument");
	err = list_files(dir, &files);
	if (err != KW_OK)
		goto done;
	err = table_exists(db, &exists);
	if (err == KW_OK && exists)
		err = read_applied(db, &a);
	if (err != KW_OK)
		goto done;
	for (size_t i = 0; i < files.n; i++) {
		const mig_applied *ap = find_applied(&a, files.v[i].version);
		const char *state = ap == NULL                                       ? "pending"
		                    : strcmp(ap->checksum, files.v[i].checksum) == 0 ? "applied"
		                                                                     : "changed";
		fprintf(out, "%04d %s %s\n", files.v[i].version, files.v[i].name, state);
	}
	for (size_t i = 0; i < a.n; i++) {
		bool have = false;
		for (size_t j = 0; j < files.n && !have; j++)
			have = files.v[j].version == a.v[i].version;
		if (!have)
			fprintf(out, "%04d %s applied (no file)\n", a.v[i].version, a.v[i].name);
	}
	if (fflush(out) != 0)
		err = KW_ERR_IO;
done:
	free(files.v);
	free(a.v);
	return err;
}

kw_err kw_migrate_current(kw_db *db, int *version)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	bool exists = false;
	int v = 0;

	if (db == NULL || version == NULL)
		kw_misuse("kw_migrate_current: NULL argument");
	err = table_exists(db, &exists);
	if (err != KW_OK || !exists)
		goto done;
	err = kw_db_exec(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, NULL, NULL,
	                 &res);
	if (err != KW_OK)
		goto done;
	v = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
done:
	PQclear(res);
	if (err == KW_OK)
		*version = v;
	return err;
}
