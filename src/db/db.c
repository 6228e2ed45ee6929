/* db.c — one PostgreSQL connection per worker, and RLS-carrying transactions.
 *
 * Every statement with data goes through a prepared statement with
 * parameters (PQprepare once per connection, then PQexecPrepared or, in
 * pipeline mode, PQsendQueryPrepared): no SQL is ever built from data. The one
 * exception, kw_db_exec_script, runs trusted migration files that have no
 * parameters. Transactions set app.tenant_id / app.user_id with
 * set_config(..., true) so the settings die with the transaction; ids are
 * checked before anything is sent. Errors are mapped from SQLSTATE once,
 * here; the server's primary message is logged, never a parameter value.
 * A kw_db is owned by one thread; only the statement counter is shared. */
#include "keyward/db/db.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"

#define SQL_SCOPE_BOTH "SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true)"

#define KW_DB_MAX_USER_ID 256

/* Statements are prepared once per connection (named kw<n>) and then
 * executed by name: the server parses and plans each text once instead of
 * on every request. Keyed by the SQL text; lost, and forgotten, when the
 * connection is reset. Beyond the cap, texts run unprepared. */
#define KW_DB_PREPARED_MAX 96

typedef struct kw_prepared {
	char *sql;
	char name[16];
} kw_prepared;

struct kw_db {
	PGconn *conn;
	kw_prepared prepared[KW_DB_PREPARED_MAX];
	size_t nprepared;
};

static void forget_prepared(kw_db *db)
{
	for (size_t i = 0; i < db->nprepared; i++)
		free(db->prepared[i].sql);
	db->nprepared = 0;
}

static kw_err map_error(kw_db *db, const PGresult *res);

/* The name of sql's prepared statement, preparing it now if needed; NULL
 * to run it unprepared (cache full). *err is set when preparing failed. */
static const char *prepared_name(kw_db *db, const char *sql, int nparams, kw_err *err)
{
	*err = KW_OK;
	for (size_t i = 0; i < db->nprepared; i++)
		if (strcmp(db->prepared[i].sql, sql) == 0)
			return db->prepared[i].name;
	if (db->nprepared == KW_DB_PREPARED_MAX)
		return NULL;
	kw_prepared *p = &db->prepared[db->nprepared];
	snprintf(p->name, sizeof(p->name), "kw%zu", db->nprepared);
	PGresult *res = PQprepare(db->conn, p->name, sql, nparams, NULL);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
		*err = map_error(db, res);
		PQclear(res);
		return NULL;
	}
	PQclear(res);
	if ((p->sql = strdup(sql)) == NULL) {
		/* Prepared but untracked: the name is never reused, so harmless. */
		*err = KW_OK;
		return NULL;
	}
	db->nprepared++;
	return p->name;
}

static atomic_ullong kw_db_stmt_count;

unsigned long long kw_db_statements(void)
{
	return atomic_load(&kw_db_stmt_count);
}

static void count_statements(unsigned long long n)
{
	atomic_fetch_add(&kw_db_stmt_count, n);
}

/* Server notices (e.g. "already exists, skipping") are chatter. */
static void notice_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

