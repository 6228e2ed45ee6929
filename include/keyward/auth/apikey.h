/* apikey.h — API keys: format, checksum, keyed hash (rows: repo_apikeys.h).
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

#include "keyward/core/error.h"
#include "keyward/db/repo_apikeys.h"
#include "keyward/hsm/hsm.h"

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

/* Who a verified API key is. */
typedef struct kw_principal {
	char tenant_id[37];
	char key_id[37];
	char prefix[16];
	uint32_t scopes; /* kw_scope bits */
	char actor[48];  /* "api_key:<prefix>" or "sigkey:<kid>" for audit rows */
} kw_principal;

/* Verified API keys, keyed by SHA-256 of the key, trusted for
 * auth.key_cache_ttl_ms; the key itself is never kept. */
typedef struct kw_keycache kw_keycache;
kw_keycache *kw_keycache_new(size_t capacity);
void kw_keycache_free(kw_keycache *c);
/* Drops every entry of this prefix (after a revocation). */
void kw_keycache_forget(kw_keycache *c, const char *prefix);
/* Drops every entry (the change feed restarted). */
void kw_keycache_clear(kw_keycache *c);
/* Looks the key (by hash) up; true when it was verified less than ttl
 * seconds ago (then *p and *rate_limit are set). *touched_at is the last
 * touch time of the entry (0 when absent), so a refresh keeps it. */
bool kw_keycache_get(kw_keycache *c, const unsigned char hash[32], double now, double ttl, kw_principal *p,
                     int *rate_limit, double *touched_at);
void kw_keycache_put(kw_keycache *c, const unsigned char hash[32], double now, double touched_at,
                     const kw_principal *p, int rate_limit);
/* Records that last_used_at was written at now. */
void kw_keycache_touched(kw_keycache *c, const unsigned char hash[32], double now);

#endif
