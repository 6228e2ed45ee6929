/* libFuzzer target: CIDR lists and X-Forwarded-For walking. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/http/clientip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	kw_cidr_list *l = NULL;
	if (kw_cidr_list_parse(s, &l) == KW_OK) {
		(void)kw_cidr_list_contains(l, "10.0.0.1");
		kw_cidr_list_free(l);
	}
	kw_cidr_list *t = NULL;
	if (kw_cidr_list_parse("127.0.0.1, ::1", &t) == KW_OK) {
		char out[64];
		kw_client_ip(t, "127.0.0.1", s, out, sizeof(out));
		kw_cidr_list_free(t);
	}
	free(s);
	return 0;
}
