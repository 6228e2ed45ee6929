/* strbuf.h — a growable text buffer with printf-style appends.
 *
 * For building answers piece by piece (the /metrics text). An allocation
 * failure is remembered and makes every later append a no-op, so callers
 * check once, at the end, with kw_strbuf_take. */
#ifndef KEYWARD_STRBUF_H
#define KEYWARD_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kw_strbuf {
	char *p;
	size_t len, cap;
	bool failed;
} kw_strbuf;

/* Starts an empty buffer with room for cap bytes (it grows as needed). */
void kw_strbuf_init(kw_strbuf *b, size_t cap);
__attribute__((format(printf, 2, 3))) void kw_strbuf_printf(kw_strbuf *b, const char *fmt, ...);
/* The text (malloc'd, NUL-terminated, owned by the caller) and its length,
 * or NULL if any append failed; the buffer is empty afterwards. */
char *kw_strbuf_take(kw_strbuf *b, size_t *len);

#endif
