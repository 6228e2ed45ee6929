/* jwt.h — ES256 JSON Web Tokens: signing in the token, verification in
 * process, RFC 7638 key ids, JWKS.
 *
 * Parsing is strict: exactly three base64url parts without padding, a
 * header whose alg is ES256 (nothing else, never "none" or an HMAC), a kid
 * naming one of the given public keys, a 64-byte r || s signature, and a
 * JSON object payload. Claims (exp, nbf, revocation) are checked by the
 * caller. */
#ifndef KEYWARD_JWT_H
#define KEYWARD_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/core/text.h"
#include "keyward/hsm/hsm.h"

#define KW_JWT_MAX_LEN 8192
#define KW_JWK_KID_LEN 43 /* base64url of a SHA-256 */

/* A public verification key. */
typedef struct kw_jwt_key {
	char kid[KW_JWK_KID_LEN + 1];
	unsigned char point[KW_EC_POINT_LEN]; /* 0x04 || x || y */
	uint32_t version;                     /* keyward/jwt/<version> */
	void *pkey; /* OpenSSL EVP_PKEY once prepared; NULL: built per verification */
} kw_jwt_key;

/* Builds key->pkey so verifications need not (a prepared key may be used
 * by many threads at once); release frees it. */
KW_MUST_CHECK kw_err kw_jwt_key_prepare(kw_jwt_key *key);
void kw_jwt_key_release(kw_jwt_key *key);

/* RFC 7638 thumbprint of a P-256 public point: the kid. */
KW_MUST_CHECK kw_err kw_jwk_thumbprint(const unsigned char point[KW_EC_POINT_LEN],
                                       char kid[KW_JWK_KID_LEN + 1]);
/* Fills key from the token's public half of k. */
KW_MUST_CHECK kw_err kw_jwt_key_from_hsm(kw_hsm *hsm, const kw_hsm_key *k, kw_jwt_key *out);

/* Signs claims (a JSON object) with k; *out is a malloc'd compact JWS. */
KW_MUST_CHECK kw_err kw_jwt_sign(kw_hsm_session *s, const kw_hsm_key *k, const char *kid, json_t *claims,
                                 char **out);
/* The same with the payload already serialised (a JSON object's text). */
KW_MUST_CHECK kw_err kw_jwt_sign_text(kw_hsm_session *s, const kw_hsm_key *k, const char *kid,
                                      const char *payload, size_t len, char **out);
/* Verifies signature and shape against keys; on success *claims is the
 * payload object (caller json_decref()s). KW_ERR_INVALID for a malformed
 * token, KW_ERR_VERIFY for an unknown kid or a bad signature. */
KW_MUST_CHECK kw_err kw_jwt_verify(const char *token, size_t len, const kw_jwt_key *keys, size_t nkeys,
                                   json_t **claims);

/* {"keys":[{kty, crv, x, y, kid, alg, use}...]} as a malloc'd string. */
char *kw_jwks_json(const kw_jwt_key *keys, size_t nkeys);

#endif
