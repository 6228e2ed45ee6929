/* libFuzzer target: audit checkpoint lines (keywardctl audit verify
 * --checkpoints reads them from files an operator collected). A line that
 * parses formats back to the same checkpoint. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/audit/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	kw_audit_checkpoint cp, again;
	if (kw_audit_checkpoint_parse(s, &cp) == KW_OK) {
		char line[300];
		kw_audit_checkpoint_format(&cp, line, sizeof(line));
		if (kw_audit_checkpoint_parse(line, &again) != KW_OK || memcmp(&cp, &again, sizeof(cp)) != 0)
			abort();
	}
	free(s);
	return 0;
}
