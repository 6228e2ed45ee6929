/* signature.h — HMAC request signing (DESIGN §5.6; src/auth/signature.c):
 * the secret's format, the strict parsing of the three headers, the
 * canonical string and its MAC, and the cache of verified keys.
 *
 * Headers: X-Timestamp (Unix milliseconds, decimal), X-Nonce (22-128 of
 * [A-Za-z0-9_-]) and X-Signature "kid=<uuid>;hmac-sha256=<64 lower hex>".
 * The MAC is HMAC-SHA256 keyed with the secret string's ASCII bytes over
 *   METHOD "\n" TARGET "\n" TIMESTAMP "\n" NONCE "\n" hex(SHA-256(body))
 * (TARGET the request target as sent, hex lower case, no trailing newline).
 * The secret: "kws_" + 43 base62 (256 bits from the token's RNG) + 6 base62
 * of checksum (the first 4 bytes of SHA-256 over what precedes it). */
#ifndef KEYWARD_SIGNATURE_H
#define KEYWARD_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"
#include "keyward/hsm/hsm.h"

#define KW_SIG_SECRET_LEN 53
#define KW_SIG_MAC_LEN    32
#define KW_SIG_WINDOW_MS  (5 * 60 * 1000)
#define KW_SIG_NONCE_MIN  22
#define KW_SIG_NONCE_MAX  128

typedef struct kw_sig_headers {
	int64_t ts_ms;
	char ts_text[24]; /* as sent (the canonical string uses it) */
	char nonce[KW_SIG_NONCE_MAX + 1];
	char kid[37]; /* lower case */
	unsigned char mac[KW_SIG_MAC_LEN];
} kw_sig_headers;

/* Parses the three values strictly; KW_ERR_INVALID for anything else (an
 * empty or missing value included). */
KW_MUST_CHECK kw_err kw_sig_parse(const char *ts, const char *nonce, const char *sig, kw_sig_headers *out);
/* The MAC of a request under secret. */
KW_MUST_CHECK kw_err kw_sig_mac(const unsigned char *secret, size_t secret_len, const char *method,
                                const char *target, const char *ts_text, const char *nonce,
                                const unsigned char *body, size_t body_len,
                                unsigned char out[KW_SIG_MAC_LEN]);
/* A fresh secret from the token's RNG (NUL-terminated). */
KW_MUST_CHECK kw_err kw_sig_secret_generate(kw_hsm_session *s, char out[KW_SIG_SECRET_LEN + 1]);
/* Format and checksum; no I/O. */
bool kw_sig_secret_ok(const char *secret, size_t len);

/* Verified keys by kid: their tenant, scopes, expiry and secret (in one
 * locked, undumpable slab, wiped when an entry goes), trusted for
 * ttl_s at most. Direct-mapped (a colliding key replaces the other).
 * Readers take the generation before the database and put with it; a put
 * after a drop or clear is ignored. Callers use it only while the change
 * feed is fresh. Thread-safe. */
typedef struct kw_sigkey {
	char tenant_id[37];
	char kid[37];
	uint32_t scopes;
	int rate_limit;     /* 0: the default */
	int64_t expires_at; /* Unix seconds; 0: none */
} kw_sigkey;
typedef struct kw_sigcache kw_sigcache;
kw_sigcache *kw_sigcache_new(size_t slots, int ttl_s);
void kw_sigcache_free(kw_sigcache *c);
uint64_t kw_sigcache_generation(kw_sigcache *c);
bool kw_sigcache_get(kw_sigcache *c, const char *kid, kw_sigkey *key,
                     unsigned char secret[KW_SIG_SECRET_LEN]);
void kw_sigcache_put(kw_sigcache *c, uint64_t gen, const kw_sigkey *key,
                     const unsigned char secret[KW_SIG_SECRET_LEN]);
void kw_sigcache_drop(kw_sigcache *c, const char *kid);
void kw_sigcache_clear(kw_sigcache *c);

#endif
