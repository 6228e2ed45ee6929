/* wallet.h — Ethereum wallet sign-in: addresses, EIP-191 signatures,
 * Keccak-256.
 *
 * An address is 20 bytes, written "0x" + 40 hex digits. Input may be all
 * lower case, all upper case (no checksum information) or EIP-55 mixed
 * case, which must then carry a correct checksum. A signature is the 65
 * bytes r || s || v of `personal_sign`, hex with an optional "0x"; v is
 * 27/28 or 0/1, s must be in the lower half of the order (EIP-2), r and s
 * non-zero. Recovery hashes "\x19Ethereum Signed Message:\n" + decimal
 * length + message with Keccak-256 and recovers the public key with
 * libsecp256k1; the address is the last 20 bytes of Keccak-256 of the
 * uncompressed point without its 0x04.
 *
 * Keccak-256 is the original Keccak padding (0x01), not SHA3-256 (0x06):
 * no packaged C library offers it, so it is implemented here and tested
 * against published vectors. Everything here is pure computation. */
#ifndef KEYWARD_WALLET_H
#define KEYWARD_WALLET_H

#include <stddef.h>

#include "keyward/core/error.h"

#define KW_WALLET_ADDR_LEN    20
#define KW_WALLET_ADDR_TEXT   42 /* "0x" + 40 hex */
#define KW_WALLET_SIG_LEN     65
#define KW_WALLET_MAX_MESSAGE 4096

void kw_keccak256(const unsigned char *in, size_t len, unsigned char out[32]);

/* Parses an address (exactly KW_WALLET_ADDR_TEXT characters). KW_ERR_INVALID
 * for a wrong length, prefix or alphabet; KW_ERR_VERIFY for mixed case with
 * a wrong EIP-55 checksum. */
KW_MUST_CHECK kw_err kw_wallet_address_parse(const char *text, size_t len,
                                             unsigned char addr[KW_WALLET_ADDR_LEN]);
/* The EIP-55 checksummed form, NUL terminated. */
void kw_wallet_address_format(const unsigned char addr[KW_WALLET_ADDR_LEN],
                              char out[KW_WALLET_ADDR_TEXT + 1]);

/* Parses a 65-byte signature from hex (130 digits, optional "0x").
 * KW_ERR_INVALID for a wrong length or alphabet, a v other than 0, 1, 27,
 * 28, a zero r or s, an r not below the group order, or a high s. On
 * success v is normalised to 0/1. */
KW_MUST_CHECK kw_err kw_wallet_signature_parse(const char *text, size_t len,
                                               unsigned char sig[KW_WALLET_SIG_LEN]);

/* Recovers the signer of an EIP-191 personal_sign over msg (at most
 * KW_WALLET_MAX_MESSAGE bytes) from a signature as kw_wallet_signature_parse
 * returns it (v 0/1). KW_ERR_VERIFY if no key recovers; KW_ERR_INVALID for
 * a bad argument, including a signature the parser would refuse. Thread
 * safe. */
KW_MUST_CHECK kw_err kw_wallet_recover(const char *msg, size_t len,
                                       const unsigned char sig[KW_WALLET_SIG_LEN],
                                       unsigned char addr[KW_WALLET_ADDR_LEN]);

#endif
