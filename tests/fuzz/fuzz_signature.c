/* libFuzzer target: the signature header parser (kw_sig_parse). The input
 * is split at the first two newlines into X-Timestamp, X-Nonce and
 * X-Signature; whatever parses has a kid that is a lower-case uuid and a
 * nonce of the allowed length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/signature.h"
#include "keyward/core/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *nonce = strchr(buf, '\n');
	char *sig = nonce ? strchr(nonce + 1, '\n') : NULL;
	if (sig != NULL) {
		*nonce++ = '\0';
		*sig++ = '\0';
		kw_sig_headers h;
		if (kw_sig_parse(buf, nonce, sig, &h) == KW_OK) {
			size_t n = strlen(h.nonce);
			if (!kw_is_uuid(h.kid) || n < KW_SIG_NONCE_MIN || n > KW_SIG_NONCE_MAX || h.ts_ms < 0)
				abort();
			for (const char *p = h.kid; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					abort();
		}
	}
	free(buf);
	return 0;
}
