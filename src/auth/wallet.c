/* wallet.c — Ethereum wallet sign-in: Keccak-256, EIP-55 addresses,
 * EIP-191 personal_sign recovery.
 *
 * Everything here is pure computation over public data (addresses,
 * signatures, the message a wallet signed): no I/O, no logging, no secret
 * ever passes through, so nothing needs wiping. Parsers read exactly len
 * bytes and set their out-parameter only on success. The one libsecp256k1
 * context is created once (pthread_once) with SECP256K1_CONTEXT_NONE and is
 * only read afterwards, so any number of threads may recover at once; it
 * lives until the process exits. Arguments reaching libsecp256k1 are
 * checked first, because its illegal-argument callback aborts. */
#include "keyward/auth/wallet.h"
#include "keyward/core/text.h"

#include <pthread.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- Keccak-256 ---------------------------------------------------------
 * The Keccak submission's padding (0x01 ... 0x80), as Ethereum uses it, not
 * FIPS 202's SHA3-256 (0x06 ... 0x80). Keccak-f[1600] is written after the
 * reference specification's step mappings, lane A[x, y] at st[x + 5 y]. */

#define KECCAK_RATE  136 /* 1600 - 2 * 256 bits, in bytes */
#define KECCAK_LANES 25

typedef struct {
	uint64_t st[KECCAK_LANES];
	size_t pos; /* bytes absorbed into the current block */
} keccak_ctx;

static const uint64_t keccak_rc[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808AULL, 0x8000000080008000ULL,
    0x000000000000808BULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008AULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000AULL,
    0x000000008000808BULL, 0x800000000000008BULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800AULL, 0x800000008000000AULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* rho's rotation offsets r[x, y], at [x + 5 y]. */
static const unsigned keccak_rho[KECCAK_LANES] = {
    0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
};

static uint64_t rotl64(uint64_t v, unsigned n)
{
	return (v << n) | (v >> ((64 - n) & 63));
}

static void keccak_f1600(uint64_t a[KECCAK_LANES])
{
	uint64_t b[KECCAK_LANES], c[5], d[5];
	for (int round = 0; round < 24; round++) {
		/* theta */
		for (int x = 0; x < 5; x++)
			c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
		for (int x = 0; x < 5; x++)
			d[x] = c[(x + 4) % 5] ^ rotl64(c[(x + 1) % 5], 1);
		for (int i = 0; i < KECCAK_LANES; i++)
			a[i] ^= d[i % 5];
		/* rho and pi: B[y, 2x + 3y] = rot(A[x, y], r[x, y]) */
		for (int y = 0; y < 5; y++)
			for (int x = 0; x < 5; x++)
				b[y + 5 * ((2 * x + 3 * y) % 5)] =
				    rotl64(a[x + 5 * y], keccak_rho[x + 5 * y]);
		/* chi */
		for (int y = 0; y < 5; y++)
			for (int x = 0; x < 5; x++)
				a[x + 5 * y] =
				    b[x + 5 * y] ^ (~b[(x + 1) % 5 + 5 * y] & b[(x + 2) % 5 + 5 * y]);
		/* iota */
		a[0] ^= keccak_rc[round];
	}
}

static void keccak_init(keccak_ctx *k)
{
	memset(k, 0, sizeof(*k));
}

/* Lanes are little-endian: byte i of the block is byte i % 8 of lane i / 8. */
static void keccak_xor_byte(keccak_ctx *k, size_t i, unsigned char v)
{
	k->st[i / 8] ^= (uint64_t)v << (8 * (i % 8));
}

static void keccak_update(keccak_ctx *k, const unsigned char *in, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		keccak_xor_byte(k, k->pos++, in[i]);
		if (k->pos == KECCAK_RATE) {
			keccak_f1600(k->st);
			k->pos = 0;
		}
	}
}

static void keccak_final(keccak_ctx *k, unsigned char out[32])
{
	/* pad10*1; with one byte left in the block both bits land in it. */
	keccak_xor_byte(k, k->pos, 0x01);
	keccak_xor_byte(k, KECCAK_RATE - 1, 0x80);
	keccak_f1600(k->st);
	for (size_t i = 0; i < 32; i++)
		out[i] = (unsigned char)(k->st[i / 8] >> (8 * (i % 8)));
}

