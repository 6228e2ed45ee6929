/* repo_vaults.h — the encryption_vaults rows (src/db/repo_vaults.c).
 *
 * The service's row functions run inside the caller's transaction, which
 * must be scoped to the row's tenant and user (kw_db_begin(db, tenant,
 * user)): the table's RLS policy admits nothing else. The KEK maintenance
 * functions are keywardctl's, on the schema owner's connection. Wrapping
 * and unwrapping are keyward/vault.h's. */
#ifndef KEYWARD_REPO_VAULTS_H
#define KEYWARD_REPO_VAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

#define KW_MK_LEN            32
#define KW_VAULT_WRAPPED_LEN (KW_MK_LEN + KW_GCM_TAG_LEN)
#define KW_VAULT_FORMAT      1
#define KW_VAULT_USER_MAX    256
#define KW_VAULT_PURPOSE     "encryption-vault"

typedef struct kw_vault_row {
	char tenant_id[37];
	char user_id[KW_VAULT_USER_MAX + 1];
	unsigned char wrapped[KW_VAULT_WRAPPED_LEN];
	unsigned char iv[KW_GCM_IV_LEN];
	int format_version;
	uint32_t kek_id;
} kw_vault_row;

/* The row of tenant/user (copied into row), KW_ERR_NOT_FOUND if none;
 * for_update locks it until the transaction ends. */
KW_MUST_CHECK kw_err kw_vault_get(kw_db *db, const char *tenant_id, const char *user_id, bool for_update,
                                  kw_vault_row *row);
/* One round trip with its own transaction: BEGIN, scope, SELECT, COMMIT.
 * For reads that need no lock. */
KW_MUST_CHECK kw_err kw_vault_fetch(kw_db *db, const char *tenant_id, const char *user_id, kw_vault_row *row);
/* n reads in one round trip, each in its own transaction scoped to its
 * own tenant and user (so row-level security applies to each as it does
 * to kw_vault_fetch). errs[i] is what kw_vault_fetch would have returned
 * for tenant_ids[i]/user_ids[i]; rows[i] is filled when it is KW_OK. */
void kw_vault_fetch_many(kw_db *db, size_t n, const char *const *tenant_ids, const char *const *user_ids,
                         kw_vault_row *rows, kw_err *errs);
/* Inserts a new row; KW_ERR_EXISTS if the user has one already (this
 * waits for a concurrent insert of the same user to commit or abort). */
KW_MUST_CHECK kw_err kw_vault_insert(kw_db *db, const kw_vault_row *row);
/* Replaces the blob of an existing row (rotation); sets rotated_at. */
KW_MUST_CHECK kw_err kw_vault_replace(kw_db *db, const kw_vault_row *row);

/* KEK maintenance, for keywardctl on the schema owner's connection (the
 * service's role cannot see other users' rows). */
/* KW_OK when this connection's role sees and may re-wrap every vault row
 * in maintenance mode (superuser; or, outside keyward_app, BYPASSRLS or
 * the table owner's privileges, with SELECT and UPDATE on the table);
 * KW_ERR_CONFIG otherwise, so that no count or rewrap silently reads an
 * empty table. (retire also needs INSERT on kek_retired.) */
KW_MUST_CHECK kw_err kw_vault_maintenance_check(kw_db *db);
/* Rows wrapped under KEK version kek_id (or, with kek_id 0, under any
 * version but `except`). */
KW_MUST_CHECK kw_err kw_vault_count_kek(kw_db *db, uint32_t kek_id, uint32_t except, long long *count);

/* A rewrap run: rows that do not unwrap under their own KEK are set aside
 * in a temporary table of the session, so one bad row cannot stop the
 * others. kw_vault_rewrap_start creates (or empties) it. */
KW_MUST_CHECK kw_err kw_vault_rewrap_start(kw_db *db);
/* Begins a maintenance transaction and locks up to batch rows that are
 * not under KEK `active` and not set aside (rows a request holds are
 * skipped, not waited for); *rows is malloc'd (the caller wipes and frees
 * it). The transaction stays open for the caller. */
KW_MUST_CHECK kw_err kw_vault_rewrap_lock(kw_db *db, uint32_t active, size_t batch, kw_vault_row **rows,
                                          size_t *n);
/* Sets a row aside for the rest of the run (in the open transaction). */
KW_MUST_CHECK kw_err kw_vault_set_aside(kw_db *db, const kw_vault_row *row);
/* Writes a re-wrapped row over the one still under old_kek;
 * KW_ERR_CONFLICT if that row changed. */
KW_MUST_CHECK kw_err kw_vault_rewrap_update(kw_db *db, const kw_vault_row *fresh, uint32_t old_kek);
/* Rows still to do in this run: not under `active` and not set aside. */
KW_MUST_CHECK kw_err kw_vault_rewrap_left(kw_db *db, uint32_t active, long long *left);

/* Marks KEK version kek_id retired, so no row can be written under it
 * again, if and only if no row is wrapped under it: in one transaction
 * that blocks concurrent writers. KW_ERR_EXISTS with *rows > 0 otherwise
 * (nothing marked). Idempotent. The caller destroys the key afterwards. */
KW_MUST_CHECK kw_err kw_vault_kek_retire(kw_db *db, uint32_t kek_id, long long *rows);

/* count(*) of a KEK-maintenance query (app.kek_maintenance declared), in
 * its own read-only transaction, one round trip. */
KW_MUST_CHECK kw_err kw_db_maint_count(kw_db *db, const char *sql, int n, const char *const *vals,
                                       long long *count);

#endif
