/* libFuzzer target: the API key parser (format and checksum). */
#include <stdint.h>

#include "keyward/auth/apikey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char prefix[KW_APIKEY_PREFIX_LEN + 1];
	(void)kw_apikey_parse((const char *)data, size, prefix);
	return 0;
}