void kw_keccak256(const unsigned char *in, size_t len, unsigned char out[32])
{
	if (out == NULL || (in == NULL && len != 0))
		kw_misuse("kw_keccak256: NULL argument");
	keccak_ctx k;
	keccak_init(&k);
	keccak_update(&k, in, len);
	keccak_final(&k, out);
}

/* ---- hex ---------------------------------------------------------------- */

/* ---- addresses (EIP-55) ------------------------------------------------- */

/* The checksummed spelling of the 40 hex digits: a letter is upper case
 * when the matching nibble of Keccak-256(lower-case hex) is 8 or more. */
static void eip55_digits(const unsigned char addr[KW_WALLET_ADDR_LEN], char out[2 * KW_WALLET_ADDR_LEN])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char h[32];
	for (size_t i = 0; i < KW_WALLET_ADDR_LEN; i++) {
		out[2 * i] = digits[addr[i] >> 4];
		out[2 * i + 1] = digits[addr[i] & 0x0f];
	}
	kw_keccak256((const unsigned char *)out, 2 * KW_WALLET_ADDR_LEN, h);
	for (size_t i = 0; i < 2 * KW_WALLET_ADDR_LEN; i++) {
		unsigned nibble = i % 2 == 0 ? h[i / 2] >> 4 : h[i / 2] & 0x0f;
		if (out[i] >= 'a' && nibble >= 8)
			out[i] = (char)(out[i] - 'a' + 'A');
	}
}

kw_err kw_wallet_address_parse(const char *text, size_t len, unsigned char addr[KW_WALLET_ADDR_LEN])
{
	if (addr == NULL)
		kw_misuse("kw_wallet_address_parse: NULL addr");
	if (text == NULL || len != KW_WALLET_ADDR_TEXT || text[0] != '0' || text[1] != 'x')
		return KW_ERR_INVALID;
	const char *hex = text + 2;
	unsigned char raw[KW_WALLET_ADDR_LEN];
	if (!kw_hex_decode(hex, KW_WALLET_ADDR_LEN, raw))
		return KW_ERR_INVALID;
	bool lower = false, upper = false;
	for (size_t i = 0; i < 2 * KW_WALLET_ADDR_LEN; i++) {
		lower |= hex[i] >= 'a' && hex[i] <= 'f';
		upper |= hex[i] >= 'A' && hex[i] <= 'F';
	}
	/* Single-case input carries no checksum; mixed case claims one. */
	if (lower && upper) {
		char want[2 * KW_WALLET_ADDR_LEN];
		eip55_digits(raw, want);
		if (memcmp(want, hex, sizeof(want)) != 0)
			return KW_ERR_VERIFY;
	}
	memcpy(addr, raw, sizeof(raw));
	return KW_OK;
}

void kw_wallet_address_format(const unsigned char addr[KW_WALLET_ADDR_LEN], char out[KW_WALLET_ADDR_TEXT + 1])
{
	if (addr == NULL || out == NULL)
		kw_misuse("kw_wallet_address_format: NULL argument");
	out[0] = '0';
	out[1] = 'x';
	eip55_digits(addr, out + 2);
	out[KW_WALLET_ADDR_TEXT] = '\0';
}

/* ---- signatures --------------------------------------------------------- */

/* The secp256k1 group order n and n / 2, big-endian. */
static const unsigned char secp256k1_n[32] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
    0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
};
static const unsigned char secp256k1_half_n[32] = {
    0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x5D, 0x57, 0x6E, 0x73, 0x57, 0xA4, 0x50, 0x1D, 0xDF, 0xE9, 0x2F, 0x46, 0x68, 0x1B, 0x20, 0xA0,
};

static bool is_zero32(const unsigned char v[32])
{
	unsigned char acc = 0;
	for (size_t i = 0; i < 32; i++)
		acc |= v[i];
	return acc == 0;
}

