/* apikey.h — API keys: format, checksum, keyed hash, storage.
 *
 * Format: "kw_" + public id (12 base62) + "_" + secret (43 base62, 256
 * random bits from the token's RNG) + checksum (6 base62: the first 4 bytes
 * of SHA-256 over everything before it, as a big-endian number). A
 * mistyped key fails the checksum without touching the database. Secret
 * scanners match: kw_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}
 *
 * Only HMAC-SHA256(pepper, whole key), computed in the token, and the
 * pepper version are stored; the key itself is returned once, at creation.
 * The prefix "kw_<public id>" is stored in clear to find the row. */
#ifndef KEYWARD_APIKEY_H
#define KEYWARD_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/audit.h"
#include "keyward/db.h"
#include "keyward/error.h"
#include "keyward/hsm.h"

#define KW_APIKEY_LEN        65 /* 3 + 12 + 1 + 43 + 6 */
#define KW_APIKEY_PREFIX_LEN 15 /* "kw_" + 12 */
#define KW_APIKEY_MAX_NAME   128
#define KW_APIKEY_MAX_SCOPES 16

/* Known scopes. */
typedef enum kw_scope {
	KW_SCOPE_ADMIN = 1u << 0,
	KW_SCOPE_AUTH_ISSUE = 1u << 1,
	KW_SCOPE_TRANSIT_ENCRYPT = 1u << 2,
	KW_SCOPE_TRANSIT_DECRYPT = 1u << 3,
	KW_SCOPE_SECRETS_READ = 1u << 4,
	KW_SCOPE_SECRETS_WRITE = 1u << 5,
} kw_scope;
/* "admin" -> KW_SCOPE_ADMIN, ...; 0 for an unknown name. */
uint32_t kw_scope_from_name(const char *name);
/* Name of one scope bit; NULL if not exactly one known bit. */
const char *kw_scope_name(uint32_t bit);

/* A fresh key from the token's RNG into key (KW_APIKEY_LEN + 1 bytes, NUL
 * terminated); prefix receives its first KW_APIKEY_PREFIX_LEN characters. */
KW_MUST_CHECK kw_err kw_apikey_generate(kw_hsm_session *s, char key[KW_APIKEY_LEN + 1],
                                        char prefix[KW_APIKEY_PREFIX_LEN + 1]);
/* Checks length, alphabet, separators and checksum; no I/O. On success
 * writes the prefix. KW_ERR_INVALID otherwise. */
KW_MUST_CHECK kw_err kw_apikey_parse(const char *key, size_t len, char prefix[KW_APIKEY_PREFIX_LEN + 1]);
/* HMAC-SHA256 under the given pepper key, in the token. */
KW_MUST_CHECK kw_err kw_apikey_hmac(kw_hsm_session *s, const kw_hsm_key *pepper, const char *key, size_t len,
                                    unsigned char out[KW_HMAC_LEN]);

/* A stored key, as the service sees it. Never holds the key itself. */
typedef struct kw_apikey_row {
	char id[37];
	char tenant_id[37];
	char name[KW_APIKEY_MAX_NAME + 1];
	char prefix[KW_APIKEY_PREFIX_LEN + 1];
	unsigned char key_hmac[KW_HMAC_LEN];
	uint32_t pepper_version;
	uint32_t scopes;           /* kw_scope bits */
	int rate_limit_per_minute; /* 0 = the default */
	char created_at[40];       /* RFC 3339 UTC */
	char last_used_at[40];     /* "" if never */
	char revoked_at[40];       /* "" if active */
} kw_apikey_row;

/* Inserts a key (row->id, created_at are filled in) inside the caller's
 * transaction, which must be scoped to row->tenant_id. */
KW_MUST_CHECK kw_err kw_apikey_insert(kw_db *db, kw_apikey_row *row);
/* Finds the tenant of a prefix (the directory has no RLS: a prefix is
 * public). KW_ERR_NOT_FOUND if unknown or malformed (then without SQL).
 * Outside any transaction is fine. */
KW_MUST_CHECK kw_err kw_apikey_tenant_of(kw_db *db, const char *prefix, char tenant_id[37]);
/* Loads a key by prefix inside the caller's transaction, which must be
 * scoped to the key's tenant: kw_apikey_tenant_of, then kw_db_begin(db,
 * tenant, NULL), then this. KW_ERR_NOT_FOUND when no such key is visible.
 * The caller compares key_hmac (CRYPTO_memcmp) and checks revoked_at. */
KW_MUST_CHECK kw_err kw_apikey_get_by_prefix(kw_db *db, const char *prefix, kw_apikey_row *out);
/* Lists the tenant's keys (transaction scoped to the tenant), newest first;
 * *rows is malloc'd (never NULL on success, even when *n is 0). */
KW_MUST_CHECK kw_err kw_apikey_list(kw_db *db, kw_apikey_row **rows, size_t *n);
/* Revokes by id in the tenant's transaction. KW_ERR_NOT_FOUND when no such
 * key is visible (another tenant's, or none) or id is not a UUID (then
 * without SQL); revoking twice is KW_OK and keeps the first revoked_at.
 * Fills *out with the row after the change. */
KW_MUST_CHECK kw_err kw_apikey_revoke(kw_db *db, const char *id, kw_apikey_row *out);
/* Sets last_used_at = now() in the tenant's transaction (the caller
 * decides how rarely). KW_ERR_NOT_FOUND as for kw_apikey_revoke. */
KW_MUST_CHECK kw_err kw_apikey_touch(kw_db *db, const char *id);

#endif
