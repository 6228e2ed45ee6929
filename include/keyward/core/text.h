/* text.h — small text codecs every layer uses: hex, UUIDs, base64url.
 *
 * Pure functions: no allocation beyond what they say, no I/O, nothing
 * secret-specific (callers wipe their own buffers). Standard base64 comes
 * from OpenSSL (EVP_EncodeBlock); base64url here is built on it. */
#ifndef KEYWARD_TEXT_H
#define KEYWARD_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "keyward/core/error.h"

/* 0-15 for a hex digit of either case, -1 for anything else. */
int kw_hex_value(char c);
/* n bytes from the 2n hex digits (either case) at hex into out; false on
 * anything that is not a hex digit (out may be partly written). */
bool kw_hex_decode(const char *hex, size_t n, unsigned char *out);
/* 2n lower-case hex digits and a NUL into out (2n + 1 bytes). */
void kw_hex_encode(const unsigned char *in, size_t n, char *out);
/* Exactly n lower-case hex digits, and nothing after them. */
bool kw_is_lower_hex(const char *s, size_t n);
/* 8-4-4-4-12 hex digits (either case), exactly 36 characters. */
bool kw_is_uuid(const char *s);
/* The 16 bytes of a UUID in text form; false if it is not one. */
bool kw_uuid_parse(const char *s, unsigned char out[16]);
/* 16 bytes as a lower-case UUID (36 characters and a NUL). */
void kw_uuid_format(const unsigned char b[16], char out[37]);
/* A random version-4 UUID / 128 random bits as 32 lower-case hex digits,
 * from OpenSSL's RNG (ids, not secrets). */
KW_MUST_CHECK kw_err kw_random_uuid(char out[37]);
KW_MUST_CHECK kw_err kw_random_hex128(char out[33]);

/* base64url without padding (RFC 4648 §5) into out (4 * ceil(len / 3) + 1
 * bytes); returns the length written, NUL not counted. */
size_t kw_b64url_encode(const unsigned char *in, size_t len, char *out);
/* Decodes in[0..len) into out (cap bytes); canonical spellings only (the
 * unused low bits of the last character are zero, no padding), so one
 * value has one spelling. KW_ERR_INVALID otherwise. */
KW_MUST_CHECK kw_err kw_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                                      size_t *outlen);
/* Standard base64 with padding, canonical (what EVP_EncodeBlock would
 * print for the bytes, nothing else): the decoded bytes into out (cap
 * bytes; use kw_b64_decoded_max(len)), *outlen set. KW_ERR_INVALID for
 * anything else (out is then wiped). */
KW_MUST_CHECK kw_err kw_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                                   size_t *outlen);
/* Bytes kw_b64_decode may write for len characters. */
static inline size_t kw_b64_decoded_max(size_t len)
{
	return len / 4 * 3 + 3;
}

/* Caller-supplied text made fit for a database text column: in[0..len)
 * as valid UTF-8 (RFC 3629) in out, NUL-terminated. Each ill-formed part
 * (a stray or truncated sequence, an overlong form, a surrogate, a code
 * point above U+10FFFF, a NUL) becomes one U+FFFD, replacing the maximal
 * subpart as Unicode recommends. At most max_chars characters, and only
 * whole ones that fit in cap bytes (cap >= 1). Returns the bytes written,
 * NUL not counted; *cut (may be NULL) tells whether anything was left
 * out. Valid text shorter than both limits comes out unchanged. */
size_t kw_utf8_clean(const char *in, size_t len, size_t max_chars, char *out, size_t cap, bool *cut);

#endif
