/* keyward-sign.h — sign requests for keyward (HMAC request signing,
 * DESIGN 5.6). A small library of its own: OpenSSL only, nothing of the
 * server. Link with `pkg-config --libs keyward-sign`.
 *
 * A signed request carries three headers:
 *   X-Timestamp: Unix time in milliseconds
 *   X-Nonce:     22-128 characters of [A-Za-z0-9_-], never reused with a key
 *   X-Signature: kid=<key id>;hmac-sha256=<64 lower-case hex>
 * where the HMAC-SHA256, keyed with the secret string's ASCII bytes, is over
 *   METHOD "\n" TARGET "\n" TIMESTAMP "\n" NONCE "\n" hex(SHA-256(body))
 * (TARGET: path and query exactly as sent; no trailing newline). */
#ifndef KEYWARD_SIGN_H
#define KEYWARD_SIGN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keyward_sign_headers {
	char timestamp[24];  /* X-Timestamp */
	char nonce[129];     /* X-Nonce */
	char signature[160]; /* X-Signature */
} keyward_sign_headers;

/* Signs a request. secret: the key's secret as shown at creation ("kws_…",
 * 53 characters; its checksum is checked). now_ms: 0 for the clock; nonce:
 * NULL for a fresh random one (32 characters). Returns 0, or -1 for a
 * malformed kid, secret or nonce, or a failure of OpenSSL. */
int keyward_sign(const char *kid, const char *secret, const char *method, const char *target,
                 const unsigned char *body, size_t body_len, int64_t now_ms, const char *nonce,
                 keyward_sign_headers *out);

/* The canonical string the signature covers, into buf (cap bytes): its
 * length, or -1 when it does not fit. For checking a signer of another
 * language against docs/signing.md's vectors. */
long keyward_sign_canonical(const char *method, const char *target, const char *timestamp, const char *nonce,
                            const unsigned char *body, size_t body_len, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
