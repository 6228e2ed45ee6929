/* Unit tests: Keccak-256, EIP-55 addresses, personal_sign signature
 * parsing and EIP-191 recovery. Expected values come from the EIPs, the
 * web3.js documentation, and Python (Cryptodome's keccak, python3-ecdsa
 * through tests/support/kwt_wallet.py) as independent implementations. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/wallet.h"

static void hex2bin(const char *hex, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sscanf(hex + 2 * i, "%2hhx", &out[i]);
}

static void keccak_hex(const unsigned char *in, size_t len, char out[65])
{
	unsigned char h[32];
	kw_keccak256(in, len, h);
	for (size_t i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* The byte pattern the Python side generated: (i * 7 + 3) & 0xff. */
static unsigned char *pattern(size_t n)
{
	unsigned char *p = malloc(n ? n : 1);
	cr_assert_not_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 7 + 3);
	return p;
}

Test(wallet, keccak256_known_answers)
{
	char hex[65];
	keccak_hex((const unsigned char *)"", 0, hex);
	cr_assert_str_eq(hex, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
	keccak_hex(NULL, 0, hex);
	cr_assert_str_eq(hex, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
	keccak_hex((const unsigned char *)"abc", 3, hex);
	cr_assert_str_eq(hex, "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");

	/* Around the 136-byte rate: padding in one block, a full block plus
	 * a padding-only block, and one byte into the second block. */
	static const struct {
		size_t n;
		const char *hex;
	} kat[] = {
	    {135, "00ef96af9cf4b24c7f269d922294444a197d0a33638c2e56634c57e892103a8f"},
	    {136, "742061bcad767ed4c4f5883b1dcb1aad11afdcc140dc469d953759b127b9f9ed"},
	    {137, "e3371f61e770abf254c34239c3b0099ad90594507415bc81dd0a10b9692bbf2a"},
	    {1000, "80cdc8dd52cbb3dbaea8f383209893fa2bb52efbd5aedbb4b26dcfe307fcdc9b"},
	};
	for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		unsigned char *p = pattern(kat[i].n);
		keccak_hex(p, kat[i].n, hex);
		cr_assert_str_eq(hex, kat[i].hex, "%zu bytes", kat[i].n);
		free(p);
	}
}

/* EIP-55's own test cases: all caps, all lower, and mixed. */
static const char *eip55_vectors[] = {
    "0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77", "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
};

Test(wallet, eip55_format_and_parse)
{
	for (size_t i = 0; i < sizeof(eip55_vectors) / sizeof(eip55_vectors[0]); i++) {
		const char *v = eip55_vectors[i];
		unsigned char want[KW_WALLET_ADDR_LEN], got[KW_WALLET_ADDR_LEN];
		char text[KW_WALLET_ADDR_TEXT + 1];
		hex2bin(v + 2, want, sizeof(want));
		kw_wallet_address_format(want, text);
		cr_assert_str_eq(text, v);
		cr_assert_eq(kw_wallet_address_parse(v, strlen(v), got), KW_OK, "%s", v);
		cr_assert(memcmp(got, want, sizeof(want)) == 0, "%s", v);
	}
}

Test(wallet, address_single_case_carries_no_checksum)
{
	const char *v = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
	unsigned char want[KW_WALLET_ADDR_LEN], got[KW_WALLET_ADDR_LEN];
	hex2bin(v + 2, want, sizeof(want));
	char low[KW_WALLET_ADDR_TEXT + 1], up[KW_WALLET_ADDR_TEXT + 1];
	for (size_t i = 0; i <= KW_WALLET_ADDR_TEXT; i++) {
		low[i] = v[i] >= 'A' && v[i] <= 'F' ? (char)(v[i] - 'A' + 'a') : v[i];
		up[i] = i >= 2 && v[i] >= 'a' && v[i] <= 'f' ? (char)(v[i] - 'a' + 'A') : v[i];
	}
	cr_assert_str_eq(low, "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
	cr_assert_str_eq(up, "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED");
	cr_assert_eq(kw_wallet_address_parse(low, KW_WALLET_ADDR_TEXT, got), KW_OK);
	cr_assert(memcmp(got, want, sizeof(want)) == 0);
	memset(got, 0, sizeof(got));
	cr_assert_eq(kw_wallet_address_parse(up, KW_WALLET_ADDR_TEXT, got), KW_OK);
	cr_assert(memcmp(got, want, sizeof(want)) == 0);
}

Test(wallet, address_wrong_checksum)
{
	unsigned char out[KW_WALLET_ADDR_LEN];
	/* One letter's case flipped in each direction. */
	const char *bad[] = {
	    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
	    "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5D359",
	    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9adb",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0xaa, sizeof(out));
		cr_assert_eq(kw_wallet_address_parse(bad[i], strlen(bad[i]), out), KW_ERR_VERIFY, "%s",
		             bad[i]);
		for (size_t j = 0; j < sizeof(out); j++)
			cr_assert_eq(out[j], 0xaa, "out-param written on failure");
	}
}

Test(wallet, address_malformed)
{
	unsigned char out[KW_WALLET_ADDR_LEN];
	const char *bad[] = {
	    "",
	    "0x",
	    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",   /* 41 */
	    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed0", /* 43 */
	    "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",    /* no prefix */
	    "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	    "1x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	    "005aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
	    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA d",
	    "0x+aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	    "0xde709f2102306220921060314715629080e2fb7G",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_wallet_address_parse(bad[i], strlen(bad[i]), out), KW_ERR_INVALID, "%s",
		             bad[i]);
	/* len is authoritative: an embedded NUL is just a bad digit. */
	char nul[] = "0xde709f2102306220921060314715629080e2fb77";
	nul[20] = '\0';
	cr_assert_eq(kw_wallet_address_parse(nul, KW_WALLET_ADDR_TEXT, out), KW_ERR_INVALID);
	cr_assert_eq(kw_wallet_address_parse(NULL, KW_WALLET_ADDR_TEXT, out), KW_ERR_INVALID);
	const char *ok = "0xde709f2102306220921060314715629080e2fb77ff";
	cr_assert_eq(kw_wallet_address_parse(ok, KW_WALLET_ADDR_TEXT, out), KW_OK, "reads only len bytes");
}

/* Signed with the private key Keccak-256("keyward wallet test key") =
 * 92c784503122f68b06ff328dc31b8e5bf799d1c5bf1d327ebe5366c02de87e37 by
 * tests/support/kwt_wallet.py (python3-ecdsa, RFC 6979, low s). */
#define TEST_ADDR "0xf452b4F6a271E421a835b16DA4D3fcAcca36e2Ee"
#define MSG_V27   "keyward sign-in\nnonce: 7f3a9c2e\n"
#define SIG_V27                                                                                              \
	"f41e014f9b7f8a0c1c80d08857432920bedf2874ee8c7186b2433fa8c2bac4414ddef7938008d03bbb4a664e3b0a5bb835" \
	"66b469ff44edee7d106757367235581b"
#define MSG_V28 "keyward sign-in\nnonce: 7f3a9c32\n"
#define SIG_V28                                                                                              \
	"583503704a7dfcf19e6eacac4f83ba2ba7edcaa97d9555f022592dd42bc5c6a633ab1707d861300b810435b366dd887abc" \
	"605991fc02536e3da6452f68048e041c"
#define SIG_EMPTY                                                                                            \
	"55e58a325a5d1f2cff64c965a38c30d1643a4786cc5dbd909f11a6ab55fe3bf60fe3fa40fae5a95c1473f7a7fb4416c518" \
	"a5dbebf71da07b4b4f6d368d32a3931b"
#define SIG_4096                                                                                             \
	"a4d56a218b433f7145e0e874be93386c030a7bccd0622316b742d7e13ec0c6a51d71dba4005694596013178d74a9fb009b" \
	"805b690373b1ba3916423c37be5fdf1b"
/* SIG_V27 with s replaced by n - s and v flipped: the same signature's
 * malleable twin, which EIP-2 refuses. */
#define SIG_V27_HIGH_S                                                                                       \
	"f41e014f9b7f8a0c1c80d08857432920bedf2874ee8c7186b2433fa8c2bac441b221086c7ff72fc444b599b1c4f5a44685" \
	"48287cb003b24d42c1f73599c40be91a"
/* The web3.js documentation's example for web3.eth.accounts.sign(). */
#define WEB3_ADDR "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
#define WEB3_MSG  "Some data"
#define WEB3_SIG                                                                                             \
	"0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da1"  \
	"67c747ef045e5d18a5f5d4300f8e1a0291c"

#define HALF_N "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0"
#define N      "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
#define R_V27  "f41e014f9b7f8a0c1c80d08857432920bedf2874ee8c7186b2433fa8c2bac441"
#define S_V27  "4ddef7938008d03bbb4a664e3b0a5bb83566b469ff44edee7d10675736723558"
#define ZERO32 "0000000000000000000000000000000000000000000000000000000000000000"

static kw_err sig_parse(const char *hex, unsigned char sig[KW_WALLET_SIG_LEN])
{
	return kw_wallet_signature_parse(hex, strlen(hex), sig);
}

static void expect_address(const unsigned char addr[KW_WALLET_ADDR_LEN], const char *want)
{
	char text[KW_WALLET_ADDR_TEXT + 1];
	kw_wallet_address_format(addr, text);
	cr_assert_str_eq(text, want);
}

Test(wallet, signature_parse_accepts)
{
	unsigned char sig[KW_WALLET_SIG_LEN], raw[KW_WALLET_SIG_LEN];
	hex2bin(SIG_V27, raw, sizeof(raw));
	cr_assert_eq(sig_parse(SIG_V27, sig), KW_OK);
	cr_assert(memcmp(sig, raw, 64) == 0);
	cr_assert_eq(sig[64], 0);
	cr_assert_eq(sig_parse("0x" SIG_V27, sig), KW_OK);
	cr_assert_eq(sig[64], 0);
	cr_assert_eq(sig_parse(SIG_V28, sig), KW_OK);
	cr_assert_eq(sig[64], 1);

	const struct {
		const char *v;
		unsigned char want;
	} vs[] = {{"1b", 0}, {"1c", 1}, {"00", 0}, {"01", 1}};
	for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		char hex[2 + 2 * KW_WALLET_SIG_LEN + 1];
		snprintf(hex, sizeof(hex), "0x" R_V27 S_V27 "%s", vs[i].v);
		cr_assert_eq(sig_parse(hex, sig), KW_OK, "v=%s", vs[i].v);
		cr_assert_eq(sig[64], vs[i].want, "v=%s", vs[i].v);
		cr_assert_eq(sig_parse(hex + 2, sig), KW_OK, "v=%s without 0x", vs[i].v);
		cr_assert_eq(sig[64], vs[i].want);
	}
	/* Upper-case digits, and the largest s EIP-2 allows. */
	cr_assert_eq(
	    sig_parse("0xF41E014F9B7F8A0C1C80D08857432920BEDF2874EE8C7186B2433FA8C2BAC441" S_V27 "1B", sig),
	    KW_OK);
	cr_assert_eq(sig_parse(R_V27 HALF_N "1b", sig), KW_OK);
}

Test(wallet, signature_parse_refuses)
{
	unsigned char sig[KW_WALLET_SIG_LEN];
	memset(sig, 0xaa, sizeof(sig));
	const char *bad[] = {
	    R_V27 S_V27 "02",
	    R_V27 S_V27 "1d",
	    R_V27 S_V27 "1a",
	    R_V27 S_V27 "ff",
	    "0x" R_V27 S_V27 "02",
	    "0x" R_V27 S_V27 "1d",
	    SIG_V27_HIGH_S,
	    "0x" SIG_V27_HIGH_S,
	    R_V27 "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a1"
	          "1b", /* n/2 + 1 */
	    R_V27 N "1b",
	    ZERO32 S_V27 "1b",
	    "0x" ZERO32 S_V27 "1c",
	    R_V27 ZERO32 "1b",
	    N S_V27 "1b", /* r = n */
	    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff" S_V27 "1b",
	    "0X" SIG_V27,
	    "00" SIG_V27,
	    "0x0x" SIG_V27,
	    "g41e014f9b7f8a0c1c80d08857432920bedf2874ee8c7186b2433fa8c2bac4414ddef7938008d03bbb4a664e3b0a5bb8"
	    "35"
	    "66b469ff44edee7d106757367235581b",
	    " f41e014f9b7f8a0c1c80d08857432920bedf2874ee8c7186b2433fa8c2bac4414ddef7938008d03bbb4a664e3b0a5bb"
	    "83"
	    "566b469ff44edee7d10675736723558",
	    "",
	    "0x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(sig_parse(bad[i], sig), KW_ERR_INVALID, "#%zu %s", i, bad[i]);
	/* 128, 129 and 131 digits, with and without "0x". */
	char hex[2 + 2 * KW_WALLET_SIG_LEN + 2] = "0x" SIG_V27 "0";
	for (size_t skip = 0; skip <= 2; skip += 2)
		for (size_t digits = 128; digits <= 131; digits++)
			if (digits != 130)
				cr_assert_eq(kw_wallet_signature_parse(hex + skip, 2 - skip + digits, sig),
				             KW_ERR_INVALID, "%zu digits, skip %zu", digits, skip);
	for (size_t j = 0; j < sizeof(sig); j++)
		cr_assert_eq(sig[j], 0xaa, "out-param written on failure");
	cr_assert_eq(kw_wallet_signature_parse(NULL, 130, sig), KW_ERR_INVALID);
}

static void recover_ok(const char *msg, size_t len, const char *sighex, const char *want)
{
	unsigned char sig[KW_WALLET_SIG_LEN], addr[KW_WALLET_ADDR_LEN];
	cr_assert_eq(sig_parse(sighex, sig), KW_OK);
	cr_assert_eq(kw_wallet_recover(msg, len, sig, addr), KW_OK);
	expect_address(addr, want);
}

Test(wallet, recover_known_vectors)
{
	recover_ok(MSG_V27, strlen(MSG_V27), SIG_V27, TEST_ADDR);
	recover_ok(MSG_V28, strlen(MSG_V28), "0x" SIG_V28, TEST_ADDR);
	recover_ok("", 0, SIG_EMPTY, TEST_ADDR);
	recover_ok(NULL, 0, SIG_EMPTY, TEST_ADDR);
	recover_ok(WEB3_MSG, strlen(WEB3_MSG), WEB3_SIG, WEB3_ADDR);
	unsigned char *p = pattern(KW_WALLET_MAX_MESSAGE);
	recover_ok((const char *)p, KW_WALLET_MAX_MESSAGE, SIG_4096, TEST_ADDR);
	free(p);
}

Test(wallet, recover_detects_changes)
{
	unsigned char sig[KW_WALLET_SIG_LEN], addr[KW_WALLET_ADDR_LEN], want[KW_WALLET_ADDR_LEN];
	cr_assert_eq(kw_wallet_address_parse(TEST_ADDR, strlen(TEST_ADDR), want), KW_OK);
	cr_assert_eq(sig_parse(SIG_V27, sig), KW_OK);

	/* Every single-bit change of the message: another key or none. */
	char msg[] = MSG_V27;
	for (size_t i = 0; i < 8 * strlen(MSG_V27); i++) {
		msg[i / 8] ^= (char)(1 << (i % 8));
		kw_err err = kw_wallet_recover(msg, strlen(MSG_V27), sig, addr);
		cr_assert(err == KW_ERR_VERIFY || (err == KW_OK && memcmp(addr, want, sizeof(want)) != 0),
		          "bit %zu", i);
		msg[i / 8] ^= (char)(1 << (i % 8));
	}
	/* A shorter message changes the decimal length in the prefix too. */
	kw_err err = kw_wallet_recover(MSG_V27, strlen(MSG_V27) - 1, sig, addr);
	cr_assert(err == KW_ERR_VERIFY || (err == KW_OK && memcmp(addr, want, sizeof(want)) != 0));

	/* The other recovery id names the other candidate key (python3-ecdsa
	 * lists both). */
	sig[64] ^= 1;
	cr_assert_eq(kw_wallet_recover(MSG_V27, strlen(MSG_V27), sig, addr), KW_OK);
	expect_address(addr, "0x4b0497a4363d5C9CFEf2C89a2d73535F8785dF69");
}

Test(wallet, recover_refuses_bad_arguments)
{
	unsigned char sig[KW_WALLET_SIG_LEN], raw[KW_WALLET_SIG_LEN], addr[KW_WALLET_ADDR_LEN];
	cr_assert_eq(sig_parse(SIG_V27, sig), KW_OK);
	unsigned char *p = pattern(KW_WALLET_MAX_MESSAGE + 1);
	cr_assert_eq(kw_wallet_recover((const char *)p, KW_WALLET_MAX_MESSAGE + 1, sig, addr),
	             KW_ERR_INVALID);
	free(p);
	cr_assert_eq(kw_wallet_recover(NULL, 1, sig, addr), KW_ERR_INVALID);
	cr_assert_eq(kw_wallet_recover("x", 1, NULL, addr), KW_ERR_INVALID);
	/* Unparsed bytes must be refused here rather than reach libsecp256k1,
	 * whose illegal-argument callback aborts on a recovery id above 3. */
	hex2bin(SIG_V27, raw, sizeof(raw)); /* v = 27 */
	cr_assert_eq(kw_wallet_recover(MSG_V27, strlen(MSG_V27), raw, addr), KW_ERR_INVALID);
	hex2bin(SIG_V27_HIGH_S, raw, sizeof(raw));
	raw[64] -= 27;
	cr_assert_eq(kw_wallet_recover(MSG_V27, strlen(MSG_V27), raw, addr), KW_ERR_INVALID);
	memset(raw, 0, sizeof(raw));
	cr_assert_eq(kw_wallet_recover(MSG_V27, strlen(MSG_V27), raw, addr), KW_ERR_INVALID);
}

Test(wallet, recover_with_no_key_is_verify)
{
	/* r = 5 is not the x coordinate of any curve point (x^3 + 7 = 132 is
	 * not a square mod p), so nothing recovers. */
	unsigned char sig[KW_WALLET_SIG_LEN], addr[KW_WALLET_ADDR_LEN];
	cr_assert_eq(
	    sig_parse("0000000000000000000000000000000000000000000000000000000000000005" S_V27 "1b", sig),
	    KW_OK);
	cr_assert_eq(kw_wallet_recover(MSG_V27, strlen(MSG_V27), sig, addr), KW_ERR_VERIFY);
}

/* The shared context is created on first use from whichever thread gets
 * there first; all of them must then agree. */
#define THREADS 8
#define ROUNDS  40

static void *recover_many(void *arg)
{
	unsigned char sig[KW_WALLET_SIG_LEN], addr[KW_WALLET_ADDR_LEN], want[KW_WALLET_ADDR_LEN];
	intptr_t bad = 0;
	if (sig_parse((uintptr_t)arg % 2 ? SIG_V28 : SIG_V27, sig) != KW_OK ||
	    kw_wallet_address_parse(TEST_ADDR, strlen(TEST_ADDR), want) != KW_OK)
		return (void *)1;
	const char *msg = (uintptr_t)arg % 2 ? MSG_V28 : MSG_V27;
	for (int i = 0; i < ROUNDS; i++)
		if (kw_wallet_recover(msg, strlen(msg), sig, addr) != KW_OK ||
		    memcmp(addr, want, sizeof(want)) != 0)
			bad++;
	return (void *)bad;
}

Test(wallet, recover_from_many_threads)
{
	pthread_t t[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, recover_many, (void *)i), 0);
	for (size_t i = 0; i < THREADS; i++) {
		void *bad;
		cr_assert_eq(pthread_join(t[i], &bad), 0);
		cr_assert_null(bad, "thread %zu: %ld failures", i, (long)(intptr_t)bad);
	}
}
