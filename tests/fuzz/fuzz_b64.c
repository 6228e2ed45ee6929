/* libFuzzer target: kw_b64_decode, the canonical standard-base64 decoder
 * of transit plaintexts and contexts and of secret values. Whatever it
 * accepts re-encodes to exactly the input (canonical), and it never writes
 * past the bound it promises. */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t cap = kw_b64_decoded_max(size), n = 0;
	unsigned char *out = malloc(cap);
	if (out == NULL)
		return 0;
	if (kw_b64_decode((const char *)data, size, out, cap, &n) == KW_OK) {
		char *again = malloc(4 * ((n + 2) / 3) + 1);
		if (again == NULL || n > cap ||
		    (size_t)EVP_EncodeBlock((unsigned char *)again, out, (int)n) != size ||
		    memcmp(again, data, size) != 0)
			abort();
		free(again);
	}
	free(out);
	return 0;
}
