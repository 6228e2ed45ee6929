/* libFuzzer target: the strict JWS parser and base64url decoder. */
#include <stdint.h>
#include <string.h>

#include "keyward/auth/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kw_jwt_key k;
	memset(&k, 0, sizeof(k));
	k.point[0] = 0x04;
	memcpy(k.kid, "k", 2);
	json_t *claims = NULL;
	if (kw_jwt_verify((const char *)data, size, &k, 1, &claims) == KW_OK)
		json_decref(claims);
	unsigned char out[256];
	size_t n;
	(void)kw_b64url_decode((const char *)data, size, out, sizeof(out), &n);
	return 0;
}
