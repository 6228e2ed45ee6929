/* secret.h — buffers for key material and PINs.
 *
 * A kw_secret is allocated once, mlock()ed and excluded from core dumps
 * (MADV_DONTDUMP), and wiped with OPENSSL_cleanse before it is unlocked and
 * freed. Never copy its contents into ordinary memory you do not wipe. */
#ifndef KEYWARD_SECRET_H
#define KEYWARD_SECRET_H

#include <stddef.h>

#include "keyward/core/error.h"

typedef struct kw_secret kw_secret;

/* A zero-filled secret of len bytes (len > 0). NULL if allocation fails. */
kw_secret *kw_secret_new(size_t len);
unsigned char *kw_secret_data(kw_secret *s);
size_t kw_secret_len(const kw_secret *s);
/* Shrinks the logical length (never grows); the tail is wiped. */
void kw_secret_truncate(kw_secret *s, size_t len);
/* Wipes, unlocks and frees; NULL is accepted. */
void kw_secret_free(kw_secret *s);

/* Sets up OpenSSL's secure heap (mlock()ed, MADV_DONTDUMP, guard pages)
 * for the key copies OpenSSL keeps itself (an HMAC key, e.g.). Call once,
 * first thing, before any thread starts. KW_OK; KW_ERR_INTERNAL when it
 * could not be made at all; a heap that could not be locked is logged. */
KW_MUST_CHECK kw_err kw_secure_heap_init(void);

/* Reads a whole small file (a PIN source) into a new secret, dropping one
 * trailing newline. The file must be a regular file of at most 4 KiB. */
KW_MUST_CHECK kw_err kw_secret_read_file(const char *path, kw_secret **out);

#endif
