/* libFuzzer target: route matching and request-id validation on hostile
 * paths and header values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/api/api.h"
#include "keyward/http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	char param[128];
	bool other;
	(void)kw_route_match(kw_api_routes, kw_api_routes_count, "GET", s, param, sizeof(param), &other);
	(void)kw_route_match(kw_api_routes, kw_api_routes_count, "DELETE", s, param, sizeof(param), &other);
	(void)kw_request_id_valid(s);
	free(s);
	return 0;
}
