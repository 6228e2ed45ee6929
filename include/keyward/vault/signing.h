/* signing.h — custody of signing-key secrets (DESIGN §5.6;
 * src/vault/signing.c): wrapped by the token's KEK (AES-256-GCM in the
 * token, AAD "keyward:v1:signing-key:<tenant>:<kid>:<kek_id>"), unwrapped
 * only into the caller's locked memory, and re-wrapped by kek rewrap. */
#ifndef KEYWARD_VAULT_SIGNING_H
#define KEYWARD_VAULT_SIGNING_H

#include "keyward/audit/audit.h"
#include "keyward/db/repo_signing.h"
#include "keyward/hsm/hsm.h"

/* Wraps secret (KW_SIGNING_SECRET_LEN bytes) for row->tenant_id / id under
 * the active KEK: fills kek_id, wrapped, iv, format_version. */
KW_MUST_CHECK kw_err kw_signing_wrap(kw_hsm *hsm, kw_hsm_session *s, const unsigned char *secret,
                                     kw_signing_row *row);
/* Unwraps row's secret into secret (locked memory of the caller, at least
 * KW_SIGNING_SECRET_LEN bytes). KW_ERR_VERIFY: not this row's; KW_ERR_NOT_FOUND:
 * its KEK is gone. */
KW_MUST_CHECK kw_err kw_signing_unwrap(kw_hsm *hsm, kw_hsm_session *s, const kw_signing_row *row,
                                       unsigned char *secret);
/* One bounded transaction of `kek rewrap` over signing keys. */
KW_MUST_CHECK kw_err kw_signing_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit,
                                             size_t batch, size_t *done, size_t *skipped);

#endif
