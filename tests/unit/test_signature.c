/* test_signature.c — the signing scheme's pieces: the known-answer vectors
 * of docs/signing.md (computed with Python's hmac/hashlib) through the
 * server's MAC and the client library, the secret's checksum, and the
 * strict header parser. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward-sign.h"
#include "keyward/auth/signature.h"
#include "keyward/core/text.h"

static const char SECRET[] = "kws_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2tkJxA";
static const char KID[] = "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f";

static const struct {
	const char *method, *target, *ts, *nonce, *body, *mac;
} V[] = {
    {"GET", "/api/v1/secrets?limit=10", "1767225600000", "qsP2lN3mVxK9cT8dR4yB1wE7", "",
     "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362"},
    {"POST", "/api/v1/transit/keys/emails/encrypt", "1767225600123", "nonce_ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123",
     "{\"plaintext\":\"YWxpY2VAZXhhbXBsZS5jb20=\"}",
     "c9eacd97b7e06e7e8bd0fa7d877787ae32d87c450461927ea9e878f746bdbab4"},
};

Test(signature, known_answers_through_the_server_and_the_client_library)
{
	for (size_t i = 0; i < sizeof(V) / sizeof(V[0]); i++) {
		unsigned char mac[32], want[32];
		cr_assert(kw_hex_decode(V[i].mac, 32, want));
		cr_assert_eq(kw_sig_mac((const unsigned char *)SECRET, 53, V[i].method, V[i].target, V[i].ts,
		                        V[i].nonce, (const unsigned char *)V[i].body, strlen(V[i].body), mac),
		             KW_OK);
		cr_assert_arr_eq(mac, want, 32, "vector %zu (server)", i);
		keyward_sign_headers h;
		char *end = NULL;
		long long ts = strtoll(V[i].ts, &end, 10);
		cr_assert_eq(keyward_sign(KID, SECRET, V[i].method, V[i].target,
		                          (const unsigned char *)V[i].body, strlen(V[i].body), ts, V[i].nonce,
		                          &h),
		             0);
		char sig[160];
		snprintf(sig, sizeof(sig), "kid=%s;hmac-sha256=%s", KID, V[i].mac);
		cr_assert_str_eq(h.signature, sig, "vector %zu (client library)", i);
		cr_assert_str_eq(h.timestamp, V[i].ts);
		cr_assert_str_eq(h.nonce, V[i].nonce);
		/* And what the client signs, the server's parser reads back. */
		kw_sig_headers p;
		cr_assert_eq(kw_sig_parse(h.timestamp, h.nonce, h.signature, &p), KW_OK);
		cr_assert_arr_eq(p.mac, want, 32);
		cr_assert_str_eq(p.kid, KID);
	}
	char canon[512];
	cr_assert_eq(keyward_sign_canonical("GET", "/api/v1/secrets?limit=10", "1767225600000",
	                                    "qsP2lN3mVxK9cT8dR4yB1wE7", NULL, 0, canon, sizeof(canon)),
	             (long)strlen(canon));
	cr_assert_str_eq(canon, "GET\n/api/v1/secrets?limit=10\n1767225600000\nqsP2lN3mVxK9cT8dR4yB1wE7\n"
	                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

Test(signature, secrets_carry_a_checksum)
{
	cr_assert(kw_sig_secret_ok(SECRET, strlen(SECRET)));
	char typo[64];
	snprintf(typo, sizeof(typo), "%s", SECRET);
	typo[20] = typo[20] == 'a' ? 'b' : 'a';
	cr_assert_not(kw_sig_secret_ok(typo, strlen(typo)), "a typo passed the checksum");
	keyward_sign_headers h;
	cr_assert_eq(keyward_sign(KID, typo, "GET", "/", NULL, 0, 0, NULL, &h), -1,
	             "the client signs with a typo");
	cr_assert_eq(keyward_sign("not-a-kid", SECRET, "GET", "/", NULL, 0, 0, NULL, &h), -1);
	cr_assert_eq(keyward_sign(KID, SECRET, "GET", "/", NULL, 0, 0, "bad nonce!", &h), -1);
	cr_assert_eq(keyward_sign(KID, SECRET, "GET", "/", NULL, 0, 0, NULL, &h), 0);
	cr_assert_eq(strlen(h.nonce), 32, "a fresh nonce");
}

Test(signature, the_parser_is_strict)
{
	static const char sig[] = "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f;hmac-sha256="
	                          "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362";
	static const char nonce[] = "qsP2lN3mVxK9cT8dR4yB1wE7";
	kw_sig_headers h;
	cr_assert_eq(kw_sig_parse("1767225600000", nonce, sig, &h), KW_OK);
	cr_assert_eq(h.ts_ms, 1767225600000LL);
	const char *bad_ts[] = {"", "-1", "+1", "01", "1e3", "12345678901234567", "1 ", " 1"};
	for (size_t i = 0; i < sizeof(bad_ts) / sizeof(bad_ts[0]); i++)
		cr_assert_eq(kw_sig_parse(bad_ts[i], nonce, sig, &h), KW_ERR_INVALID, "timestamp %s",
		             bad_ts[i]);
	const char *bad_nonce[] = {
	    "", "short", "qsP2lN3mVxK9cT8dR4yB1w=", "qsP2lN3mVxK9cT8dR4yB1wE7 ",
	    "qsP2lN3mVxK9cT8dR4yB1wE7qsP2lN3mVxK9cT8dR4yB1wE7qsP2lN3mVxK9cT8dR4yB1wE7qsP2lN3mVxK9cT8dR4yB1w"
	    "E7qsP2lN3mVxK9cT8dR4yB1wE7qsP2lN3mVxK9cT8d"};
	for (size_t i = 0; i < sizeof(bad_nonce) / sizeof(bad_nonce[0]); i++)
		cr_assert_eq(kw_sig_parse("1", bad_nonce[i], sig, &h), KW_ERR_INVALID, "nonce %s",
		             bad_nonce[i]);
	const char *bad_sig[] = {
	    "",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f;hmac-sha256="
	    "81107E4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f;hmac-sha256="
	    "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d36",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f;hmac-sha256="
	    "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d3622",
	    "hmac-sha256=81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362;kid=6f1c2d3e-4b5a-"
	    "4c6d-8e9f-0a1b2c3d4e5f",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f; "
	    "hmac-sha256=81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d36",
	    "kid=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5x;hmac-sha256="
	    "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362",
	    "KID=6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f;hmac-sha256="
	    "81107e4601df6869d6cf052db83376f5e67dd1f0f81766b7b7a0b8ca23d4d362"};
	for (size_t i = 0; i < sizeof(bad_sig) / sizeof(bad_sig[0]); i++)
		cr_assert_eq(kw_sig_parse("1", nonce, bad_sig[i], &h), KW_ERR_INVALID, "signature %s",
		             bad_sig[i]);
	cr_assert_eq(kw_sig_parse(NULL, nonce, sig, &h), KW_ERR_INVALID);
}
