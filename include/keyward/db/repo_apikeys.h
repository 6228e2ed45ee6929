/* repo_apikeys.h — the api_keys table and its prefix directory
 * (src/db/repo_apikeys.c). A row never holds a key: only its prefix,
 * HMAC(pepper, key) and the pepper's version. Key format and hashing are
 * keyward/apikey.h's. */
#ifndef KEYWARD_REPO_APIKEYS_H
#define KEYWARD_REPO_APIKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/core/scopes.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

#define KW_APIKEY_LEN        65 /* 3 + 12 + 1 + 43 + 6 */
#define KW_APIKEY_PREFIX_LEN 15 /* "kw_" + 12 */
#define KW_APIKEY_MAX_NAME   128
#define KW_APIKEY_MAX_SCOPES 16

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
