/* repo_secrets.h — the secrets and secret_versions rows (DESIGN §5.7,
 * migration 0012; src/db/repo_secrets.c).
 *
 * The service's functions run in the caller's transaction scoped to the
 * tenant (kw_db_begin(db, tenant, NULL)), except kw_secrets_fetch, which
 * is one scoped read-only transaction of its own in one round trip. The
 * KEK maintenance functions are keywardctl's, on the schema owner's
 * connection. Sealing and opening are keyward/vault/secrets.h's. */
#ifndef KEYWARD_REPO_SECRETS_H
#define KEYWARD_REPO_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

#define KW_SECRET_NAME_MAX    256
#define KW_SECRET_CTYPE_MAX   255
#define KW_SECRET_VALUE_MAX   65536
#define KW_SECRET_DK_LEN      32
#define KW_SECRET_WRAPPED_LEN (KW_SECRET_DK_LEN + KW_GCM_TAG_LEN)
#define KW_SECRET_FORMAT      1

/* A secret as listed: its latest version. */
typedef struct kw_secret_meta {
	char id[37];
	char name[KW_SECRET_NAME_MAX + 1];
	char content_type[KW_SECRET_CTYPE_MAX + 1];
	uint32_t version; /* the latest (a fetch: the one read) */
	char created_at[32];
} kw_secret_meta;

/* One version as stored: the data key wrapped by KEK kek_id, the value
 * sealed under the data key. */
typedef struct kw_secret_version {
	char tenant_id[37];
	char secret_id[37];
	uint32_t version;
	int format_version;
	uint32_t kek_id;
	unsigned char wrapped_dk[KW_SECRET_WRAPPED_LEN];
	unsigned char dk_iv[KW_GCM_IV_LEN];
	unsigned char value_iv[KW_GCM_IV_LEN];
	unsigned char *value_ct; /* malloc'd: value_len bytes of ciphertext and the 16-byte tag */
	size_t value_len;
} kw_secret_version;

void kw_secret_version_clear(kw_secret_version *v);

/* [A-Za-z0-9_./-]{1,256}. */
bool kw_secret_name_ok(const char *name);

/* Creates secret meta->id (a fresh uuid the caller drew) named meta->name
 * with version 1 (v, whose ids must match); KW_ERR_EXISTS for a name the
 * tenant has. Fills meta->created_at. */
KW_MUST_CHECK kw_err kw_secrets_create(kw_db *db, kw_secret_meta *meta, const kw_secret_version *v);
/* Locks the secret and reads it (meta, its latest version): for a new
 * version. KW_ERR_NOT_FOUND if there is none. */
KW_MUST_CHECK kw_err kw_secrets_lock(kw_db *db, const char *tenant_id, const char *id, kw_secret_meta *meta);
/* Adds version v (latest + 1, after kw_secrets_lock) and makes it the
 * latest; fills meta (version, created_at). */
KW_MUST_CHECK kw_err kw_secrets_add_version(kw_db *db, const kw_secret_version *v, kw_secret_meta *meta);
/* Up to limit secrets by name after the name after ("" = from the start);
 * *more when there are others. *items: malloc'd. */
KW_MUST_CHECK kw_err kw_secrets_list(kw_db *db, const char *tenant_id, size_t limit, const char *after,
                                     kw_secret_meta **items, size_t *n, bool *more);
/* Deletes the secret and all its versions; KW_ERR_NOT_FOUND if none. */
KW_MUST_CHECK kw_err kw_secrets_delete(kw_db *db, const char *tenant_id, const char *id,
                                       char name[KW_SECRET_NAME_MAX + 1]);
/* Reads version (0: the latest) of secret id of tenant in one read-only
 * transaction (BEGIN, scope, SELECT, COMMIT in one round trip).
 * KW_ERR_NOT_FOUND: no such secret or version. */
KW_MUST_CHECK kw_err kw_secrets_fetch(kw_db *db, const char *tenant_id, const char *id, uint32_t version,
                                      kw_secret_meta *meta, kw_secret_version *v);

/* Fetches queued together: each its own read-only transaction scoped to
 * its own tenant, all in one round trip. errs[i] as kw_secrets_fetch's. */
typedef struct kw_secret_ask {
	const char *tenant_id, *id;
	uint32_t version;
} kw_secret_ask;
void kw_secrets_fetch_many(kw_db *db, size_t n, const kw_secret_ask *ask, kw_secret_meta *metas,
                           kw_secret_version *vs, kw_err *errs);

/* --- KEK maintenance (keywardctl, as the schema owner) --- */
/* Versions under a KEK other than active not yet set aside this run, up
 * to batch, locked (SKIP LOCKED) in a transaction the caller ends. */
KW_MUST_CHECK kw_err kw_secrets_rewrap_start(kw_db *db);
KW_MUST_CHECK kw_err kw_secrets_rewrap_lock(kw_db *db, uint32_t active, size_t batch,
                                            kw_secret_version **rows, size_t *n);
KW_MUST_CHECK kw_err kw_secrets_set_aside(kw_db *db, const kw_secret_version *v);
/* Stores the re-wrapped data key of fresh if the row is still under old_kek. */
KW_MUST_CHECK kw_err kw_secrets_rewrap_update(kw_db *db, const kw_secret_version *fresh, uint32_t old_kek);
KW_MUST_CHECK kw_err kw_secrets_rewrap_left(kw_db *db, uint32_t active, long long *left);

#endif
