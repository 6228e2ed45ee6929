/* libFuzzer target: wallet address and signature parsers, and recovery.
 *
 * The input is tried whole as an address and as a signature; when its
 * first 130 or 132 bytes parse as a signature, the rest is the message to
 * recover over. A parsed address must survive format and parse again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/wallet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	unsigned char addr[KW_WALLET_ADDR_LEN], sig[KW_WALLET_SIG_LEN];

	if (kw_wallet_address_parse(text, size, addr) == KW_OK) {
		unsigned char again[KW_WALLET_ADDR_LEN];
		char formatted[KW_WALLET_ADDR_TEXT + 1];
		kw_wallet_address_format(addr, formatted);
		if (strlen(formatted) != KW_WALLET_ADDR_TEXT ||
		    kw_wallet_address_parse(formatted, KW_WALLET_ADDR_TEXT, again) != KW_OK ||
		    memcmp(addr, again, sizeof(addr)) != 0)
			abort();
	}
	(void)kw_wallet_signature_parse(text, size, sig);

	size_t siglen =
	    size >= 2 && data[0] == '0' && data[1] == 'x' ? 2 + 2 * KW_WALLET_SIG_LEN : 2 * KW_WALLET_SIG_LEN;
	if (size >= siglen && kw_wallet_signature_parse(text, siglen, sig) == KW_OK) {
		kw_err err = kw_wallet_recover(text + siglen, size - siglen, sig, addr);
		if (err != KW_OK && err != KW_ERR_VERIFY &&
		    !(err == KW_ERR_INVALID && size - siglen > KW_WALLET_MAX_MESSAGE))
			abort();
	}
	return 0;
}
