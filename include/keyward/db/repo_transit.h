/* repo_transit.h — the transit_keys and transit_key_versions tables
 * (src/db/repo_transit.c; migration 0010). Every call runs in the
 * caller's transaction scoped to the key's tenant. */
#ifndef KEYWARD_REPO_TRANSIT_H
#define KEYWARD_REPO_TRANSIT_H

#include <stdint.h>

#include "keyward/db/db.h"

#define KW_TRANSIT_NAME_MAX 64

typedef struct kw_transit_key_row {
	char name[KW_TRANSIT_NAME_MAX + 1];
	char type[16]; /* "aes256-gcm" / "aes256-siv" */
	uint32_t latest_version, min_decryption_version;
	char created_at[32], updated_at[32];
	/* Of the version a lookup asked for (kw_transit_key_version): */
	uint32_t version, derive_version;
} kw_transit_key_row;

/* [A-Za-z0-9_.-]{1,64}. */
bool kw_transit_name_ok(const char *name);
/* A new key at version 1 derived from derive_version; KW_ERR_EXISTS for a
 * name the tenant has. Fills row. */
KW_MUST_CHECK kw_err kw_transit_key_create(kw_db *db, const char *tenant_id, const char *name,
                                           const char *type, uint32_t derive_version,
                                           kw_transit_key_row *row);
/* The key and one of its versions (0: the latest), with the version's
 * derivation root; KW_ERR_NOT_FOUND for no such key or version. */
KW_MUST_CHECK kw_err kw_transit_key_version(kw_db *db, const char *tenant_id, const char *name,
                                            uint32_t version, kw_transit_key_row *row);
/* Every key of the tenant, by name (malloc'd array). */
KW_MUST_CHECK kw_err kw_transit_key_list(kw_db *db, const char *tenant_id, kw_transit_key_row **rows,
                                         size_t *n);
/* Version latest + 1, derived from derive_version; locks the key. */
KW_MUST_CHECK kw_err kw_transit_key_rotate(kw_db *db, const char *tenant_id, const char *name,
                                           uint32_t derive_version, kw_transit_key_row *row);
/* Sets min_decryption_version (1..latest_version; KW_ERR_INVALID else). */
KW_MUST_CHECK kw_err kw_transit_key_config(kw_db *db, const char *tenant_id, const char *name, uint32_t min,
                                           kw_transit_key_row *row);

/* Decryptable transit key versions (version >= its key's
 * min_decryption_version) of every tenant derived from derive_version:
 * what `keywardctl derive retire` waits for. Needs a role that sees every
 * tenant (the schema owner with BYPASSRLS). */
KW_MUST_CHECK kw_err kw_transit_versions_using(kw_db *db, uint32_t derive_version, long long *n);

#endif
