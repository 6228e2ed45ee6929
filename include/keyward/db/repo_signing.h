/* repo_signing.h — the signing_keys and signing_nonces rows (DESIGN §5.6,
 * migration 0013; src/db/repo_signing.c). Management runs in the caller's
 * transaction scoped to the tenant; the lookup by key id asks the
 * database which tenant holds it first (a SECURITY DEFINER function).
 * Wrapping the secrets is keyward/vault/signing.h's. */
#ifndef KEYWARD_REPO_SIGNING_H
#define KEYWARD_REPO_SIGNING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

#define KW_SIGNING_SECRET_LEN  53
#define KW_SIGNING_WRAPPED_LEN (KW_SIGNING_SECRET_LEN + KW_GCM_TAG_LEN)
#define KW_SIGNING_FORMAT      1
#define KW_SIGNING_NAME_MAX    128

typedef struct kw_signing_row {
	char tenant_id[37], id[37];
	char name[KW_SIGNING_NAME_MAX + 1];
	uint32_t scopes;
	int format_version;
	uint32_t kek_id;
	unsigned char wrapped[KW_SIGNING_WRAPPED_LEN];
	unsigned char iv[KW_GCM_IV_LEN];
	char created_at[32], expires_at[32], revoked_at[32]; /* "" when unset */
	int64_t expires_unix;                                /* 0: none */
	bool revoked;
	char replaced_by[37]; /* "" when none */
} kw_signing_row;

/* Inserts row (id chosen by the caller); fills created_at. */
KW_MUST_CHECK kw_err kw_signing_insert(kw_db *db, kw_signing_row *row);
/* Every key of the tenant (revoked ones too), newest first. *rows malloc'd. */
KW_MUST_CHECK kw_err kw_signing_list(kw_db *db, kw_signing_row **rows, size_t *n);
/* The key id, locked (for rotate and delete); KW_ERR_NOT_FOUND if none. */
KW_MUST_CHECK kw_err kw_signing_lock(kw_db *db, const char *id, kw_signing_row *row);
/* Revokes id at once. */
KW_MUST_CHECK kw_err kw_signing_revoke(kw_db *db, const char *id);
/* Ends id at now + overlap_s (keeping an earlier end), naming its successor. */
KW_MUST_CHECK kw_err kw_signing_expire(kw_db *db, const char *id, int overlap_s, const char *successor,
                                       char expires_at[32]);
/* The key kid wherever it is (its tenant from the database, then a scoped
 * read in one round trip): KW_ERR_NOT_FOUND if no such key. */
KW_MUST_CHECK kw_err kw_signing_lookup(kw_db *db, const char *kid, kw_signing_row *row);
/* Spends nonce for key kid until expires_unix (one round trip, its own
 * transaction, synchronous_commit off): KW_ERR_EXISTS when it was spent
 * before; a database error otherwise (never "spent"). */
KW_MUST_CHECK kw_err kw_signing_spend_nonce(kw_db *db, const char *kid, const char *nonce,
                                            int64_t expires_unix);

/* --- KEK maintenance (keywardctl, as the schema owner) --- */
KW_MUST_CHECK kw_err kw_signing_rewrap_start(kw_db *db);
KW_MUST_CHECK kw_err kw_signing_rewrap_lock(kw_db *db, uint32_t active, size_t batch, kw_signing_row **rows,
                                            size_t *n);
KW_MUST_CHECK kw_err kw_signing_set_aside(kw_db *db, const kw_signing_row *row);
KW_MUST_CHECK kw_err kw_signing_rewrap_update(kw_db *db, const kw_signing_row *fresh, uint32_t old_kek);
KW_MUST_CHECK kw_err kw_signing_rewrap_left(kw_db *db, uint32_t active, long long *left);

#endif
