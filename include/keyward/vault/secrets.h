/* secrets.h — sealing and opening the values of the secrets store
 * (DESIGN §5.7; src/vault/secrets.c). The rows are
 * keyward/db/repo_secrets.h's.
 *
 * Each version has its own data key: 32 bytes from the token's RNG, held
 * only in locked memory. The value is AES-256-GCM under it in process
 * (IV from OpenSSL's DRBG; AAD "keyward:v1:secret-value:<tenant>:<secret>:
 * <version>"), and the data key is AES-256-GCM under the active KEK in the
 * token (AAD "keyward:v1:secret:<tenant>:<secret>:<version>:<kek_id>").
 * A version copied into another secret, version or tenant, or altered,
 * fails to open. Values and data keys are wiped after use, never logged. */
#ifndef KEYWARD_VAULT_SECRETS_H
#define KEYWARD_VAULT_SECRETS_H

#include "keyward/audit/audit.h"
#include "keyward/core/secret.h"
#include "keyward/db/repo_secrets.h"
#include "keyward/hsm/hsm.h"

/* Seals value (at most KW_SECRET_VALUE_MAX bytes) as version of secret id
 * of tenant into v (v->value_ct malloc'd; kw_secret_version_clear). */
KW_MUST_CHECK kw_err kw_secrets_seal(kw_hsm *hsm, kw_hsm_session *s, const char *tenant_id, const char *id,
                                     uint32_t version, const unsigned char *value, size_t len,
                                     kw_secret_version *v);
/* Opens v: its value in a new locked secret (*out; a value of 0 bytes is
 * a secret of length 0 ... held as 1 byte truncated to 0). KW_ERR_VERIFY:
 * the row does not belong where it is, or was altered (the KEK itself is
 * sound); KW_ERR_NOT_FOUND: its KEK is not in the token; KW_ERR_INVALID:
 * an unknown format. */
KW_MUST_CHECK kw_err kw_secrets_open(kw_hsm *hsm, kw_hsm_session *s, const kw_secret_version *v,
                                     kw_secret **out);

/* One bounded transaction of `kek rewrap` over secret versions (after
 * kw_secrets_rewrap_start): as kw_vault_rewrap_batch, the data key alone
 * is re-wrapped (the value's ciphertext does not change). */
KW_MUST_CHECK kw_err kw_secrets_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit,
                                             size_t batch, size_t *done, size_t *skipped);

#endif