/* r in [1, n), s in [1, n/2], v already 0 or 1. Everything compared is
 * public, so plain memcmp (big-endian order) is fine. */
static bool signature_ok(const unsigned char sig[KW_WALLET_SIG_LEN])
{
	const unsigned char *r = sig, *s = sig + 32;
	return !is_zero32(r) && memcmp(r, secp256k1_n, 32) < 0 && !is_zero32(s) &&
	       memcmp(s, secp256k1_half_n, 32) <= 0 && sig[64] <= 1;
}

kw_err kw_wallet_signature_parse(const char *text, size_t len, unsigned char sig[KW_WALLET_SIG_LEN])
{
	if (sig == NULL)
		kw_misuse("kw_wallet_signature_parse: NULL sig");
	if (text == NULL)
		return KW_ERR_INVALID;
	if (len == 2 + 2 * KW_WALLET_SIG_LEN && text[0] == '0' && text[1] == 'x') {
		text += 2;
		len -= 2;
	}
	unsigned char raw[KW_WALLET_SIG_LEN];
	if (len != 2 * KW_WALLET_SIG_LEN || !kw_hex_decode(text, KW_WALLET_SIG_LEN, raw))
		return KW_ERR_INVALID;
	if (raw[64] == 27 || raw[64] == 28)
		raw[64] -= 27;
	if (!signature_ok(raw))
		return KW_ERR_INVALID;
	memcpy(sig, raw, sizeof(raw));
	return KW_OK;
}

/* ---- recovery ------------------------------------------------------------ */

static pthread_once_t secp_once = PTHREAD_ONCE_INIT;
static secp256k1_context *secp_ctx;

static void secp_init(void)
{
	secp_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
}

static const secp256k1_context *secp(void)
{
	if (pthread_once(&secp_once, secp_init) != 0)
		return NULL;
	return secp_ctx;
}

kw_err kw_wallet_recover(const char *msg, size_t len, const unsigned char sig[KW_WALLET_SIG_LEN],
                         unsigned char addr[KW_WALLET_ADDR_LEN])
{
	static const char prefix[] = "\x19"
	                             "Ethereum Signed Message:\n";
	if (addr == NULL)
		kw_misuse("kw_wallet_recover: NULL addr");
	if ((msg == NULL && len != 0) || len > KW_WALLET_MAX_MESSAGE || sig == NULL || !signature_ok(sig))
		return KW_ERR_INVALID;
	const secp256k1_context *ctx = secp();
	if (ctx == NULL)
		return KW_ERR_NOMEM;

	char decimal[24];
	int dn = snprintf(decimal, sizeof(decimal), "%zu", len);
	if (dn <= 0 || (size_t)dn >= sizeof(decimal))
		return KW_ERR_INTERNAL;
	unsigned char digest[32];
	keccak_ctx k;
	keccak_init(&k);
	keccak_update(&k, (const unsigned char *)prefix, sizeof(prefix) - 1);
	keccak_update(&k, (const unsigned char *)decimal, (size_t)dn);
	if (len != 0)
		keccak_update(&k, (const unsigned char *)msg, len);
	keccak_final(&k, digest);

	secp256k1_ecdsa_recoverable_signature rs;
	secp256k1_pubkey pub;
	unsigned char point[65];
	size_t plen = sizeof(point);
	if (!secp256k1_ecdsa_recoverable_signature_parse_compact(ctx, &rs, sig, sig[64]) ||
	    !secp256k1_ecdsa_recover(ctx, &pub, &rs, digest))
		return KW_ERR_VERIFY;
	if (!secp256k1_ec_pubkey_serialize(ctx, point, &plen, &pub, SECP256K1_EC_UNCOMPRESSED) ||
	    plen != sizeof(point))
		return KW_ERR_INTERNAL;
	unsigned char h[32];
	kw_keccak256(point + 1, sizeof(point) - 1, h);
	memcpy(addr, h + 32 - KW_WALLET_ADDR_LEN, KW_WALLET_ADDR_LEN);
	return KW_OK;
}
