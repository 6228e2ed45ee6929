/* libFuzzer target: transit request bodies (one item or a batch) through
 * the item code of encrypt, decrypt and rewrap under a fixed key: every
 * item answers its result or its own error, never a crash. The first byte
 * picks the key type. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../src/api/handlers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	kw_api_transit_fuzz(data + 1, size - 1, (data[0] & 1) != 0);
	return 0;
}
