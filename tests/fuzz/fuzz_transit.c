/* libFuzzer target: transit ciphertext strings. Whatever parses opens
 * without a crash (and, under a fixed key, fails to verify or yields a
 * plaintext of the ciphertext's length). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/vault/transit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char key[64] = {1, 2, 3};
	kw_transit_ct c;
	if (kw_transit_parse((const char *)data, size, &c) != KW_OK)
		return 0;
	unsigned char *pt = NULL;
	size_t n = 0;
	if (kw_transit_open(&c, key, NULL, 0, &pt, &n) == KW_OK) {
		if (n != c.ctlen)
			abort();
		free(pt);
	}
	kw_transit_ct_free(&c);
	return 0;
}
