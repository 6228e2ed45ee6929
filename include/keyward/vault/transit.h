/* transit.h — the ciphertexts of transit encryption (DESIGN §5.5).
 *
 * Values are sealed in process with a key derived in the token (HKDF from
 * keyward/derive/<m>) that the caller holds in locked memory; this module
 * never derives, stores or logs a key. Two types:
 *   AES-256-GCM, randomized: "$enc1$v<n>$<iv 12 B>$<ciphertext>$<tag 16 B>"
 *   AES-256-SIV, deterministic (RFC 5297): "$det1$v<n>$<siv 16 B>$<ciphertext>"
 * each part standard base64 with padding, canonical. The optional context
 * is GCM's AAD, or SIV's one associated-data component: a value sealed
 * with a context opens only with the same one. All crypto is OpenSSL's EVP
 * (AES-256-GCM, AES-256-SIV). */
#ifndef KEYWARD_TRANSIT_H
#define KEYWARD_TRANSIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"

#define KW_TRANSIT_GCM_KEY       32
#define KW_TRANSIT_SIV_KEY       64
#define KW_TRANSIT_GCM_IV        12
#define KW_TRANSIT_TAG           16
#define KW_TRANSIT_MAX_PLAINTEXT (64 * 1024)

typedef enum kw_transit_type {
	KW_TRANSIT_AES256_GCM, /* "aes256-gcm" */
	KW_TRANSIT_AES256_SIV, /* "aes256-siv" */
} kw_transit_type;

/* "aes256-gcm" / "aes256-siv"; false for anything else. */
bool kw_transit_type_parse(const char *s, kw_transit_type *out);
const char *kw_transit_type_name(kw_transit_type t);
/* Bytes of key material the type needs (32 or 64). */
size_t kw_transit_key_len(kw_transit_type t);

/* A parsed ciphertext string. iv is GCM's 12-byte IV or SIV's 16-byte
 * synthetic IV; tag is GCM's (NULL for SIV). Views into buf. */
typedef struct kw_transit_ct {
	kw_transit_type type;
	uint32_t version;
	unsigned char *buf; /* the decoded parts, malloc'd */
	const unsigned char *iv, *ct, *tag;
	size_t ctlen;
} kw_transit_ct;

/* Parses s[0..len): KW_ERR_INVALID for anything but a well-formed string
 * (prefix, "v" and a version 1..2^31-1 without leading zeros, canonical
 * base64 parts of the right sizes, a ciphertext of at most
 * KW_TRANSIT_MAX_PLAINTEXT bytes, not empty for SIV). */
KW_MUST_CHECK kw_err kw_transit_parse(const char *s, size_t len, kw_transit_ct *out);
void kw_transit_ct_free(kw_transit_ct *c);

/* Seals pt[0..ptlen) (at most KW_TRANSIT_MAX_PLAINTEXT; empty only for
 * GCM: OpenSSL 3.0's AES-SIV computes no tag over an empty message, so
 * an empty SIV plaintext is KW_ERR_INVALID, and so is its string)
 * under key (kw_transit_key_len(t) bytes) as version's string (malloc'd,
 * into *out). GCM uses iv (12 random bytes the caller drew); SIV ignores
 * it. ctx may be NULL (no context) or ctxlen bytes. */
KW_MUST_CHECK kw_err kw_transit_seal(kw_transit_type t, uint32_t version, const unsigned char *key,
                                     const unsigned char iv[KW_TRANSIT_GCM_IV], const unsigned char *ctx,
                                     size_t ctxlen, const unsigned char *pt, size_t ptlen, char **out);
/* A key made ready for sealing many values (a GCM context keyed once):
 * key must stay valid (and unchanged) until the sealer is freed. NULL when
 * out of memory. */
typedef struct kw_transit_sealer kw_transit_sealer;
kw_transit_sealer *kw_transit_sealer_new(kw_transit_type t, const unsigned char *key);
void kw_transit_sealer_free(kw_transit_sealer *s);
/* kw_transit_seal with the sealer's type and key. */
KW_MUST_CHECK kw_err kw_transit_seal_with(kw_transit_sealer *s, uint32_t version,
                                          const unsigned char iv[KW_TRANSIT_GCM_IV], const unsigned char *ctx,
                                          size_t ctxlen, const unsigned char *pt, size_t ptlen, char **out);

/* Opens c under key: the plaintext (malloc'd, *ptlen bytes; the caller
 * wipes and frees it). KW_ERR_VERIFY for any failure — wrong key or
 * context, tampering — never saying which. */
KW_MUST_CHECK kw_err kw_transit_open(const kw_transit_ct *c, const unsigned char *key,
                                     const unsigned char *ctx, size_t ctxlen, unsigned char **pt,
                                     size_t *ptlen);

/* AES-256-GCM in process (EVP), for values sealed under a data key (the
 * secrets store): enc seals len bytes of in into out and tag; otherwise
 * opens in into out with tag, KW_ERR_VERIFY on any mismatch. */
KW_MUST_CHECK kw_err kw_aes256_gcm(bool enc, const unsigned char key[32],
                                   const unsigned char iv[KW_TRANSIT_GCM_IV], const unsigned char *aad,
                                   size_t aadlen, const unsigned char *in, size_t len, unsigned char *out,
                                   unsigned char tag[KW_TRANSIT_TAG]);

/* AES-SIV (RFC 5297) as the service uses it, for the RFC's vectors: key of
 * 32 (AES-128-SIV) or 64 bytes (AES-256-SIV), nad associated-data
 * components. ct has ptlen bytes (at least 1: OpenSSL 3.0 refuses an empty
 * message, KW_ERR_INTERNAL). open: KW_ERR_VERIFY when siv does not
 * verify (ct then holds nothing usable). */
KW_MUST_CHECK kw_err kw_aes_siv_seal(const unsigned char *key, size_t keylen, const unsigned char *const *ad,
                                     const size_t *adlen, size_t nad, const unsigned char *pt, size_t ptlen,
                                     unsigned char siv[16], unsigned char *ct);
KW_MUST_CHECK kw_err kw_aes_siv_open(const unsigned char *key, size_t keylen, const unsigned char *const *ad,
                                     const size_t *adlen, size_t nad, const unsigned char siv[16],
                                     const unsigned char *ct, size_t ctlen, unsigned char *pt);

#endif
