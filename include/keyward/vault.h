/* vault.h — per-user master keys, wrapped by the token's KEK (DESIGN §5.3).
 *
 * A master key (MK) is 32 bytes from the token's RNG. It is stored only
 * wrapped: AES-256-GCM in the token under KEK version kek_id, with a fresh
 * IV and AAD "keyward:v1:encryption-vault:<tenant>:<user>:<kek_id>", so a
 * blob copied into another row (user, tenant) or relabelled with another
 * KEK fails to unwrap. Plaintext MKs live in caller buffers only, which
 * the caller wipes with OPENSSL_cleanse.
 *
 * The row functions run inside the caller's transaction, which must be
 * scoped to the row's tenant and user (kw_db_begin(db, tenant, user)): the
 * table's RLS policy admits nothing else. */
#ifndef KEYWARD_VAULT_H
#define KEYWARD_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/audit.h"
#include "keyward/db.h"
#include "keyward/error.h"
#include "keyward/hsm.h"

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

/* The AAD of a row's blob; returns its length, 0 if cap is too small. */
size_t kw_vault_aad(char *buf, size_t cap, const char *tenant_id, const char *user_id, uint32_t kek_id);

/* A fresh MK from the token's RNG. */
KW_MUST_CHECK kw_err kw_vault_new_mk(kw_hsm_session *s, unsigned char mk[KW_MK_LEN]);
/* Wraps mk for row->tenant_id/user_id under the active KEK; fills the
 * rest of row. */
KW_MUST_CHECK kw_err kw_vault_wrap(kw_hsm *hsm, kw_hsm_session *s, const unsigned char mk[KW_MK_LEN],
                                   kw_vault_row *row);
/* Unwraps a row. KW_ERR_VERIFY: the blob does not belong to this row (or
 * was altered); KW_ERR_NOT_FOUND: its KEK is not in the token (retired;
 * a version made since this process last looked is found by re-reading
 * the token's keys, kw_hsm_key_get_fresh); KW_ERR_INVALID: an unknown
 * format_version. */
KW_MUST_CHECK kw_err kw_vault_unwrap(kw_hsm *hsm, kw_hsm_session *s, const kw_vault_row *row,
                                     unsigned char mk[KW_MK_LEN]);

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
/* One bounded transaction: locks up to batch rows not under the active KEK
 * and not set aside, unwraps each under its own KEK, wraps it under the
 * active one, updates it only if nobody changed it meanwhile, appends one
 * audit row (kek.rewrap) and commits. *done = rows re-wrapped, *skipped =
 * rows set aside by this batch; both 0 when none are left. A row whose tag
 * fails while its KEK passes a self-test is set aside (and logged); any
 * other failure keeps nothing of the batch. Safe to interrupt and re-run. */
KW_MUST_CHECK kw_err kw_vault_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit,
                                           size_t batch, size_t *done, size_t *skipped);
/* Rows still to do in this run: not under `active` and not set aside. */
KW_MUST_CHECK kw_err kw_vault_rewrap_left(kw_db *db, uint32_t active, long long *left);

/* Marks KEK version kek_id retired, so no row can be written under it
 * again, if and only if no row is wrapped under it: in one transaction
 * that blocks concurrent writers. KW_ERR_EXISTS with *rows > 0 otherwise
 * (nothing marked). Idempotent. The caller destroys the key afterwards. */
KW_MUST_CHECK kw_err kw_vault_kek_retire(kw_db *db, uint32_t kek_id, long long *rows);

#endif
