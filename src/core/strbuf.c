/* strbuf.c — see keyward/core/strbuf.h. */
#include "keyward/core/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void kw_strbuf_init(kw_strbuf *b, size_t cap)
{
	b->len = 0;
	b->cap = cap > 0 ? cap : 64;
	b->p = malloc(b->cap);
	b->failed = b->p == NULL;
	if (b->p)
		b->p[0] = '\0';
}

void kw_strbuf_printf(kw_strbuf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap * 2 + (size_t)n;
		char *np = realloc(b->p, ncap);
		if (np == NULL) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

char *kw_strbuf_take(kw_strbuf *b, size_t *len)
{
	char *p = b->failed ? NULL : b->p;
	if (p == NULL)
		free(b->p);
	else
		*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	b->failed = true;
	return p;
}
