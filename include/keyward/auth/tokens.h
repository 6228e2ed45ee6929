/* tokens.h — access tokens (ES256 JWTs) and refresh-token families.
 *
 * Access tokens are signed in the token (C_Sign with the active
 * keyward/jwt/<n>) and verified in process against every JWT key still in
 * the token (the JWKS), with no HSM call. Their claims are iss, sub, tid,
 * role, permissions, iat, nbf, exp, jti (128-bit hex) and sid (the refresh
 * family). A bounded cache remembers verified tokens, keyed by SHA-256 of
 * the whole token, each entry dropped at its exp.
 *
 * Refresh tokens are base64url(tenant id (16 bytes) || 32 random bytes from
 * the token's RNG): the tenant prefix lets the row be found under its
 * tenant's row-level security, the random part is the secret. Only
 * HMAC(pepper, token) is stored. */
#ifndef KEYWARD_TOKENS_H
#define KEYWARD_TOKENS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/auth/jwt.h"
#include "keyward/core/config.h"
#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/db/sessions.h"
#include "keyward/hsm/hsm.h"

#define KW_PERMISSIONS_MAX  512 /* JSON array text */
#define KW_REFRESH_RAND_LEN 32
#define KW_REFRESH_TEXT_LEN 64 /* base64url of 48 bytes */
#define KW_ROLES_MAX        32

/* Roles: "name ttl [permission ...], ..." e.g.
 * "track1 12h vault:read vault:write, track4 1h vault:read". */
typedef struct kw_role {
	char name[KW_ROLE_MAX + 1];
	int64_t ttl_s;
	char permissions[KW_PERMISSIONS_MAX]; /* compact JSON array */
} kw_role;
typedef struct kw_roles {
	kw_role roles[KW_ROLES_MAX];
	size_t n;
} kw_roles;
KW_MUST_CHECK kw_err kw_roles_parse(const char *text, kw_roles *out);
const kw_role *kw_roles_find(const kw_roles *r, const char *name);

/* The verification keys: every keyward/jwt/<n> in the token, prepared for
 * in-process verification. Thread-safe; refresh after a rotation. */
typedef struct kw_jwt_keyset kw_jwt_keyset;
KW_MUST_CHECK kw_err kw_jwt_keyset_load(kw_hsm *hsm, kw_jwt_keyset **out);
void kw_jwt_keyset_free(kw_jwt_keyset *ks);
/* Re-reads the token's keys (kw_hsm_keys_refresh) and rebuilds the set;
 * at most once per min_interval_ms (0: always). */
KW_MUST_CHECK kw_err kw_jwt_keyset_refresh(kw_jwt_keyset *ks, kw_hsm *hsm, int min_interval_ms);
/* The JWKS document, malloc'd. */
char *kw_jwt_keyset_jwks(kw_jwt_keyset *ks);
/* The active (highest) version's kid, and its version. */
KW_MUST_CHECK kw_err kw_jwt_keyset_active(kw_jwt_keyset *ks, char kid[KW_JWK_KID_LEN + 1], uint32_t *version);
/* Changes whenever a key leaves the set (retirement): cached verdicts
 * from an older generation are not trusted. */
uint64_t kw_jwt_keyset_generation(kw_jwt_keyset *ks);
/* kw_jwt_verify against the set. */
KW_MUST_CHECK kw_err kw_jwt_keyset_verify(kw_jwt_keyset *ks, const char *token, size_t len, json_t **claims);

/* The claims keyward puts in and accepts from an access token. */
typedef struct kw_access_claims {
	char sub[KW_SUBJECT_MAX + 1];
	char tid[37];
	char role[KW_ROLE_MAX + 1];
	char permissions[KW_PERMISSIONS_MAX];
	char jti[33];
	char sid[37];
	int64_t iat, nbf, exp;
} kw_access_claims;
/* Strict reading of a verified payload: every claim present with its type,
 * iss equal to issuer, tid and sid UUIDs, jti 32 lower-case hex, sub of
 * 1..256 bytes. KW_ERR_INVALID otherwise. Time is not checked here. */
KW_MUST_CHECK kw_err kw_access_claims_read(json_t *payload, const char *issuer, const char *audience,
                                           kw_access_claims *out);
/* True when the claims' permissions array holds exactly `permission`. */
bool kw_access_permits(const kw_access_claims *c, const char *permission);
/* Signs an access token for c (jti, iat, nbf, exp filled by the caller)
 * with the active JWT key. *token is malloc'd. */
KW_MUST_CHECK kw_err kw_access_token_sign(kw_hsm_session *s, kw_hsm *hsm, kw_jwt_keyset *ks,
                                          const char *issuer, const char *audience, const kw_access_claims *c,
                                          char **token);

/* Verified tokens by SHA-256 of the token; bounded, entries die at exp
 * and when the key set's generation moves on. */
typedef struct kw_tokcache kw_tokcache;
kw_tokcache *kw_tokcache_new(size_t capacity);
void kw_tokcache_free(kw_tokcache *c);
bool kw_tokcache_get(kw_tokcache *c, const unsigned char hash[32], int64_t now, uint64_t generation,
                     kw_access_claims *out);
void kw_tokcache_put(kw_tokcache *c, const unsigned char hash[32], uint64_t generation,
                     const kw_access_claims *claims);

/* Refresh tokens. */
/* A fresh token for tenant: text (KW_REFRESH_TEXT_LEN + 1 bytes). */
KW_MUST_CHECK kw_err kw_refresh_generate(kw_hsm_session *s, const char *tenant_id,
                                         char text[KW_REFRESH_TEXT_LEN + 1]);
/* Parses a presented token: the tenant it names. KW_ERR_INVALID if the
 * shape is wrong (no I/O). */
KW_MUST_CHECK kw_err kw_refresh_parse(const char *text, size_t len, char tenant_id[37]);

/* A jti (128 random bits, hex) and a sid (a UUID), from the token's RNG (through the session's pool, so
 * usually without a token call). sid may be NULL. */
KW_MUST_CHECK kw_err kw_random_ids(kw_hsm_session *s, char jti[33], char sid[37]);

#endif
