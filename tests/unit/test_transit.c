/* test_transit.c — transit ciphertexts: AES-SIV against RFC 5297, both
 * types against an independent implementation (Python's `cryptography`,
 * which computed the expected strings below), tampering, contexts and the
 * string grammar. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/text.h"
#include "keyward/vault/transit.h"

static unsigned char *hex(const char *h, size_t *n)
{
	*n = strlen(h) / 2;
	unsigned char *b = malloc(*n + 1);
	cr_assert(kw_hex_decode(h, *n, b));
	return b;
}

/* RFC 5297 A.1 (deterministic) and A.2 (nonce as the last component). */
Test(transit, aes_siv_rfc5297_vectors)
{
	size_t kn, adn, ptn, wantn;
	unsigned char *key = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", &kn);
	unsigned char *ad = hex("101112131415161718191a1b1c1d1e1f2021222324252627", &adn);
	unsigned char *pt = hex("112233445566778899aabbccddee", &ptn);
	unsigned char *want = hex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c", &wantn);
	unsigned char siv[16], ct[64], back[64];
	const unsigned char *ads[1] = {ad};
	size_t adl[1] = {adn};
	cr_assert_eq(kw_aes_siv_seal(key, kn, ads, adl, 1, pt, ptn, siv, ct), KW_OK);
	cr_assert_eq(memcmp(siv, want, 16), 0);
	cr_assert_eq(memcmp(ct, want + 16, ptn), 0);
	cr_assert_eq(kw_aes_siv_open(key, kn, ads, adl, 1, siv, ct, ptn, back), KW_OK);
	cr_assert_eq(memcmp(back, pt, ptn), 0);
	siv[0] ^= 1;
	cr_assert_eq(kw_aes_siv_open(key, kn, ads, adl, 1, siv, ct, ptn, back), KW_ERR_VERIFY);
	free(key), free(ad), free(pt), free(want);

	size_t a1n, a2n, nn;
	key = hex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f", &kn);
	unsigned char *ad1 =
	    hex("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100", &a1n);
	unsigned char *ad2 = hex("102030405060708090a0", &a2n);
	unsigned char *nonce = hex("09f911029d74e35bd84156c5635688c0", &nn);
	pt = hex(
	    "7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553",
	    &ptn);
	want = hex(
	    "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829"
	    "ea64ad544a272e9c485b62a3fd5c0d",
	    &wantn);
	const unsigned char *ads2[3] = {ad1, ad2, nonce};
	size_t adl2[3] = {a1n, a2n, nn};
	cr_assert_eq(kw_aes_siv_seal(key, kn, ads2, adl2, 3, pt, ptn, siv, ct), KW_OK);
	cr_assert_eq(memcmp(siv, want, 16), 0);
	cr_assert_eq(memcmp(ct, want + 16, ptn), 0);
	free(key), free(ad1), free(ad2), free(nonce), free(pt), free(want);
}

static unsigned char k64[64], k32[32], iv[12];

static void keys(void)
{
	for (int i = 0; i < 64; i++)
		k64[i] = (unsigned char)i;
	for (int i = 0; i < 32; i++)
		k32[i] = (unsigned char)i;
	for (int i = 0; i < 12; i++)
		iv[i] = (unsigned char)i;
}

static void round_trip(kw_transit_type t, const unsigned char *key, uint32_t v, const char *ctx,
                       const char *pt, const char *want)
{
	char *s = NULL;
	const unsigned char *c = (const unsigned char *)ctx;
	cr_assert_eq(kw_transit_seal(t, v, key, iv, c, ctx ? strlen(ctx) : 0, (const unsigned char *)pt,
	                             strlen(pt), &s),
	             KW_OK, "sealing for %s", want);
	cr_assert_str_eq(s, want);
	kw_transit_ct p;
	cr_assert_eq(kw_transit_parse(s, strlen(s), &p), KW_OK);
	cr_assert_eq(p.version, v);
	cr_assert_eq(p.type, t);
	unsigned char *out = NULL;
	size_t n = 0;
	cr_assert_eq(kw_transit_open(&p, key, c, ctx ? strlen(ctx) : 0, &out, &n), KW_OK);
	cr_assert_eq(n, strlen(pt));
	cr_assert(n == 0 || memcmp(out, pt, n) == 0);
	free(out);
	kw_transit_ct_free(&p);
	free(s);
}

