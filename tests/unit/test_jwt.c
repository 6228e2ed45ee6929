/* Unit tests: base64url, RFC 7638 thumbprints, JWKS, and the strict JWS
 * parser on hostile input (no token needed: unknown kids and bad shapes
 * fail before any signature check). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/jwt.h"

static void hex2bin(const char *hex, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sscanf(hex + 2 * i, "%2hhx", &out[i]);
}

/* RFC 7517 appendix A.1's P-256 key; its thumbprint computed with
 * Python's hashlib/json as an independent implementation. */
static const char *rfc_point =
    "0430a0424cd21c2944838a2d75c92b37e76ea20d9f00893a3b4eee8a3c0aafec3ee04b65e92456d9888b52b"
    "379bdfbd51ee869ef1f0fc65b6659695b6cce081723";

Test(jwt, base64url_rfc4648_vectors)
{
	const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	for (size_t i = 0; i < 7; i++) {
		char out[32];
		unsigned char back[32];
		size_t n;
		kw_b64url_encode((const unsigned char *)plain[i], strlen(plain[i]), out);
		cr_assert_str_eq(out, enc[i]);
		cr_assert_eq(kw_b64url_decode(enc[i], strlen(enc[i]), back, sizeof(back), &n), KW_OK);
		cr_assert_eq(n, strlen(plain[i]));
		cr_assert(memcmp(back, plain[i], n) == 0);
	}
	unsigned char b[2] = {0xfb, 0xff};
	char out[8];
	kw_b64url_encode(b, 2, out);
	cr_assert_str_eq(out, "-_8");
}

Test(jwt, base64url_rejects_non_canonical)
{
	unsigned char out[64];
	size_t n;
	const char *bad[] = {"Zg==", "Z", "Zm9v!", "Zm+v", "Zm/v", "Zh", "Zm9v Yg", "Zm9\nv"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_b64url_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n), KW_ERR_INVALID,
		             "%s", bad[i]);
	cr_assert_eq(kw_b64url_decode("Zm9vYmFy", 8, out, 5, &n), KW_ERR_INVALID, "overflowed cap");
}

Test(jwt, thumbprint_and_jwks)
{
	unsigned char point[65];
	hex2bin(rfc_point, point, 65);
	char kid[KW_JWK_KID_LEN + 1];
	cr_assert_eq(kw_jwk_thumbprint(point, kid), KW_OK);
	cr_assert_str_eq(kid, "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");
	kw_jwt_key k = {.pkey = NULL};
	memcpy(k.point, point, 65);
	memcpy(k.kid, kid, sizeof(kid));
	char *jwks = kw_jwks_json(&k, 1);
	json_t *o = json_loads(jwks, 0, NULL);
	json_t *key = json_array_get(json_object_get(o, "keys"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(key, "x")),
	                 "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4");
	cr_assert_str_eq(json_string_value(json_object_get(key, "y")),
	                 "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM");
	cr_assert_str_eq(json_string_value(json_object_get(key, "alg")), "ES256");
	cr_assert_str_eq(json_string_value(json_object_get(key, "use")), "sig");
	cr_assert_str_eq(json_string_value(json_object_get(key, "kid")), kid);
	json_decref(o);
	free(jwks);
	point[0] = 0x02;
	cr_assert_eq(kw_jwk_thumbprint(point, kid), KW_ERR_INVALID);
}

static kw_err verify(const char *tok)
{
	kw_jwt_key k = {.pkey = NULL};
	hex2bin(rfc_point, k.point, 65);
	cr_assert_eq(kw_jwk_thumbprint(k.point, k.kid), KW_OK);
	json_t *claims = NULL;
	kw_err err = kw_jwt_verify(tok, strlen(tok), &k, 1, &claims);
	json_decref(claims);
	return err;
}

Test(jwt, hostile_tokens_rejected)
{
	char sig[100];
	unsigned char zeros[64] = {0};
	kw_b64url_encode(zeros, 64, sig);
	char none[512], hs[512], nokid[512], wrongkid[512], shortsig[512];
	/* {"alg":"none","kid":"cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"} */
	snprintf(
	    none, sizeof(none),
	    "eyJhbGciOiJub25lIiwia2lkIjoiY24tSV9XTk1DbGVoaVZwNTFpXzBWcE9FTlcxdXBFZXJBOHNFYW01aG4tcyJ9.e30.%s",
	    sig);
	/* {"alg":"HS256","kid":"cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"} */
	snprintf(hs, sizeof(hs),
	         "eyJhbGciOiJIUzI1NiIsImtpZCI6ImNuLUlfV05NQ2xlaGlWcDUxaV8wVnBPRU5XMXVwRWVyQThzRWFtNWhuLXMifQ."
	         "e30.%s",
	         sig);
	/* {"alg":"ES256"} */
	snprintf(nokid, sizeof(nokid), "eyJhbGciOiJFUzI1NiJ9.e30.%s", sig);
	/* {"alg":"ES256","kid":"other"} */
	snprintf(wrongkid, sizeof(wrongkid), "eyJhbGciOiJFUzI1NiIsImtpZCI6Im90aGVyIn0.e30.%s", sig);
	snprintf(shortsig, sizeof(shortsig),
	         "eyJhbGciOiJFUzI1NiIsImtpZCI6ImNuLUlfV05NQ2xlaGlWcDUxaV8wVnBPRU5XMXVwRWVyQThzRWFtNWhuLXMifQ."
	         "e30.AAAA");
	cr_assert_eq(verify(none), KW_ERR_INVALID);
	cr_assert_eq(verify(hs), KW_ERR_INVALID);
	cr_assert_eq(verify(nokid), KW_ERR_INVALID);
	cr_assert_eq(verify(wrongkid), KW_ERR_VERIFY);
	cr_assert_eq(verify(shortsig), KW_ERR_INVALID);
	/* Right kid, all-zero signature: a signature failure, not a crash. */
	char zero_sig[512];
	snprintf(zero_sig, sizeof(zero_sig),
	         "eyJhbGciOiJFUzI1NiIsImtpZCI6ImNuLUlfV05NQ2xlaGlWcDUxaV8wVnBPRU5XMXVwRWVyQThzRWFtNWhuLXMifQ."
	         "e30.%s",
	         sig);
	cr_assert_eq(verify(zero_sig), KW_ERR_VERIFY);
	const char *shapes[] = {"", ".", "..", "a.b", "a.b.c.d", "e30..", "..e30", "e30.e30.", "e30.e30.e30"};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		cr_assert_neq(verify(shapes[i]), KW_OK, "%s", shapes[i]);
	char *big = malloc(KW_JWT_MAX_LEN + 10);
	memset(big, 'a', KW_JWT_MAX_LEN + 9);
	big[KW_JWT_MAX_LEN + 9] = '\0';
	cr_assert_eq(verify(big), KW_ERR_INVALID);
	free(big);
}
