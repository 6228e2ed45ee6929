/* db.h — one PostgreSQL connection, and transactions that carry RLS ids.
 *
 * A kw_db is owned by one thread. Every statement goes through libpq's
 * parameterised calls; no SQL is ever built from data. A tenant-scoped
 * transaction sets app.tenant_id (and app.user_id) with
 * set_config(..., true), so the settings die with the transaction; an empty
 * id is refused before any SQL is sent. */
#ifndef KEYWARD_DB_H
#define KEYWARD_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/core/text.h"

typedef struct kw_db kw_db;

/* Connects; KW_ERR_DB_UNAVAILABLE if the server does not answer. */
KW_MUST_CHECK kw_err kw_db_connect(const char *conninfo, kw_db **out);
void kw_db_close(kw_db *db);
/* The raw connection, for repository code in src/db and src/audit. */
PGconn *kw_db_conn(kw_db *db);
/* SELECT 1, reconnecting once if the connection was lost. */
KW_MUST_CHECK kw_err kw_db_ping(kw_db *db);
/* If the connection is bad, tries to reset it; KW_OK when usable. */
KW_MUST_CHECK kw_err kw_db_ensure(kw_db *db);

/* BEGIN, then set app.tenant_id / app.user_id when non-NULL. An empty
 * string is KW_ERR_INVALID and sends nothing. NULL tenant = system scope
 * (only tables without RLS, or rows with a NULL tenant). */
KW_MUST_CHECK kw_err kw_db_begin(kw_db *db, const char *tenant_id, const char *user_id);
KW_MUST_CHECK kw_err kw_db_commit(kw_db *db);
void kw_db_rollback(kw_db *db);
bool kw_db_in_tx(const kw_db *db);

/* Runs a parameterised statement; on success *out is the result (caller
 * PQclear()s it; may be NULL when out is NULL). Maps errors: unique
 * violation -> KW_ERR_EXISTS, serialization failure -> KW_ERR_CONFLICT,
 * connection loss -> KW_ERR_DB_UNAVAILABLE, undefined table ->
 * KW_ERR_NOT_FOUND, anything else -> KW_ERR_DB. The SQLSTATE and the
 * server's primary message are logged at warn, except the message of a
 * data exception (class 22), which can quote a parameter. */
KW_MUST_CHECK kw_err kw_db_exec(kw_db *db, const char *sql, int nparams, const char *const *values,
                                const int *lengths, const int *formats, PGresult **out);

/* One statement of a pipeline (see kw_db_exec_pipeline). */
typedef struct kw_db_stmt {
	const char *sql;
	int nparams;
	const char *const *values;
	const int *lengths;
	const int *formats;
} kw_db_stmt;

/* Sends n parameterised statements in libpq pipeline mode (one round trip)
 * inside the caller's transaction, and reads every answer. The first
 * failing statement decides the error (mapped as kw_db_exec); the ones
 * after it are skipped by the server. When results is non-NULL and the
 * call succeeds, results[i] is statement i's result (caller PQclear()s). */
KW_MUST_CHECK kw_err kw_db_exec_pipeline(kw_db *db, const kw_db_stmt *stmts, size_t n, PGresult **results);

/* Reading results without libpq: kw_db_result is libpq's PGresult, owned
 * by whoever received it and freed with kw_db_result_free (NULL is fine).
 * kw_db_value is NULL for an SQL NULL; kw_db_text is "" for one. */
typedef PGresult kw_db_result;
int kw_db_nrows(const kw_db_result *r);
int kw_db_ncols(const kw_db_result *r);
const char *kw_db_value(const kw_db_result *r, int row, int col);
const char *kw_db_text(const kw_db_result *r, int row, int col);
/* Rows an INSERT/UPDATE/DELETE touched, or -1 if the result says none. */
long long kw_db_affected(const kw_db_result *r);
void kw_db_result_free(kw_db_result *r);
/* Copies a text column into out (cap bytes; "" for NULL); false when it
 * does not fit. */
bool kw_db_copy_text(const kw_db_result *r, int row, int col, char *out, size_t cap);
/* A bytea column (text result) of exactly len bytes into out; false
 * otherwise. The unescaped copy is wiped. */
bool kw_db_bytea_exact(const kw_db_result *r, int row, int col, unsigned char *out, size_t len);
/* Every row of r, each read by read() into its own elem-sized slot of a
 * new array (*rows: malloc'd, never NULL on success, even for no rows; on
 * failure nothing is kept and what was read is wiped). */
KW_MUST_CHECK kw_err kw_db_rows_read(const kw_db_result *r, size_t elem,
                                     kw_err (*read)(const kw_db_result *r, int row, void *out), void **rows,
                                     size_t *n);
/* kw_db_exec, then kw_db_rows_read of its result. */
KW_MUST_CHECK kw_err kw_db_query_rows(kw_db *db, const char *sql, int nparams, const char *const *values,
                                      size_t elem, kw_err (*read)(const kw_db_result *r, int row, void *out),
                                      void **rows, size_t *n);
/* The statement that scopes the rest of a transaction to tenant and user
 * (both set; for pipelines that move between scopes). */
kw_db_stmt kw_db_stmt_scope(const char *const scope[2]);

/* Runs trusted SQL text with no parameters, possibly several statements
 * (PQexec). For migration files only: never pass text built from data. */
KW_MUST_CHECK kw_err kw_db_exec_script(kw_db *db, const char *sql);

/* Count of statements this process sent (for tests and /metrics). */
unsigned long long kw_db_statements(void);
/* Whether the connection's role escapes row-level security (a superuser,
 * or BYPASSRLS): the service's role must not. */
KW_MUST_CHECK kw_err kw_db_role_bypasses_rls(kw_db *db, bool *bypasses);

/* Rotations (src/db/repo_rotations.c; keywardctl, as the schema owner).
 * kw_db_try_lock takes the session-level advisory lock named name if it is
 * free (*got). kw_rotation_record notes that family moved from previous to
 * version (a version seen before starts its wait again); kw_rotation_wait
 * gives the seconds left until wait_s have passed since the rotation away
 * from previous (*known false when none is recorded). kw_rewrap_set_aside
 * calls each for up to max rows the session's rewrap run set aside. */
KW_MUST_CHECK kw_err kw_db_try_lock(kw_db *db, const char *name, bool *got);
KW_MUST_CHECK kw_err kw_rotation_record(kw_db *db, const char *family, uint32_t version, uint32_t previous);
KW_MUST_CHECK kw_err kw_rotation_wait(kw_db *db, const char *family, uint32_t previous, int64_t wait_s,
                                      bool *known, long long *wait);
KW_MUST_CHECK kw_err kw_rewrap_set_aside(kw_db *db, size_t max,
                                         void (*each)(void *arg, const char *tenant_id, const char *user_id),
                                         void *arg, size_t *listed);

/* Tenants (src/db/repo_tenants.c; as the schema owner). Inserts one in the
 * caller's transaction, scoped to that tenant: KW_ERR_EXISTS for a name
 * that is taken. */
KW_MUST_CHECK kw_err kw_tenant_insert(kw_db *db, const char *id, const char *name);
typedef struct kw_tenant_row {
	char id[37];
	char name[129];
	char created_at[40];
} kw_tenant_row;
/* All tenants, oldest first; *rows is malloc'd. Needs a role that bypasses
 * RLS (superuser, or the schema owner with BYPASSRLS): tenants FORCEs RLS,
 * so any other role sees no rows. */
KW_MUST_CHECK kw_err kw_tenant_list(kw_db *db, kw_tenant_row **rows, size_t *n);

#endif