Test(transit, both_types_match_an_independent_implementation, .init = keys)
{
	round_trip(KW_TRANSIT_AES256_SIV, k64, 3, "users.email", "alice@example.com",
	           "$det1$v3$r1bQh32mTnxBt7zCUhMuOQ==$mJ9vByskHZS+pDycWwJEEkE=");
	/* OpenSSL 3.0's AES-SIV computes no tag over an empty message: refused,
	 * and so is the string another implementation would make of one. */
	char *s = NULL;
	cr_assert_eq(
	    kw_transit_seal(KW_TRANSIT_AES256_SIV, 1, k64, iv, NULL, 0, (const unsigned char *)"", 0, &s),
	    KW_ERR_INVALID);
	kw_transit_ct p;
	const char *empty = "$det1$v1$1PxTucRMKu6oe/uMmDsTbA==$";
	cr_assert_eq(kw_transit_parse(empty, strlen(empty), &p), KW_ERR_INVALID);
	round_trip(KW_TRANSIT_AES256_GCM, k32, 2, "users.email", "alice@example.com",
	           "$enc1$v2$AAECAwQFBgcICQoL$Jm6/eKClp2PsLOfn1McbAu4=$pGo08F03PIz8I31udK4jVw==");
	round_trip(KW_TRANSIT_AES256_GCM, k32, 1, NULL, "",
	           "$enc1$v1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==");
}

/* Every bit of every decoded part flipped, and a context changed,
 * missing or added: the value does not open, and nothing says why. */
Test(transit, tampering_and_contexts_fail_closed, .init = keys)
{
	const kw_transit_type types[] = {KW_TRANSIT_AES256_GCM, KW_TRANSIT_AES256_SIV};
	for (size_t t = 0; t < 2; t++) {
		const unsigned char *key = types[t] == KW_TRANSIT_AES256_SIV ? k64 : k32;
		char *s = NULL;
		cr_assert_eq(kw_transit_seal(types[t], 1, key, iv, (const unsigned char *)"ctx", 3,
		                             (const unsigned char *)"secret value", 12, &s),
		             KW_OK);
		kw_transit_ct p;
		cr_assert_eq(kw_transit_parse(s, strlen(s), &p), KW_OK);
		unsigned char *out = NULL;
		size_t n = 0;
		unsigned char *parts[3] = {(unsigned char *)p.iv, (unsigned char *)p.ct,
		                           (unsigned char *)p.tag};
		size_t lens[3] = {types[t] == KW_TRANSIT_AES256_SIV ? 16 : 12, p.ctlen, p.tag ? 16 : 0};
		for (int part = 0; part < 3; part++)
			for (size_t i = 0; i < lens[part]; i++)
				for (int bit = 0; bit < 8; bit++) {
					parts[part][i] ^= (unsigned char)(1 << bit);
					cr_assert_eq(kw_transit_open(&p, key, (const unsigned char *)"ctx", 3,
					                             &out, &n),
					             KW_ERR_VERIFY, "part %d byte %zu bit %d", part, i, bit);
					parts[part][i] ^= (unsigned char)(1 << bit);
				}
		cr_assert_eq(kw_transit_open(&p, key, (const unsigned char *)"ctx", 3, &out, &n), KW_OK);
		free(out);
		cr_assert_eq(kw_transit_open(&p, key, NULL, 0, &out, &n), KW_ERR_VERIFY, "context missing");
		cr_assert_eq(kw_transit_open(&p, key, (const unsigned char *)"ctX", 3, &out, &n),
		             KW_ERR_VERIFY);
		unsigned char other[64];
		memcpy(other, key, kw_transit_key_len(types[t]));
		other[5] ^= 1;
		cr_assert_eq(kw_transit_open(&p, other, (const unsigned char *)"ctx", 3, &out, &n),
		             KW_ERR_VERIFY, "another key");
		kw_transit_ct_free(&p);
		free(s);
	}
}

Test(transit, deterministic_only_for_siv, .init = keys)
{
	char *a = NULL, *b = NULL, *c = NULL;
	const unsigned char *pt = (const unsigned char *)"0xabc";
	cr_assert_eq(kw_transit_seal(KW_TRANSIT_AES256_SIV, 1, k64, iv, NULL, 0, pt, 5, &a), KW_OK);
	cr_assert_eq(kw_transit_seal(KW_TRANSIT_AES256_SIV, 1, k64, iv, NULL, 0, pt, 5, &b), KW_OK);
	cr_assert_str_eq(a, b, "SIV is searchable: same input, same string");
	cr_assert_eq(
	    kw_transit_seal(KW_TRANSIT_AES256_SIV, 1, k64, iv, (const unsigned char *)"x", 1, pt, 5, &c),
	    KW_OK);
	cr_assert_str_neq(a, c, "another context, another string");
	free(a), free(b), free(c);
	unsigned char iv2[12] = {9};
	cr_assert_eq(kw_transit_seal(KW_TRANSIT_AES256_GCM, 1, k32, iv, NULL, 0, pt, 5, &a), KW_OK);
	cr_assert_eq(kw_transit_seal(KW_TRANSIT_AES256_GCM, 1, k32, iv2, NULL, 0, pt, 5, &b), KW_OK);
	cr_assert_str_neq(a, b, "GCM is randomized by its IV");
	free(a), free(b);
}

