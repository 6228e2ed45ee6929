/* libFuzzer target: kw_utf8_clean. Whatever the bytes, the output is
 * well-formed UTF-8 (cleaning it again changes nothing), within its
 * limits, and valid input passes through unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t max_chars = data[0]; /* the first byte picks the character limit */
	const char *in = (const char *)data + 1;
	size_t len = size - 1, cap = 4 * len + 2;
	char *out = malloc(cap), *again = malloc(cap);
	if (out == NULL || again == NULL)
		abort();
	bool cut = false, cut2 = true;
	size_t n = kw_utf8_clean(in, len, max_chars, out, cap, &cut);
	if (n >= cap || out[n] != '\0' || strlen(out) != n)
		abort();
	if (kw_utf8_clean(out, n, SIZE_MAX, again, cap, &cut2) != n || cut2 || memcmp(out, again, n + 1) != 0)
		abort(); /* not idempotent: the output was not well-formed */
	if (!cut && max_chars >= len && memchr(in, '\0', len) == NULL && n == len && memcmp(in, out, n) != 0)
		abort(); /* same length, nothing cut: must be the input itself */
	free(out);
	free(again);
	return 0;
}
