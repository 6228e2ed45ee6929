/* sessions.h — refresh families, refresh tokens, revocations and wallet
 * nonces in PostgreSQL (migration 0003).
 *
 * Every function runs inside the caller's transaction, scoped to the
 * tenant (kw_db_begin(db, tenant, NULL)), except kw_sessions_purge, which
 * opens its own. Times come back as Unix seconds from the database's clock.
 * No token is ever passed here: only its HMAC. */
#ifndef KEYWARD_SESSIONS_H
#define KEYWARD_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

#define KW_SUBJECT_MAX 256 /* bytes of a subject (sub) */
#define KW_ROLE_MAX    64
/* A session's user agent, as stored: valid UTF-8, at most this many
 * characters (kw_utf8_clean), so at most KW_SESSION_UA_MAX bytes. */
#define KW_SESSION_UA_CHARS 256
#define KW_SESSION_UA_MAX   (4 * KW_SESSION_UA_CHARS + 1)

typedef struct kw_family_new {
	const char *id; /* a fresh UUID: the sid of the family's access tokens */
	const char *tenant_id;
	const char *subject;
	const char *role;
	int64_t absolute_ttl_s, sliding_ttl_s;
	const char *ip, *user_agent; /* may be NULL; the user agent as the request sent it */
	const unsigned char *token_hmac;
	uint32_t pepper_id;
	const char *minted_by; /* the API key that started it (a delegated login), or NULL */
} kw_family_new;

/* Inserts a family and its first refresh token in one statement. */
KW_MUST_CHECK kw_err kw_family_create(kw_db *db, const kw_family_new *f, int64_t *absolute_exp,
                                      int64_t *sliding_exp);

/* The same insert as a statement for kw_audit_writer_log_with (the new
 * session and its audit row share the writer's group commit), with the
 * expiry times given. out holds the parameter texts; keep it alive until
 * the statement has run. */
typedef struct kw_family_stmt {
	char abs[24], sl[24], pep[24], ua[KW_SESSION_UA_MAX];
	const char *vals[11];
	int lens[11], fmts[11];
	kw_db_stmt stmt;
} kw_family_stmt;
void kw_family_stmt_build(const kw_family_new *f, int64_t absolute_exp, int64_t sliding_exp,
                          kw_family_stmt *out);

typedef struct kw_refresh_row {
	char id[37], family_id[37];
	char subject[KW_SUBJECT_MAX + 1];
	char role[KW_ROLE_MAX + 1];
	bool used;           /* marked used by an earlier refresh */
	double used_ago_s;   /* seconds since used_at */
	bool has_used_child; /* a later token of the family was used too */
	bool family_revoked;
	char revoke_reason[65];
	int64_t sliding_exp, absolute_exp, issued_at, now;
} kw_refresh_row;

/* Finds a refresh token by HMAC and locks it and its family (FOR UPDATE)
 * until the transaction ends. KW_ERR_NOT_FOUND if none is visible. */
KW_MUST_CHECK kw_err kw_refresh_lock(kw_db *db, const unsigned char hmac[KW_HMAC_LEN], kw_refresh_row *out);
/* The same without a lock (introspection). */
KW_MUST_CHECK kw_err kw_refresh_find(kw_db *db, const unsigned char hmac[KW_HMAC_LEN], kw_refresh_row *out);
/* Marks parent used (keeping an earlier used_at), touches the family and
 * inserts the child token. */
KW_MUST_CHECK kw_err kw_refresh_rotate(kw_db *db, const char *tenant_id, const kw_refresh_row *parent,
                                       const unsigned char child_hmac[KW_HMAC_LEN], uint32_t pepper_id,
                                       int64_t sliding_ttl_s, int64_t *sliding_exp);

/* Revokes a family (refresh tokens by its flag, access tokens by a sid
 * revocation that lives access_ttl_max_s). *newly: it was live before.
 * Unknown or invisible family: KW_OK with *newly false. */
