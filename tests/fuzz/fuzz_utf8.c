/* libFuzzer target: kw_utf8_clean. Whatever the bytes, the output is
 * well-formed UTF-8 (cleaning it again changes nothing) and within its
 * character limit. (Valid input passing through unchanged is the unit
 * test's, against an independent decoder.) */
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
	size_t chars = 0;
	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)out[i] & 0xC0) != 0x80;
	if (chars > max_chars || (cut && n == 0 && max_chars > 0 && len > 0))
		abort(); /* over the limit, or cut with room left for one character */
	free(out);
	free(again);
	return 0;
}