kw_err kw_db_connect(const char *conninfo, kw_db **out)
{
	kw_err err = KW_OK;
	kw_db *db = NULL;

	if (conninfo == NULL || out == NULL)
		kw_misuse("kw_db_connect: NULL argument");
	db = calloc(1, sizeof(*db));
	if (db == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	db->conn = PQconnectdb(conninfo);
	if (db->conn == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	if (PQstatus(db->conn) != CONNECTION_OK) {
		/* libpq's connection errors name host and role, never a password. */
		kw_warn("db: connection failed: %s", PQerrorMessage(db->conn));
		err = KW_ERR_DB_UNAVAILABLE;
		goto done;
	}
	PQsetNoticeProcessor(db->conn, notice_quiet, NULL);
	*out = db;
	db = NULL;
done:
	kw_db_close(db);
	return err;
}

void kw_db_close(kw_db *db)
{
	if (db == NULL)
		return;
	if (db->conn != NULL)
		PQfinish(db->conn);
	forget_prepared(db);
	free(db);
}

PGconn *kw_db_conn(kw_db *db)
{
	return db->conn;
}

kw_err kw_db_ensure(kw_db *db)
{
	if (PQstatus(db->conn) == CONNECTION_OK)
		return KW_OK;
	kw_info("db: connection lost, reconnecting");
	PQreset(db->conn);
	forget_prepared(db);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		kw_warn("db: reconnect failed: %s", PQerrorMessage(db->conn));
		return KW_ERR_DB_UNAVAILABLE;
	}
	kw_info("db: reconnected");
	return KW_OK;
}

/* Maps a failed result (or its absence) to a kw_err and logs it. */
static kw_err map_error(kw_db *db, const PGresult *res)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	kw_err err = KW_ERR_DB;

	if (state == NULL)
		state = "";
	if (PQstatus(db->conn) == CONNECTION_BAD || strncmp(state, "08", 2) == 0 ||
	    strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0)
		err = KW_ERR_DB_UNAVAILABLE;
	else if (strcmp(state, "23505") == 0)
		err = KW_ERR_EXISTS;
	else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
		err = KW_ERR_CONFLICT;
	else if (strcmp(state, "42P01") == 0)
		err = KW_ERR_NOT_FOUND;
	else if (strcmp(state, "KWKEK") == 0) /* a row under a retired KEK (0005, 0006) */
		err = KW_ERR_NOT_FOUND;
	/* KWISO (a vault write outside READ COMMITTED, 0006) stays KW_ERR_DB:
	 * keyward never begins one, so it is a fault, not an answer. */

	if (res == NULL) {
		kw_warn("db: no result: %s", PQerrorMessage(db->conn));
	} else if (strncmp(state, "22", 2) == 0) {
		/* Data exceptions may quote the offending input: keep it out. */
		kw_warn("db: statement failed: SQLSTATE %s (data exception)", state);
	} else {
		kw_warn("db: statement failed: SQLSTATE %s: %s", state[0] != '\0' ? state : "none",
		        msg != NULL ? msg : PQerrorMessage(db->conn));
	}
	return err;
}

static bool result_ok(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

kw_err kw_db_exec(kw_db *db, const char *sql, int nparams, const char *const *values, const int *lengths,
                  const int *formats, PGresult **out)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;

	if (db == NULL || sql == NULL || nparams < 0 || (nparams > 0 && values == NULL))
		kw_misuse("kw_db_exec: bad arguments");
	count_statements(1);
	const char *name = prepared_name(db, sql, nparams, &err);
	if (err != KW_OK)
		goto done;
	res = name ? PQexecPrepared(db->conn, name, nparams, values, lengths, formats, 0)
	           : PQexecParams(db->conn, sql, nparams, NULL, values, lengths, formats, 0);
	if (res == NULL || !result_ok(res)) {
		err = map_error(db, res);
		goto done;
	}
	if (out != NULL) {
		*out = res;
		res = NULL;
	}
done:
	PQclear(res);
	return err;
}

kw_err kw_db_exec_script(kw_db *db, const char *sql)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;

	if (db == NULL || sql == NULL)
		kw_misuse("kw_db_exec_script: NULL argument");
	count_statements(1);
	res = PQexec(db->conn, sql);
	if (res == NULL || !result_ok(res)) {
		err = map_error(db, res);
		goto done;
	}
done:
	PQclear(res);
	return err;
}

