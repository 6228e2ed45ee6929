/* libFuzzer target: the INI configuration parser. */
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kw_config cfg;
	char err[256];
	if (kw_config_load(&cfg, NULL, err, sizeof(err)) == KW_OK)
		(void)kw_config_parse(&cfg, (const char *)data, size, err, sizeof(err));
	kw_config_free(&cfg);
	return 0;
}