KW_MUST_CHECK kw_err kw_family_revoke(kw_db *db, const char *family_id, const char *reason,
                                      int64_t access_ttl_max_s, bool *newly, int64_t *revocation_exp);
/* Revokes every live family of subject; *sids (malloc'd, 37 bytes each)
 * and *n list them. */
KW_MUST_CHECK kw_err kw_family_revoke_subject(kw_db *db, const char *tenant_id, const char *subject,
                                              const char *reason, int64_t access_ttl_max_s, char (**sids)[37],
                                              size_t *n, int64_t *revocation_exp);
/* The same for every live family that API key key_id started (its
 * delegated logins), when the key is revoked. */
KW_MUST_CHECK kw_err kw_family_revoke_minted_by(kw_db *db, const char *tenant_id, const char *key_id,
                                                const char *reason, int64_t access_ttl_max_s,
                                                char (**sids)[37], size_t *n, int64_t *revocation_exp);
/* Revokes one access token by jti until its exp (idempotent). */
KW_MUST_CHECK kw_err kw_jti_revoke(kw_db *db, const char *tenant_id, const char *subject, const char *jti,
                                   int64_t exp, const char *reason);

typedef struct kw_session_row {
	char id[37];
	char created_at[40], last_used_at[40], absolute_expires_at[40];
	char ip[64];
	char user_agent[KW_SESSION_UA_MAX];
} kw_session_row;
/* The subject's live families, newest first; *rows malloc'd. */
KW_MUST_CHECK kw_err kw_sessions_list(kw_db *db, const char *subject, kw_session_row **rows, size_t *n);

/* Wallet nonces. Replaces any outstanding nonce of (tenant, address). */
KW_MUST_CHECK kw_err kw_nonce_put(kw_db *db, const char *tenant_id, const char *address, const char *nonce,
                                  int64_t ttl_s, int64_t *expires_at);
typedef enum kw_nonce_state {
	KW_NONCE_OK = 0,  /* matched, unused, unexpired: now consumed */
	KW_NONCE_UNKNOWN, /* no nonce for the address, or another one */
	KW_NONCE_REUSED,  /* matched but already consumed */
	KW_NONCE_EXPIRED, /* matched but past its expiry (now consumed) */
} kw_nonce_state;
/* Consumes the nonce if it matches (constant-time compare); the consumption
 * commits with the caller's transaction whatever happens next.
 * *expires_at receives the stored expiry (for rebuilding the message). */
KW_MUST_CHECK kw_err kw_nonce_take(kw_db *db, const char *tenant_id, const char *address, const char *nonce,
                                   kw_nonce_state *state, int64_t *expires_at);
/* True if the tenant exists (inside a transaction scoped to it). */
KW_MUST_CHECK kw_err kw_tenant_exists(kw_db *db, const char *tenant_id, bool *exists);

/* Housekeeping: deletes dead rows (expired revocations, nonces, refresh
 * tokens, and families expired or revoked a day ago) in statements of at
 * most batch rows, repeating up to max_rounds per table. Opens its own
 * transactions. */
typedef struct kw_purge_counts {
	uint64_t revocations, nonces, tokens, families, changes, signing_nonces;
} kw_purge_counts;
KW_MUST_CHECK kw_err kw_sessions_purge(kw_db *db, int batch, int max_rounds, kw_purge_counts *out);

/* The subject's refreshes (rotations, on every instance) in the last
 * minute, and the age of the oldest, in the caller's transaction scoped to
 * the tenant; takes a transaction-scoped lock on the subject first, so
 * concurrent refreshes of one subject are counted one after another. */
KW_MUST_CHECK kw_err kw_refresh_recent(kw_db *db, const char *tenant_id, const char *subject, int *count,
                                       int *oldest_age_s);

/* Unix seconds as RFC 3339 UTC ("2026-11-22T10:00:00Z"). */
void kw_time_rfc3339(int64_t t, char out[32]);

#endif