kw_err kw_db_exec_pipeline(kw_db *db, const kw_db_stmt *stmts, size_t n, PGresult **results)
{
	kw_err err = KW_OK;
	PGresult **got = NULL;
	size_t sent = 0, i = 0;

	if (db == NULL || (n > 0 && stmts == NULL))
		kw_misuse("kw_db_exec_pipeline: bad arguments");
	if (n == 0)
		return KW_OK;
	got = calloc(n, sizeof(*got));
	const char **names = calloc(n, sizeof(*names));
	if (got == NULL || names == NULL) {
		free(got);
		free(names);
		return KW_ERR_NOMEM;
	}
	/* Preparing is synchronous; it happens once per text and connection. */
	for (i = 0; i < n && err == KW_OK; i++)
		names[i] = prepared_name(db, stmts[i].sql, stmts[i].nparams, &err);
	i = 0;
	if (err != KW_OK)
		goto done;
	if (PQenterPipelineMode(db->conn) != 1) {
		err = map_error(db, NULL);
		goto done;
	}
	for (sent = 0; sent < n; sent++) {
		const kw_db_stmt *st = &stmts[sent];
		int ok = names[sent] ? PQsendQueryPrepared(db->conn, names[sent], st->nparams, st->values,
		                                           st->lengths, st->formats, 0)
		                     : PQsendQueryParams(db->conn, st->sql, st->nparams, NULL, st->values,
		                                         st->lengths, st->formats, 0);
		if (ok != 1)
			break;
	}
	count_statements(sent);
	if (PQpipelineSync(db->conn) != 1) {
		err = map_error(db, NULL);
		goto leave;
	}
	/* Results arrive in order, each query's followed by a NULL, then the
	 * sync. Aborted queries (after a failure) answer PIPELINE_ABORTED. */
	for (;;) {
		PGresult *res = PQgetResult(db->conn);
		if (res == NULL) {
			if (PQstatus(db->conn) != CONNECTION_OK || ++i > sent)
				break;
			continue;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (i < sent && got[i] == NULL)
			got[i] = res;
		else
			PQclear(res);
	}
	for (i = 0; i < sent && err == KW_OK; i++) {
		if (got[i] == NULL)
			err = map_error(db, NULL);
		else if (!result_ok(got[i]))
			err = map_error(db, got[i]);
	}
	if (err == KW_OK && sent < n)
		err = map_error(db, NULL);
leave:
	if (PQexitPipelineMode(db->conn) != 1) {
		/* Results are still queued: a later statement must never read
		 * them as its own, so the connection starts over. */
		kw_warn("db: a pipeline was left unfinished; reconnecting");
		PQreset(db->conn);
		forget_prepared(db);
		err = KW_ERR_DB_UNAVAILABLE;
	}
	if (err != KW_OK)
		goto done;
	if (results != NULL) {
		for (i = 0; i < n; i++) {
			results[i] = got[i];
			got[i] = NULL;
		}
	}
done:
	for (i = 0; i < n; i++)
		PQclear(got[i]);
	free(got);
	free(names);
	return err;
}

static bool user_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > KW_DB_MAX_USER_ID)
		return false;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	}
	return true;
}

#define SQL_BEGIN "BEGIN ISOLATION LEVEL READ COMMITTED"

kw_err kw_db_begin(kw_db *db, const char *tenant_id, const char *user_id)
{
	kw_err err = KW_OK;
	const char *vals[2];
	int nvals = 0;
	const char *sql = NULL;
	char tenant[37];

	if (db == NULL)
		kw_misuse("kw_db_begin: NULL db");
	if (tenant_id != NULL && !kw_is_uuid(tenant_id))
		return KW_ERR_INVALID;
	if (tenant_id != NULL) {
		/* The database prints uuids in lowercase; policies compare text. */
		for (size_t i = 0; i <= 36; i++)
			tenant[i] = (char)tolower((unsigned char)tenant_id[i]);
		tenant_id = tenant;
	}
	if (user_id != NULL && !user_id_ok(user_id))
		return KW_ERR_INVALID;
	if (kw_db_in_tx(db))
		kw_misuse("kw_db_begin: a transaction is already open on this connection");

	if (tenant_id != NULL && user_id != NULL) {
		sql = SQL_SCOPE_BOTH;
		vals[nvals++] = tenant_id;
		vals[nvals++] = user_id;
	} else if (tenant_id != NULL) {
		sql = "SELECT set_config('app.tenant_id', $1, true)";
		vals[nvals++] = tenant_id;
	} else if (user_id != NULL) {
		sql = "SELECT set_config('app.user_id', $1, true)";
		vals[nvals++] = user_id;
	}

	/* READ COMMITTED whatever default_transaction_isolation says: the row
	 * locks, conditional updates and the KEK guard (0006) are written for
	 * it, and each statement must see what committed before it ran. */
	if (sql == NULL)
		return kw_db_exec(db, SQL_BEGIN, 0, NULL, NULL, NULL, NULL);
	/* BEGIN and the RLS settings in one round trip. */
	kw_db_stmt stmts[2] = {{SQL_BEGIN, 0, NULL, NULL, NULL}, {sql, nvals, vals, NULL, NULL}};
	err = kw_db_exec_pipeline(db, stmts, 2, NULL);
	if (err != KW_OK && kw_db_in_tx(db))
		kw_db_rollback(db);
	return err;
}

kw_err kw_db_commit(kw_db *db)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;

	err = kw_db_exec(db, "COMMIT", 0, NULL, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	/* COMMIT of a failed transaction "succeeds" as ROLLBACK. */
	if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		kw_warn("db: COMMIT answered %s: the transaction had failed", PQcmdStatus(res));
		err = KW_ERR_DB;
		goto done;
	}
done:
	PQclear(res);
	return err;
}