Test(transit, malformed_strings_are_invalid)
{
	const char *bad[] = {
	    "",
	    "$enc1$",
	    "$enc2$v1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==",
	    "$enc1$v0$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==",
	    "$enc1$v01$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==",
	    "$enc1$v2147483648$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==",
	    "$enc1$v-1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==",
	    "$enc1$v1$AAECAwQFBgcICQo$$9MLbHcOIBaN7khccXQqBzA==",      /* IV too short */
	    "$enc1$v1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBz===",     /* bad padding */
	    "$enc1$v1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzB==",     /* stray bits: not canonical */
	    "$enc1$v1$AAECAwQFBgcICQoL$$9MLbHcOIBaN7khccXQqBzA==$",    /* one part too many */
	    "$enc1$v1$AAECAwQFBgcICQoL$9MLbHcOIBaN7khccXQqBzA==",      /* one part missing */
	    "$enc1$v1$AAECAwQFBgcICQoL$@@@@$9MLbHcOIBaN7khccXQqBzA==", /* not base64 */
	    "$det1$v1$1PxTucRMKu6oe/uMmDsTbA==$$",                     /* SIV has two parts */
	    "$det1$v1$1PxTucRMKu6oe/uMmDsT$",                          /* SIV IV too short */
	    "$enc1$v1$AAECAwQFBgcICQoL$-_-_$9MLbHcOIBaN7khccXQqBzA==", /* base64url is not base64 */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kw_transit_ct p;
		cr_assert_eq(kw_transit_parse(bad[i], strlen(bad[i]), &p), KW_ERR_INVALID, "%s", bad[i]);
	}
	kw_transit_ct p;
	const char nul[] = "$enc1$v1$AAECAwQFBgcICQoL$\0$9MLbHcOIBaN7khccXQqBzA==";
	cr_assert_eq(kw_transit_parse(nul, sizeof(nul) - 1, &p), KW_ERR_INVALID);
}

/* NIST GCM known answers (McGrew & Viega cases 15 and 16, the vectors SP
 * 800-38D refers to; tests/vectors/gcm_nist.txt) through the path the
 * service seals with: one keyed context reused for several values, the
 * context as AAD; and through kw_aes256_gcm (the secrets store's). */
Test(transit, gcm_nist_vectors_through_the_sealer)
{
	static const char
	    K[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	    IV[] = "cafebabefacedbaddecaf888",
	    P[] = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449"
	          "a6b525b16aedf5aa0de657ba637b39",
	    A[] = "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	    C[] = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056"
	          "828838c5f61e6393ba7a0abcc9f662",
	    T16[] = "76fc6ece0f4e1768cddf8853bb2d551b";
	unsigned char k[32], nonce[12], p[60], a[20], c[60], t[16];
	cr_assert(kw_hex_decode(K, 32, k) && kw_hex_decode(IV, 12, nonce) && kw_hex_decode(P, 60, p) &&
	          kw_hex_decode(A, 20, a) && kw_hex_decode(C, 60, c) && kw_hex_decode(T16, 16, t));
	char want[256], b_iv[32], b_c[128], b_t[32];
	EVP_EncodeBlock((unsigned char *)b_iv, nonce, 12);
	EVP_EncodeBlock((unsigned char *)b_c, c, 60);
	EVP_EncodeBlock((unsigned char *)b_t, t, 16);
	snprintf(want, sizeof(want), "$enc1$v1$%s$%s$%s", b_iv, b_c, b_t);
	kw_transit_sealer *s = kw_transit_sealer_new(KW_TRANSIT_AES256_GCM, k);
	cr_assert_not_null(s);
	for (int round = 0; round < 3; round++) { /* the keyed context, reused */
		char *got = NULL;
		cr_assert_eq(kw_transit_seal_with(s, 1, nonce, a, sizeof(a), p, sizeof(p), &got), KW_OK);
		cr_assert_str_eq(got, want, "round %d", round);
		free(got);
	}
	kw_transit_sealer_free(s);
	unsigned char out[60], tag[16], back[60];
	cr_assert_eq(kw_aes256_gcm(true, k, nonce, a, sizeof(a), p, sizeof(p), out, tag), KW_OK);
	cr_assert_arr_eq(out, c, 60);
	cr_assert_arr_eq(tag, t, 16);
	cr_assert_eq(kw_aes256_gcm(false, k, nonce, a, sizeof(a), out, sizeof(out), back, tag), KW_OK);
	cr_assert_arr_eq(back, p, 60);
	tag[0] ^= 1;
	cr_assert_eq(kw_aes256_gcm(false, k, nonce, a, sizeof(a), out, sizeof(out), back, tag),
	             KW_ERR_VERIFY);
}
