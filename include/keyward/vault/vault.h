/* vault.h — per-user master keys, wrapped by the token's KEK (DESIGN §5.3).
 *
 * A master key (MK) is 32 bytes from the token's RNG. It is stored only
 * wrapped: AES-256-GCM in the token under KEK version kek_id, with a fresh
 * IV and AAD "keyward:v1:encryption-vault:<tenant>:<user>:<kek_id>", so a
 * blob copied into another row (user, tenant) or relabelled with another
 * KEK fails to unwrap. Plaintext MKs live in caller buffers only, which
 * the caller wipes with OPENSSL_cleanse. The rows themselves are
 * keyward/repo_vaults.h's. */
#ifndef KEYWARD_VAULT_H
#define KEYWARD_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/audit/audit.h"
#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/db/repo_vaults.h"
#include "keyward/hsm/hsm.h"

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

/* After a tag failure under kek: whether the KEK itself round-trips a
 * block of its own. KW_ERR_VERIFY: it does, so the row is at fault;
 * KW_ERR_HSM (or the token's error): the token is at fault (logged). */
KW_MUST_CHECK kw_err kw_kek_self_test(kw_hsm_session *s, const kw_hsm_key *kek);

/* One bounded transaction of a rewrap run (after kw_vault_rewrap_start): locks up to batch rows not under the
 * active KEK and not set aside, unwraps each under its own KEK, wraps it under the active one, updates it
 * only if nobody changed it meanwhile, appends one audit row (kek.rewrap) and commits. *done = rows
 * re-wrapped, *skipped = rows set aside by this batch; both 0 when none are left. A row whose tag fails while
 * its KEK passes a self-test is set aside (and logged); any other failure keeps nothing of the batch. Safe to
 * interrupt and re-run. */
KW_MUST_CHECK kw_err kw_vault_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit,
                                           size_t batch, size_t *done, size_t *skipped);

/* One kind of row the KEK wraps, as a `kek rewrap` batch treats it: lock
 * up to batch rows not under the active KEK (an array of row_size
 * elements, malloc'd), re-wrap one locked row and store it (KW_ERR_VERIFY,
 * KW_ERR_INVALID or KW_ERR_NOT_FOUND: it does not unwrap, set it aside;
 * KW_ERR_CONFLICT: a rotation ran meanwhile), set one aside (and log it),
 * and clear one (may be NULL; rows are wiped anyway). */
typedef struct kw_rewrap_kind {
	const char *target; /* the kek.rewrap audit row's target */
	size_t row_size;
	kw_err (*lock)(kw_db *db, uint32_t active, size_t batch, void **rows, size_t *n);
	kw_err (*rewrap)(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, void *row, uint32_t active);
	kw_err (*set_aside)(kw_db *db, const void *row, kw_err why);
	void (*clear)(void *row);
} kw_rewrap_kind;
/* One bounded transaction of a rewrap run over rows of kind k (after its
 * start): see kw_vault_rewrap_batch. */
KW_MUST_CHECK kw_err kw_rewrap_run(const kw_rewrap_kind *k, kw_hsm *hsm, kw_hsm_session *s, kw_db *db,
                                   kw_audit_chain *audit, size_t batch, size_t *done, size_t *skipped);

/* The end of one rewrap batch (vaults or secret versions) whose work
 * ended in err: one kek.rewrap audit row naming target and the counts
 * (status partial when rows were set aside) when anything moved, then
 * commit or roll back; the counts are zeroed when nothing held. */
KW_MUST_CHECK kw_err kw_kek_rewrap_end(kw_audit_chain *audit, kw_hsm_session *s, kw_db *db, kw_err err,
                                       uint32_t kek, const char *target, size_t *done, size_t *skipped);

#endif