void kw_db_rollback(kw_db *db)
{
	if (db == NULL || PQstatus(db->conn) != CONNECTION_OK || !kw_db_in_tx(db))
		return;
	kw_err err = kw_db_exec(db, "ROLLBACK", 0, NULL, NULL, NULL, NULL);
	if (err != KW_OK)
		kw_warn("db: ROLLBACK failed: %s", kw_err_str(err));
}

bool kw_db_in_tx(const kw_db *db)
{
	PGTransactionStatusType st = PQtransactionStatus(db->conn);
	return st == PQTRANS_INTRANS || st == PQTRANS_INERROR || st == PQTRANS_ACTIVE;
}

kw_err kw_db_ping(kw_db *db)
{
	kw_err err = kw_db_ensure(db);
	if (err != KW_OK)
		return err;
	err = kw_db_exec(db, "SELECT 1", 0, NULL, NULL, NULL, NULL);
	if (err == KW_ERR_DB_UNAVAILABLE) {
		/* The server may have dropped us while idle: one fresh try. */
		err = kw_db_ensure(db);
		if (err == KW_OK)
			err = kw_db_exec(db, "SELECT 1", 0, NULL, NULL, NULL, NULL);
	}
	return err;
}

int kw_db_nrows(const kw_db_result *r)
{
	return r != NULL ? PQntuples(r) : 0;
}

int kw_db_ncols(const kw_db_result *r)
{
	return r != NULL ? PQnfields(r) : 0;
}

const char *kw_db_value(const kw_db_result *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

const char *kw_db_text(const kw_db_result *r, int row, int col)
{
	return PQgetvalue(r, row, col);
}

long long kw_db_affected(const kw_db_result *r)
{
	const char *n = r != NULL ? PQcmdTuples((PGresult *)r) : "";
	return n[0] != '\0' ? strtoll(n, NULL, 10) : -1;
}

void kw_db_result_free(kw_db_result *r)
{
	PQclear(r);
}

kw_db_stmt kw_db_stmt_scope(const char *const scope[2])
{
	return (kw_db_stmt){SQL_SCOPE_BOTH, 2, scope, NULL, NULL};
}

bool kw_db_copy_text(const kw_db_result *r, int row, int col, char *out, size_t cap)
{
	if (PQgetisnull(r, row, col)) {
		out[0] = '\0';
		return true;
	}
	size_t n = (size_t)PQgetlength(r, row, col);
	if (n >= cap)
		return false;
	memcpy(out, PQgetvalue(r, row, col), n);
	out[n] = '\0';
	return true;
}

kw_err kw_db_rows_read(const kw_db_result *r, size_t elem,
                       kw_err (*read)(const kw_db_result *r, int row, void *out), void **rows, size_t *n)
{
	size_t count = (size_t)kw_db_nrows(r);
	unsigned char *list = calloc(count > 0 ? count : 1, elem);
	kw_err err = list != NULL ? KW_OK : KW_ERR_NOMEM;
	for (size_t i = 0; i < count && err == KW_OK; i++)
		err = read(r, (int)i, list + i * elem);
	if (err != KW_OK) {
		if (list != NULL)
			OPENSSL_cleanse(list, count * elem);
		free(list);
		return err;
	}
	*rows = list;
	*n = count;
	return KW_OK;
}

kw_err kw_db_query_rows(kw_db *db, const char *sql, int nparams, const char *const *values, size_t elem,
                        kw_err (*read)(const kw_db_result *r, int row, void *out), void **rows, size_t *n)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, sql, nparams, values, NULL, NULL, &res);
	if (err == KW_OK)
		err = kw_db_rows_read(res, elem, read, rows, n);
	PQclear(res);
	return err;
}

kw_err kw_db_role_bypasses_rls(kw_db *db, bool *bypasses)
{
	PGresult *res = NULL;
	kw_err err = kw_db_exec(
	    db, "SELECT (rolsuper OR rolbypassrls)::text FROM pg_roles WHERE rolname = current_user", 0, NULL,
	    NULL, NULL, &res);
	if (err == KW_OK && (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)))
		err = KW_ERR_DB;
	if (err == KW_OK)
		*bypasses = strcmp(PQgetvalue(res, 0, 0), "true") == 0;
	PQclear(res);
	return err;
}

bool kw_db_bytea_exact(const kw_db_result *r, int row, int col, unsigned char *out, size_t len)
{
	size_t n = 0;
	unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
	bool ok = b != NULL && n == len;
	if (ok)
		memcpy(out, b, len);
	if (b != NULL) {
		OPENSSL_cleanse(b, n);
		PQfreemem(b);
	}
	return ok;
}
